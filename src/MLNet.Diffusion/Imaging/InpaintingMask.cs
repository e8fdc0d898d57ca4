using System;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Imaging;

/// <summary>How a pixel mask becomes a mask at latent resolution (<see cref="PrepareInpaintingOptions.MaskDownsampling"/>).</summary>
public enum MaskDownsampling
{
    /// <summary>
    /// As diffusers' StableDiffusionInpaintPipeline (<c>torch.nn.functional.interpolate(mask, size=(H/f, W/f))</c>, mode
    /// "nearest"): latent pixel (i, j) takes the binarised mask at pixel (f·i, f·j), the first pixel of its f×f block.
    /// </summary>
    Nearest,

    /// <summary>
    /// A latent pixel is repainted when any pixel of its f×f block is (max pooling): no pixel marked for repainting is
    /// kept, at the cost of repainting up to f − 1 more pixels around the mask.
    /// </summary>
    Any,
}

/// <summary>
/// The mask processing of diffusers' inpainting pipeline (VaeImageProcessor with <c>do_convert_grayscale</c>,
/// <c>do_binarize</c>, no normalisation; <c>prepare_mask_latents</c>), on planes of floats: grayscale as Pillow's
/// <c>convert("L")</c>, binarise at 0.5 (white = repaint), the masked image, and the latent-resolution mask.
/// </summary>
internal static class InpaintingMask
{
    /// <summary>
    /// Pillow's <c>convert("L")</c> of an RGBA32/BGRA32 image (ITU-R 601-2 luma in Pillow's fixed point:
    /// L = (19595·R + 38470·G + 7471·B + 0x8000) >> 16, libImaging/Convert.c), divided by 255 (alpha is ignored).
    /// </summary>
    public static void ReadLuma(MLImage image, Span<float> plane)
    {
        int n = image.Width * image.Height;
        if (plane.Length != n)
            throw new ArgumentException($"Expected room for {n} values, got {plane.Length}.", nameof(plane));
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        if (!bgra && image.PixelFormat != MLPixelFormat.Rgba32)
            throw new ArgumentException($"Mask pixel format {image.PixelFormat} is not supported; expected RGBA32 or BGRA32.", nameof(image));
        var pixels = image.Pixels;
        if (pixels.Length != 4 * n)
            throw new ArgumentException($"Mask has {pixels.Length} bytes of pixels; expected {4 * n} for {image.Width}×{image.Height} RGBA32.", nameof(image));
        int ri = bgra ? 2 : 0, bi = bgra ? 0 : 2;
        for (int i = 0; i < n; i++)
        {
            int l = (pixels[4 * i + ri] * 19595 + pixels[4 * i + 1] * 38470 + pixels[4 * i + bi] * 7471 + 0x8000) >> 16;
            plane[i] = l / 255f;
        }
    }

    /// <summary>diffusers' <c>VaeImageProcessor.binarize</c>: values below 0.5 become 0 (keep), the others 1 (repaint).</summary>
    public static void Binarize(Span<float> plane)
    {
        for (int i = 0; i < plane.Length; i++)
            plane[i] = plane[i] < 0.5f ? 0f : 1f;
    }

    /// <summary>
    /// The masked image of diffusers' inpainting pipeline, <c>image · (mask &lt; 0.5)</c>: pixels to repaint become 0
    /// (mid gray in [−1, 1]), the others are kept. <paramref name="chw"/> is [3, H, W], <paramref name="mask"/> [H, W] binary.
    /// </summary>
    public static void ApplyToImage(Span<float> chw, ReadOnlySpan<float> mask)
    {
        int n = mask.Length;
        if (chw.Length != 3 * n)
            throw new ArgumentException($"Expected 3×{n} pixel values, got {chw.Length}.", nameof(chw));
        for (int c = 0; c < 3; c++)
        {
            var channel = chw.Slice(c * n, n);
            for (int i = 0; i < n; i++)
                if (mask[i] >= 0.5f)
                    channel[i] = 0f;
        }
    }

    /// <summary>Downsamples a binary mask [height, width] by <paramref name="factor"/> into [height/f, width/f].</summary>
    public static void ToLatent(ReadOnlySpan<float> mask, int width, int height, int factor, MaskDownsampling mode, Span<float> latent)
    {
        int w = width / factor, h = height / factor;
        if (mask.Length != width * height || width % factor != 0 || height % factor != 0)
            throw new ArgumentException($"Expected a {height}×{width} mask with sides that are multiples of {factor}, got {mask.Length} values.", nameof(mask));
        if (latent.Length != w * h)
            throw new ArgumentException($"Expected room for {h}×{w} values, got {latent.Length}.", nameof(latent));
        for (int i = 0; i < h; i++)
        {
            for (int j = 0; j < w; j++)
            {
                float v;
                if (mode == MaskDownsampling.Nearest)
                {
                    v = mask[factor * i * width + factor * j];
                }
                else
                {
                    v = 0f;
                    for (int y = factor * i; y < factor * (i + 1) && v == 0f; y++)
                        if (mask.Slice(y * width + factor * j, factor).IndexOfAnyExcept(0f) >= 0)
                            v = 1f;
                }
                latent[i * w + j] = v;
            }
        }
    }
}
