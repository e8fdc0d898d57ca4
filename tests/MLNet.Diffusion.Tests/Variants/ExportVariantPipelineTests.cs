using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Variants;

/// <summary>
/// Text-to-image through EncodePrompt → DenoiseLatents → DecodeLatents on every built export variant of the Shapes
/// model, compared with the standard float32 export's result for the same prompts and seeds.
/// </summary>
[TestClass]
public sealed class ExportVariantPipelineTests
{
    private const int Size = 128;
    private const int Steps = 10;

    private static readonly ShapesItem[] s_items =
    {
        ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Left),
        ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Yellow, BackgroundColor.Black, ShapePosition.Right),
    };

    private static readonly Lazy<Result> s_standard = new(() => Generate(ShapesVariant.Standard));

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private sealed record Result(float[][] Latents, MLImage[] Images);

    /// <summary>The two prompts at 128², 10 DDIM steps (integer timesteps), guidance 7.5, one batch of two rows.</summary>
    private static Result Generate(ShapesVariant variant)
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesVariantModels.Folder(variant));
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(s_items.Select((it, i) => new Row { Prompt = it.Prompt, Seed = 21 + i }).ToArray());
        var output = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings",
                new DenoiseLatentsOptions { Width = Size, Height = Size, Steps = Steps, Scheduler = "ddim", SeedColumnName = "Seed", BatchSize = 2 }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data).Transform(data);
        var latents = output.GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
        var images = output.GetColumn<MLImage>("Image").ToArray();
        return new Result(latents, images);
    }

    [TestMethod]
    public void TheStandardExportDrawsThePrompts() => AssertDrawsThePrompts(s_standard.Value, ShapesVariant.Standard);

    /// <summary>
    /// The float32 variants compute the same float32 arithmetic on the same values as the standard export, so the
    /// result is bitwise equal: external data only moves the weight bytes; int64 ids and DDIM's integer timesteps
    /// convert to the same floats exactly (integers below 2^24); a scalar timestep is the value the [batch] form repeats,
    /// broadcast by the same elementwise kernels.
    /// </summary>
    [TestMethod]
    [DataRow(ShapesVariant.ExternalWeights)]
    [DataRow(ShapesVariant.ExternalWeightsPb)]
    [DataRow(ShapesVariant.TimestepInt64)]
    [DataRow(ShapesVariant.TimestepScalar)]
    [DataRow(ShapesVariant.Int64InputIds | ShapesVariant.TimestepScalar)]
    public void AFloat32VariantGivesTheStandardResultBitwise(ShapesVariant variant)
    {
        var standard = s_standard.Value;
        var result = Generate(variant);
        for (int r = 0; r < s_items.Length; r++)
        {
            CollectionAssert.AreEqual(standard.Latents[r], result.Latents[r], $"{variant}: latents of '{s_items[r].Prompt}'");
            CollectionAssert.AreEqual(standard.Images[r].Pixels.ToArray(), result.Images[r].Pixels.ToArray(), $"{variant}: pixels of '{s_items[r].Prompt}'");
        }
    }

    /// <summary>
    /// A float16 export differs from the float32 one by float16 rounding only. binary16 keeps 11 significant bits: each
    /// rounding is at most 2^-11 of the value (IEEE 754, round to nearest). The end latent is the posterior mean of the
    /// item latents, stored rounded (one rounding), moved by the rounded ε̂ outputs and σ table along the way: a few
    /// roundings of the latent's scale, so |Δz| ≤ 4·2^-11·max|z| (measured: about 1.6·2^-11). The decoder adds its
    /// rounded weights and output; a pixel byte has a quantum of 2/255 ≈ 16·2^-11 in the decoder's [−1, 1] units, so the
    /// value error is below one quantum and rounding to bytes adds at most one: |Δpixel| ≤ 2, and on average far below
    /// one level (≤ 0.25; measured 0.02). The v-prediction row compares with the epsilon export too: under DDIM the two
    /// parameterisations give the same latents up to float32 rounding (<see cref="VPredictionTests"/>).
    /// </summary>
    [TestMethod]
    [DataRow(ShapesVariant.Float16)]
    [DataRow(ShapesVariant.Float16 | ShapesVariant.TimestepInt64 | ShapesVariant.ExternalWeights)]
    [DataRow(ShapesVariant.Float16 | ShapesVariant.TimestepScalar | ShapesVariant.Int64InputIds | ShapesVariant.VPrediction)]
    public void AFloat16VariantMatchesTheStandardResultWithinHalfPrecision(ShapesVariant variant)
    {
        var standard = s_standard.Value;
        var result = Generate(variant);
        for (int r = 0; r < s_items.Length; r++)
        {
            float scale = standard.Latents[r].Max(MathF.Abs);
            float allowed = 4f * scale / 2048f;
            float worst = 0f;
            for (int i = 0; i < standard.Latents[r].Length; i++)
                worst = MathF.Max(worst, MathF.Abs(standard.Latents[r][i] - result.Latents[r][i]));
            Assert.IsTrue(worst <= allowed, $"{variant} '{s_items[r].Prompt}': latents differ by up to {worst:E3} (allowed {allowed:E3}).");

            var a = PixelsRgb(standard.Images[r]);
            var b = PixelsRgb(result.Images[r]);
            int maxLevels = 0;
            long sum = 0;
            for (int i = 0; i < a.Length; i++)
            {
                int d = Math.Abs(a[i] - b[i]);
                maxLevels = Math.Max(maxLevels, d);
                sum += d;
            }
            double mean = (double)sum / a.Length;
            Assert.IsTrue(maxLevels <= 2 && mean <= 0.25, $"{variant} '{s_items[r].Prompt}': pixels differ by up to {maxLevels} levels, {mean:F3} on average.");
        }
        AssertDrawsThePrompts(result, variant);
    }

    private static void AssertDrawsThePrompts(Result result, ShapesVariant variant)
    {
        for (int r = 0; r < s_items.Length; r++)
        {
            var item = s_items[r];
            var (inside, outside) = ImageChecks.RegionMeans(result.Images[r], item.Shape, item.Position, margin: 6);
            Assert.AreEqual(item.Color, ImageChecks.NearestShapeColor(inside), $"{variant} '{item.Prompt}': shape colour ({inside[0]:F0}, {inside[1]:F0}, {inside[2]:F0})");
            Assert.AreEqual(item.Background, ImageChecks.NearestBackground(outside), $"{variant} '{item.Prompt}': background ({outside[0]:F0}, {outside[1]:F0}, {outside[2]:F0})");
        }
    }

    /// <summary>The R, G, B bytes of every pixel (alpha left out: always opaque).</summary>
    private static byte[] PixelsRgb(MLImage image)
    {
        var pixels = image.Pixels;
        var rgb = new byte[pixels.Length / 4 * 3];
        for (int p = 0, k = 0; p < pixels.Length; p += 4)
        {
            rgb[k++] = pixels[p];
            rgb[k++] = pixels[p + 1];
            rgb[k++] = pixels[p + 2];
        }
        return rgb;
    }
}
