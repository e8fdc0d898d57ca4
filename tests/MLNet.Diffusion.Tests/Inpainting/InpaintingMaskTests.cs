using System;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>
/// diffusers' inpainting mask processing (VaeImageProcessor(do_normalize=False, do_binarize=True,
/// do_convert_grayscale=True) and StableDiffusionInpaintPipeline.prepare_mask_latents) on small hand-made masks.
/// </summary>
[TestClass]
public sealed class InpaintingMaskTests
{
    [TestMethod]
    public void Luma_IsPillowsConvertL_AndBinarisesAtHalf()
    {
        // Pillow libImaging/Convert.c: L = (R·19595 + G·38470 + B·7471 + 0x8000) >> 16.
        // (128, 128, 128) → 128 → 0.502 ≥ 0.5: repaint; (127, 127, 127) → 127 → 0.498: keep;
        // pure red (255, 0, 0) → 76: keep; pure green (0, 255, 0) → 150: repaint; (255, 255, 255) → 255.
        var pixels = new byte[]
        {
            128, 128, 128, 255,
            127, 127, 127, 0,
            255, 0, 0, 255,
            0, 255, 0, 255,
            255, 255, 255, 255,
            0, 0, 0, 255,
        };
        using var image = MLImage.CreateFromPixels(6, 1, MLPixelFormat.Rgba32, pixels);
        var plane = new float[6];
        InpaintingMask.ReadLuma(image, plane);
        CollectionAssert.AreEqual(new[] { 128 / 255f, 127 / 255f, 76 / 255f, 150 / 255f, 1f, 0f }, plane);
        InpaintingMask.Binarize(plane);
        CollectionAssert.AreEqual(new[] { 1f, 0f, 0f, 1f, 1f, 0f }, plane);

        // BGRA: the same colours with red and blue swapped in memory read the same.
        for (int i = 0; i < pixels.Length; i += 4)
            (pixels[i], pixels[i + 2]) = (pixels[i + 2], pixels[i]);
        using var bgra = MLImage.CreateFromPixels(6, 1, MLPixelFormat.Bgra32, pixels);
        var fromBgra = new float[6];
        InpaintingMask.ReadLuma(bgra, fromBgra);
        CollectionAssert.AreEqual(new[] { 128 / 255f, 127 / 255f, 76 / 255f, 150 / 255f, 1f, 0f }, fromBgra);
    }

    [TestMethod]
    public void Nearest_TakesTheFirstPixelOfEachBlock_AndAny_TakesTheBlocksMaximum()
    {
        // A 16×8 mask (two 8×8 blocks side by side) with one repainted pixel at (3, 5) in the left block and the
        // right block's first pixel (8, 0) repainted. torch.nn.functional.interpolate(mode="nearest") to 1×2 reads
        // source index floor(i · 8) = pixels (0, 0) and (8, 0).
        var mask = new float[16 * 8];
        mask[5 * 16 + 3] = 1f;
        mask[8] = 1f;
        var nearest = new float[2];
        InpaintingMask.ToLatent(mask, 16, 8, 8, MaskDownsampling.Nearest, nearest);
        CollectionAssert.AreEqual(new[] { 0f, 1f }, nearest);
        var any = new float[2];
        InpaintingMask.ToLatent(mask, 16, 8, 8, MaskDownsampling.Any, any);
        CollectionAssert.AreEqual(new[] { 1f, 1f }, any);

        mask.AsSpan().Clear();
        InpaintingMask.ToLatent(mask, 16, 8, 8, MaskDownsampling.Any, any);
        CollectionAssert.AreEqual(new[] { 0f, 0f }, any);
    }

    [TestMethod]
    public void TheMaskedImage_IsTheImageTimesMaskBelowHalf()
    {
        // diffusers: masked_image = init_image * (mask < 0.5), in [-1, 1]: repainted pixels become 0 (mid gray).
        var chw = new[] { 0.5f, -1f, 1f, 0.25f, -0.5f, 0.75f };
        InpaintingMask.ApplyToImage(chw, new[] { 0f, 1f });
        CollectionAssert.AreEqual(new[] { 0.5f, 0f, 1f, 0f, -0.5f, 0f }, chw);
    }
}
