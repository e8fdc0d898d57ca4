using System;
using System.Linq;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Tests.Randomness;

/// <summary>
/// Image-to-image with <see cref="NoiseOptions.Diffusers"/> continues one generator across EncodeImage and DenoiseLatents
/// in the order of diffusers' StableDiffusionImg2ImgPipeline (the encoder's sample, then the initial noise, then the
/// steps' noise), through <see cref="NoiseOptions.DrawsBefore"/> and <see cref="NoiseOptions.DrawsBeforeSteps"/>.
/// The fixture <c>Fixtures/Noise/img2img_diffusers_order.json</c> is made by <c>make_img2img_order.py</c> with PyTorch
/// over this model's own encoder outputs (<c>img2img_encoder_outputs.json</c>).
/// </summary>
[TestClass]
public sealed class ImageToImageNoiseOrderTests
{
    private const int Size = 64;
    private const int RowLength = 4 * 8 * 8;

    private static readonly ShapesItem[] s_items =
    {
        ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.White, ShapePosition.Center),
        ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Blue, BackgroundColor.White, ShapePosition.Center),
    };

    private sealed class NoiseRow
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        [VectorType(4, 8, 8)]
        public float[] Noise { get; set; } = Array.Empty<float>();
    }

    private static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesVariantModels.LatentParameters);

    private static JsonElement Case(JsonDocument doc, bool oneGenerator) =>
        doc.RootElement.GetProperty("cases").EnumerateArray().Single(c => c.GetProperty("one_generator").GetBoolean() == oneGenerator);

    private static IDataView Images(StableDiffusionModel model) => model.MLContext.Data.LoadFromEnumerable(new[]
    {
        new ImageRow64 { Prompt = "a green square", Seed = 7, Image = ShapesImages.Render(s_items[0], Size) },
        new ImageRow64 { Prompt = "a green square", Seed = 8, Image = ShapesImages.Render(s_items[1], Size) },
    });

    private static float[] Column(IDataView view, string column) =>
        view.GetColumn<VBuffer<float>>(column).SelectMany(v => v.DenseValues()).ToArray();

    private static void AssertBitEqual(float[] expected, float[] actual, string what)
    {
        string? difference = NoiseFixtures.FirstDifference(expected, actual);
        Assert.IsNull(difference, $"{what}: {difference}");
    }

    [TestMethod]
    public void TheFixturesInputsAreThisEncodersOutputs()
    {
        // The Python side starts from these float32 values; they must still be what the library's encoder returns.
        using var model = Load();
        using var doc = NoiseFixtures.Load("img2img_encoder_outputs.json");
        var rows = doc.RootElement.GetProperty("parameters").EnumerateArray().Select(NoiseFixtures.Floats).ToArray();
        var input = new ImageStageInput(Size, Size, ImageResizeMode.None, nameof(EncodeImageOptions), "resize it first.");
        using var encoder = new ImageEncoder(model, LatentSampling.Sample);
        var pixels = new float[3 * Size * Size];
        for (int i = 0; i < s_items.Length; i++)
        {
            input.Read(ShapesImages.Render(s_items[i], Size), 3, pixels, false, ImageStageInput.Rgb);
            AssertBitEqual(rows[i], encoder.RunEncoder(pixels, 1, Size, Size).ToArray(), $"encoder output of image {i}");
        }
        Assert.AreEqual(BitConverter.SingleToUInt32Bits(model.Info.VaeScalingFactor), doc.RootElement.GetProperty("scaling_factor").GetUInt32());
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void ImageToImage_Diffusers_StartsFromDiffusersInitialLatents_BitForBit(bool oneGenerator)
    {
        // diffusers (pipeline_stable_diffusion_img2img.py, prepare_latents): retrieve_latents(vae.encode(image), generator)
        // draws the encoder's sample, then randn_tensor(shape, generator) the initial noise, then add_noise at
        // timesteps[0] = 901 (DDIM, 10 steps, strength 1). EncodeImage with Diffusers() draws the first; DenoiseLatents with
        // DrawsBefore = 1 skips it and draws the second.
        using var model = Load();
        var ml = model.MLContext;
        using var doc = NoiseFixtures.Load("img2img_diffusers_order.json");
        var fixture = Case(doc, oneGenerator);
        var noise = NoiseOptions.Diffusers(oneGenerator);
        var data = Images(model);
        IDataView Run(NoiseOptions denoiseNoise) => ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.EncodeImage(model, "InitialLatents", "Image", new EncodeImageOptions { Width = Size, Height = Size, SeedColumnName = "Seed", Noise = noise, BatchSize = 2 }))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Width = Size, Height = Size, Steps = 10, Scheduler = "ddim", SeedColumnName = "Seed", InitialLatentsColumnName = "InitialLatents",
                Strength = 1f, BatchSize = 2, Noise = denoiseNoise,
            }))
            .Fit(data).Transform(data);
        var continued = Run(noise with { DrawsBefore = 1 });

        // The encoder's sample: mean + std·ε with ε the generator's first draw, times the scaling factor.
        AssertBitEqual(NoiseFixtures.Floats(fixture.GetProperty("x0_bits")), Column(continued, "InitialLatents"), "EncodeImage's sample");

        // add_noise(x0, ε, 901) with the library's DDIM scheduler on diffusers' x0 and ε: diffusers' initial latents.
        var start = NoiseFixtures.Floats(fixture.GetProperty("initial_latents_bits"));
        var scheduler = SchedulerFactory.Create("ddim", model.Info.SchedulerConfig);
        scheduler.SetTimesteps(10);
        Assert.AreEqual((float)doc.RootElement.GetProperty("timestep").GetInt32(), scheduler.Timesteps[0]);
        // The fixture's add_noise takes the library's ᾱ_901 (PyTorch 1.13's float32 linspace puts its own 2 ulps away;
        // make_img2img_order.py says why): the draws' order and the arithmetic are what is compared.
        Assert.AreEqual(doc.RootElement.GetProperty("library_alphas_cumprod_bits")[0].GetUInt32(), BitConverter.SingleToUInt32Bits(scheduler.Schedule.AlphasCumprod[901]));
        var added = new float[start.Length];
        scheduler.AddNoise(NoiseFixtures.Floats(fixture.GetProperty("x0_bits")), NoiseFixtures.Floats(fixture.GetProperty("noise_bits")), 0, added);
        AssertBitEqual(start, added, "add_noise at the first timestep");

        // DenoiseLatents from the same start given as its initial noise (DDIM's init sigma is 1, strength 1 keeps every
        // timestep, η = 0 draws no step noise): equal latents bit for bit mean an equal start.
        var given = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 2).Select(r => new NoiseRow
        {
            Prompt = "a green square", Seed = 7 + r, Noise = start.AsSpan(r * RowLength, RowLength).ToArray(),
        }));
        var fromStart = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Width = Size, Height = Size, Steps = 10, Scheduler = "ddim", SeedColumnName = "Seed", InitialNoiseColumnName = "Noise", BatchSize = 2, Noise = noise,
            }))
            .Fit(given).Transform(given);
        AssertBitEqual(Column(fromStart, "Latents"), Column(continued, "Latents"), "denoised from diffusers' initial latents");

        // Without DrawsBefore, DenoiseLatents' noise is the generator's first draw again: not diffusers' start.
        var restarted = Column(Run(noise), "Latents");
        Assert.IsNotNull(NoiseFixtures.FirstDifference(Column(fromStart, "Latents"), restarted), "DrawsBefore = 0 restarts the stream");
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void DrawsBefore_AndDrawsBeforeSteps_ContinueTheTorchStreamInDiffusersOrder(bool oneGenerator)
    {
        using var doc = NoiseFixtures.Load("img2img_diffusers_order.json");
        var fixture = Case(doc, oneGenerator);
        long[] seeds = fixture.GetProperty("seeds").EnumerateArray().Select(s => s.GetInt64()).ToArray();
        var initial = NoiseFixtures.Floats(fixture.GetProperty("noise_bits"));
        var next = fixture.GetProperty("next_draws_bits").EnumerateArray().Select(NoiseFixtures.Floats).ToArray();
        var options = NoiseOptions.Diffusers(oneGenerator);
        float[] Draw(BatchNoise batch)
        {
            var values = new float[seeds.Length * RowLength];
            batch.NextGaussian(values);
            return values;
        }

        // Image-to-image: the encoder's draw, the initial noise, then each stochastic step's draw.
        var img2img = options.With(1, 0).CreateBatch(seeds, RowLength);
        AssertBitEqual(initial, Draw(img2img), "initial noise after the encoder's sample");
        AssertBitEqual(next[0], Draw(img2img), "first step's noise");
        AssertBitEqual(next[1], Draw(img2img), "second step's noise");

        // Inpainting (StableDiffusionInpaintPipeline, strength < 1): image encode, initial noise, masked-image encode
        // (prepare_mask_latents), then the steps. PrepareInpainting draws third; DenoiseLatents skips it before its steps.
        AssertBitEqual(next[0], Draw(options.With(2, 0).CreateBatch(seeds, RowLength)), "the masked image's encoder draw");
        var inpaint = options.With(1, 1).CreateBatch(seeds, RowLength);
        AssertBitEqual(initial, Draw(inpaint), "initial noise");
        AssertBitEqual(next[1], Draw(inpaint), "first step's noise after the masked image's draw");
    }

    [TestMethod]
    public void TorchCpuSkip_LeavesTheGeneratorWhereTheDrawWould()
    {
        // Sizes around the 16-value blocks (a partial block takes 16 more outputs) and MT19937's 624-word regeneration.
        foreach (int n in new[] { 1, 3, 15, 16, 17, 31, 256, 623, 624, 625, 1000, 1248, 16387 })
        {
            var drawn = new TorchCpuNoise(1234);
            var skipped = new TorchCpuNoise(1234);
            var warmUp = new float[3]; // a scalar draw leaves a cached sample that must survive the skipped draw
            drawn.NextGaussian(warmUp);
            skipped.NextGaussian(warmUp);
            drawn.NextGaussian(new float[n]);
            skipped.Skip(n);
            foreach (int after in new[] { 1, 40 })
            {
                var a = new float[after];
                var b = new float[after];
                drawn.NextGaussian(a);
                skipped.NextGaussian(b);
                CollectionAssert.AreEqual(a, b, $"skip of {n} values, then a draw of {after}");
            }
        }
    }

    [TestMethod]
    public void OtherGenerators_SkipByDrawing_AndTheDefaultsSkipNothing()
    {
        long[] seeds = { 5, 6 };
        foreach (var options in new[] { NoiseOptions.Default, NoiseOptions.Automatic1111("NV") })
        {
            var reference = options.CreateBatch(seeds, 20);
            reference.NextGaussian(new float[40]);
            var second = new float[40];
            reference.NextGaussian(second);
            var continued = new float[40];
            (options with { DrawsBefore = 1 }).CreateBatch(seeds, 20).NextGaussian(continued);
            CollectionAssert.AreEqual(second, continued, $"{options.Generator}: DrawsBefore = 1 starts at the second draw");
        }
        Assert.AreEqual((0, 0), (NoiseOptions.Default.DrawsBefore, NoiseOptions.Default.DrawsBeforeSteps));
        Assert.AreEqual((0, 0), (NoiseOptions.Diffusers().DrawsBefore, NoiseOptions.Diffusers().DrawsBeforeSteps));
    }

    [TestMethod]
    public void NegativeCountsAreRefused_AndTheCountsAreSavedWithTheStage()
    {
        using var model = Load();
        var ml = model.MLContext;
        var ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Noise = NoiseOptions.Diffusers() with { DrawsBefore = -1 } }));
        StringAssert.Contains(ex.Message, "Noise.DrawsBefore");
        ex = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            ml.Transforms.EncodeImage(model, "Z", "Image", new EncodeImageOptions { Width = Size, Height = Size, Noise = NoiseOptions.Diffusers() with { DrawsBeforeSteps = -2 } }));
        StringAssert.Contains(ex.Message, "Noise.DrawsBeforeSteps");

        var data = Images(model);
        var noise = NoiseOptions.Diffusers() with { DrawsBefore = 1, DrawsBeforeSteps = 1 };
        var fitted = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = Size, Height = Size, Steps = 2, SeedColumnName = "Seed", Noise = noise }))
            .Fit(data);
        string json = DiffusionPipelineDefinition.FromTransformer(fitted, data.Schema).ToJson();
        StringAssert.Contains(json, "\"DrawsBefore\": 1");
        StringAssert.Contains(json, "\"DrawsBeforeSteps\": 1");
        var stage = DiffusionPipelineDefinition.FromJson(json).Stages.OfType<DenoiseLatentsStageDefinition>().Single();
        Assert.AreEqual(noise, stage.Noise);

        // A record written before the fields existed reads 0: today's behaviour.
        var node = System.Text.Json.Nodes.JsonNode.Parse(json)!;
        foreach (var s in node["Stages"]!.AsArray())
        {
            if (s!["Noise"] is System.Text.Json.Nodes.JsonObject n)
            {
                n.Remove("DrawsBefore");
                n.Remove("DrawsBeforeSteps");
            }
        }
        var old = DiffusionPipelineDefinition.FromJson(node.ToJsonString()).Stages.OfType<DenoiseLatentsStageDefinition>().Single();
        Assert.AreEqual(NoiseOptions.Diffusers(), old.Noise);
    }
}

/// <summary>Shorthand for the two skip counts.</summary>
internal static class NoiseOptionsTestExtensions
{
    public static NoiseOptions With(this NoiseOptions options, int drawsBefore, int drawsBeforeSteps) =>
        options with { DrawsBefore = drawsBefore, DrawsBeforeSteps = drawsBeforeSteps };
}
