using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Sdxl;
using MLNet.Diffusion.Tests.Variants;

namespace MLNet.Diffusion.Tests.Onnx;

/// <summary>
/// The UNet's IO binding in the denoising loop (issue 8, point 2). On the CPU provider the bound tensors are the loop's
/// own pinned buffers, so nothing is re-bound per step; on a device every input is bound (copied) once per batch and
/// only sample and timestep per step. The device path's code is forced here on the CPU
/// (<see cref="DenoiseSettings.CopyUnetInputsPerStep"/>) and must give bitwise the same latents for two batches in a
/// row, with the bind counts the design promises. (On the CPU a bound tensor shares the host memory, so a stale device
/// copy cannot show here; MLNet.Diffusion.GpuTests' UnetBindingOnCudaTests checks that on CUDA.)
/// </summary>
[TestClass]
public sealed class UnetBindingTests
{
    private const int Size = 64;
    private const int Steps = 6;
    private const int Rows = 2;

    [TestMethod]
    public void OnTheCpuInputsAreBoundOncePerBatchAndNeverPerStep()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesModel.EnsureBuilt());
        using var denoiser = Denoiser(model, copyPerStep: null);
        var batch = Batch(model, 1);
        long before = model.Unet.RunCount;
        Run(denoiser, model, batch);
        Run(denoiser, model, batch);

        Assert.IsFalse(model.Unet.RunsOnDevice);
        Assert.IsNotNull(denoiser.Binding);
        Assert.IsFalse(denoiser.Binding.CopiesPerStep);
        Assert.AreEqual(2, denoiser.Binding.BatchBindCount);
        Assert.AreEqual(0, denoiser.Binding.StepBindCount);
        Assert.AreEqual(2 * Steps, model.Unet.RunCount - before, "one UNet call per step (the 2N guidance batch)");
    }

    [TestMethod]
    public void TheDevicePathGivesTheSameLatents() => AssertDevicePathMatches(ShapesModel.EnsureBuilt());

    [TestMethod]
    public void TheDevicePathGivesTheSameLatentsWithFloat16Tensors() => AssertDevicePathMatches(ShapesVariantModels.Folder(ShapesVariant.Float16));

    [TestMethod]
    public void TheDevicePathGivesTheSameLatentsWithSdxlAddedConditioning() => AssertDevicePathMatches(SdxlTestModel.Folder);

    private static void AssertDevicePathMatches(string folder)
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder);
        var first = Batch(model, 1);
        var second = Batch(model, 2);

        using var host = Denoiser(model, copyPerStep: null);
        var expectedFirst = Run(host, model, first);
        using var fresh = Denoiser(model, copyPerStep: null);
        var expectedSecond = Run(fresh, model, second);
        Assert.IsFalse(expectedFirst.AsSpan().SequenceEqual(expectedSecond), "the two batches must differ, or the test proves nothing");

        using var device = Denoiser(model, copyPerStep: true);
        var actualFirst = Run(device, model, first);
        var actualSecond = Run(device, model, second);

        CollectionAssert.AreEqual(expectedFirst, actualFirst);
        CollectionAssert.AreEqual(expectedSecond, actualSecond, "the second batch's embeddings must be bound, not the first's");
        Assert.IsTrue(device.Binding!.CopiesPerStep);
        Assert.AreEqual(2, device.Binding.BatchBindCount);
        Assert.AreEqual(2 * 2 * Steps, device.Binding.StepBindCount, "sample and timestep, every step of both batches");
    }

    private sealed record BatchInputs(float[] Embeddings, long[] Seeds, float[] Pooled);

    /// <summary>Deterministic stand-in embeddings [Rows, 2, S, D] (and SDXL pooled vectors) that differ per <paramref name="seed"/>.</summary>
    private static BatchInputs Batch(StableDiffusionModel model, int seed)
    {
        var random = new Random(seed);
        var info = model.Info;
        float[] Values(int n) => Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var embeddings = Values(Rows * 2 * info.SequenceLength * info.HiddenSize);
        var pooled = info.TimeIdsWidth is null ? Array.Empty<float>() : Values(Rows * 2 * info.PooledSize!.Value);
        return new BatchInputs(embeddings, new long[] { 10L * seed, 10L * seed + 1 }, pooled);
    }

    private static LatentDenoiser Denoiser(StableDiffusionModel model, bool? copyPerStep)
    {
        var settings = new DenoiseSettings(Steps, 7.5f, Size, Size, SchedulerFactory.CreateDefault(model.Info.SchedulerConfig), null, default)
        {
            CopyUnetInputsPerStep = copyPerStep,
        };
        if (model.Info.TimeIdsWidth is not int width)
            return new LatentDenoiser(model, settings);
        var ids = Enumerable.Range(0, width).Select(i => (float)(64 * (i + 1))).ToArray();
        return new LatentDenoiser(model, settings, new[] { new SdxlAddedConditioning(model.Info.PooledSize!.Value, ids, ids.Select(v => v / 2).ToArray()) });
    }

    private static float[] Run(LatentDenoiser denoiser, StableDiffusionModel model, BatchInputs batch)
    {
        if (model.Info.TimeIdsWidth is not null)
        {
            var sdxl = (SdxlAddedConditioning)denoiser.Conditionings.Single();
            sdxl.Ensure(Rows);
            int per = 2 * model.Info.PooledSize!.Value;
            for (int r = 0; r < Rows; r++)
                batch.Pooled.AsSpan(r * per, per).CopyTo(sdxl.Pooled(r));
        }
        var latents = new float[Rows * denoiser.LatentLength];
        denoiser.Run(new DenoiseBatch(Rows, 0, batch.Embeddings, model.Info.SequenceLength, batch.Seeds, latents));
        return latents;
    }
}
