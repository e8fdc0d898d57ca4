using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Shapes.Building;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.ImageToImage;

/// <summary>
/// The EncodeImage stage: pixels in [−1, 1] through the VAE encoder, × scaling factor; both encoder output forms
/// (diffusers' <c>latent_sample</c> export and the 8-channel <c>latent_parameters</c> of DiagonalGaussianDistribution).
/// </summary>
[TestClass]
public sealed class EncodeImageTests
{
    private static readonly ShapesItem[] s_items =
    {
        ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.White, ShapePosition.Center),
        ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Yellow, BackgroundColor.Black, ShapePosition.Left),
        ShapesDataset.GetItem(ShapeKind.Triangle, ShapeColor.Purple, BackgroundColor.Green, ShapePosition.Right),
    };

    private static IDataView Rows(MLContext ml, int size, params int[] seeds) =>
        ml.Data.LoadFromEnumerable(s_items.Select((it, i) => new ImageRow64 { Prompt = it.Prompt, Seed = seeds.Length > i ? seeds[i] : i, Image = ShapesImages.Render(it, size) }).ToArray());

    private static float[][] Encode(StableDiffusionModel model, IDataView data, EncodeImageOptions options) =>
        model.MLContext.Transforms.EncodeImage(model, "Latents", "Image", options).Fit(data).Transform(data)
            .GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();

    [TestMethod]
    public void LatentsAreTheEncoderOutputTimesTheScalingFactor()
    {
        // Independent path: ShapesDataset.RenderTensor (CHW in [−1, 1], the VAE's input) straight into the ONNX encoder.
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var data = Rows(model.MLContext, 64);
        var latents = Encode(model, data, new EncodeImageOptions { Width = 64, Height = 64, BatchSize = 2 });
        var type = (VectorDataViewType)model.MLContext.Transforms.EncodeImage(model, "Latents", "Image", new EncodeImageOptions { Width = 64, Height = 64 })
            .Fit(data).GetOutputSchema(data.Schema)["Latents"].Type;
        CollectionAssert.AreEqual(new[] { 4, 8, 8 }, type.Dimensions.ToArray());
        float scale = ShapesTestModel.ScalingFactor;
        for (int i = 0; i < s_items.Length; i++)
        {
            var z = ShapesTestModel.Run(ShapesTestModel.VaeEncoder, ("sample", ShapesDataset.RenderTensor(s_items[i], 64), new long[] { 1, 3, 64, 64 }))["latent_sample"].Data;
            Assert.AreEqual(z.Length, latents[i].Length);
            for (int k = 0; k < z.Length; k++)
                Assert.AreEqual(z[k] * scale, latents[i][k], 1e-5f * Math.Max(1f, Math.Abs(z[k] * scale)), $"item {i}, value {k}");
        }
    }

    [TestMethod]
    public void TheLatentParametersVariantOutputsTheMeanAndAConstantLogVariance()
    {
        using var parameters = new InferenceSession(Path.Combine(ShapesVariantModels.LatentParameters, "vae_encoder", "model.onnx"));
        var input = ShapesDataset.RenderTensor(s_items[1], 64);
        var p = ShapesTestModel.Run(parameters, ("sample", input, new long[] { 1, 3, 64, 64 }))["latent_parameters"];
        CollectionAssert.AreEqual(new long[] { 1, 8, 8, 8 }, p.Shape);
        var z = ShapesTestModel.Run(ShapesTestModel.VaeEncoder, ("sample", input, new long[] { 1, 3, 64, 64 }))["latent_sample"].Data;
        CollectionAssert.AreEqual(z, p.Data.Take(z.Length).ToArray(), "the mean is the standard encoder's latent");
        Assert.IsTrue(p.Data.Skip(z.Length).All(v => v == ShapesGraphs.LatentLogVariance), "the log-variance is the constant");
    }

    [TestMethod]
    public void BothEncoderFormsAgreeInMeanModeAndCloselyInSampleMode()
    {
        using var standard = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        using var parameters = StableDiffusionModel.Load(new MLContext(1), ShapesVariantModels.LatentParameters);
        var data = Rows(standard.MLContext, 64, 11, 12, 13);
        var options = new EncodeImageOptions { Width = 64, Height = 64, SeedColumnName = "Seed" };
        var sampled = Encode(standard, data, options);
        var mean = Encode(parameters, data, new EncodeImageOptions { Width = 64, Height = 64, SeedColumnName = "Seed", Sampling = LatentSampling.Mean });
        var sample = Encode(parameters, data, options);
        var sampleAgain = Encode(parameters, data, options);
        var otherSeeds = Encode(parameters, Rows(standard.MLContext, 64, 21, 22, 23), options);

        // diffusers' DiagonalGaussianDistribution: std = exp(0.5·logvar) = e^−6 here; sample = mean + std·ε, then × scaling factor.
        float std = MathF.Exp(0.5f * ShapesGraphs.LatentLogVariance) * standard.Info.VaeScalingFactor;
        double sum = 0, sumSq = 0;
        int n = 0;
        for (int r = 0; r < s_items.Length; r++)
        {
            for (int k = 0; k < sampled[r].Length; k++)
                Assert.AreEqual(sampled[r][k], mean[r][k], 1e-6f * Math.Max(1f, Math.Abs(sampled[r][k])), $"row {r}: Mean mode is the mean");
            CollectionAssert.AreEqual(sample[r], sampleAgain[r], "the same seed gives the same sample");
            CollectionAssert.AreNotEqual(sample[r], otherSeeds[r], "another seed gives another sample");
            for (int k = 0; k < sample[r].Length; k++)
            {
                double e = (sample[r][k] - mean[r][k]) / std;
                sum += e;
                sumSq += e * e;
                n++;
            }
        }
        // (sample − mean)/σ is N(0, 1): over n = 768 values the mean is within 5/√n and the variance within 5·√(2/n).
        double m = sum / n, v = sumSq / n - m * m;
        Console.WriteLine($"standardised sampling noise: mean {m:F4}, variance {v:F4} over {n} values");
        Assert.AreEqual(0, m, 5 / Math.Sqrt(n));
        Assert.AreEqual(1, v, 5 * Math.Sqrt(2.0 / n));
    }

    [TestMethod]
    public void ARowGivesTheSameLatentsAloneOrInABatch()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesVariantModels.LatentParameters);
        var ml = model.MLContext;
        var data = Rows(ml, 64, 5, 6, 7);
        var together = Encode(model, data, new EncodeImageOptions { Width = 64, Height = 64, SeedColumnName = "Seed", BatchSize = 3 });
        var alone = Encode(model, ml.Data.TakeRows(ml.Data.SkipRows(data, 2), 1), new EncodeImageOptions { Width = 64, Height = 64, SeedColumnName = "Seed", BatchSize = 1 });
        CollectionAssert.AreEqual(alone[0], together[2]);
        // Without a seed column the seed is Seed + the row's position, whatever the batch.
        var unseeded = Encode(model, data, new EncodeImageOptions { Width = 64, Height = 64, Seed = 40, BatchSize = 2 });
        var unseededOne = Encode(model, data, new EncodeImageOptions { Width = 64, Height = 64, Seed = 40, BatchSize = 1 });
        for (int r = 0; r < 3; r++)
            CollectionAssert.AreEqual(unseededOne[r], unseeded[r], $"row {r}");
    }

    [TestMethod]
    public void AnImageOfAnotherSizeIsStretchedToTheTarget()
    {
        // A 128-px rendering encoded at 64 px is close to the 64-px rendering encoded directly: resizing a flat-coloured
        // image by 2 only blends the pixels along edges.
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var large = ml.Data.LoadFromEnumerable(s_items.Select(it => new ImageRow128 { Image = ShapesImages.Render(it, 128) }).ToArray());
        var resized = Encode(model, large, new EncodeImageOptions { Width = 64, Height = 64 });
        var direct = Encode(model, Rows(ml, 64), new EncodeImageOptions { Width = 64, Height = 64 });
        for (int r = 0; r < s_items.Length; r++)
        {
            double relative = ImageChecks.RelativeL2(resized[r], direct[r]);
            Console.WriteLine($"{s_items[r].Prompt}: relative latent difference {relative:F4}");
            Assert.IsTrue(relative < 0.1, $"{s_items[r].Prompt}: relative difference {relative}");
        }
    }

    [TestMethod]
    public void ResizeModeNoneNamesTheRowAndBothSizes()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[]
        {
            new ImageRow64 { Image = ShapesImages.Render(s_items[0], 64) },
            new ImageRow64 { Image = ShapesImages.Render(s_items[1], 48) },
        });
        var view = ml.Transforms.EncodeImage(model, "Latents", "Image", new EncodeImageOptions { Width = 64, Height = 64, ResizeMode = ImageResizeMode.None, BatchSize = 1 })
            .Fit(data).Transform(data);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => view.GetColumn<VBuffer<float>>("Latents").ToArray());
        StringAssert.Contains(e.Message, "Row 1");
        StringAssert.Contains(e.Message, "48×48");
        StringAssert.Contains(e.Message, "64×64");
        StringAssert.Contains(e.Message, "'Image'");
    }

    [TestMethod]
    public void BadOptionsAndColumnsAreNamed()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var width = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodeImage(model, "L", "Image", new EncodeImageOptions { Width = 100 }));
        Assert.AreEqual("Width", width.ParamName);
        StringAssert.Contains(width.Message, "96 and 104");
        Assert.AreEqual("Height", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodeImage(model, "L", "Image", new EncodeImageOptions { Height = 4 })).ParamName);
        Assert.AreEqual("BatchSize", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodeImage(model, "L", "Image", new EncodeImageOptions { BatchSize = 0 })).ParamName);
        Assert.AreEqual("Sampling", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodeImage(model, "L", "Image", new EncodeImageOptions { Sampling = (LatentSampling)7 })).ParamName);

        var data = Rows(ml, 64);
        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodeImage(model, "L", "Picture").Fit(data));
        StringAssert.Contains(missing.Message, "'Picture'");
        var mistyped = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodeImage(model, "L", "Prompt").Fit(data));
        StringAssert.Contains(mistyped.Message, "'Prompt'");
        StringAssert.Contains(mistyped.Message, "Image");
        var seed = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodeImage(model, "L", "Image", new EncodeImageOptions { SeedColumnName = "Prompt" }).Fit(data));
        StringAssert.Contains(seed.Message, "'Prompt'");
        // Estimator-time checks name the column too (EstimatorChain.Fit asks the whole chain's schema first).
        var shape = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            ml.Transforms.EncodeImage(model, "L", "Prompt").GetOutputSchema(MLNet.Diffusion.Transforms.SchemaShapes.FromSchema(ml, data.Schema)));
        StringAssert.Contains(shape.Message, "'Prompt'");
    }

    [TestMethod]
    public void AFolderWithoutAVaeEncoderFailsAtTheCatalogCallNamingIt()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-no-encoder-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            foreach (string file in Directory.GetFiles(ShapesTestModel.Folder, "*", SearchOption.AllDirectories))
            {
                string relative = Path.GetRelativePath(ShapesTestModel.Folder, file);
                if (relative.StartsWith("vae_encoder", StringComparison.Ordinal))
                    continue;
                Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(dir, relative))!);
                File.Copy(file, Path.Combine(dir, relative));
            }
            using var model = StableDiffusionModel.Load(new MLContext(1), dir);
            Assert.IsFalse(model.HasVaeEncoder);
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => model.MLContext.Transforms.EncodeImage(model, "Latents", "Image"));
            StringAssert.Contains(e.Message, "vae_encoder");
            StringAssert.Contains(e.Message, dir);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void EncodeImageConforms()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var data = Rows(model.MLContext, 64);
        EstimatorConformance.Check(model.MLContext.Transforms.EncodeImage(model, "Latents", "Image", new EncodeImageOptions { Width = 64, Height = 64, SeedColumnName = "Seed", BatchSize = 2 }), data, "Latents");
    }

    [TestMethod]
    public void EncodingThenDecodingReproducesTheImage()
    {
        // EncodeImage's output is what DecodeLatents reads: the round trip is the VAE's (ShapesVaeTests: < 0.03 of [−1, 1]).
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var input = ShapesImages.Render(s_items[2], 256);
        var data = ml.Data.LoadFromEnumerable(new[] { new ImageRow256 { Image = input } });
        var output = ml.Transforms.EncodeImage(model, "Latents", "Image", new EncodeImageOptions { Width = 256, Height = 256 })
            .Append(ml.Transforms.DecodeLatents(model, "Decoded", "Latents"))
            .Fit(data).Transform(data).GetColumn<MLImage>("Decoded").Single();
        double mad = ShapesImages.MeanAbsoluteDifference(input, output);
        Assert.IsTrue(mad < 3.8, $"mean absolute difference {mad:F2} of 255");
    }

    [TestMethod]
    public void TheTinySdExportEncodesToFiniteLatentsOfTheRightShape()
    {
        string dir = SharedModels.RequireTinySd();
        using var model = StableDiffusionModel.Load(new MLContext(1), dir);
        int f = model.Info.VaeSpatialFactor;
        var data = model.MLContext.Data.LoadFromEnumerable(new[] { new ImageRow64 { Image = ShapesImages.Render(s_items[0], 64) } });
        var view = model.MLContext.Transforms.EncodeImage(model, "Latents", "Image", new EncodeImageOptions { Width = 64, Height = 64 })
            .Append(model.MLContext.Transforms.DecodeLatents(model, "Decoded", "Latents"))
            .Fit(data).Transform(data);
        var latents = view.GetColumn<VBuffer<float>>("Latents").Single().DenseValues().ToArray();
        Assert.AreEqual(4 * (64 / f) * (64 / f), latents.Length);
        Assert.IsTrue(latents.All(float.IsFinite));
        Assert.AreEqual(64, view.GetColumn<MLImage>("Decoded").Single().Width);
    }

    [TestMethod]
    public void MeanSamplingIsRefusedForAnEncoderThatSamplesInsideItsGraph()
    {
        // tiny-sd's and the Shapes model's vae_encoder output latent_sample (C channels, drawn inside the graph): there is
        // no mean to take, so Sampling = Mean is an error naming the export and what works, for both encoding stages.
        using var standard = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = standard.MLContext;
        var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.EncodeImage(standard, "Latents", "Image", new EncodeImageOptions { Width = 64, Height = 64, Sampling = LatentSampling.Mean }));
        Assert.AreEqual("Sampling", e.ParamName);
        StringAssert.Contains(e.Message, "EncodeImage");
        StringAssert.Contains(e.Message, "'latent_sample' with 4 channels");
        StringAssert.Contains(e.Message, "'latent_parameters' [B, 8, h, w]");
        var inpaint = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.PrepareInpainting(standard, new PrepareInpaintingOptions
        {
            ImageColumnName = "Image", MaskColumnName = "Mask", LatentMaskColumnName = "LatentMask", MaskedImageLatentsColumnName = "Masked", Width = 64, Height = 64, Sampling = LatentSampling.Mean,
        }));
        StringAssert.Contains(inpaint.Message, "PrepareInpainting");

        string dir = SharedModels.RequireTinySd();
        using var tiny = StableDiffusionModel.Load(new MLContext(1), dir);
        var t = Assert.ThrowsExactly<ArgumentException>(() => tiny.MLContext.Transforms.EncodeImage(tiny, "Latents", "Image", new EncodeImageOptions { Width = 64, Height = 64, Sampling = LatentSampling.Mean }));
        StringAssert.Contains(t.Message, "latent_sample");

        // The latent_parameters export takes the mean.
        using var parameters = StableDiffusionModel.Load(new MLContext(1), ShapesVariantModels.LatentParameters);
        _ = parameters.MLContext.Transforms.EncodeImage(parameters, "Latents", "Image", new EncodeImageOptions { Width = 64, Height = 64, Sampling = LatentSampling.Mean });
    }
}
