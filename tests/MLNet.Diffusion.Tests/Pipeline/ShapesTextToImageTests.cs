using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Pipeline;

/// <summary>
/// Text-to-image end to end on the Shapes model through the three ML.NET stages. The model's UNet is the exact
/// posterior-mean denoiser of its dataset, so correct sampling ends on an image with the prompted attributes, and a
/// wrong sign, schedule or guidance ends in noise or in the wrong item.
/// </summary>
[TestClass]
public sealed class ShapesTextToImageTests
{
    private const int Size = 128;

    internal sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);

    private static IDataView Generate(StableDiffusionModel model, IEnumerable<Row> rows, DenoiseLatentsOptions? options = null)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        options ??= new DenoiseLatentsOptions { Width = Size, Height = Size, SeedColumnName = "Seed" };
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"));
        return pipeline.Fit(data).Transform(data);
    }

    [TestMethod]
    public void ModelFolderLoadsWithTheStandardContract()
    {
        using var model = Load();
        Assert.AreEqual(4, model.Info.LatentChannels);
        Assert.AreEqual(8, model.Info.VaeSpatialFactor);
        Assert.AreEqual(77, model.Info.SequenceLength);
        Assert.AreEqual("DDIMScheduler", model.Info.SchedulerConfig.ClassName);
        Assert.IsTrue(model.Info.VaeScalingFactor is > 0.01f and < 1f, $"scaling factor {model.Info.VaeScalingFactor}");
        Assert.IsTrue(model.HasVaeEncoder);
    }

    /// <summary>
    /// The sessions' thread policy (the VAE's threads stop spinning after a run, the text encoders' per
    /// <see cref="StableDiffusionModelOptions.TextEncoderThreadsSpin"/>) changes when threads sleep, never a value: the
    /// same rows give the same latents bit for bit either way. The option is on by default.
    /// </summary>
    [TestMethod]
    public void TextEncoderThreadsSpin_ChangesNoValue()
    {
        Assert.IsTrue(new StableDiffusionModelOptions().TextEncoderThreadsSpin);
        var rows = new[] { new Row { Prompt = "a red circle on the left on a blue background", Seed = 3 }, new Row { Prompt = "a green square", Seed = 4 } };
        float[] Latents(bool spin)
        {
            using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder, new StableDiffusionModelOptions { TextEncoderThreadsSpin = spin });
            var options = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 5, SeedColumnName = "Seed" };
            return Generate(model, rows, options).GetColumn<VBuffer<float>>("Latents").SelectMany(v => v.DenseValues()).ToArray();
        }
        var spinning = Latents(spin: true);
        var stopping = Latents(spin: false);
        Assert.AreEqual(spinning.Length, stopping.Length);
        for (int i = 0; i < spinning.Length; i++)
            Assert.AreEqual(BitConverter.SingleToInt32Bits(spinning[i]), BitConverter.SingleToInt32Bits(stopping[i]), $"latent value {i}");
    }

    [TestMethod]
    public void EveryPromptOfAGridGetsItsColours()
    {
        // 2 shapes × 2 colours × 2 backgrounds × alternating positions = 8 prompts, 20 DDIM steps, guidance 7.5.
        var items = new List<ShapesItem>();
        var positions = Enum.GetValues<ShapePosition>();
        int p = 0;
        foreach (var shape in new[] { ShapeKind.Circle, ShapeKind.Triangle })
            foreach (var color in new[] { ShapeColor.Red, ShapeColor.Yellow })
                foreach (var background in new[] { BackgroundColor.Blue, BackgroundColor.White })
                    items.Add(ShapesDataset.GetItem(shape, color, background, positions[p++ % 3]));
        using var model = Load();
        var rows = items.Select((it, i) => new Row { Prompt = it.Prompt, Seed = 100 + i }).ToArray();
        var images = Generate(model, rows).GetColumn<MLImage>("Image").ToArray();
        Assert.AreEqual(items.Count, images.Length);
        for (int i = 0; i < items.Count; i++)
        {
            var (inside, outside) = ImageChecks.RegionMeans(images[i], items[i].Shape, items[i].Position, margin: 6);
            Assert.AreEqual(items[i].Color, ImageChecks.NearestShapeColor(inside), $"'{items[i].Prompt}': shape colour {Fmt(inside)}");
            Assert.AreEqual(items[i].Background, ImageChecks.NearestBackground(outside), $"'{items[i].Prompt}': background {Fmt(outside)}");
            Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(items[i].Color)) < 40, $"'{items[i].Prompt}': shape colour {Fmt(inside)} is not clean");
        }
    }

    [TestMethod]
    public void AnAmbiguousPromptVariesWithTheSeedAndRepeatsForTheSameSeed()
    {
        using var model = Load();
        var rows = Enumerable.Range(0, 6).Select(i => new Row { Prompt = "a circle", Seed = i }).Append(new Row { Prompt = "a circle", Seed = 0 }).ToArray();
        var latents = Generate(model, rows).GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
        var nearest = latents.Take(6).Select(l => NearestItemAt16(l)).ToArray();
        Assert.IsTrue(nearest.Distinct().Count() >= 2, $"six seeds all gave item {nearest[0]}");
        CollectionAssert.AreEqual(latents[0], latents[6], "the same seed must give the same latents");
        foreach (int k in nearest)
            Assert.AreEqual(ShapeKind.Circle, ShapesDataset.Items[k].Shape, "an ambiguous prompt still keeps what it specifies");
    }

    [TestMethod]
    public void ARowGivesTheSamePixelsAloneOrInABatchOfFive()
    {
        using var model = Load();
        var batch = new[] { "a red square", "a blue circle on a black background", "a green triangle", "a purple circle", "an orange square" }
            .Select((prompt, i) => new Row { Prompt = prompt, Seed = 10 + i }).ToArray();
        var options = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 8, SeedColumnName = "Seed", BatchSize = 5 };
        var together = Generate(model, batch, options).GetColumn<MLImage>("Image").Select(i => i.Pixels.ToArray()).ToArray();
        var aloneOptions = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 8, SeedColumnName = "Seed", BatchSize = 1 };
        var alone = Generate(model, new[] { batch[3] }, aloneOptions).GetColumn<MLImage>("Image").Single().Pixels.ToArray();
        CollectionAssert.AreEqual(alone, together[3]);
    }

    [TestMethod]
    public void AnInitialNoiseColumnReplacesTheSeededNoise()
    {
        using var model = Load();
        var ml = model.MLContext;
        int len = 4 * 8 * 8;
        var noise = new float[len];
        new GaussianNoise(1234).NextGaussian(noise);
        var data = ml.Data.LoadFromEnumerable(new[] { new NoiseRow { Prompt = "a red circle", Seed = 1234, Noise = noise } },
            SchemaDefinitionFor(len));
        var seeded = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 5, SeedColumnName = "Seed" }));
        var given = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 5, Seed = 99, InitialNoiseColumnName = "Noise" }));
        var a = seeded.Fit(data).Transform(data).GetColumn<VBuffer<float>>("Latents").Single().DenseValues().ToArray();
        var b = given.Fit(data).Transform(data).GetColumn<VBuffer<float>>("Latents").Single().DenseValues().ToArray();
        CollectionAssert.AreEqual(a, b, "the seeded noise of seed 1234 given as a column must reproduce the seeded run exactly");
    }

    [TestMethod]
    public void AWrongTypeInputColumnFailsAtFitNamingTheColumn()
    {
        using var model = Load();
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new { Prompt = 3.5f, Seed = "x" } });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt").Fit(data));
        StringAssert.Contains(e.Message, "'Prompt'");
        StringAssert.Contains(e.Message, "String");

        var text = ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a circle", Seed = "x" } });
        var chain = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { SeedColumnName = "Seed" }));
        var e2 = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => chain.Fit(text));
        StringAssert.Contains(e2.Message, "'Seed'");
    }

    private sealed class NoiseRow
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        public float[] Noise { get; set; } = Array.Empty<float>();
    }

    private static SchemaDefinition SchemaDefinitionFor(int len)
    {
        var def = SchemaDefinition.Create(typeof(NoiseRow));
        def[nameof(NoiseRow.Noise)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, len);
        return def;
    }

    /// <summary>Nearest item for a 16×16 latent: item latents are averaged over 2×2 blocks (the UNet resizes them the same way up to interpolation).</summary>
    private static int NearestItemAt16(float[] latent)
    {
        var items = ShapesTestModel.ItemLatents;
        int best = -1;
        double bestD = double.MaxValue;
        for (int k = 0; k < ShapesDataset.ItemCount; k++)
        {
            double d = 0;
            for (int c = 0; c < 4; c++)
                for (int y = 0; y < 16; y++)
                    for (int x = 0; x < 16; x++)
                    {
                        int b = k * 4096 + c * 1024;
                        double v = (items[b + 2 * y * 32 + 2 * x] + items[b + 2 * y * 32 + 2 * x + 1] + items[b + (2 * y + 1) * 32 + 2 * x] + items[b + (2 * y + 1) * 32 + 2 * x + 1]) / 4;
                        double diff = latent[c * 256 + y * 16 + x] - v;
                        d += diff * diff;
                    }
            if (d < bestD)
                (best, bestD) = (k, d);
        }
        return best;
    }

    private static string Fmt(double[] rgb) => $"({rgb[0]:F0}, {rgb[1]:F0}, {rgb[2]:F0})";
}
