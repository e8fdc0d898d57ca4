using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>
/// The library's unconditional routes against diffusers' own loops (Vq/Fixtures/make_unconditional_loop_fixture.py, which
/// copies diffusers v0.35.2's <c>LDMPipeline.__call__</c> (pipelines/deprecated/latent_diffusion_uncond/
/// pipeline_latent_diffusion_uncond.py), <c>DDPMPipeline.__call__</c> (pipelines/ddpm/pipeline_ddpm.py), <c>randn_tensor</c>
/// (utils/torch_utils.py) and the DDIM/DDPM schedulers' <c>__init__</c>/<c>set_timesteps</c>/<c>step</c> verbatim), on the
/// real shared exports: tiny-ldm-vq (VQModel + UNet2DModel, DDIM with clip_sample) and tiny-ddpm-pixel (UNet2DModel in pixel
/// space, DDPM with fixed_small variance noise), and LDMSuperResolutionPipeline on the Shapes super-resolution folder
/// (<see cref="SuperResolutionEveryStepMatchesDiffusersPipelineLoop"/>). The script replays the loop with the UNet's answers
/// dumped from here, from <c>torch.Generator().manual_seed(seed)</c> per row (a list of generators, diffusers' per-image
/// seeding), so the initial noise, DDPM's per-step noise and every scheduler step are diffusers' own; it checks at each
/// step that its sample equals the UNet input dumped from the library. Here every step's UNet input, the final latents and the image bytes must equal
/// the script's.
/// </summary>
[TestClass]
public sealed class UnconditionalLoopFixtureTests
{
    private const int Rows = 2;
    private const int Size = 32;
    private static readonly int[] s_seeds = { 42, 1234 };

    // Super-resolution: the Shapes folder's 32×32 → 256×256 (the pipeline's preprocess wants sides that are multiples of
    // 32); three steps; the decoder output and image compared on 32×32 pixels to keep the fixture small: those from
    // (128, 112), across the left edge of both rows' shapes (drawn at x ≥ 144), background and shape.
    private const int SrSize = 256, SrLow = 32, SrSteps = 3, SrCrop = 32, SrCropX = 128, SrCropY = 112;
    private static readonly int[] s_srItems = { 5, 140 };
    private static readonly DdimSchedulerOptions s_srScheduler = new() { Eta = 1f };
    private static readonly NoiseOptions s_srNoise = new()
    {
        Generator = NoiseGenerator.TorchCpu,
        BatchPolicy = NoiseBatchPolicy.GeneratorPerBatch,
        StepNoiseSeedOffset = 1000,
    };

    private static readonly Lazy<string> s_superResolution = new(() =>
    {
        string folder = Path.Combine(Path.GetTempPath(), "mlnet-shapes-sr-fixture-" + Guid.NewGuid().ToString("N"));
        ShapesModel.Build(folder, new ShapesModelOptions { Variant = ShapesVariant.SuperResolution });
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return folder;
    });

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
        var run = RunLoop(model, steps, SchedulerFactory.CreateDefault(model.Info.SchedulerConfig), NoiseOptions.Diffusers(), Size, Array.Empty<IUnetConditioning>());
        var data = ml.Data.LoadFromEnumerable(s_seeds.Select(s => new SeedRow { Seed = s }).ToArray());
        var stages = RunStages(ml, model, data, new DenoiseLatentsOptions
        {
            Steps = steps,
            Width = Size,
            Height = Size,
            SeedColumnName = "Seed",
            BatchSize = Rows,
            Noise = NoiseOptions.Diffusers(),
        });
        Verify(route, steps, run, stages, Size, (0, 0, Size), model.Info.LatentChannels);
    }

    /// <summary>
    /// LDMSuperResolutionPipeline (pipelines/latent_diffusion/pipeline_latent_diffusion_superresolution.py v0.35.2) on the
    /// Shapes super-resolution folder: <c>preprocess</c> of each 32×32 picture, the image concatenated after the latents
    /// and scaled with them every step, DDIM with η = 1. The pipeline draws the initial latents from the generator it is
    /// given but does not pass it to <c>scheduler.step</c>, so η's noise comes from torch's global generator: the script
    /// passes one <c>torch.Generator().manual_seed(42)</c> for the batch and seeds the global one with 42 + 1000 — what
    /// <see cref="NoiseBatchPolicy.GeneratorPerBatch"/> with <see cref="NoiseOptions.StepNoiseSeedOffset"/> 1000 draws.
    /// </summary>
    [TestMethod]
    public void SuperResolutionEveryStepMatchesDiffusersPipelineLoop()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, s_superResolution.Value);
        var rows = s_srItems.Select((item, r) => new LowResRow { Image = LowResImage(ShapesDataset.Items[item]), Seed = s_seeds[r] }).ToArray();
        int low = SrSize / model.Info.VaeSpatialFactor;
        var conditioning = new SuperResolutionConditioning(low * low);
        conditioning.Ensure(Rows);
        for (int r = 0; r < Rows; r++)
            Preprocess(rows[r].Image, conditioning.Image(r));
        var run = RunLoop(model, SrSteps, s_srScheduler.CreateScheduler(model.Info.SchedulerConfig), s_srNoise, SrSize, new IUnetConditioning[] { conditioning });
        var stages = RunStages(ml, model, ml.Data.LoadFromEnumerable(rows), new DenoiseLatentsOptions
        {
            Steps = SrSteps,
            Width = SrSize,
            Height = SrSize,
            SeedColumnName = "Seed",
            LowResolutionImageColumnName = "Image",
            BatchSize = Rows,
            Noise = s_srNoise,
            Scheduler = s_srScheduler,
        });
        if (Environment.GetEnvironmentVariable("MLNET_DIFFUSION_WRITE_FIXTURES") == "1")
        {
            for (int r = 0; r < Rows; r++)
                PngFile.Save(rows[r].Image, Path.Combine(SourceFixtures(), $"sr_lowres_{r}.png"));
            File.Copy(Path.Combine(s_superResolution.Value, "scheduler", "scheduler_config.json"), Path.Combine(SourceFixtures(), "sr_scheduler_config.json"), overwrite: true);
        }
        Verify("sr", SrSteps, run, stages, SrSize, (SrCropX, SrCropY, SrCrop), model.Info.LatentChannels);
    }

    /// <summary>
    /// The shared checks: the stage route equals the recorded loop; with MLNET_DIFFUSION_WRITE_FIXTURES=1 the script's
    /// inputs are written instead; else every step's UNet input and output, the final latents and the image bytes (of the
    /// pixels of <paramref name="window"/>) must equal the script's.
    /// </summary>
    private static void Verify(string route, int steps, Recorded run, (float[] Latents, float[] Pixels, byte[][] Bytes) stages, int size, (int X, int Y, int Side) window, int channels)
    {
        // The public stages (DenoiseLatents, DecodeLatents) run the same loop as the recorded one.
        CollectionAssert.AreEqual(run.Final, stages.Latents, "the DenoiseLatents stage gives the recorded loop's latents");
        int crop = window.Side;
        var pixels = Crop(stages.Pixels, size, window);

        if (Environment.GetEnvironmentVariable("MLNET_DIFFUSION_WRITE_FIXTURES") == "1")
        {
            WriteInputs(route, steps, run, pixels, crop, channels);
            Assert.Inconclusive("Fixture inputs written to the source folder: run make_unconditional_loop_fixture.py, then the tests again without MLNET_DIFFUSION_WRITE_FIXTURES.");
        }

        // 1. The timesteps diffusers' set_timesteps gave (the script checked the dumped ones against them).
        var (timesteps, _) = NpyFile.ReadFloat32(Fixture($"{route}_timesteps.npy"));
        CollectionAssert.AreEqual(timesteps, run.Timesteps.ToArray(), "timesteps");

        // 2. Every step's UNet input: diffusers' sample, recomputed by the script from the UNet outputs dumped from here.
        //    Step 0 holds torch.randn from the generators (TorchCpuNoise is bit-exact: no tolerance for the latents there).
        var (expected, shape) = NpyFile.ReadFloat32(Fixture($"{route}_expected_inputs.npy"));
        var (final, _) = NpyFile.ReadFloat32(Fixture($"{route}_expected_final.npy"));
        var (outputs, _) = NpyFile.ReadFloat32(Fixture($"{route}_unet_out.npy"));
        int input = run.Inputs[0].Length, output = run.Final.Length;
        Assert.AreEqual(steps, shape[0]);
        Assert.AreEqual(steps * input, expected.Length);
        Assert.AreEqual(steps, run.Inputs.Count);
        int latentRow = output / Rows, inputRow = input / Rows;
        for (int r = 0; r < Rows; r++)
        {
            CollectionAssert.AreEqual(expected.AsSpan(r * inputRow, latentRow).ToArray(), run.Inputs[0].AsSpan(r * inputRow, latentRow).ToArray(),
                $"{route}: row {r}'s initial noise (torch.randn from a CPU generator)");
        }
        for (int i = 0; i < steps; i++)
        {
            AssertClose(expected.AsSpan(i * input, input), run.Inputs[i], $"{route}: UNet input of step {i}");
            // The script answered with these outputs: the UNet must still give them for the same input.
            AssertClose(outputs.AsSpan(i * output, output), run.Outputs[i], $"{route}: UNet output of step {i}");
        }
        AssertClose(final, run.Final, $"{route}: final latents");

        // 3. Post-processing: (x/2 + 0.5).clamp(0, 1) → ×255 → NumPy's round, over the decoder output dumped from here.
        //    Where the decoder output now equals the dump bit for bit (always on the machine that wrote it), the bytes must
        //    be equal; elsewhere a float32 rounding difference may move a value across a .5 boundary: at most 1 apart.
        var (decoded, _) = NpyFile.ReadFloat32(Fixture($"{route}_decoded.npy"));
        var (image, imageShape) = NpyFile.ReadFloat32(Fixture($"{route}_expected_image.npy"));
        CollectionAssert.AreEqual(new[] { Rows, crop, crop, 3 }, imageShape);
        AssertClose(decoded, pixels, $"{route}: decoder output");
        int plane = crop * crop, exact = 0;
        for (int r = 0; r < Rows; r++)
        {
            for (int c = 0; c < 3; c++)
            {
                for (int p = 0; p < plane; p++)
                {
                    int chw = (r * 3 + c) * plane + p;
                    int y = window.Y + p / crop, x = window.X + p % crop;
                    byte actual = stages.Bytes[r][4 * (y * size + x) + c];
                    float want = image[((r * plane) + p) * 3 + c];
                    if (BitConverter.SingleToInt32Bits(decoded[chw]) == BitConverter.SingleToInt32Bits(pixels[chw]))
                    {
                        Assert.AreEqual(want, (float)actual, $"{route}: row {r}, channel {c}, pixel ({x}, {y})");
                        exact++;
                    }
                    else
                    {
                        Assert.IsTrue(Math.Abs(want - actual) <= 1f, $"{route}: row {r}, channel {c}, pixel ({x}, {y}): {actual} vs {want}");
                    }
                }
            }
        }
        Assert.IsTrue(exact > 0, "no pixel of the decoder output equals the dump bit for bit: regenerate the fixture");
        Assert.IsTrue(image.Distinct().Count() > 10, "the expected image is not flat");
    }

    /// <summary>The window's pixels of each row of [rows, 3, size, size].</summary>
    private static float[] Crop(float[] pixels, int size, (int X, int Y, int Side) window)
    {
        int crop = window.Side;
        if (crop == size)
            return pixels;
        var result = new float[Rows * 3 * crop * crop];
        for (int rc = 0; rc < Rows * 3; rc++)
        {
            for (int y = 0; y < crop; y++)
                pixels.AsSpan((rc * size + window.Y + y) * size + window.X, crop).CopyTo(result.AsSpan((rc * crop + y) * crop, crop));
        }
        return result;
    }

    /// <summary>
    /// float32 rounding: the script's DDIM/DDPM arithmetic is torch float32 on tensors (ᾱ from a float32 cumprod, √ and the
    /// coefficients rounded per operation); the library's schedulers compute the same quantities from the same float32
    /// ᾱ but may fuse or order the operations differently, a few ulps per step on samples of magnitude ≤ ~4. When the
    /// fixture was made the largest difference was 2.4e-7 (LDM, 5 steps), 8.3e-7 (DDPM, 6 steps) and 2.9e-6 (super-resolution,
    /// latents up to ~10, 3 steps; the script prints them), growing by about an ulp per step; 1e-5 absolute plus 1e-5 relative leaves room for another CPU's ONNX
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

    private static Recorded RunLoop(StableDiffusionModel model, int steps, DiffusionScheduler scheduler, NoiseOptions noise, int size, IUnetConditioning[] conditionings)
    {
        var recorder = new RecordingScheduler(scheduler);
        var probe = new InputProbe();
        var settings = new DenoiseSettings(steps, 1f, size, size, recorder, null, CancellationToken.None) { Noise = noise };
        using var denoiser = new LatentDenoiser(model, settings, conditionings.Append(probe).ToArray());
        var latents = new float[Rows * denoiser.LatentLength];
        denoiser.Run(new DenoiseBatch(Rows, 0, ReadOnlyMemory<float>.Empty, 0, s_seeds.Select(s => (long)s).ToArray(), latents));
        return new Recorded(probe.Inputs, recorder.Outputs, probe.Timesteps, latents);
    }

    private sealed class SeedRow
    {
        public int Seed { get; set; }
    }

    private sealed class LowResRow
    {
        [ImageType(SrLow, SrLow)]
        public MLImage Image { get; set; } = null!;

        public int Seed { get; set; }
    }

    /// <summary>An item of the Shapes dataset drawn at 32×32 (BGRA32, as ML.NET's image loading gives it).</summary>
    private static MLImage LowResImage(ShapesItem item)
    {
        byte[] rgb = ShapesDataset.RenderRgb(item, SrLow);
        var bgra = new byte[SrLow * SrLow * 4];
        for (int p = 0; p < SrLow * SrLow; p++)
        {
            bgra[4 * p] = rgb[3 * p + 2];
            bgra[4 * p + 1] = rgb[3 * p + 1];
            bgra[4 * p + 2] = rgb[3 * p];
            bgra[4 * p + 3] = 255;
        }
        return MLImage.CreateFromPixels(SrLow, SrLow, MLPixelFormat.Bgra32, bgra);
    }

    /// <summary>
    /// The DenoiseLatents stage's reading of a low-resolution image (LatentDenoising.ReadLowResolution): <c>preprocess</c>'s
    /// <c>np.float32(v) / 255.0</c> then <c>2.0 * image − 1.0</c>. The recorded loop's final latents equal the stage's
    /// bit for bit, so this copy cannot drift from it unnoticed.
    /// </summary>
    private static void Preprocess(MLImage image, Span<float> chw)
    {
        int plane = image.Width * image.Height;
        var pixels = image.Pixels;
        for (int i = 0; i < plane; i++)
        {
            chw[i] = 2f * (pixels[4 * i + 2] / 255f) - 1f;
            chw[plane + i] = 2f * (pixels[4 * i + 1] / 255f) - 1f;
            chw[2 * plane + i] = 2f * (pixels[4 * i] / 255f) - 1f;
        }
    }

    /// <summary>The public route: DenoiseLatents then DecodeLatents; the latents, the decoder output and each row's RGBA bytes.</summary>
    private static (float[] Latents, float[] Pixels, byte[][] Bytes) RunStages(MLContext ml, StableDiffusionModel model, IDataView data, DenoiseLatentsOptions options)
    {
        var latents = ml.Transforms.DenoiseLatents(model, "Latents", options).Fit(data).Transform(data);
        var decoded = ml.Transforms.DecodeLatents(model, "Upscaled", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }).Fit(latents).Transform(latents);
        var l = decoded.GetColumn<VBuffer<float>>("Latents").SelectMany(v => v.DenseValues()).ToArray();
        var p = decoded.GetColumn<VBuffer<float>>("Pixels").SelectMany(v => v.DenseValues()).ToArray();
        var bytes = new List<byte[]>();
        foreach (var image in decoded.GetColumn<MLImage>("Upscaled"))
        {
            Assert.AreEqual(MLPixelFormat.Rgba32, image.PixelFormat);
            bytes.Add(image.Pixels.ToArray());
            image.Dispose();
        }
        return (l, p, bytes.ToArray());
    }

    private static string SourceFixtures()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "tests", "MLNet.Diffusion.Tests", "Vq", "Fixtures");
            if (Directory.Exists(candidate))
                return candidate;
        }
        throw new AssertFailedException("the source Fixtures folder was not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Writes the script's inputs into the source Fixtures folder (MLNET_DIFFUSION_WRITE_FIXTURES=1).</summary>
    private static void WriteInputs(string route, int steps, Recorded run, float[] pixels, int crop, int channels)
    {
        string dir = SourceFixtures();
        int side = (int)Math.Round(Math.Sqrt(run.Final.Length / (double)(Rows * channels)));
        int inputChannels = run.Inputs[0].Length / (Rows * side * side);
        WriteNpy(Path.Combine(dir, $"{route}_unet_in.npy"), run.Inputs.SelectMany(x => x).ToArray(), new[] { steps, Rows, inputChannels, side, side });
        WriteNpy(Path.Combine(dir, $"{route}_unet_out.npy"), run.Outputs.SelectMany(x => x).ToArray(), new[] { steps, Rows, channels, side, side });
        WriteNpy(Path.Combine(dir, $"{route}_timesteps.npy"), run.Timesteps.ToArray(), new[] { steps });
        WriteNpy(Path.Combine(dir, $"{route}_final.npy"), run.Final, new[] { Rows, channels, side, side });
        WriteNpy(Path.Combine(dir, $"{route}_decoded.npy"), pixels, new[] { Rows, 3, crop, crop });
        string seeds = string.Join(", ", s_seeds.Select(s => s.ToString(CultureInfo.InvariantCulture)));
        File.WriteAllText(Path.Combine(dir, $"{route}_config.json"), $"{{\"seeds\": [{seeds}], \"steps\": {steps}, \"size\": {side}}}\n");
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
