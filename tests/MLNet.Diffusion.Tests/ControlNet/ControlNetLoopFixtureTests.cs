using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.ControlNet;

/// <summary>
/// The library's ControlNet loop against diffusers' own host-side code (ControlNet/Fixtures/make_controlnet_loop_fixture.py:
/// StableDiffusionControlNetPipeline v0.35.2's control-image preparation, CFG duplication, keep rule, guess-mode zeros and
/// logspace scales, and MultiControlNetModel's sum, run over the Shapes ControlNet's ONNX outputs dumped from here): two
/// ControlNets with different images, scales and guidance windows, two prompt rows, classifier-free guidance, five steps,
/// with and without guess mode. Every step's UNet residual inputs must equal the script's.
/// </summary>
[TestClass]
public sealed class ControlNetLoopFixtureTests
{
    private const int Size = 64;
    private const int Rows = 2;
    private const int Steps = 5;
    private static readonly float[] s_scales = { 0.8f, 1.3f };
    private static readonly float[] s_starts = { 0f, 0.3f };
    private static readonly float[] s_ends = { 0.6f, 1f };

    private static readonly (ShapeKind Shape, ShapePosition Position)[,] s_images =
    {
        { (ShapeKind.Square, ShapePosition.Left), (ShapeKind.Circle, ShapePosition.Right) },
        { (ShapeKind.Triangle, ShapePosition.Center), (ShapeKind.Square, ShapePosition.Center) },
    };

    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "ControlNet", "Fixtures", name);

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void EveryStepsResidualsEqualDiffusersControlNetLoop(bool guessMode)
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesControlNetTests.Folder);
        var info = model.Info;
        if (Environment.GetEnvironmentVariable("MLNET_DIFFUSION_WRITE_FIXTURES") == "1")
        {
            WriteInputs(model);
            Assert.Inconclusive("Fixture inputs written to the source folder: run make_controlnet_loop_fixture.py, then the tests again without MLNET_DIFFUSION_WRITE_FIXTURES.");
        }

        // 1. The committed control images, as PrepareControlImage gives them (RGB, byte / 255, at the output size).
        var images = new float[2, Rows][];
        for (int n = 0; n < 2; n++)
        {
            for (int r = 0; r < Rows; r++)
                images[n, r] = ControlValues(Fixture($"loop_control_{n}_{r}.png"));
        }

        // 2. The script ran over these ONNX outputs: the ControlNet graph must still give them.
        var (raw, rawShape) = NpyFile.ReadFloat32(Fixture("loop_raw.npy"));
        var now = RawResiduals(model, images);
        Assert.AreEqual(rawShape[1], now.Length / (2 * Rows));
        for (int i = 0; i < raw.Length; i++)
            Assert.AreEqual(raw[i], now[i], 1e-6f, $"the Shapes ControlNet's output {i} changed since the fixture was made");

        // 3. The library's loop, recording every step's residual inputs.
        var runs = Enumerable.Range(0, 2).Select(n => new ControlNetRun(model.ControlNet!, s_starts[n], s_ends[n])).ToArray();
        int latent = Size / info.VaeSpatialFactor;
        using var controlNet = new ControlNetConditioning(info.ControlNetResiduals, runs, guessMode, info.LatentChannels, latent, latent, Size, Size, info.HiddenSize);
        controlNet.Ensure(Rows);
        for (int n = 0; n < 2; n++)
        {
            for (int r = 0; r < Rows; r++)
            {
                images[n, r].CopyTo(controlNet.Image(n, r));
                controlNet.SetScale(n, r, s_scales[n]); // diffusers: one scale per ControlNet for the batch
            }
        }
        var probe = new StepProbe();
        var embeddings = new float[Rows * 2 * info.SequenceLength * info.HiddenSize];
        var scheduler = MLNet.Diffusion.Schedulers.SchedulerFactory.CreateDefault(info.SchedulerConfig);
        using (var denoiser = new LatentDenoiser(model, new DenoiseSettings(Steps, 5f, Size, Size, scheduler, null, default), new IUnetConditioning[] { controlNet, probe }))
        {
            var latents = new float[Rows * denoiser.LatentLength];
            denoiser.Run(new DenoiseBatch(Rows, 0, embeddings, info.SequenceLength, new long[] { 1, 2 }, latents));
        }

        // 4. diffusers' residuals, step by step.
        var (expected, shape) = NpyFile.ReadFloat32(Fixture($"loop_expected_guess{(guessMode ? 1 : 0)}.npy"));
        Assert.AreEqual(Steps, shape[0]);
        Assert.AreEqual(Steps, probe.Steps.Count);
        int per = shape[1];
        for (int i = 0; i < Steps; i++)
        {
            var actual = probe.Steps[i];
            Assert.AreEqual(per, actual.Length);
            for (int j = 0; j < per; j++)
            {
                float e = expected[i * per + j];
                // torch.logspace in float32 against the library's double-precision 10^(−1 + k/n) rounded to float: 1 ulp.
                Assert.AreEqual(e, actual[j], 1e-6f + 1e-6f * Math.Abs(e), $"guess_mode={guessMode}, step {i}, value {j}");
            }
        }
        Assert.IsTrue(expected.Any(v => v != 0f), "the fixture is not all zeros");
    }

    /// <summary>An RGB(A) PNG as [3, H, W] floats, byte / 255 (diffusers' pil_to_numpy).</summary>
    private static float[] ControlValues(string path)
    {
        using var image = MLImage.CreateFromFile(path);
        Assert.AreEqual(Size, image.Width);
        int plane = Size * Size;
        var v = new float[3 * plane];
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        var pixels = image.Pixels;
        for (int p = 0; p < plane; p++)
        {
            v[p] = pixels[4 * p + (bgra ? 2 : 0)] / 255f;
            v[plane + p] = pixels[4 * p + 1] / 255f;
            v[2 * plane + p] = pixels[4 * p + (bgra ? 0 : 2)] / 255f;
        }
        return v;
    }

    /// <summary>
    /// The ControlNet graph run by ONNX Runtime on the 4 control images (image n·Rows + r) at conditioning_scale 1:
    /// [4, values], each image's residuals concatenated in order.
    /// </summary>
    private static float[] RawResiduals(StableDiffusionModel model, float[,][] images)
    {
        var info = model.Info;
        int batch = 2 * Rows, latent = Size / info.VaeSpatialFactor;
        var cond = new float[batch * 3 * Size * Size];
        for (int n = 0; n < 2; n++)
        {
            for (int r = 0; r < Rows; r++)
                images[n, r].CopyTo(cond, (n * Rows + r) * 3 * Size * Size);
        }
        using var session = new InferenceSession(model.ControlNet!.Path);
        var inputs = new Dictionary<string, OrtValue>
        {
            ["sample"] = OrtValue.CreateTensorValueFromMemory(new float[batch * 4 * latent * latent], new long[] { batch, 4, latent, latent }),
            ["timestep"] = OrtValue.CreateTensorValueFromMemory(new float[batch], new long[] { batch }),
            ["encoder_hidden_states"] = OrtValue.CreateTensorValueFromMemory(new float[batch * info.SequenceLength * info.HiddenSize], new long[] { batch, info.SequenceLength, info.HiddenSize }),
            ["controlnet_cond"] = OrtValue.CreateTensorValueFromMemory(cond, new long[] { batch, 3, Size, Size }),
            ["conditioning_scale"] = OrtValue.CreateTensorValueFromMemory(new[] { 1.0 }, new long[] { 1 }),
        };
        try
        {
            var names = info.ControlNetResiduals.Select(r => r.Name).ToArray();
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, inputs.Keys.ToArray(), inputs.Values.ToArray(), names);
            var perImage = new List<float>[batch];
            for (int b = 0; b < batch; b++)
                perImage[b] = new List<float>();
            foreach (var o in outputs)
            {
                var values = o.GetTensorDataAsSpan<float>();
                int per = values.Length / batch;
                for (int b = 0; b < batch; b++)
                    perImage[b].AddRange(values.Slice(b * per, per).ToArray());
            }
            return perImage.SelectMany(p => p).ToArray();
        }
        finally
        {
            foreach (var v in inputs.Values)
                v.Dispose();
        }
    }

    /// <summary>Writes the script's inputs into the source Fixtures folder (MLNET_DIFFUSION_WRITE_FIXTURES=1).</summary>
    private static void WriteInputs(StableDiffusionModel model)
    {
        string? dir = null;
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null && dir is null; d = d.Parent)
        {
            string candidate = Path.Combine(d.FullName, "tests", "MLNet.Diffusion.Tests", "ControlNet", "Fixtures");
            if (Directory.Exists(candidate))
                dir = candidate;
        }
        Assert.IsNotNull(dir, "the source Fixtures folder was not found above " + AppContext.BaseDirectory);
        var images = new float[2, Rows][];
        for (int n = 0; n < 2; n++)
        {
            for (int r = 0; r < Rows; r++)
            {
                string path = Path.Combine(dir, $"loop_control_{n}_{r}.png");
                using (var image = ShapesControlNetTests.Silhouette(s_images[n, r].Shape, s_images[n, r].Position, Size))
                    PngFile.Save(image, path);
                images[n, r] = ControlValues(path);
            }
        }
        float[] raw = RawResiduals(model, images);
        WriteNpy(Path.Combine(dir, "loop_raw.npy"), raw, 2 * Rows, raw.Length / (2 * Rows));
        var info = model.Info;
        int latent = Size / info.VaeSpatialFactor;
        string Floats(float[] v) => string.Join(", ", v.Select(x => x.ToString("R", CultureInfo.InvariantCulture)));
        string shapes = string.Join(", ", info.ControlNetResiduals.Select(r => $"[{r.Channels}, {latent / r.Downscale}, {latent / r.Downscale}]"));
        File.WriteAllText(Path.Combine(dir, "loop_config.json"),
            $"{{\"size\": {Size}, \"rows\": {Rows}, \"steps\": {Steps}, \"scales\": [{Floats(s_scales)}], \"starts\": [{Floats(s_starts)}], \"ends\": [{Floats(s_ends)}], \"shapes\": [{shapes}]}}\n");
    }

    /// <summary>A float32 little-endian .npy (format 1.0) of shape [rows, columns].</summary>
    private static void WriteNpy(string path, float[] values, int rows, int columns)
    {
        string header = $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {columns}), }}";
        int total = 10 + header.Length + 1;
        header = header.PadRight(header.Length + (64 - total % 64) % 64) + "\n";
        using var file = File.Create(path);
        file.Write(new byte[] { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0 });
        file.Write(BitConverter.GetBytes((ushort)header.Length));
        file.Write(Encoding.ASCII.GetBytes(header));
        foreach (float v in values)
            file.Write(BitConverter.GetBytes(v));
    }

    /// <summary>Records the UNet's residual inputs every step (it runs after the ControlNet conditioning), residual after residual.</summary>
    private sealed class StepProbe : IUnetConditioning
    {
        private UnetInputs? _inputs;

        public List<float[]> Steps { get; } = new();

        public void DeclareInputs(UnetInputs inputs) => _inputs = inputs;

        public void BeforeUnet(in UnetStep step)
        {
            var values = new List<float>();
            for (int i = 0; i < _inputs!.Names.Count; i++)
            {
                if (ControlNetGraphs.IsResidualName(_inputs.Names[i]))
                    values.AddRange(_inputs.Buffers[i].FloatSpan.ToArray());
            }
            Steps.Add(values.ToArray());
        }
    }
}
