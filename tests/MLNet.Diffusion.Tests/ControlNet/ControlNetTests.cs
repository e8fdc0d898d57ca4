using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.ControlNet;

/// <summary>
/// ControlNet on the shared tiny export (../shared/models/tiny-sd-controlnet: diffusers' ControlNetModel.from_unet of the
/// tiny-sd UNet, random weights, and that UNet re-exported with the residual inputs): loading in both namings, the
/// residuals' plumbing, scales, the guidance window, guess mode, MultiControlNet sums and batching.
/// </summary>
[TestClass]
public sealed class ControlNetTests
{
    internal const int Size = 64; // 64×64 pixels, a 32×32 latent with the tiny VAE's factor 2
    internal const int ImageLength = 3 * Size * Size;
    private const int Steps = 4;

    internal sealed class Row
    {
        public string Prompt { get; set; } = "a white circle";

        public int Seed { get; set; }

        [VectorType(ImageLength)]
        public float[] Control { get; set; } = Array.Empty<float>();

        [VectorType(ImageLength)]
        public float[] Control2 { get; set; } = Array.Empty<float>();

        public float Scale { get; set; } = 1f;
    }

    internal static string RequireFolder() => SharedModels.Require("tiny-sd-controlnet");

    /// <summary>A white disk (or, with <paramref name="square"/>, a square outline) on black, [3, H, W] in [0, 1].</summary>
    internal static float[] ControlImage(bool square = false, int shift = 0)
    {
        var v = new float[ImageLength];
        for (int y = 0; y < Size; y++)
        {
            for (int x = 0; x < Size; x++)
            {
                int dx = x - 32 - shift, dy = y - 32;
                bool on = square
                    ? Math.Max(Math.Abs(dx), Math.Abs(dy)) is >= 16 and <= 19
                    : dx * dx + dy * dy <= 18 * 18;
                if (on)
                {
                    for (int c = 0; c < 3; c++)
                        v[c * Size * Size + y * Size + x] = 1f;
                }
            }
        }
        return v;
    }

    internal static Row[] Rows(params int[] seeds) => seeds.Select((s, i) => new Row
    {
        Seed = s,
        Control = ControlImage(shift: i),
        Control2 = ControlImage(square: true),
    }).ToArray();

    internal static DenoiseLatentsOptions Options(params ControlNetUnit[] units) => new()
    {
        Steps = Steps,
        Width = Size,
        Height = Size,
        SeedColumnName = "Seed",
        GuidanceScale = 5f,
        BatchSize = 4,
        ControlNets = units,
    };

    internal static float[][] Latents(StableDiffusionModel model, Row[] rows, DenoiseLatentsOptions options)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options));
        var result = pipeline.Fit(data).Transform(data);
        return result.GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
    }

    private static StableDiffusionModel Load(string? dir = null) => StableDiffusionModel.Load(new MLContext(seed: 1), dir ?? RequireFolder());

    private static double MaxAbsDiff(float[] a, float[] b) => a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();

    [TestMethod]
    public void ReadsTheResidualsFromTheGraphsInDiffusersNaming()
    {
        using var model = Load();
        var residuals = model.Info.ControlNetResiduals;
        // README of the export: 6 down residuals + mid; channels block_out_channels (32, 64); block 0's downsampler and
        // everything after it at half the latent size.
        CollectionAssert.AreEqual(Enumerable.Range(0, 6).Select(i => $"down_block_{i}_additional_residual").Append("mid_block_additional_residual").ToArray(),
            residuals.Select(r => r.Name).ToArray());
        CollectionAssert.AreEqual(new[] { 32, 32, 32, 32, 64, 64, 64 }, residuals.Select(r => r.Channels).ToArray());
        CollectionAssert.AreEqual(new[] { 1, 1, 1, 2, 2, 2, 2 }, residuals.Select(r => r.Downscale).ToArray());
        Assert.IsTrue(model.Info.HasControlNet);
        Assert.IsNotNull(model.ControlNet);
        Assert.AreEqual(Path.GetFullPath(Path.Combine(RequireFolder(), "controlnet", "model.onnx")), model.ControlNet!.Path);
        Assert.AreSame(model.ControlNet, model.LoadControlNet(Path.Combine(RequireFolder(), "controlnet")), "the folder's own ControlNet given by path is the same one");
    }

    [TestMethod]
    public void AControlNetChangesTheResultAndScaleZeroEqualsNoControlNetBitForBit()
    {
        using var model = Load();
        var rows = Rows(3, 4);
        var none = Latents(model, rows, Options());
        var zero = Latents(model, rows, Options(new ControlNetUnit { ImageColumnName = "Control", Scale = 0f }));
        var one = Latents(model, rows, Options(new ControlNetUnit { ImageColumnName = "Control", Scale = 1f }));
        for (int r = 0; r < rows.Length; r++)
        {
            CollectionAssert.AreEqual(none[r], zero[r], $"row {r}: scale 0 must equal no ControlNet bit for bit");
            Assert.IsTrue(one[r].All(float.IsFinite));
            Assert.IsTrue(MaxAbsDiff(none[r], one[r]) > 1e-3, $"row {r}: the ControlNet's residuals must change the latents");
        }
    }

    [TestMethod]
    public void AResidualUnetWithoutControlNetMatchesThePlainUnetOfTheSameWeights()
    {
        // unet/ of tiny-sd-controlnet holds the same weights as tiny-sd's UNet; with zero residuals it is that UNet.
        string plainDir = SharedModels.RequireTinySd();
        using var model = Load();
        using var plain = Load(plainDir);
        Assert.AreEqual(0, plain.Info.ControlNetResiduals.Count);
        var rows = Rows(5);
        var withZeros = Latents(model, rows, Options());
        var reference = Latents(plain, rows, Options());
        Assert.IsTrue(MaxAbsDiff(withZeros[0], reference[0]) < 1e-4, $"max |Δ| {MaxAbsDiff(withZeros[0], reference[0])}");
    }

    [TestMethod]
    public void ScaleColumnGivesEachRowItsOwnScale()
    {
        using var model = Load();
        var rows = Rows(3, 4);
        rows[0].Scale = 0f;
        rows[1].Scale = 0.5f;
        var perRow = Latents(model, rows, Options(new ControlNetUnit { ImageColumnName = "Control", ScaleColumnName = "Scale", Scale = 7f }));
        var none = Latents(model, rows, Options());
        var half = Latents(model, rows, Options(new ControlNetUnit { ImageColumnName = "Control", Scale = 0.5f }));
        CollectionAssert.AreEqual(none[0], perRow[0], "row 0's scale 0 is no ControlNet");
        CollectionAssert.AreEqual(half[1], perRow[1], "row 1's scale 0.5 is the option's 0.5");
    }

    [TestMethod]
    public void TheGuidanceWindowFollowsDiffusersKeepRulePerStep()
    {
        using var model = Load();
        var rows = Rows(3);
        const int steps = 10;
        var ran = new List<long>();
        long last = model.ControlNet!.RunCount;
        var options = new DenoiseLatentsOptions
        {
            Steps = steps,
            Width = Size,
            Height = Size,
            SeedColumnName = "Seed",
            GuidanceScale = 5f,
            ControlNets = new[] { new ControlNetUnit { ImageColumnName = "Control", GuidanceStart = 0.2f, GuidanceEnd = 0.7f } },
            OnStepEnd = _ =>
            {
                long now = model.ControlNet.RunCount;
                ran.Add(now - last);
                last = now;
            },
        };
        Latents(model, rows, options);
        // keep_i = 1 − float(i/10 < 0.2 or (i+1)/10 > 0.7): steps 2…6 (diffusers StableDiffusionControlNetPipeline).
        var expected = Enumerable.Range(0, steps).Select(i => (long)(i / 10.0 < 0.2 || (i + 1) / 10.0 > 0.7 ? 0 : 1)).ToArray();
        CollectionAssert.AreEqual(new long[] { 0, 0, 1, 1, 1, 1, 1, 0, 0, 0 }, expected);
        CollectionAssert.AreEqual(expected, ran.ToArray());
    }

    [TestMethod]
    public void GuessModeRunsTheConditionalHalfOnlyWithLogspaceScales()
    {
        using var model = Load();
        var info = model.Info;
        var run = new ControlNetRun(model.ControlNet!, 0f, 1f);
        using var controlNet = new ControlNetConditioning(info.ControlNetResiduals, new[] { run }, guessMode: true, info.LatentChannels, 32, 32, Size, Size, info.HiddenSize);
        // torch.logspace(-1, 0, 7) (diffusers ControlNetModel.forward, guess mode): 10^(-1 + k/6).
        var expectedScales = new[] { 0.1f, 0.14677993f, 0.21544347f, 0.31622777f, 0.46415888f, 0.68129206f, 1f };
        for (int k = 0; k < 7; k++)
            Assert.AreEqual(expectedScales[k], controlNet.GuessScales[k], 1e-6f);
        var probe = new ResidualProbe();
        int count = 2;
        controlNet.Ensure(count);
        for (int r = 0; r < count; r++)
        {
            ControlImage(shift: r).CopyTo(controlNet.Image(0, r));
            controlNet.SetScale(0, r, 1f);
        }
        long before = model.ControlNet!.RunCount;
        RunLoop(model, new IUnetConditioning[] { controlNet, probe }, count, steps: 2);
        Assert.AreEqual(2, model.ControlNet.RunCount - before, "one ControlNet run per step");
        foreach (var (name, values, rows) in probe.Seen)
        {
            int per = values.Length / rows;
            Assert.AreEqual(2 * count, rows);
            Assert.IsTrue(values.AsSpan(0, count * per).IndexOfAnyExcept(0f) < 0, $"{name}: the unconditional half gets zeros in guess mode");
            Assert.IsTrue(values.AsSpan(count * per).IndexOfAnyExcept(0f) >= 0, $"{name}: the conditional half gets the residuals");
        }
    }

    [TestMethod]
    public void TwoControlNetsSumTheirScaledResiduals()
    {
        using var model = Load();
        var info = model.Info;
        float[] Step0(params (float Scale, bool Square)[] nets)
        {
            var runs = nets.Select(_ => new ControlNetRun(model.ControlNet!, 0f, 1f)).ToArray();
            using var c = new ControlNetConditioning(info.ControlNetResiduals, runs, guessMode: false, info.LatentChannels, 32, 32, Size, Size, info.HiddenSize);
            c.Ensure(1);
            for (int n = 0; n < nets.Length; n++)
            {
                ControlImage(nets[n].Square).CopyTo(c.Image(n, 0));
                c.SetScale(n, 0, nets[n].Scale);
            }
            var probe = new ResidualProbe();
            RunLoop(model, new IUnetConditioning[] { c, probe }, 1, steps: 1);
            return probe.Seen.SelectMany(s => s.Values).ToArray();
        }

        var a = Step0((0.7f, false));
        var b = Step0((0.4f, true));
        var both = Step0((0.7f, false), (0.4f, true));
        Assert.IsTrue(a.Any(v => v != 0f) && b.Any(v => v != 0f));
        double worst = 0;
        for (int i = 0; i < both.Length; i++)
            worst = Math.Max(worst, Math.Abs(both[i] - (a[i] + b[i])) / (1e-3 + Math.Abs(a[i] + b[i])));
        Assert.IsTrue(worst < 1e-5, $"MultiControlNet: residuals = Σ scale_n · residual_n (relative error {worst})");

        // End to end: the same ControlNet twice at 0.5 and 0.5 is the ControlNet once at 1 (up to rounding).
        var rows = Rows(9);
        rows[0].Control2 = rows[0].Control;
        var twice = Latents(model, rows, Options(new ControlNetUnit { ImageColumnName = "Control", Scale = 0.5f }, new ControlNetUnit { ImageColumnName = "Control2", Scale = 0.5f }));
        var once = Latents(model, rows, Options(new ControlNetUnit { ImageColumnName = "Control", Scale = 1f }));
        Assert.IsTrue(MaxAbsDiff(twice[0], once[0]) < 1e-4, $"max |Δ| {MaxAbsDiff(twice[0], once[0])}");
    }

    [TestMethod]
    public void ARowGivesTheSameLatentsAloneAndInABatch()
    {
        using var model = Load();
        var rows = Rows(11, 12, 13);
        var unit = new ControlNetUnit { ImageColumnName = "Control", Scale = 0.8f };
        var batched = Latents(model, rows, Options(unit));
        for (int r = 0; r < rows.Length; r++)
        {
            var alone = Latents(model, new[] { rows[r] }, Options(unit));
            CollectionAssert.AreEqual(alone[0], batched[r], $"row {r}: alone and in a batch of 3 (max |Δ| {MaxAbsDiff(batched[r], alone[0])})");
        }
    }

    [TestMethod]
    public void OnnxStackNamingAndASeparateControlNetGiveTheSameResult()
    {
        // OnnxStack: unet/ is the plain UNet, controlnet/ the UNet with residual inputs; the ControlNet is a separate model.
        string source = RequireFolder();
        string plainUnet = Path.Combine(SharedModels.RequireTinySd(), "unet");
        string dir = Path.Combine(Path.GetTempPath(), $"mlnet-diffusion-onnxstack-{Guid.NewGuid():N}");
        try
        {
            foreach (string sub in new[] { "scheduler", "text_encoder", "tokenizer", "vae_decoder", "vae_encoder" })
                CopyDirectory(Path.Combine(source, sub), Path.Combine(dir, sub));
            CopyDirectory(plainUnet, Path.Combine(dir, "unet"));
            CopyDirectory(Path.Combine(source, "unet"), Path.Combine(dir, "controlnet"));
            File.WriteAllText(Path.Combine(dir, "model_index.json"), """{ "_class_name": "OnnxStableDiffusionPipeline" }""");

            var rows = Rows(21);
            float[] expected;
            using (var diffusers = Load())
                expected = Latents(diffusers, rows, Options(new ControlNetUnit { ImageColumnName = "Control" }))[0];

            using var model = Load(dir);
            Assert.IsFalse(model.Info.HasControlNet);
            Assert.IsNull(model.ControlNet);
            Assert.AreEqual(7, model.Info.ControlNetResiduals.Count);
            var unit = new ControlNetUnit { ModelPath = Path.Combine(source, "controlnet", "model.onnx"), ImageColumnName = "Control" };
            var actual = Latents(model, rows, Options(unit))[0];
            CollectionAssert.AreEqual(new[] { 1, 1, 1, 2, 2, 2, 2 }, model.Info.ControlNetResiduals.Select(r => r.Downscale).ToArray(), "read by a probe run of the ControlNet");
            CollectionAssert.AreEqual(expected, actual, "the same graphs in OnnxStack's naming give the same latents");
            // Without a ControlNet this folder runs its plain unet/.
            var plain = Latents(model, rows, Options());
            Assert.IsTrue(plain.All(p => p.All(float.IsFinite)));
        }
        finally
        {
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void AControlNetThatDoesNotFitTheUnetIsRefusedNamingBoth()
    {
        string controlNet = Path.Combine(RequireFolder(), "controlnet", "model.onnx");
        using var plain = Load(SharedModels.RequireTinySd());
        var e = Assert.ThrowsExactly<ModelContractException>(() => plain.LoadControlNet(controlNet));
        StringAssert.Contains(e.Message, controlNet);
        StringAssert.Contains(e.Message, Path.Combine("tiny-sd", "unet", "model.onnx"));

        using var model = Load();
        string residualUnet = Path.Combine(RequireFolder(), "unet", "model.onnx");
        var notControlNet = Assert.ThrowsExactly<ModelContractException>(() => model.LoadControlNet(residualUnet));
        StringAssert.Contains(notControlNet.Message, "not a ControlNet");
        StringAssert.Contains(notControlNet.Message, residualUnet);
    }

    [TestMethod]
    public void BadOptionsAndInputsAreNamed()
    {
        using var model = Load();
        var ml = model.MLContext;
        var window = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Options(new ControlNetUnit { ImageColumnName = "Control", GuidanceStart = 0.6f, GuidanceEnd = 0.5f })));
        StringAssert.Contains(window.Message, "GuidanceStart 0.6");
        Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = Size, Height = Size, ControlNetGuessMode = true }));

        var rows = Rows(1);
        rows[0].Control[5] = 2f;
        var bad = Assert.ThrowsExactly<InvalidOperationException>(() => Latents(model, rows, Options(new ControlNetUnit { ImageColumnName = "Control" })));
        StringAssert.Contains(bad.Message, "'Control'");
        StringAssert.Contains(bad.Message, "[0, 1]");

        var data = ml.Data.LoadFromEnumerable(Rows(1));
        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Options(new ControlNetUnit { ImageColumnName = "Nope" }))).Fit(data));
        StringAssert.Contains(missing.Message, "Nope");
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from))
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
    }

    /// <summary>Runs the denoising loop directly on random embeddings with the given conditionings.</summary>
    private static void RunLoop(StableDiffusionModel model, IUnetConditioning[] conditionings, int count, int steps)
    {
        var info = model.Info;
        var random = new Random(3);
        var embeddings = Enumerable.Range(0, count * 2 * info.SequenceLength * info.HiddenSize).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var scheduler = MLNet.Diffusion.Schedulers.SchedulerFactory.CreateDefault(info.SchedulerConfig);
        using var denoiser = new LatentDenoiser(model, new DenoiseSettings(steps, 5f, Size, Size, scheduler, null, default), conditionings);
        var latents = new float[count * denoiser.LatentLength];
        denoiser.Run(new DenoiseBatch(count, 0, embeddings, info.SequenceLength, Enumerable.Range(1, count).Select(i => (long)i).ToArray(), latents));
    }

    /// <summary>Records the UNet's residual inputs as the first step binds them (it runs after the ControlNet conditioning).</summary>
    private sealed class ResidualProbe : IUnetConditioning
    {
        private UnetInputs? _inputs;

        public List<(string Name, float[] Values, int Rows)> Seen { get; } = new();

        public void DeclareInputs(UnetInputs inputs) => _inputs = inputs;

        public void BeforeUnet(in UnetStep step)
        {
            if (Seen.Count > 0)
                return;
            for (int i = 0; i < _inputs!.Names.Count; i++)
            {
                if (ControlNetGraphs.IsResidualName(_inputs.Names[i]))
                    Seen.Add((_inputs.Names[i], _inputs.Buffers[i].FloatSpan.ToArray(), _inputs.UnetRows));
            }
        }
    }
}
