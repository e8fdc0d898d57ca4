using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.GpuTests;

/// <summary>
/// The synthetic SD-architecture UNet (GroupNorm, attention, GEGLU, up/down sampling: every operator kind of a real
/// SD export) in float32 and float16 on CUDA, at SD's 64×64 latents with the tiny widths so it builds in a second.
/// </summary>
/// <remarks>
/// Tolerances, relative L2 of <c>out_sample</c> against float32 on the CPU: float32 on CUDA within 1 % (TF32 matrix
/// products, inputs rounded to 10-bit mantissas ≈ 5e-4 relative, over ~40 layers); float16 within 2 % (11-bit
/// mantissas for weights and activations; the CPU test of the same model measured 1.2e-3 at 8×8 latents).
/// </remarks>
[TestClass]
public sealed class SyntheticUnetOnCudaTests
{
    private const int Batch = 2, Latent = 64, Sequence = 77;

    [TestMethod]
    public void Float32AndFloat16OnCudaAgreeWithTheCpu()
    {
        GpuEnvironment.RequireCuda();
        string fp32 = Folder(float16: false), fp16 = Folder(float16: true);
        int context = SyntheticUnetOptions.Tiny().CrossAttentionDim;
        var sample = Noise(Batch * 4 * Latent * Latent, 1);
        var states = Noise(Batch * Sequence * context, 2);
        var timesteps = new[] { 801f, 801f };

        float[] reference;
        using (var cpu = GpuEnvironment.Load(fp32, ExecutionProvider.Cpu))
            reference = Unet(cpu, sample, timesteps, states);
        string profiles = Path.Combine(GpuEnvironment.ModelCache, "synthetic-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(profiles);
        foreach (var (folder, tolerance) in new[] { (fp32, 0.01), (fp16, 0.02) })
        {
            string name = Path.GetFileName(folder);
            using var sd = GpuEnvironment.Load(folder, GpuEnvironment.Cuda, Path.Combine(profiles, name));
            Assert.AreEqual(GpuEnvironment.Cuda.ToString(), sd.Info.ExecutionProvider);
            var output = Unet(sd, sample, timesteps, states);
            double relative = ImageChecks.RelativeL2(output, reference);
            Console.WriteLine($"{name} on {sd.Info.ExecutionProvider}: out_sample relative L2 vs float32 CPU {relative:E2}");
            Assert.IsTrue(output.All(float.IsFinite), $"{name}: non-finite output on CUDA");
            Assert.IsTrue(relative <= tolerance, $"{name}: relative L2 {relative:E2} > {tolerance}");
            Placement.AssertOnCuda("unet " + name, sd.Unet.Session.EndProfiling(),
                "Conv", "MatMul", "Softmax", "InstanceNormalization", "LayerNormalization", "Resize", "Erf", "Sigmoid");
        }
    }

    [TestMethod]
    public void Float16FolderRunsThroughTheStagesOnCuda()
    {
        GpuEnvironment.RequireCuda();
        using var sd = GpuEnvironment.Load(Folder(float16: true), GpuEnvironment.Cuda);
        var ml = sd.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a red circle" }, new Row { Prompt = "a blue square" } });
        var view = ml.Transforms.EncodePrompt(sd, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 8 * Latent, Height = 8 * Latent, Steps = 3 }))
            .Append(ml.Transforms.DecodeLatents(sd, "Image", "Latents"))
            .Fit(data).Transform(data);
        foreach (var latents in view.GetColumn<VBuffer<float>>("Latents"))
        {
            Assert.AreEqual(4 * Latent * Latent, latents.Length);
            Assert.IsTrue(latents.DenseValues().All(float.IsFinite), "non-finite latents from the float16 UNet on CUDA");
        }
    }

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;
    }

    private static string Folder(bool float16)
    {
        string folder = Path.Combine(GpuEnvironment.ModelCache, float16 ? "synthetic-tiny-fp16" : "synthetic-tiny-fp32");
        if (!File.Exists(Path.Combine(folder, "unet", SyntheticUnet.WeightsFileName)))
            SyntheticUnet.BuildModelFolder(folder, SyntheticUnetOptions.Tiny(float16));
        return folder;
    }

    /// <summary>One UNet call on the model's own session, float32 in and out (converted at the boundary for float16).</summary>
    private static float[] Unet(StableDiffusionModel sd, float[] sample, float[] timesteps, float[] states)
    {
        var session = sd.Unet.Session;
        bool half = session.InputMetadata["sample"].ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16;
        int context = states.Length / (Batch * Sequence);
        using var s = Value(sample, half, Batch, 4, Latent, Latent);
        using var t = Value(timesteps, half, timesteps.Length);
        using var c = Value(states, half, Batch, Sequence, context);
        using var runOptions = new RunOptions();
        using var outputs = session.Run(runOptions, new[] { "sample", "timestep", "encoder_hidden_states" }, new[] { s, t, c }, new[] { sd.UnetOutputName });
        return half
            ? Array.ConvertAll(outputs[0].GetTensorDataAsSpan<Float16>().ToArray(), v => (float)v)
            : outputs[0].GetTensorDataAsSpan<float>().ToArray();
    }

    private static OrtValue Value(float[] data, bool half, params long[] shape) => half
        ? OrtValue.CreateTensorValueFromMemory(Array.ConvertAll(data, v => (Float16)v), shape)
        : OrtValue.CreateTensorValueFromMemory(data, shape);

    private static float[] Noise(int n, long seed)
    {
        var a = new float[n];
        new GaussianNoise(seed).NextGaussian(a);
        return a;
    }

}
