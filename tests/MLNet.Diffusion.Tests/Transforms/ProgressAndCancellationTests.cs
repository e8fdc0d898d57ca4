using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Transforms;

[TestClass]
public sealed class ProgressAndCancellationTests
{
    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;
    }

    /// <summary>Reports synchronously on the generating thread (Progress&lt;T&gt; would post to the thread pool).</summary>
    private sealed class Recorder : IProgress<DenoiseProgress>
    {
        private readonly Action<DenoiseProgress>? _onReport;

        public Recorder(Action<DenoiseProgress>? onReport = null) => _onReport = onReport;

        public List<DenoiseProgress> Reports { get; } = new();

        public void Report(DenoiseProgress value)
        {
            Reports.Add(value);
            _onReport?.Invoke(value);
        }
    }

    [TestMethod]
    public void EveryStepIsReportedToProgressAndTheLog()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var log = new ConcurrentQueue<string>();
        ml.Log += (_, e) => log.Enqueue(e.Message);
        var recorder = new Recorder();
        var data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 3).Select(_ => new Row { Prompt = "a circle" }).ToArray());
        _ = ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 5, BatchSize = 2, Progress = recorder }))
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("L").ToArray();
        // Two batches (2 rows, then 1) × 5 steps.
        Assert.AreEqual(10, recorder.Reports.Count);
        CollectionAssert.AreEqual(new[] { 1, 2, 3, 4, 5, 1, 2, 3, 4, 5 }, recorder.Reports.Select(r => r.Step).ToArray());
        Assert.IsTrue(recorder.Reports.All(r => r.TotalSteps == 5));
        CollectionAssert.AreEqual(new long[] { 0, 0, 0, 0, 0, 2, 2, 2, 2, 2 }, recorder.Reports.Select(r => r.FirstRow).ToArray());
        Assert.IsTrue(log.Count(m => m.Contains("step ", StringComparison.Ordinal) && m.Contains("/5", StringComparison.Ordinal)) >= 10, "per-step trace messages in the MLContext log");
    }

    [TestMethod]
    public void CancellationStopsBetweenStepsAndReleasesTheCursor()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        using var cts = new CancellationTokenSource();
        var recorder = new Recorder(r =>
        {
            if (r.Step == 3)
                cts.Cancel();
        });
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a circle" } });
        var result = ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 10, Progress = recorder, CancellationToken = cts.Token }))
            .Fit(data).Transform(data);
        long before = model.Unet.RunCount;
        Assert.ThrowsExactly<OperationCanceledException>(() => result.GetColumn<VBuffer<float>>("L").ToArray());
        Assert.AreEqual(3, recorder.Reports.Count, "no step runs after cancellation");
        Assert.AreEqual(before + 3, model.Unet.RunCount);

        // The model stays usable: a new run without the cancelled token works.
        var again = ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 2 }))
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("L").Single();
        Assert.AreEqual(4 * 8 * 8, again.Length);
    }
}
