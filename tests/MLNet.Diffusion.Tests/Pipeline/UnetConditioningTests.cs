using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Sdxl;

namespace MLNet.Diffusion.Tests.Pipeline;

/// <summary>
/// The denoising loop's seam for UNet conditionings (<see cref="IUnetConditioning"/>): what a coming conditioning such as
/// ControlNet needs — an input written every step from the current sample and re-bound through the IO binding — works,
/// mistakes are named, and the loop allocates nothing per step when no callback or log listens.
/// </summary>
[TestClass]
public sealed class UnetConditioningTests
{
    private const int Size = 64;
    private const int Steps = 5;
    private const int Rows = 2;

    /// <summary>
    /// SDXL's text_embeds fed as a per-step input, written in <see cref="IUnetConditioning.BeforeUnet"/> (where a ControlNet
    /// writes its residuals after running on <see cref="UnetStep.Sample"/>); time_ids once per batch.
    /// </summary>
    private sealed class PerStepTextEmbeds : IUnetConditioning
    {
        private readonly int _pooledSize;
        private readonly float[] _pooled;
        private readonly float[] _timeIds;
        private TensorBuffer? _textEmbeds;
        private TensorBuffer? _ids;

        public PerStepTextEmbeds(int pooledSize, float[] pooled, float[] timeIds)
        {
            _pooledSize = pooledSize;
            _pooled = pooled;
            _timeIds = timeIds;
        }

        public int StepCalls { get; private set; }

        public void DeclareInputs(UnetInputs inputs)
        {
            _textEmbeds = inputs.Add("text_embeds", new long[] { inputs.UnetRows, _pooledSize }, perStep: true);
            _ids = inputs.Add("time_ids", new long[] { inputs.UnetRows, _timeIds.Length }, perStep: false);
        }

        public void BeginBatch(in UnetBatch batch)
        {
            for (int u = 0; u < 2 * batch.Rows.Count; u++)
                _ids!.Write(_timeIds, u * _timeIds.Length);
            _textEmbeds!.Write(new float[_textEmbeds.Length]); // stale values that every step must overwrite
        }

        public void BeforeUnet(in UnetStep step)
        {
            Assert.IsTrue(step.Guidance);
            Assert.IsFalse(step.Sample.IndexOfAnyExcept(0f) < 0, "the sample holds the scaled latents before the UNet runs");
            int count = step.Rows.Count;
            for (int r = 0; r < count; r++)
            {
                _textEmbeds!.Write(_pooled.AsSpan(2 * r * _pooledSize, _pooledSize), r * _pooledSize);
                _textEmbeds.Write(_pooled.AsSpan((2 * r + 1) * _pooledSize, _pooledSize), (count + r) * _pooledSize);
            }
            StepCalls++;
        }
    }

    [TestMethod]
    public void APerStepInputIsWrittenEveryStepAndReboundOnADevice()
    {
        using var model = SdxlTestModel.Load();
        var info = model.Info;
        var random = new Random(3);
        var embeddings = Enumerable.Range(0, Rows * 2 * info.SequenceLength * info.HiddenSize).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var pooled = Enumerable.Range(0, Rows * 2 * info.PooledSize!.Value).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var timeIds = new SdxlTimeIds(Size, Size).Create(info.TimeIdsWidth!.Value).Cond;

        var sdxl = new SdxlAddedConditioning(info.PooledSize.Value, timeIds, timeIds);
        sdxl.Ensure(Rows);
        for (int r = 0; r < Rows; r++)
            pooled.AsSpan(r * 2 * info.PooledSize.Value, 2 * info.PooledSize.Value).CopyTo(sdxl.Pooled(r));
        using var reference = new LatentDenoiser(model, Settings(model, copyPerStep: null), new[] { sdxl });
        var expected = Run(reference, model, embeddings);

        var perStep = new PerStepTextEmbeds(info.PooledSize.Value, pooled, timeIds);
        using var device = new LatentDenoiser(model, Settings(model, copyPerStep: true), new[] { perStep });
        var actual = Run(device, model, embeddings);

        CollectionAssert.AreEqual(expected, actual);
        Assert.AreEqual(Steps, perStep.StepCalls);
        Assert.AreEqual(3 * Steps, device.Binding!.StepBindCount, "sample, timestep and the per-step text_embeds, every step");
    }

    [TestMethod]
    public void ConditioningChannelsMustAddUpToTheUnetsInputChannels()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesModel.EnsureBuilt());
        var mask = new InpaintingConditioning(model.Info.LatentChannels, (Size / 8) * (Size / 8), unetTakesMask: true);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => new LatentDenoiser(model, Settings(model, null), new[] { mask }));
        StringAssert.Contains(e.Message, "takes 4 input channels");
        StringAssert.Contains(e.Message, "give 9");
    }

    [TestMethod]
    public void AUnetInputThatNoConditioningFeedsIsNamed()
    {
        using var model = SdxlTestModel.Load();
        using var denoiser = new LatentDenoiser(model, Settings(model, null));
        var embeddings = new float[Rows * 2 * model.Info.SequenceLength * model.Info.HiddenSize];
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => Run(denoiser, model, embeddings));
        StringAssert.Contains(e.Message, "'text_embeds'");
    }

    [TestMethod]
    public void WithoutCallbackOrLogAStepAllocatesNothing()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesModel.EnsureBuilt());
        var probe = new AllocationProbe(Steps);
        var settings = Settings(model, null) with { Progress = probe };
        using var denoiser = new LatentDenoiser(model, settings);
        var embeddings = new float[Rows * 2 * model.Info.SequenceLength * model.Info.HiddenSize];
        Run(denoiser, model, embeddings); // warm-up: buffers, JIT, the scheduler clone
        Run(denoiser, model, embeddings);
        Assert.IsTrue(probe.Bytes.Skip(1).All(b => b > 0), "every step was reported");
        for (int k = 2; k <= Steps; k++)
            Assert.AreEqual(0L, probe.Bytes[k] - probe.Bytes[k - 1], $"bytes allocated by step {k}");

        // The probe sees allocations: a log that wants the per-step trace formats a message every step.
        var traced = new AllocationProbe(Steps);
        using var tracing = new LatentDenoiser(model, settings with { Progress = traced }, log: new TraceLog());
        Run(tracing, model, embeddings);
        Run(tracing, model, embeddings);
        Assert.IsTrue(traced.Bytes[Steps] - traced.Bytes[Steps - 1] > 0, "a formatted trace message allocates");
    }

    private sealed class TraceLog : IPipelineLog
    {
        public bool TraceEnabled => true;

        public void Trace(string message) => Assert.IsFalse(string.IsNullOrEmpty(message));

        public void Info(string message)
        {
        }

        public void Warning(string message)
        {
        }
    }

    private sealed class AllocationProbe : IProgress<DenoiseProgress>
    {
        public AllocationProbe(int steps) => Bytes = new long[steps + 1];

        public long[] Bytes { get; }

        public void Report(DenoiseProgress value) => Bytes[value.Step] = GC.GetAllocatedBytesForCurrentThread();
    }

    private static DenoiseSettings Settings(StableDiffusionModel model, bool? copyPerStep) =>
        new(Steps, 7.5f, Size, Size, SchedulerFactory.Create("ddim", model.Info.SchedulerConfig), null, default) { CopyUnetInputsPerStep = copyPerStep };

    private static float[] Run(LatentDenoiser denoiser, StableDiffusionModel model, float[] embeddings)
    {
        var latents = new float[Rows * denoiser.LatentLength];
        denoiser.Run(new DenoiseBatch(Rows, 0, embeddings, model.Info.SequenceLength, new long[] { 5, 6 }, latents));
        return latents;
    }
}
