using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.ScaleOut;

/// <summary>
/// Several devices in one process (issue 19, point 1): the Shapes model at 64×64 loaded on 1, 2 and 3 CPU instances,
/// text to image through RunOnDevices. Every stage batches 2 rows, so 11 rows are more than 3 devices × 2.
/// </summary>
[TestClass]
public sealed class RunOnDevicesTests
{
    private const int Size = 64;
    private const int Rows = 11;

    internal sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public float Seed { get; set; }
    }

    private static readonly string[] s_prompts =
    {
        "a red circle on the left on a blue background", "a yellow triangle", "a green square on the right",
        "a blue circle on a white background", "a red square", "a yellow circle in the middle",
    };

    private static Row[] MakeRows(int count) =>
        Enumerable.Range(0, count).Select(i => new Row { Prompt = s_prompts[i % s_prompts.Length] + (i >= s_prompts.Length ? " again" : ""), Seed = 40 + i }).ToArray();

    /// <summary>The per-device pipeline: 2 rows per batch at every stage, 4 DDIM steps, no seed column (seed 7 + position).</summary>
    private static IEstimator<ITransformer> Pipeline(StableDiffusionModel model, NoiseOptions? noise = null, IProgress<DenoiseProgress>? progress = null,
        CancellationToken token = default, string? seedColumn = null)
    {
        var ml = model.MLContext;
        return ml.Transforms.EncodePrompt(model, new EncodePromptOptions { OutputColumnName = "Embeddings", InputColumnName = "Prompt", BatchSize = 2 })
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Width = Size, Height = Size, Steps = 4, BatchSize = 2, Seed = 7, SeedColumnName = seedColumn,
                Noise = noise ?? NoiseOptions.Default, Progress = progress, CancellationToken = token,
            }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { BatchSize = 2, PixelsColumnName = "Pixels" }));
    }

    private static MultiDeviceModel LoadCpu(int instances) =>
        MultiDeviceModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder, DeviceList.Cpu(instances));

    /// <summary>Each row's pixels (as raw bits) and prompt, in the order the cursor returns them.</summary>
    private static (int[][] Pixels, string[] Prompts) Read(IDataView view)
    {
        // One cursor: each cursor runs the pipeline again.
        var pixels = new List<int[]>();
        var prompts = new List<string>();
        using var cursor = view.GetRowCursor(new[] { view.Schema["Pixels"], view.Schema["Prompt"] });
        var pixelGetter = cursor.GetGetter<VBuffer<float>>(view.Schema["Pixels"]);
        var promptGetter = cursor.GetGetter<ReadOnlyMemory<char>>(view.Schema["Prompt"]);
        VBuffer<float> value = default;
        ReadOnlyMemory<char> prompt = default;
        while (cursor.MoveNext())
        {
            pixelGetter(ref value);
            promptGetter(ref prompt);
            pixels.Add(value.DenseValues().Select(BitConverter.SingleToInt32Bits).ToArray());
            prompts.Add(prompt.ToString());
        }
        return (pixels.ToArray(), prompts.ToArray());
    }

    private static (int[][] Pixels, string[] Prompts) RunOnCpu(int instances, Row[] rows, NoiseOptions? noise = null, ConcurrentBag<int>? devices = null, int? batchSize = null)
    {
        using var model = LoadCpu(instances);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var options = new RunOnDevicesOptions { BatchSize = batchSize, Progress = devices is null ? null : new SyncProgress<DeviceBatchProgress>(p => devices.Add(p.Device)) };
        var transformer = ml.Transforms.RunOnDevices(model, m => Pipeline(m, noise), options).Fit(data);
        Assert.AreEqual(batchSize ?? 2, transformer.BatchSize, "the least common multiple of the stages' batch sizes by default");
        return Read(transformer.Transform(data));
    }

    private static (int[][] Pixels, string[] Prompts) RunSingleDevice(Row[] rows, NoiseOptions? noise = null)
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var data = model.MLContext.Data.LoadFromEnumerable(rows);
        return Read(Pipeline(model, noise).Fit(data).Transform(data));
    }

    private static void AssertSame((int[][] Pixels, string[] Prompts) expected, (int[][] Pixels, string[] Prompts) actual, string what)
    {
        CollectionAssert.AreEqual(expected.Prompts, actual.Prompts, $"{what}: rows out of input order");
        Assert.AreEqual(expected.Pixels.Length, actual.Pixels.Length, $"{what}: row count");
        for (int r = 0; r < expected.Pixels.Length; r++)
            CollectionAssert.AreEqual(expected.Pixels[r], actual.Pixels[r], $"{what}: row {r} differs");
    }

    [TestMethod]
    public void OneTwoAndThreeCpuInstancesGiveTheSameImagesInInputOrder()
    {
        var rows = MakeRows(Rows);
        var single = RunSingleDevice(rows);
        CollectionAssert.AreEqual(rows.Select(r => r.Prompt).ToArray(), single.Prompts);
        // The rows differ from one another, so a row served in another row's place would show.
        Assert.AreEqual(Rows, single.Pixels.Select(p => string.Join(",", p.Take(64))).Distinct().Count(), "every row's image is its own");
        for (int instances = 1; instances <= 3; instances++)
        {
            var devices = new ConcurrentBag<int>();
            AssertSame(single, RunOnCpu(instances, rows, devices: devices), $"{instances} CPU instance(s)");
            Assert.AreEqual((Rows + 1) / 2, devices.Count, "one progress report per mini-batch of 2 rows");
            if (instances > 1)
                Assert.IsTrue(devices.Distinct().Count() > 1, $"{instances} instances: every batch ran on device {devices.First()}");
        }
    }

    /// <summary>
    /// One generator per batch (diffusers with one generator, ComfyUI) makes a row's noise depend on its batch: the
    /// devices' mini-batches are whole stage batches, aligned as on one device, so the images still match.
    /// </summary>
    [TestMethod]
    public void AGeneratorPerBatchGivesTheSameImagesOnThreeInstances()
    {
        var rows = MakeRows(7);
        var noise = NoiseOptions.Default with { BatchPolicy = NoiseBatchPolicy.GeneratorPerBatch };
        var single = RunSingleDevice(rows, noise);
        Assert.IsFalse(single.Pixels[2].SequenceEqual(RunSingleDevice(rows.Skip(1).ToArray(), noise).Pixels[1]),
            "under GeneratorPerBatch a row moved to another batch slot gets other noise (else this test proves nothing)");
        AssertSame(single, RunOnCpu(3, rows, noise), "3 CPU instances, GeneratorPerBatch");
        AssertSame(single, RunOnCpu(2, rows, noise, batchSize: 4), "2 CPU instances taking 4 rows (two stage batches) at a time, GeneratorPerBatch");
    }

    [TestMethod]
    public void ABatchSizeThatCutsAStageBatchIsRefusedNamingTheStages()
    {
        using var model = LoadCpu(2);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(MakeRows(3));
        var e = Assert.ThrowsExactly<ArgumentException>(() =>
            ml.Transforms.RunOnDevices(model, m => Pipeline(m), new RunOnDevicesOptions { BatchSize = 3 }).Fit(data));
        StringAssert.Contains(e.Message, "BatchSize 3");
        StringAssert.Contains(e.Message, "DenoiseLatents 2");
        Assert.AreEqual(4, ml.Transforms.RunOnDevices(model, m => Pipeline(m), new RunOnDevicesOptions { BatchSize = 4 }).Fit(data).BatchSize);
    }

    [TestMethod]
    public void APipelineBuiltOnAnotherDevicesModelIsRefused()
    {
        using var model = LoadCpu(2);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(MakeRows(2));
        var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.RunOnDevices(model, _ => Pipeline(model.Models[0])).Fit(data));
        StringAssert.Contains(e.Message, "device 1 (CPU#1)");
    }

    [TestMethod]
    public void ABadRowFailsWithTheErrorNamingItsInputRow()
    {
        var rows = MakeRows(Rows);
        rows[7].Seed = 2.5f;
        using var model = LoadCpu(3);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var view = ml.Transforms.RunOnDevices(model, m => Pipeline(m, seedColumn: "Seed")).Fit(data).Transform(data);
        int served = 0;
        var e = Assert.ThrowsExactly<InvalidOperationException>(() =>
        {
            using var cursor = view.GetRowCursor(new[] { view.Schema["Image"] });
            while (cursor.MoveNext())
                served++;
        });
        StringAssert.Contains(e.Message, "Row 7: seed column 'Seed'");
        Assert.AreEqual(6, served, "the rows of the batches before the bad row's are served, in order");
    }

    [TestMethod]
    public void CancellationStopsTheDevicesAndTheCursor()
    {
        using var model = LoadCpu(2);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(MakeRows(40));
        using var cts = new CancellationTokenSource();
        int batches = 0;
        var options = new RunOnDevicesOptions
        {
            CancellationToken = cts.Token,
            BatchesAhead = 2,
            Progress = new SyncProgress<DeviceBatchProgress>(_ =>
            {
                if (Interlocked.Increment(ref batches) == 2)
                    cts.Cancel();
            }),
        };
        var view = ml.Transforms.RunOnDevices(model, m => Pipeline(m, token: cts.Token), options).Fit(data).Transform(data);
        Assert.ThrowsExactly<OperationCanceledException>(() =>
        {
            using var cursor = view.GetRowCursor(new[] { view.Schema["Image"] });
            while (cursor.MoveNext())
            {
            }
        });
        Assert.IsTrue(Volatile.Read(ref batches) <= 4, $"{batches} of 20 mini-batches ran after cancelling at the second");
    }

    [TestMethod]
    public void TheStagesProgressAndTheDevicesLogNameEachBatchsInputRows()
    {
        var reports = new ConcurrentBag<DenoiseProgress>();
        using var model = LoadCpu(3);
        var ml = model.MLContext;
        var log = new ConcurrentQueue<string>();
        ml.Log += (_, e) => log.Enqueue(e.Message);
        var data = ml.Data.LoadFromEnumerable(MakeRows(5));
        var progress = new SyncProgress<DenoiseProgress>(reports.Add);
        var view = ml.Transforms.RunOnDevices(model, m => Pipeline(m, progress: progress)).Fit(data).Transform(data);
        Assert.AreEqual(5, view.GetColumn<MLImage>("Image").Count());
        var last = reports.Where(r => r.Step == r.TotalSteps).Select(r => (r.FirstRow, r.RowCount)).OrderBy(r => r.FirstRow).ToArray();
        CollectionAssert.AreEqual(new[] { (0L, 2), (2L, 2), (4L, 1) }, last, "each batch's last step names its rows' input positions");
        // Each device logs its mini-batches to mlContext.Log, naming itself and the rows.
        var ran = log.Where(m => m.Contains(" ran rows ", StringComparison.Ordinal)).ToArray();
        Assert.AreEqual(3, ran.Length, string.Join("\n", ran));
        foreach (string rows in new[] { "rows 0–1", "rows 2–3", "rows 4–4" })
            Assert.IsTrue(ran.Any(m => m.Contains(rows, StringComparison.Ordinal) && m.Contains("CPU#", StringComparison.Ordinal)), $"no device logged {rows}: {string.Join(" | ", ran)}");
    }

    [TestMethod]
    public void DisposingTheModelReleasesEveryDevice()
    {
        var model = LoadCpu(3);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(MakeRows(2));
        var transformer = ml.Transforms.RunOnDevices(model, m => Pipeline(m)).Fit(data);
        var devices = model.Models.ToArray();
        Assert.AreEqual(3, devices.Distinct().Count(), "one model (one set of sessions) per device");
        model.Dispose();
        foreach (var device in devices)
            Assert.IsTrue(device.IsDisposed, "every device's sessions are released");
        Assert.ThrowsExactly<ObjectDisposedException>(() => transformer.Transform(data));
        Assert.ThrowsExactly<ObjectDisposedException>(() => _ = model.Models);
        model.Dispose();
    }

    /// <summary>Saving writes the first device's pipeline; loading it gives that pipeline on one device, with the same rows.</summary>
    [TestMethod]
    public void ASavedPoolLoadsAsTheSingleDevicePipeline()
    {
        var rows = MakeRows(3);
        using var model = LoadCpu(2);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var transformer = ml.Transforms.RunOnDevices(model, m => Pipeline(m)).Fit(data);
        var pooled = Read(transformer.Transform(data));
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"run-on-devices-{Guid.NewGuid():N}.zip");
        try
        {
            ml.Model.Save(transformer, data.Schema, path);
            var loaded = new MLContext(seed: 1).Model.Load(path, out _);
            Assert.IsFalse(loaded is DevicePoolingTransformer);
            AssertSame(pooled, Read(loaded.Transform(data)), "the saved pipeline");
            (loaded as IDisposable)?.Dispose();
        }
        finally
        {
            System.IO.File.Delete(path);
        }
    }

    [TestMethod]
    public void DeviceListsNameTheirDevices()
    {
        var cuda = DeviceList.Cuda(0, 1, 1);
        Assert.AreEqual(3, cuda.Count);
        Assert.AreEqual("CUDA:1", cuda.Describe(2));
        Assert.IsNull(cuda.IntraOpNumThreads);
        Assert.AreEqual("CUDA:0, CUDA:1, CUDA:1", cuda.ToString());
        var cpu = DeviceList.Cpu(instances: 3, threadsPerInstance: 2);
        Assert.AreEqual("CPU#2", cpu.Describe(2));
        Assert.AreEqual("3 × CPU (2 threads each)", cpu.ToString());
        Assert.AreEqual(Math.Max(1, Environment.ProcessorCount / 2), DeviceList.Cpu(2).IntraOpNumThreads);
        Assert.IsNull(DeviceList.Cpu(1).IntraOpNumThreads, "one instance keeps ONNX Runtime's default, as a single-device load");
        Assert.AreEqual("1 × CPU", DeviceList.Cpu(1).ToString());
        Assert.ThrowsExactly<ArgumentException>(() => DeviceList.Cuda());
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DeviceList.Cuda(-1));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => DeviceList.Cpu(0));
    }

    /// <summary>An <see cref="IProgress{T}"/> that reports on the caller's thread (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress<T> : IProgress<T>
    {
        private readonly Action<T> _report;

        public SyncProgress(Action<T> report) => _report = report;

        public void Report(T value) => _report(value);
    }
}
