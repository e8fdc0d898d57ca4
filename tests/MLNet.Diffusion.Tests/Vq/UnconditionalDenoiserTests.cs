using System;
using System.Linq;
using System.Threading;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>The denoising loop with an unconditional UNet2DModel: its inputs come from the model, and a step allocates nothing.</summary>
[TestClass]
public sealed class UnconditionalDenoiserTests
{
    private const int Steps = 4, Rows = 2;

    private sealed class AllocationProbe : IProgress<DenoiseProgress>
    {
        public long[] Bytes { get; } = new long[Steps + 1];

        public void Report(DenoiseProgress value) => Bytes[value.Step] = GC.GetAllocatedBytesForCurrentThread();
    }

    private static DenoiseSettings Settings(StableDiffusionModel model, IProgress<DenoiseProgress>? progress) =>
        new(Steps, 7.5f, 32, 32, SchedulerFactory.CreateDefault(model.Info.SchedulerConfig), progress, CancellationToken.None);

    private static float[] Run(LatentDenoiser denoiser)
    {
        var latents = new float[Rows * denoiser.LatentLength];
        denoiser.Run(new DenoiseBatch(Rows, 0, ReadOnlyMemory<float>.Empty, 0, new long[] { 3, 4 }, latents));
        return latents;
    }

    [TestMethod]
    public void BindsOnlySampleAndTimestepAndAllocatesNothingPerStep()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), UnconditionalModels.RequireLdmVq());
        var probe = new AllocationProbe();
        // A guidance scale above 1 is ignored: an unconditional UNet has nothing to guide by (one UNet row per latent row).
        using var denoiser = new LatentDenoiser(model, Settings(model, probe));
        var first = Run(denoiser); // warm-up: buffers, JIT, the scheduler clone
        var second = Run(denoiser);
        CollectionAssert.AreEqual(first, second, "the same seeds give the same latents");
        Assert.IsTrue(second.All(float.IsFinite));
        Assert.IsTrue(probe.Bytes.Skip(1).All(b => b > 0), "every step was reported");
        for (int k = 2; k <= Steps; k++)
            Assert.AreEqual(0L, probe.Bytes[k] - probe.Bytes[k - 1], $"bytes allocated by step {k}");
        // The device path re-binds the per-step inputs: only sample and timestep (ONNX Runtime itself refuses an input the
        // graph does not have, so a run binding encoder_hidden_states would fail).
        using var device = new LatentDenoiser(model, Settings(model, null) with { CopyUnetInputsPerStep = true });
        CollectionAssert.AreEqual(first, Run(device));
        Assert.AreEqual(2 * Steps, device.Binding!.StepBindCount, "sample and timestep, every step");
    }

    [TestMethod]
    public void RefusesEmbeddingsForAnUnconditionalUnet()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), UnconditionalModels.RequireLdmVq());
        using var denoiser = new LatentDenoiser(model, Settings(model, null));
        var latents = new float[denoiser.LatentLength];
        var e = Assert.ThrowsExactly<ArgumentException>(() => denoiser.Run(new DenoiseBatch(1, 0, new float[8], 1, new long[] { 1 }, latents)));
        StringAssert.Contains(e.Message, "unconditional");
    }
}
