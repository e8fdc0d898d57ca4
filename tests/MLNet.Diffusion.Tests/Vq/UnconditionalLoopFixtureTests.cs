using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>
/// The library's unconditional routes against diffusers' own loops (Vq/Fixtures/make_unconditional_loop_fixture.py, which
/// copies diffusers v0.35.2's <c>LDMPipeline.__call__</c> (pipelines/deprecated/latent_diffusion_uncond/
/// pipeline_latent_diffusion_uncond.py), <c>DDPMPipeline.__call__</c> (pipelines/ddpm/pipeline_ddpm.py), <c>randn_tensor</c>
/// (utils/torch_utils.py) and the DDIM/DDPM schedulers' <c>__init__</c>/<c>set_timesteps</c>/<c>step</c> verbatim), on the
/// real shared exports: tiny-ldm-vq (VQModel + UNet2DModel, DDIM with clip_sample) and tiny-ddpm-pixel (UNet2DModel in pixel
/// space, DDPM with fixed_small variance noise). The script replays the loop with the UNet's answers dumped from here, from
/// <c>torch.Generator().manual_seed(seed)</c> per row (a list of generators, diffusers' per-image seeding), so the initial
/// noise, DDPM's per-step noise and every scheduler step are diffusers' own; it checks at each step that its sample equals
/// the UNet input dumped from the library. Here every step's UNet input, the final latents and the image bytes must equal
/// the script's.
/// </summary>
[TestClass]
public sealed class UnconditionalLoopFixtureTests
{
    private const int Rows = 2;
    private const int Size = 32;
    private static readonly int[] s_seeds = { 42, 1234 };

    /// <summary>The two routes: fixture prefix, shared folder, steps.</summary>
    private static (string Folder, int Steps) Route(string name) => name switch
    {
        "ldm" => (UnconditionalModels.RequireLdmVq(), 5),
        "ddpm" => (UnconditionalModels.RequireDdpmPixel(), 6),
        _ => throw new ArgumentOutOfRangeException(nameof(name), name, "ldm or ddpm"),
    };

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "Vq", "Fixtures", name);

    [TestMethod]
    [DataRow("ldm")]
    [DataRow("ddpm")]
    public void EveryStepMatchesDiffusersPipelineLoop(string route)
    {
        var (folder, steps) = Route(route);
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, folder);
        var run = RunLoop(model, steps);
        var (latents, pixels, bytes) = RunStages(ml, model, steps);
        int len = run.Final.Length / Rows;

        // The public stages (DenoiseLatents with NoiseOptions.Diffusers(), DecodeLatents) run the same loop as the recorded one.
        CollectionAssert.AreEqual(run.Final, latents, "the DenoiseLatents stage gives the recorded loop's latents");

        if (Environment.GetEnvironmentVariable("MLNET_DIFFUSION_WRITE_FIXTURES") == "1")
        {
            WriteInputs(route, steps, run, pixels);
            Assert.Inconclusive("Fixture inputs written to the source folder: run make_unconditional_loop_fixture.py, then the tests again without MLNET_DIFFUSION_WRITE_FIXTURES.");
        }

        // 1. The timesteps diffusers' set_timesteps gave (the script checked the dumped ones against them).
        var (timesteps, _) = NpyFile.ReadFloat32(Fixture($"{route}_timesteps.npy"));
        CollectionAssert.AreEqual(timesteps, run.Timesteps.ToArray(), "timesteps");

        // 2. Every step's UNet input: diffusers' sample, recomputed by the script from the UNet outputs dumped from here.
        //    Step 0 is torch.randn from the rows' generators (TorchCpuNoise is bit-exact: no tolerance there).
        var (expected, shape) = NpyFile.ReadFloat32(Fixture($"{route}_expected_samples.npy"));
        var (outputs, _) = NpyFile.ReadFloat32(Fixture($"{route}_unet_out.npy"));
        Assert.AreEqual(steps + 1, shape[0]);
        Assert.AreEqual(Rows * len, expected.Length / (steps + 1));
        Assert.AreEqual(steps, run.Inputs.Count);
        CollectionAssert.AreEqual(expected.AsSpan(0, Rows * len).ToArray(), run.Inputs[0], "the initial noise (torch.randn, one CPU generator per row)");
        for (int i = 0; i < steps; i++)
        {
            AssertClose(expected.AsSpan(i * Rows * len, Rows * len), run.Inputs[i], $"{route}: UNet input of step {i}");
            // The script answered with these outputs: the UNet must still give them for the same input.
            AssertClose(outputs.AsSpan(i * Rows * len, Rows * len), run.Outputs[i], $"{route}: UNet output of step {i}");
        }
        AssertClose(expected.AsSpan(steps * Rows * len, Rows * len), run.Final, $"{route}: final latents");

        // 3. Post-processing: (x/2 + 0.5).clamp(0, 1) → ×255 → NumPy's round, over the decoder output dumped from here.
        //    Where the decoder output now equals the dump bit for bit (always on the machine that wrote it), the bytes must
        //    be equal; elsewhere a float32 rounding difference may move a value across a .5 boundary: at most 1 apart.
        var (decoded, _) = NpyFile.ReadFloat32(Fixture($"{route}_decoded.npy"));
        var (image, imageShape) = NpyFile.ReadFloat32(Fixture($"{route}_expected_image.npy"));
        CollectionAssert.AreEqual(new[] { Rows, Size, Size, 3 }, imageShape);
        AssertClose(decoded, pixels, $"{route}: decoder output");
        int plane = Size * Size, exact = 0;
        for (int r = 0; r < Rows; r++)
        {
            for (int c = 0; c < 3; c++)
            {
                for (int p = 0; p < plane; p++)
                {
                    int chw = (r * 3 + c) * plane + p;
                    byte actual = bytes[r][4 * p + c];
                    float want = image[((r * plane) + p) * 3 + c];
                    if (BitConverter.SingleToInt32Bits(decoded[chw]) == BitConverter.SingleToInt32Bits(pixels[chw]))
                    {
                        Assert.AreEqual(want, (float)actual, $"{route}: row {r}, channel {c}, pixel {p}");
                        exact++;
                    }
                    else
                    {
                        Assert.IsTrue(Math.Abs(want - actual) <= 1f, $"{route}: row {r}, channel {c}, pixel {p}: {actual} vs {want}");
                    }
                }
            }
        }
        Assert.IsTrue(exact > 0, "no pixel of the decoder output equals the dump bit for bit: regenerate the fixture");
        Assert.IsTrue(image.Distinct().Count() > 10, "the expected image is not flat");
    }

    /// <summary>
    /// float32 rounding: the script's DDIM/DDPM arithmetic is torch float32 on tensors (ᾱ from a float32 cumprod, √ and the
    /// coefficients rounded per operation); the library's schedulers compute the same quantities from the same float32
    /// ᾱ but may fuse or order the operations differently, a few ulps per step on samples of magnitude ≤ ~4. When the
    /// fixture was made the largest difference was 2.4e-7 (LDM, 5 steps) and 8.3e-7 (DDPM, 6 steps; the script prints
    /// them), growing by about an ulp per step; 1e-5 absolute plus 1e-5 relative leaves room for another CPU's ONNX
    /// Runtime kernels, while a wrong formula, timestep, clip or noise draw is off by 1e-2 or more.
    /// </summary>
    private static void AssertClose(ReadOnlySpan<float> expected, float[] actual, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        for (int i = 0; i < expected.Length; i++)
        {
            float e = expected[i];
            Assert.AreEqual(e, actual[i], 1e-5f + 1e-5f * Math.Abs(e), $"{what}: element {i}");
        }
    }

    /// <summary>One recorded run of the denoising loop: per step the UNet's input and output, the timesteps, the final latents.</summary>
    private sealed record Recorded(List<float[]> Inputs, List<float[]> Outputs, List<float> Timesteps, float[] Final);

    private static Recorded RunLoop(StableDiffusionModel model, int steps)
    {
        var recorder = new RecordingScheduler(SchedulerFactory.CreateDefault(model.Info.SchedulerConfig));
        var probe = new InputProbe();
        var settings = new DenoiseSettings(steps, 1f, Size, Size, recorder, null, CancellationToken.None) { Noise = NoiseOptions.Diffusers() };
        using var denoiser = new LatentDenoiser(model, settings, new IUnetConditioning[] { probe });
        var latents = new float[Rows * denoiser.LatentLength];
        denoiser.Run(new DenoiseBatch(Rows, 0, ReadOnlyMemory<float>.Empty, 0, s_seeds.Select(s => (long)s).ToArray(), latents));
        return new Recorded(probe.Inputs, recorder.Outputs, probe.Timesteps, latents);
    }

    private sealed class SeedRow
    {
        public int Seed { get; set; }
    }

    /// <summary>The public route: DenoiseLatents (diffusers' noise) then DecodeLatents; the latents, the decoder output and each row's RGBA bytes.</summary>
    private static (float[] Latents, float[] Pixels, byte[][] Bytes) RunStages(MLContext ml, StableDiffusionModel model, int steps)
    {
        var data = ml.Data.LoadFromEnumerable(s_seeds.Select(s => new SeedRow { Seed = s }).ToArray());
        var denoise = ml.Transforms.DenoiseLatents(model, "Latents", new DenoiseLatentsOptions
        {
            Steps = steps,
            Width = Size,
            Height = Size,
            SeedColumnName = "Seed",
            BatchSize = Rows,
            Noise = NoiseOptions.Diffusers(),
        });
        var latents = denoise.Fit(data).Transform(data);
        var decoded = ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }).Fit(latents).Transform(latents);
        var l = decoded.GetColumn<VBuffer<float>>("Latents").SelectMany(v => v.DenseValues()).ToArray();
        var p = decoded.GetColumn<VBuffer<float>>("Pixels").SelectMany(v => v.DenseValues()).ToArray();
        var bytes = new List<byte[]>();
        foreach (var image in decoded.GetColumn<MLImage>("Image"))
        {
            Assert.AreEqual(MLPixelFormat.Rgba32, image.PixelFormat);
            bytes.Add(image.Pixels.ToArray());
            image.Dispose();
        }
        return (l, p, bytes.ToArray());
    }

    /// <summary>Writes the script's inputs into the source Fixtures folder (MLNET_DIFFUSION_WRITE_FIXTURES=1).</summary>
    private static void WriteInputs(string route, int steps, Recorded run, float[] pixels)
    {
        string? dir = null;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null && dir is null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "tests", "MLNet.Diffusion.Tests", "Vq", "Fixtures");
            if (Directory.Exists(candidate))
                dir = candidate;
        }
        Assert.IsNotNull(dir, "the source Fixtures folder was not found above " + AppContext.BaseDirectory);
        int len = run.Final.Length / Rows;
        int side = (int)Math.Round(Math.Sqrt(len / 3));
        int[] stepShape = { steps, Rows, 3, side, side };
        WriteNpy(Path.Combine(dir, $"{route}_unet_in.npy"), run.Inputs.SelectMany(x => x).ToArray(), stepShape);
        WriteNpy(Path.Combine(dir, $"{route}_unet_out.npy"), run.Outputs.SelectMany(x => x).ToArray(), stepShape);
        WriteNpy(Path.Combine(dir, $"{route}_timesteps.npy"), run.Timesteps.ToArray(), new[] { steps });
        WriteNpy(Path.Combine(dir, $"{route}_final.npy"), run.Final, new[] { Rows, 3, side, side });
        WriteNpy(Path.Combine(dir, $"{route}_decoded.npy"), pixels, new[] { Rows, 3, Size, Size });
        string seeds = string.Join(", ", s_seeds.Select(s => s.ToString(CultureInfo.InvariantCulture)));
        File.WriteAllText(Path.Combine(dir, $"{route}_config.json"), $"{{\"seeds\": [{seeds}], \"steps\": {steps}, \"size\": {Size}}}\n");
    }

    /// <summary>A float32 little-endian .npy (format 1.0) of the given shape.</summary>
    private static void WriteNpy(string path, float[] values, int[] shape)
    {
        Assert.AreEqual(shape.Aggregate(1, (a, b) => a * b), values.Length, path);
        string dims = shape.Length == 1 ? $"{shape[0]}," : string.Join(", ", shape);
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}";
        int total = 10 + header.Length + 1;
        header = header.PadRight(header.Length + (64 - total % 64) % 64) + "\n";
        using var file = File.Create(path);
        file.Write(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0 });
        file.Write(BitConverter.GetBytes((ushort)header.Length));
        file.Write(Encoding.ASCII.GetBytes(header));
        foreach (float v in values)
            file.Write(BitConverter.GetBytes(v));
    }

    /// <summary>Records the UNet's sample input (after the denoiser wrote it) and timestep, every step.</summary>
    private sealed class InputProbe : IUnetConditioning
    {
        public List<float[]> Inputs { get; } = new();

        public List<float> Timesteps { get; } = new();

        public void BeforeUnet(in UnetStep step)
        {
            Inputs.Add(step.Sample.ToArray());
            Timesteps.Add(step.Timestep);
        }
    }

    /// <summary>
    /// The model's own scheduler, recording the UNet output each <see cref="Step"/> receives (the loop has no guidance
    /// here: the UNet's answer goes to the step unchanged). <see cref="Clone"/> returns itself so the loop's clone records.
    /// </summary>
    private sealed class RecordingScheduler : DiffusionScheduler
    {
        private readonly DiffusionScheduler _inner;

        public RecordingScheduler(DiffusionScheduler inner)
            : base(inner.Config) => _inner = inner;

        public List<float[]> Outputs { get; } = new();

        public override string Name => _inner.Name;

        public override bool IsStochastic => _inner.IsStochastic;

        public override float InitNoiseSigma => _inner.InitNoiseSigma;

        protected override void OnSetTimesteps(int numInferenceSteps)
        {
            _inner.SetTimesteps(numInferenceSteps);
            TimestepsArray = _inner.Timesteps.ToArray();
        }

        public override void ScaleModelInput(ReadOnlySpan<float> sample, Span<float> destination, int stepIndex) => _inner.ScaleModelInput(sample, destination, stepIndex);

        public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
        {
            Outputs.Add(modelOutput.ToArray());
            _inner.Step(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        }

        public override void AddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, Span<float> destination) =>
            _inner.AddNoise(originalSamples, noise, stepIndex, destination);

        public override DiffusionScheduler Clone() => this;
    }
}
