using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Shapes.Building;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Randomness;

/// <summary>
/// The <c>Noise</c> option of the stages that draw noise: DenoiseLatents' initial and step noise follow PyTorch's CPU
/// generator as diffusers draws it (fixtures of <c>Fixtures/Noise</c>, made with PyTorch), batch policies, and the
/// other stages' ε.
/// </summary>
[TestClass]
public sealed class NoiseOptionStageTests
{
    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        [VectorType]
        public float[]? Noise { get; set; }
    }

    private static float[][] Latents(StableDiffusionModel model, IEnumerable<Row> rows, DenoiseLatentsOptions options)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var view = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
            .Fit(data).Transform(data);
        return view.GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
    }

    private static float[] TorchFixture(string shape, long seed, out JsonElement element, out JsonDocument doc)
    {
        doc = NoiseFixtures.Load("torch_cpu_avx2.json");
        element = doc.RootElement.GetProperty("cases").EnumerateArray()
            .Single(e => e.GetProperty("seed").GetInt64() == seed && e.GetProperty("shape").ToString() == shape);
        return element.TryGetProperty("bits", out var bits) ? NoiseFixtures.Floats(bits) : Array.Empty<float>();
    }

    [TestMethod]
    public void TinySd_Seed42_TorchCpu_StartsFromTorchRandnOf1x4x32x32()
    {
        // tiny-sd's README: its latents are torch.Generator().manual_seed(42); torch.randn((1, 4, 32, 32)). The fixture
        // holds that tensor's SHA-256 (PyTorch 1.13, AVX2 kernel); a run with Noise = Diffusers() and seed 42 must equal a
        // run whose initial noise is given as exactly that tensor (DDIM, eta 0: no step noise, init sigma 1).
        string dir = SharedModels.RequireTinySd();
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), dir);
        int f = model.Info.VaeSpatialFactor;
        TorchFixture("[1,4,32,32]", 42, out var fixture, out var doc);
        using (doc)
        {
            var torch = new float[4 * 32 * 32];
            new TorchCpuNoise(42).NextGaussian(torch);
            Assert.AreEqual(fixture.GetProperty("sha256").GetString(), NoiseFixtures.Sha256(torch), "the given noise is torch.randn's");
            DenoiseLatentsOptions Options(NoiseOptions noise, string? noiseColumn = null) => new()
            {
                Width = 32 * f, Height = 32 * f, Steps = 2, Scheduler = "ddim", SeedColumnName = "Seed", BatchSize = 1, Noise = noise, InitialNoiseColumnName = noiseColumn,
            };
            var seeded = Latents(model, new[] { new Row { Prompt = "a cat", Seed = 42, Noise = new float[4096] } }, Options(NoiseOptions.Diffusers()));
            var given = Latents(model, new[] { new Row { Prompt = "a cat", Seed = 1, Noise = torch } }, Options(NoiseOptions.Default, "Noise"));
            CollectionAssert.AreEqual(given[0], seeded[0]);
            var library = Latents(model, new[] { new Row { Prompt = "a cat", Seed = 42, Noise = new float[4096] } }, Options(NoiseOptions.Default));
            CollectionAssert.AreNotEqual(library[0], seeded[0], "the library's generator is another stream");
        }
    }

    [TestMethod]
    public void GeneratorPerBatch_IsOneTorchRandnOfTheWholeBatchShape()
    {
        // diffusers with one generator: torch.randn((2, 4, 8, 9), generator=manual_seed(0)) covers both rows (fixture).
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var torch = TorchFixture("[2,4,8,9]", 0, out _, out var doc);
        using (doc)
        {
            const int row = 4 * 8 * 9;
            DenoiseLatentsOptions Options(NoiseOptions noise, string? noiseColumn = null) => new()
            {
                Width = 72, Height = 64, Steps = 3, Scheduler = "ddim", SeedColumnName = "Seed", BatchSize = 2, Noise = noise, InitialNoiseColumnName = noiseColumn,
            };
            var seeded = Latents(model, new[] { new Row { Prompt = "a red circle", Seed = 0, Noise = new float[row] }, new Row { Prompt = "a blue square", Seed = 5, Noise = new float[row] } },
                Options(NoiseOptions.Diffusers(oneGeneratorForBatch: true)));
            var given = Latents(model, new[]
            {
                new Row { Prompt = "a red circle", Noise = torch[..row] },
                new Row { Prompt = "a blue square", Noise = torch[row..] },
            }, Options(NoiseOptions.Default, "Noise"));
            CollectionAssert.AreEqual(given[0], seeded[0]);
            CollectionAssert.AreEqual(given[1], seeded[1], "the second row continues the first row's generator, its own seed unused");
        }
    }

    [TestMethod]
    public void GeneratorPerRow_ARowInABatchEqualsTheRowAlone_WithEulerAncestral()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var rows = new[] { new Row { Prompt = "a red circle", Seed = 11 }, new Row { Prompt = "a green square", Seed = 12 }, new Row { Prompt = "a blue triangle", Seed = 13 } };
        foreach (var r0 in rows)
            r0.Noise = new float[256];
        foreach (var noise in new[] { NoiseOptions.Diffusers(), NoiseOptions.Automatic1111("NV", 31337), NoiseOptions.Automatic1111("CPU") })
        {
            DenoiseLatentsOptions Options(int batch) => new() { Width = 64, Height = 64, Steps = 4, Scheduler = "euler-a", SeedColumnName = "Seed", BatchSize = batch, Noise = noise };
            var together = Latents(model, rows, Options(3));
            for (int r = 0; r < rows.Length; r++)
                CollectionAssert.AreEqual(Latents(model, new[] { rows[r] }, Options(1))[0], together[r], $"{noise.Generator}, row {r}");
        }
    }

    [TestMethod]
    public void EulerAncestral_TorchCpu_EqualsAReferenceLoopOverTheTorchStream()
    {
        // diffusers' loop with generator=torch.Generator().manual_seed(42): latents = randn((1, 4, 8, 8)) · init_noise_sigma,
        // then per step ε̂ = unet(scale_model_input(latents, t), t) and scheduler.step(ε̂, t, latents, generator), whose
        // noise is randn_tensor(model_output.shape, generator) — the next draw of the same generator. The fixture holds
        // four consecutive randn(256) draws of manual_seed(42) (PyTorch 1.13): the initial noise and three steps' noise.
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        using var doc = NoiseFixtures.Load("torch_cpu_avx2.json");
        var sequence = doc.RootElement.GetProperty("sequences").EnumerateArray()
            .Single(e => e.GetProperty("seed").GetInt64() == 42 && e.GetProperty("sizes").ToString() == "[256,256,256,256]");
        var draws = sequence.GetProperty("draws").EnumerateArray().Select(NoiseFixtures.Floats).ToArray();

        const string prompt = "a yellow circle";
        var actual = Latents(model, new[] { new Row { Prompt = prompt, Seed = 42, Noise = new float[256] } },
            new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 3, GuidanceScale = 1f, Scheduler = "euler-a", SeedColumnName = "Seed", Noise = NoiseOptions.Diffusers() })[0];

        var scheduler = SchedulerFactory.Create("euler-a", model.Info.SchedulerConfig);
        scheduler.SetTimesteps(3);
        var cond = ShapesTestModel.Encode(prompt);
        var latents = draws[0].Select(v => v * scheduler.InitNoiseSigma).ToArray();
        var scaled = new float[latents.Length];
        var stream = new FixtureStream(draws.Skip(1));
        for (int i = 0; i < scheduler.Timesteps.Length; i++)
        {
            scheduler.ScaleModelInput(latents, scaled, i);
            var eps = ShapesTestModel.PredictNoise(scaled, new[] { scheduler.Timesteps[i] }, cond, 1, 8, 8);
            scheduler.Step(eps, i, latents, stream);
        }
        Assert.AreEqual(3, stream.Taken, "one draw per stochastic step");
        for (int k = 0; k < latents.Length; k++)
            Assert.AreEqual(latents[k], actual[k], 1e-5f * Math.Max(1f, Math.Abs(latents[k])), $"value {k}");

        // Without the stream's step noise the result is far off: the check sees the steps' draws.
        var library = Latents(model, new[] { new Row { Prompt = prompt, Seed = 42, Noise = new float[256] } },
            new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 3, GuidanceScale = 1f, Scheduler = "euler-a", SeedColumnName = "Seed" })[0];
        Assert.IsTrue(library.Zip(actual, (a, b) => Math.Abs(a - b)).Max() > 0.1f);
    }

    [TestMethod]
    public void DefaultNoise_GivesTodaysResultsAndUnknownValuesAreRefused()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var rows = new[] { new Row { Prompt = "a red circle", Seed = 3, Noise = new float[256] } };
        DenoiseLatentsOptions Options(NoiseOptions? noise) => noise is null
            ? new() { Width = 64, Height = 64, Steps = 3, Scheduler = "euler-a", SeedColumnName = "Seed" }
            : new() { Width = 64, Height = 64, Steps = 3, Scheduler = "euler-a", SeedColumnName = "Seed", Noise = noise };
        CollectionAssert.AreEqual(Latents(model, rows, Options(null))[0], Latents(model, rows, Options(new NoiseOptions()))[0]);
        var ml = model.MLContext;
        var bad = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.DenoiseLatents(model, "L", "E", Options(new NoiseOptions { Generator = (NoiseGenerator)9 })));
        Assert.AreEqual("Noise", bad.ParamName);
        StringAssert.Contains(bad.Message, "Noise.Generator");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.AddDiffusionNoise(model, "X", "Z", new AddDiffusionNoiseOptions { Timestep = 3, Noise = new NoiseOptions { BatchPolicy = (NoiseBatchPolicy)4 } }));
        Assert.ThrowsExactly<ArgumentNullException>(() => ml.Transforms.EncodeImage(model, "Z", "Image", new EncodeImageOptions { Width = 64, Height = 64, Noise = null! }));
    }

    [TestMethod]
    public void AddDiffusionNoise_TorchCpu_DrawsTorchRandnFromTheRowsSeed()
    {
        // x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε with ε = torch.randn((1, 4, 8, 8), generator=manual_seed(0)) (fixture).
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var torch = TorchFixture("[1,4,8,8]", 0, out _, out var doc);
        using (doc)
        {
            var ml = model.MLContext;
            var data = ml.Data.LoadFromEnumerable(new[] { new LatentRow { Seed = 0, Latents = new float[256] } });
            var view = ml.Transforms.AddDiffusionNoise(model, "Noisy", "Latents",
                new AddDiffusionNoiseOptions { Timestep = 500, SeedColumnName = "Seed", NoiseOutputColumnName = "Eps", Noise = NoiseOptions.Diffusers() }).Fit(data).Transform(data);
            CollectionAssert.AreEqual(torch, view.GetColumn<VBuffer<float>>("Eps").Single().DenseValues().ToArray());
        }
    }

    [TestMethod]
    public void EncodeImage_TorchCpu_SamplesWithTheFirstDrawOfTheRowsGenerator()
    {
        // diffusers' DiagonalGaussianDistribution.sample(generator): mean + std·randn_tensor(mean.shape, generator). The
        // latent-parameters variant of the Shapes encoder has a constant log-variance, so ε = (sample − mean)/std.
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesVariantModels.LatentParameters);
        var ml = model.MLContext;
        var torch = TorchFixture("[1,4,8,8]", 0, out _, out var doc);
        using (doc)
        {
            var image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Blue, BackgroundColor.White, ShapePosition.Center), 64);
            var data = ml.Data.LoadFromEnumerable(new[] { new ImageRow64 { Prompt = "a blue square", Seed = 0, Image = image } });
            float[] Encode(EncodeImageOptions o) => ml.Transforms.EncodeImage(model, "Z", "Image", o).Fit(data).Transform(data).GetColumn<VBuffer<float>>("Z").Single().DenseValues().ToArray();
            var mean = Encode(new EncodeImageOptions { Width = 64, Height = 64, SeedColumnName = "Seed", Sampling = LatentSampling.Mean });
            var sample = Encode(new EncodeImageOptions { Width = 64, Height = 64, SeedColumnName = "Seed", Noise = NoiseOptions.Diffusers() });
            float std = MathF.Exp(0.5f * ShapesGraphs.LatentLogVariance) * model.Info.VaeScalingFactor;
            for (int k = 0; k < torch.Length; k++)
                Assert.AreEqual(torch[k], (sample[k] - mean[k]) / std, 2e-3f * Math.Max(1f, Math.Abs(torch[k])), $"value {k}");
        }
    }

    [TestMethod]
    public void TheNoiseOptionIsSavedWithEachStageAndOldRecordsReadTheDefault()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new LatentRow { Seed = 1, Latents = new float[256] } });
        var a1111 = NoiseOptions.Automatic1111("NV", 31337);
        var fitted = ml.Transforms.AddDiffusionNoise(model, "Noisy", "Latents", new AddDiffusionNoiseOptions { Timestep = 10, SeedColumnName = "Seed", Noise = a1111 }).Fit(data);
        string json = DiffusionPipelineDefinition.FromTransformer(fitted, data.Schema).ToJson();
        StringAssert.Contains(json, "\"Generator\": \"Philox\"");
        StringAssert.Contains(json, "\"StepNoiseSeedOffset\": 31337");
        var stage = (AddDiffusionNoiseStageDefinition)DiffusionPipelineDefinition.FromJson(json).Stages.Single();
        Assert.AreEqual(a1111, stage.Noise);

        // A record written before the field existed reads as the library's generator: today's behaviour.
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!;
        node["Stages"]![0]!.AsObject().Remove("Noise");
        var old = (AddDiffusionNoiseStageDefinition)DiffusionPipelineDefinition.FromJson(node.ToJsonString()).Stages.Single();
        Assert.AreEqual(NoiseOptions.Default, old.Noise);
    }

    private sealed class LatentRow
    {
        public int Seed { get; set; }

        [VectorType(4, 8, 8)]
        public float[] Latents { get; set; } = Array.Empty<float>();
    }

    /// <summary>The fixture's draws, one per <see cref="INoiseSource.NextGaussian"/> call, each of the draw's own size.</summary>
    private sealed class FixtureStream : INoiseSource
    {
        private readonly Queue<float[]> _draws;

        public FixtureStream(IEnumerable<float[]> draws) => _draws = new Queue<float[]>(draws);

        public int Taken { get; private set; }

        public void NextGaussian(Span<float> destination)
        {
            var next = _draws.Dequeue();
            Assert.AreEqual(next.Length, destination.Length, "a step draws the latent shape");
            next.CopyTo(destination);
            Taken++;
        }
    }
}
