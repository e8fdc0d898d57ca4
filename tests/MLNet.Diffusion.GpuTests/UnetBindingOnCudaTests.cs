using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.GpuTests;

/// <summary>
/// The UNet's IO binding on CUDA (issue 8, point 2): every input bound (copied to the device) once per batch, then only
/// sample and timestep per step; the embeddings stay on the device. Two batches with different prompts run through one
/// denoiser: a stale device copy of the first batch's embeddings would draw the first batch's items in the second, so
/// the second batch must match the CPU's (same tolerance as <see cref="ShapesOnCudaTests"/>: 1 % relative L2).
/// </summary>
[TestClass]
public sealed class UnetBindingOnCudaTests
{
    private const int Size = 128, Steps = 20, Rows = 2;

    private static readonly string[][] s_batches =
    {
        new[] { "a red circle on the left on a blue background", "a yellow square in the center on a black background" },
        new[] { "a green triangle on the right on a white background", "a purple circle in the center on a gray background" },
    };

    [TestMethod]
    public void EmbeddingsAreBoundOncePerBatchAndTheSecondBatchMatchesTheCpu()
    {
        GpuEnvironment.RequireCuda();
        var cpu = Denoise(ExecutionProvider.Cpu, out _, out _);
        var cuda = Denoise(GpuEnvironment.Cuda, out int batchBinds, out int stepBinds);
        Assert.AreEqual(2, batchBinds);
        Assert.AreEqual(2 * 2 * Steps, stepBinds, "sample and timestep copied in at every step of both batches");
        for (int b = 0; b < s_batches.Length; b++)
        {
            double relative = ImageChecks.RelativeL2(cuda[b], cpu[b]);
            Console.WriteLine($"batch {b}: latents relative L2 {relative:E2}");
            Assert.IsTrue(relative <= 0.01, $"batch {b}: CUDA latents differ from the CPU's by {relative:E2} (relative L2)");
        }
    }

    private static float[][] Denoise(ExecutionProvider provider, out int batchBinds, out int stepBinds)
    {
        using var sd = GpuEnvironment.Load(GpuEnvironment.ShapesFolder, provider);
        var ml = sd.MLContext;
        using var denoiser = new LatentDenoiser(sd, new DenoiseSettings(Steps, 7.5f, Size, Size, SchedulerFactory.CreateDefault(sd.Info.SchedulerConfig), null, default));
        var results = new float[s_batches.Length][];
        for (int b = 0; b < s_batches.Length; b++)
        {
            var data = ml.Data.LoadFromEnumerable(s_batches[b].Select(p => new PromptRow { Prompt = p }).ToArray());
            var embeddings = ml.Transforms.EncodePrompt(sd, "Embeddings", "Prompt").Fit(data).Transform(data)
                .GetColumn<VBuffer<float>>("Embeddings").SelectMany(v => v.DenseValues()).ToArray();
            results[b] = new float[Rows * denoiser.LatentLength];
            denoiser.Run(new DenoiseBatch(Rows, 0, embeddings, sd.Info.SequenceLength, new long[] { 40 + 2 * b, 41 + 2 * b }, results[b]));
        }
        Assert.AreEqual(provider is CudaExecutionProvider, denoiser.Binding!.CopiesPerStep);
        batchBinds = denoiser.Binding.BatchBindCount;
        stepBinds = denoiser.Binding.StepBindCount;
        return results;
    }

    private sealed class PromptRow
    {
        public string Prompt { get; set; } = string.Empty;
    }
}
