using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>
/// Inpainting end to end on the Shapes models through the ML.NET stages — EncodePrompt, EncodeImage, PrepareInpainting,
/// DenoiseLatents with a mask, DecodeLatents — on both of diffusers' StableDiffusionInpaintPipeline paths: an ordinary
/// UNet (4 channels) blending the known region after every step, and the inpainting UNet (9 channels) of the Shapes
/// inpainting variant. The UNets are exact posterior-mean denoisers, so the prompt can be read back from the result.
/// </summary>
[TestClass]
public sealed class InpaintingPipelineTests
{
    private const int Size = 128;

    internal static StableDiffusionModel LoadOrdinary() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);

    internal static StableDiffusionModel LoadInpainting() => StableDiffusionModel.Load(new MLContext(seed: 1), InpaintingTestModel.Folder);

    /// <summary>EncodePrompt → EncodeImage → PrepareInpainting → DenoiseLatents (mask) → DecodeLatents, fitted and applied.</summary>
    internal static IDataView Inpaint(StableDiffusionModel model, IDataView data, float strength = 1f, int steps = 20, int batch = 2, int size = Size)
    {
        var ml = model.MLContext;
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.EncodeImage(model, "InitialLatents", "Image", new EncodeImageOptions { Width = size, Height = size, SeedColumnName = "Seed" }))
            .Append(ml.Transforms.PrepareInpainting(model, new PrepareInpaintingOptions { Width = size, Height = size, SeedColumnName = "Seed" }))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Width = size,
                Height = size,
                Steps = steps,
                SeedColumnName = "Seed",
                InitialLatentsColumnName = "InitialLatents",
                Strength = strength,
                MaskColumnName = "LatentMask",
                MaskedImageLatentsColumnName = "MaskedImageLatents",
                BatchSize = batch,
            }))
            .Append(ml.Transforms.DecodeLatents(model, "Output", "Latents"));
        return pipeline.Fit(data).Transform(data);
    }

    /// <summary>The VAE round trip decode(encode(image)) through the stages, the reference for "unchanged".</summary>
    internal static MLImage RoundTrip(StableDiffusionModel model, MLImage image)
    {
        var ml = model.MLContext;
        var data = image.Width == 256
            ? ml.Data.LoadFromEnumerable(new[] { new InpaintRow256 { Image = image, Mask = image } })
            : ml.Data.LoadFromEnumerable(new[] { new InpaintRow128 { Image = image, Mask = image } });
        var pipeline = ml.Transforms.EncodeImage(model, "Latents", "Image", new EncodeImageOptions { Width = image.Width, Height = image.Height })
            .Append(ml.Transforms.DecodeLatents(model, "Output", "Latents"));
        return pipeline.Fit(data).Transform(data).GetColumn<MLImage>("Output").Single();
    }

    /// <summary>The largest difference of an RGB value between two images over the pixels where <paramref name="where"/> holds.</summary>
    internal static int MaxDifference(MLImage a, MLImage b, Func<int, int, bool> where)
    {
        Assert.AreEqual(a.PixelFormat, b.PixelFormat, "the helpers compare images of one pixel format");
        var pa = a.Pixels;
        var pb = b.Pixels;
        int max = 0;
        for (int y = 0; y < a.Height; y++)
            for (int x = 0; x < a.Width; x++)
                if (where(x, y))
                    for (int c = 0; c < 3; c++)
                        max = Math.Max(max, Math.Abs(pa[4 * (y * a.Width + x) + c] - pb[4 * (y * b.Width + x) + c]));
        return max;
    }

    /// <summary>Mean RGB of the pixels where <paramref name="where"/> holds (RGBA32 or BGRA32).</summary>
    internal static double[] Mean(MLImage image, Func<int, int, bool> where)
    {
        var p = image.Pixels;
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        var sum = new double[3];
        int n = 0;
        for (int y = 0; y < image.Height; y++)
            for (int x = 0; x < image.Width; x++)
                if (where(x, y))
                {
                    for (int c = 0; c < 3; c++)
                        sum[c] += p[4 * (y * image.Width + x) + (bgra ? 2 - c : c)];
                    n++;
                }
        return sum.Select(s => s / Math.Max(1, n)).ToArray();
    }

    private static bool OutsideBox(int x, int y) => x < 32 || x >= 96 || y < 32 || y >= 96;

    /// <summary>Mean absolute difference of the RGB values where <paramref name="where"/> holds.</summary>
    internal static double MeanDifference(MLImage a, MLImage b, Func<int, int, bool> where)
    {
        Assert.AreEqual(a.PixelFormat, b.PixelFormat, "the helpers compare images of one pixel format");
        var pa = a.Pixels;
        var pb = b.Pixels;
        double sum = 0;
        int n = 0;
        for (int y = 0; y < a.Height; y++)
            for (int x = 0; x < a.Width; x++)
                if (where(x, y))
                    for (int c = 0; c < 3; c++, n++)
                        sum += Math.Abs(pa[4 * (y * a.Width + x) + c] - pb[4 * (y * b.Width + x) + c]);
        return sum / Math.Max(1, n);
    }

    /// <summary>
    /// The pixel noise (0–255 units) that DDIM's last step leaves in the Shapes decoder's output: √β₀ of ε̂ in the
    /// scaled latents (see TheInpaintingUnet_RepaintsTheMaskedCircleGreen_AndKeepsTheRest), ÷ the scaling factor, through
    /// Wᵀ whose orthonormal rows put 4/192 of their mass on a pixel on average.
    /// </summary>
    private static double DdimResidue(StableDiffusionModel model)
    {
        double beta0 = 1 - new NoiseSchedule(model.Info.SchedulerConfig).AlphasCumprod[0];
        return Math.Sqrt(beta0) / model.Info.VaeScalingFactor * Math.Sqrt(4.0 / 192) * 127.5;
    }

    /// <summary>
    /// Inside the mask the prompt's green circle, outside it the input: the result's mean and largest difference to the
    /// VAE round trip of the input over the pixels outside the mask are at most <paramref name="meanBound"/> and
    /// <paramref name="maxBound"/> (0–255 units).
    /// </summary>
    private static void AssertRepaintedGreen(StableDiffusionModel model, MLImage output, string path, double meanBound, int maxBound)
    {
        var input = InpaintingImages.RedCircleRow("", 0).Image!;
        var roundTrip = RoundTrip(model, input);
        var (inside, _) = ImageChecks.RegionMeans(output, ShapeKind.Circle, ShapePosition.Center, margin: 4);
        var outside = Mean(output, OutsideBox);
        double mean = MeanDifference(output, roundTrip, OutsideBox);
        int max = MaxDifference(output, roundTrip, OutsideBox);
        Console.WriteLine($"{path}: inside ({inside[0]:F0}, {inside[1]:F0}, {inside[2]:F0}); outside the mask ({outside[0]:F0}, {outside[1]:F0}, {outside[2]:F0}), "
            + $"difference to the VAE round trip: mean {mean:F2}, max {max}; round trip to input max {MaxDifference(roundTrip, input, OutsideBox)} (of 255)");
        Assert.AreEqual(ShapeColor.Green, ImageChecks.NearestShapeColor(inside), $"{path}: the prompt's colour inside the mask");
        Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(ShapeColor.Green)) < 20, $"{path}: a clean green");
        Assert.IsTrue(ImageChecks.Distance(outside, ShapesDataset.GetRgb(BackgroundColor.Blue)) < 3, $"{path}: the blue background outside the mask");
        Assert.IsTrue(mean <= meanBound, $"{path}: outside the mask the result differs from the VAE round trip by {mean:F2} on average (bound {meanBound:F2})");
        Assert.IsTrue(max <= maxBound, $"{path}: outside the mask the result differs from the VAE round trip by up to {max} (bound {maxBound})");
        // Outside the mask the input is flat blue, which the PCA VAE reproduces to within byte rounding.
        Assert.IsTrue(MaxDifference(roundTrip, input, OutsideBox) <= 1, "the VAE round trip of the flat background");
    }

    [TestMethod]
    public void AnOrdinaryUnet_RepaintsTheMaskedCircleGreen_AndKeepsTheRestExactly()
    {
        using var model = LoadOrdinary();
        Assert.AreEqual(4, model.Info.UnetInputChannels);
        // The prompt names the position: blending commits early, and without it seeds 1 and 3 paint a green circle on
        // the right whose part outside the mask the known region then cuts away (the known weakness of this path, which
        // inpainting UNets remove: see the next test, same prompt without the position).
        var data = model.MLContext.Data.LoadFromEnumerable(new[] { InpaintingImages.RedCircleRow("a green circle in the center on a blue background", 3) });
        var view = Inpaint(model, data);
        // Blending puts the initial latents back outside the mask after the last step, and the Shapes decoder maps each
        // latent pixel to its own 8×8 patch: outside the (8-aligned) mask the result is the VAE round trip, bit for bit.
        AssertRepaintedGreen(model, view.GetColumn<MLImage>("Output").Single(), "4-channel UNet, latent blending", meanBound: 0, maxBound: 0);

        // Blending ends on the initial latents themselves outside the latent mask: equal, not just close.
        var mask = view.GetColumn<VBuffer<float>>("LatentMask").Single().DenseValues().ToArray();
        var initial = view.GetColumn<VBuffer<float>>("InitialLatents").Single().DenseValues().ToArray();
        var latents = view.GetColumn<VBuffer<float>>("Latents").Single().DenseValues().ToArray();
        int plane = mask.Length, kept = 0;
        for (int c = 0; c < 4; c++)
            for (int p = 0; p < plane; p++)
                if (mask[p] == 0f)
                {
                    Assert.AreEqual(initial[c * plane + p], latents[c * plane + p], $"channel {c}, latent pixel {p}");
                    kept++;
                }
        Assert.AreEqual(4 * (256 - 64), kept, "the 8×8 latent box [4, 12)² is repainted, the rest kept");
    }

    [TestMethod]
    public void TheInpaintingUnet_RepaintsTheMaskedCircleGreen_AndKeepsTheRest()
    {
        using var model = LoadInpainting();
        Assert.AreEqual(9, model.Info.UnetInputChannels);
        Assert.IsTrue(model.Info.IsInpaintingUnet);
        Assert.AreEqual(4, model.Info.LatentChannels);
        var data = model.MLContext.Data.LoadFromEnumerable(new[] { InpaintingImages.RedCircleRow("a green circle on a blue background", 3) });
        // Outside the mask the result is the UNet's own x̂₀ — the item's flat blue background, which equals the input's —
        // plus what DDIM leaves of the noise: with SD 1.5's set_alpha_to_one = false the last step ends at
        // ᾱ = 1 − β₀ (diffusers DDIMScheduler.final_alpha_cumprod), x = √(1 − β₀)·x̂₀ + √β₀·ε̂, β₀ = 0.00085. Through the
        // decoder (÷ scaling factor, then Wᵀ whose 192 rows carry 4/192 of the orthonormal rows' mass on average) that is
        // a pixel noise of σ ≈ √β₀ / s · √(4/192) · 127.5 ≈ 2.4 for s ≈ 0.22: mean |·| = 0.8σ ≈ 1.95 (bound 1.3× that),
        // and single values up to about 6σ (bound 10σ); a wrong background or a shape outside the mask differs by 40 or more.
        double sigma = DdimResidue(model);
        AssertRepaintedGreen(model, Inpaint(model, data).GetColumn<MLImage>("Output").Single(), "9-channel inpainting UNet",
            meanBound: 1.3 * 0.8 * sigma, maxBound: (int)Math.Ceiling(10 * sigma));
    }

    /// <summary>
    /// Outpainting at the model's native size (256 px, where the item latents need no resizing, so an item the
    /// original region comes from is reproduced exactly): "a red circle on the left, on a blue background" with its right
    /// quarter cut off, extended back to 256×256 by <see cref="Outpainting.Prepare"/> with a mid-gray border; the original
    /// region stays, the new border takes the prompt's background (blue, not the gray it starts from).
    /// </summary>
    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void Outpainting_KeepsTheOriginal_AndPaintsTheBorderAsThePromptSays(bool inpaintingUnet)
    {
        const int size = 256, kept = 192;
        using var model = inpaintingUnet ? LoadInpainting() : LoadOrdinary();
        var item = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Left);
        using var full = ShapesImages.Render(item, size);
        var cropped = new byte[kept * size * 4];
        for (int y = 0; y < size; y++)
            full.Pixels.Slice(y * size * 4, kept * 4).CopyTo(cropped.AsSpan(y * kept * 4));
        using var image = MLImage.CreateFromPixels(kept, size, MLPixelFormat.Rgba32, cropped);
        using var canvas = Outpainting.Prepare(image, 0, 0, size - kept, 0, new OutpaintOptions { Fill = OutpaintFill.Color });
        Assert.AreEqual((size, size), (canvas.Width, canvas.Height));

        var data = model.MLContext.Data.LoadFromEnumerable(new[] { new InpaintRow256 { Prompt = item.Prompt, Seed = 11, Image = canvas.Image, Mask = canvas.Mask } });
        var output = Inpaint(model, data, size: size).GetColumn<MLImage>("Output").Single();
        var roundTrip = RoundTrip(model, canvas.Image);
        static bool Original(int x, int y) => x < kept;
        var border = Mean(output, (x, _) => x >= kept);
        double mean = MeanDifference(output, roundTrip, Original);
        int max = MaxDifference(output, roundTrip, Original);
        string path = inpaintingUnet ? "9-channel UNet" : "4-channel UNet";
        Console.WriteLine($"{path}: border ({border[0]:F0}, {border[1]:F0}, {border[2]:F0}) (it starts gray); original region vs VAE round trip: mean {mean:F2}, max {max}");
        Assert.IsTrue(ImageChecks.Distance(border, ShapesDataset.GetRgb(BackgroundColor.Blue)) < 3, $"{path}: the new border is the prompt's blue background");
        var (inside, _) = ImageChecks.RegionMeans(output, ShapeKind.Circle, ShapePosition.Left, margin: 4);
        Assert.AreEqual(ShapeColor.Red, ImageChecks.NearestShapeColor(inside), $"{path}: the original red circle");
        if (inpaintingUnet)
        {
            // The UNet's own x̂₀ — the item the image was cut from — plus DDIM's last-step noise residue, as in
            // TheInpaintingUnet_…: σ ≈ 2.4 of 255 per value, bounds 1.3·0.8σ on the mean and 10σ on single values.
            double sigma = DdimResidue(model);
            Assert.IsTrue(mean <= 1.3 * 0.8 * sigma && max <= 10 * sigma, $"{path}: the original region changed (mean {mean:F2}, max {max}; σ {sigma:F2})");
        }
        else
        {
            Assert.AreEqual(0, max, $"{path}: blending keeps the original region's latents exactly");
        }
    }
}
