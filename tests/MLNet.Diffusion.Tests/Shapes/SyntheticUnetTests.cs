using System;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Shapes;

/// <summary>
/// The SD-sized synthetic UNet (the GPU benchmark's model): its parameter count at SD 1.5's settings, and the tiny
/// configuration built and run on the CPU through ONNX Runtime and through the whole pipeline.
/// </summary>
[TestClass]
public sealed class SyntheticUnetTests
{
    private const int Batch = 2, Latent = 8, Sequence = 77, Context = 768;

    [TestMethod]
    public void AtTheDefaults_TheParameterCountIsStableDiffusion15s()
    {
        // Stable Diffusion 1.5's UNet (diffusers UNet2DConditionModel of runwayml/stable-diffusion-v1-5) has
        // sum(p.numel() for p in unet.parameters()) = 859,520,964: the same count means the same layers and widths.
        Assert.AreEqual(859_520_964L, SyntheticUnet.CountParameters());
        // float32 weights alone are 3.4 GB: over protobuf's 2 GB limit, hence the external-data file.
        Assert.IsTrue(SyntheticUnet.CountParameters() * 4 > int.MaxValue);
    }

    [TestMethod]
    public void Tiny_RunsOneStepOnTheCpu_WithTheStandardContract()
    {
        string dir = TempDir();
        try
        {
            long parameters = SyntheticUnet.Build(dir, SyntheticUnetOptions.Tiny());
            Assert.AreEqual(SyntheticUnet.CountParameters(SyntheticUnetOptions.Tiny()), parameters);
            Assert.IsTrue(File.Exists(Path.Combine(dir, SyntheticUnet.WeightsFileName)));
            using var session = new InferenceSession(Path.Combine(dir, "model.onnx"));
            CollectionAssert.AreEquivalent(new[] { "sample", "timestep", "encoder_hidden_states" }, session.InputMetadata.Keys.ToArray());
            CollectionAssert.AreEqual(new[] { "out_sample" }, session.OutputMetadata.Keys.ToArray());
            foreach (var m in session.InputMetadata.Values.Concat(session.OutputMetadata.Values))
                Assert.AreEqual(TensorElementType.Float, m.ElementDataType);
            Assert.AreEqual(Context, session.InputMetadata["encoder_hidden_states"].Dimensions[2]);

            var sample = Noise(Batch * 4 * Latent * Latent, 1);
            var context = Noise(Batch * Sequence * Context, 2);
            var output = Run(session, sample, new[] { 981f, 981f }, context);
            Assert.AreEqual(sample.Length, output.Length);
            Assert.IsTrue(output.All(float.IsFinite), "non-finite output");
            double rms = Math.Sqrt(output.Average(v => (double)v * v));
            Console.WriteLine($"tiny UNet: {parameters} parameters, output rms {rms:F3}");
            Assert.IsTrue(rms is > 0.01 and < 100, $"output rms {rms}: the 1/√fan-in scaling keeps activations near unit scale");

            // The output depends on every input: the timestep embedding and the cross-attention are wired in.
            var otherTime = Run(session, sample, new[] { 1f, 1f }, context);
            var otherContext = Run(session, sample, new[] { 981f, 981f }, Noise(context.Length, 3));
            Assert.IsTrue(MaxDiff(output, otherTime) > 1e-3, "timestep has no effect");
            Assert.IsTrue(MaxDiff(output, otherContext) > 1e-3, "encoder_hidden_states has no effect");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void Tiny_Float16_HalvesTheWeights_AndAgreesWithFloat32()
    {
        string dir32 = TempDir(), dir16 = TempDir();
        try
        {
            long p32 = SyntheticUnet.Build(dir32, SyntheticUnetOptions.Tiny());
            long p16 = SyntheticUnet.Build(dir16, SyntheticUnetOptions.Tiny(float16: true));
            Assert.AreEqual(p32, p16);
            long w32 = new FileInfo(Path.Combine(dir32, SyntheticUnet.WeightsFileName)).Length;
            long w16 = new FileInfo(Path.Combine(dir16, SyntheticUnet.WeightsFileName)).Length;
            Assert.IsTrue(w16 < 0.6 * w32 && w16 >= 2 * p16, $"float16 weights {w16} bytes vs float32 {w32}");
            using var session = new InferenceSession(Path.Combine(dir16, "model.onnx"));
            foreach (var m in session.InputMetadata.Values.Concat(session.OutputMetadata.Values))
                Assert.AreEqual(TensorElementType.Float16, m.ElementDataType);
            // Same seed, same weights rounded to float16: the outputs agree to float16 precision (unit roundoff 2⁻¹¹ ≈ 4.9e-4
            // per rounding, IEEE 754 binary16), compounded over the ~40 layers of the tiny model: well under 2 %.
            var sample = Noise(Batch * 4 * Latent * Latent, 1);
            var context = Noise(Batch * Sequence * Context, 2);
            using var session32 = new InferenceSession(Path.Combine(dir32, "model.onnx"));
            var full = Run(session32, sample, new[] { 981f, 981f }, context);
            var half = RunHalf(session, sample, new[] { 981f, 981f }, context);
            double relative = ImageChecks.RelativeL2(half, full);
            Console.WriteLine($"float16 vs float32 output: relative L2 error {relative:E2}");
            Assert.IsTrue(half.All(float.IsFinite), "non-finite float16 output");
            Assert.IsTrue(relative < 0.02, $"relative error {relative}");
        }
        finally
        {
            Directory.Delete(dir32, recursive: true);
            Directory.Delete(dir16, recursive: true);
        }
    }

    [TestMethod]
    public void Build_IsDeterministic()
    {
        string a = TempDir(), b = TempDir();
        try
        {
            SyntheticUnet.Build(a, SyntheticUnetOptions.Tiny());
            SyntheticUnet.Build(b, SyntheticUnetOptions.Tiny());
            foreach (string file in new[] { "model.onnx", SyntheticUnet.WeightsFileName, "config.json" })
                CollectionAssert.AreEqual(SHA256.HashData(File.ReadAllBytes(Path.Combine(a, file))), SHA256.HashData(File.ReadAllBytes(Path.Combine(b, file))), file);
        }
        finally
        {
            Directory.Delete(a, recursive: true);
            Directory.Delete(b, recursive: true);
        }
    }

    [TestMethod]
    public void TinyModelFolder_RunsThroughTheThreeStages()
    {
        string dir = TempDir();
        try
        {
            SyntheticUnet.BuildModelFolder(dir, SyntheticUnetOptions.Tiny());
            var ml = new MLContext(seed: 1);
            using var sd = StableDiffusionModel.Load(ml, dir);
            Assert.AreEqual(Context, sd.Info.HiddenSize);
            Assert.AreEqual(Context, sd.Info.PooledSize);
            var data = ml.Data.LoadFromEnumerable(new[] { new PromptRow { Prompt = "a red circle" }, new PromptRow { Prompt = "a blue square" } });
            var pipeline = ml.Transforms.EncodePrompt(sd, "Embeddings", "Prompt")
                .Append(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 2 }))
                .Append(ml.Transforms.DecodeLatents(sd, "Image", "Latents"));
            var output = pipeline.Fit(data).Transform(data);
            var latents = output.GetColumn<VBuffer<float>>("Latents").ToArray();
            Assert.AreEqual(2, latents.Length);
            foreach (var l in latents)
            {
                Assert.AreEqual(4 * Latent * Latent, l.Length);
                Assert.IsTrue(l.DenseValues().All(float.IsFinite));
            }
            foreach (var image in output.GetColumn<MLImage>("Image"))
            {
                Assert.AreEqual(64, image.Width);
                image.Dispose();
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void BadOptions_NameTheSetting()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => SyntheticUnet.CountParameters(new SyntheticUnetOptions { BlockChannels = new[] { 320, 650 } }));
        Assert.AreEqual("BlockChannels", e.ParamName);
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => SyntheticUnet.CountParameters(new SyntheticUnetOptions { SampleSize = 60 }));
        Assert.AreEqual("SampleSize", e.ParamName);
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => SyntheticUnet.CountParameters(new SyntheticUnetOptions { LayersPerBlock = 0 }));
        Assert.AreEqual("LayersPerBlock", e.ParamName);
    }

    internal sealed class PromptRow
    {
        public string Prompt { get; set; } = string.Empty;
    }

    private static string TempDir() => Path.Combine(Path.GetTempPath(), "mlnet-synthetic-unet-" + Guid.NewGuid().ToString("N")[..8]);

    private static float[] Noise(int n, long seed)
    {
        var a = new float[n];
        new GaussianNoise(seed).NextGaussian(a);
        return a;
    }

    private static float[] Run(InferenceSession session, float[] sample, float[] timestep, float[] context)
    {
        using var s = OrtValue.CreateTensorValueFromMemory(sample, new long[] { Batch, 4, Latent, Latent });
        using var t = OrtValue.CreateTensorValueFromMemory(timestep, new long[] { timestep.Length });
        using var c = OrtValue.CreateTensorValueFromMemory(context, new long[] { Batch, Sequence, Context });
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, new[] { "sample", "timestep", "encoder_hidden_states" }, new[] { s, t, c }, new[] { "out_sample" });
        return outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static float[] RunHalf(InferenceSession session, float[] sample, float[] timestep, float[] context)
    {
        static Float16[] Half(float[] v) => Array.ConvertAll(v, x => (Float16)x);
        using var s = OrtValue.CreateTensorValueFromMemory(Half(sample), new long[] { Batch, 4, Latent, Latent });
        using var t = OrtValue.CreateTensorValueFromMemory(Half(timestep), new long[] { timestep.Length });
        using var c = OrtValue.CreateTensorValueFromMemory(Half(context), new long[] { Batch, Sequence, Context });
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, new[] { "sample", "timestep", "encoder_hidden_states" }, new[] { s, t, c }, new[] { "out_sample" });
        return Array.ConvertAll(outputs[0].GetTensorDataAsSpan<Float16>().ToArray(), x => (float)x);
    }

    private static double MaxDiff(float[] a, float[] b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++)
            m = Math.Max(m, Math.Abs(a[i] - b[i]));
        return m;
    }
}
