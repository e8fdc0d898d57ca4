using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading.Tasks;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Transforms;

/// <summary>Every kind of bad input gets a clear error naming the problem (file, column, value, row), never a crash.</summary>
[TestClass]
public sealed class BadInputTests
{
    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private static string CopyModel()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-bad-" + Guid.NewGuid().ToString("N")[..8]);
        foreach (string file in Directory.GetFiles(ShapesTestModel.Folder, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(dir, Path.GetRelativePath(ShapesTestModel.Folder, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        return dir;
    }

    [TestMethod]
    public void EachMissingContractFileIsNamed()
    {
        foreach (string file in ModelFolder.RequiredFiles)
        {
            string dir = CopyModel();
            try
            {
                File.Delete(Path.Combine(dir, file));
                var e = Assert.ThrowsExactly<FileNotFoundException>(() => StableDiffusionModel.Load(new MLContext(), dir), file);
                StringAssert.Contains(e.Message, file);
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }
        Assert.ThrowsExactly<DirectoryNotFoundException>(() => StableDiffusionModel.Load(new MLContext(), "/no/such/model/folder"));
    }

    [TestMethod]
    public void MalformedFilesAreNamed()
    {
        foreach (var (file, content) in new[]
        {
            ("model_index.json", "{ not json"),
            ("scheduler/scheduler_config.json", "{\"beta_schedule\": \"cubic\"}"),
            ("scheduler/scheduler_config.json", "[1, 2]"),
            ("tokenizer/vocab.json", "{\"a\": "),
        })
        {
            string dir = CopyModel();
            try
            {
                File.WriteAllText(Path.Combine(dir, file), content);
                var e = Assert.ThrowsExactly<InvalidDataException>(() => StableDiffusionModel.Load(new MLContext(), dir), file);
                StringAssert.Contains(e.Message.Replace('\\', '/'), Path.GetFileName(file), e.Message);
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }

        string broken = CopyModel();
        try
        {
            File.WriteAllText(Path.Combine(broken, "unet/model.onnx"), "this is not an onnx file");
            var e = Assert.ThrowsExactly<ModelLoadException>(() => StableDiffusionModel.Load(new MLContext(), broken));
            StringAssert.Contains(e.Message.Replace('\\', '/'), "unet/model.onnx");
        }
        finally
        {
            Directory.Delete(broken, true);
        }
    }

    [TestMethod]
    public void AModelWhoseInputsBreakTheContractIsNamed()
    {
        string dir = CopyModel();
        try
        {
            // A VAE decoder where the UNet should be: no 'sample'/'timestep'/'encoder_hidden_states' inputs.
            File.Copy(Path.Combine(dir, "vae_decoder/model.onnx"), Path.Combine(dir, "unet/model.onnx"), overwrite: true);
            var e = Assert.ThrowsExactly<ModelContractException>(() => StableDiffusionModel.Load(new MLContext(), dir));
            StringAssert.Contains(e.Message, "unet/model.onnx");
            StringAssert.Contains(e.Message, "'sample'");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void InvalidOptionsNameTheOption()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        void Expect(string name, DenoiseLatentsOptions options)
        {
            var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.DenoiseLatents(model, "L", "E", options), name);
            Assert.AreEqual(name, e.ParamName);
        }
        Expect("Width", new DenoiseLatentsOptions { Width = 100 });
        Expect("Height", new DenoiseLatentsOptions { Height = 0 });
        Expect("Width", new DenoiseLatentsOptions { Width = 1 << 20 });
        Expect("Steps", new DenoiseLatentsOptions { Steps = 0 });
        Expect("Steps", new DenoiseLatentsOptions { Steps = -3 });
        Expect("GuidanceScale", new DenoiseLatentsOptions { GuidanceScale = float.NaN });
        Expect("GuidanceScale", new DenoiseLatentsOptions { GuidanceScale = -1 });
        Expect("BatchSize", new DenoiseLatentsOptions { BatchSize = 0 });
        var unknown = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Scheduler = "warp-drive" }));
        StringAssert.Contains(unknown.Message, "warp-drive");
        StringAssert.Contains(unknown.Message, "ddim");
    }

    [TestMethod]
    public void EmptyNullAndHugePromptsAreHandled()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var log = new ConcurrentQueue<string>();
        ml.Log += (_, e) => log.Enqueue(e.Message);
        string huge = string.Join(' ', Enumerable.Repeat("red circle", 200));
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "" }, new Row { Prompt = null! }, new Row { Prompt = huge } });
        var embeddings = ml.Transforms.EncodePrompt(model, "E", "Prompt").Fit(data).Transform(data)
            .GetColumn<VBuffer<float>>("E").Select(v => v.DenseValues().ToArray()).ToArray();
        Assert.AreEqual(3, embeddings.Length);
        CollectionAssert.AreEqual(embeddings[0], embeddings[1], "a null prompt is the empty prompt");
        Assert.IsTrue(embeddings[2].All(float.IsFinite));
        Assert.IsTrue(log.Any(m => m.Contains("Row 2", StringComparison.Ordinal) && m.Contains("dropped", StringComparison.Ordinal)),
            "truncating a long prompt logs a warning naming the row");
    }

    [TestMethod]
    public void ANonFiniteModelOutputIsReportedWithTheRow()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        int len = 4 * 8 * 8;
        var good = Enumerable.Repeat(0.5f, len).ToArray();
        var bad = (float[])good.Clone();
        bad[7] = float.NaN;
        var def = SchemaDefinition.Create(typeof(NoiseRow));
        def[nameof(NoiseRow.Noise)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, len);
        var data = ml.Data.LoadFromEnumerable(new[] { new NoiseRow { Prompt = "a red circle", Noise = good }, new NoiseRow { Prompt = "a red circle", Noise = bad } }, def);
        var result = ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 3, InitialNoiseColumnName = "Noise", BatchSize = 2 }))
            .Fit(data).Transform(data);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => result.GetColumn<VBuffer<float>>("L").ToArray());
        StringAssert.Contains(e.Message, "row 1");
        StringAssert.Contains(e.Message, "non-finite");
    }

    [TestMethod]
    public void ADisposedModelFailsClearly()
    {
        var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a circle" } });
        var transformer = ml.Transforms.EncodePrompt(model, "E", "Prompt").Fit(data);
        model.Dispose();
        model.Dispose();
        var e = Assert.ThrowsExactly<ObjectDisposedException>(() => transformer.Transform(data).GetColumn<VBuffer<float>>("E").ToArray());
        StringAssert.Contains(e.Message, "disposed");
        Assert.ThrowsExactly<ObjectDisposedException>(() => ml.Transforms.EncodePrompt(model, "E", "Prompt"));
    }

    [TestMethod]
    public void OneTransformerServesSeveralThreadsAtOnce()
    {
        // Decided and documented: a fitted transformer is safe to use from several threads; every cursor has its own
        // buffers and scheduler state, and ONNX Runtime sessions are safe for concurrent Run calls.
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 3).Select(i => new Row { Prompt = "a green square", Seed = i }).ToArray());
        var transformer = ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 4, SeedColumnName = "Seed", Scheduler = "euler-a" }))
            .Fit(data);
        float[][] Run() => transformer.Transform(data).GetColumn<VBuffer<float>>("L").Select(v => v.DenseValues().ToArray()).ToArray();
        var expected = Run();
        var results = new float[4][][];
        Parallel.For(0, 4, i => results[i] = Run());
        foreach (var r in results)
            for (int row = 0; row < 3; row++)
                CollectionAssert.AreEqual(expected[row], r[row]);
    }

    [TestMethod]
    public void ACudaProviderOnACpuBuildNamesTheFix()
    {
        var e = Assert.ThrowsExactly<InvalidOperationException>(() =>
            StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder, new StableDiffusionModelOptions { ExecutionProvider = ExecutionProvider.Cuda(0) }));
        StringAssert.Contains(e.Message, "Microsoft.ML.OnnxRuntime.Gpu");
        StringAssert.Contains(e.Message, "cuDNN");
        StringAssert.Contains(e.Message, "FallbackToCpu");

        var log = new ConcurrentQueue<string>();
        var ml = new MLContext(1) { GpuDeviceId = 0, FallbackToCpu = true };
        ml.Log += (_, a) => log.Enqueue(a.Message);
        using var model = StableDiffusionModel.Load(ml, ShapesTestModel.Folder);
        Assert.AreEqual("CPU", model.Info.ExecutionProvider);
        Assert.IsTrue(log.Any(m => m.Contains("Falling back to the CPU", StringComparison.Ordinal)));

        var plugin = Assert.ThrowsExactly<FileNotFoundException>(() => StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder,
            new StableDiffusionModelOptions { ExecutionProvider = ExecutionProvider.Cuda(0, new CudaProviderOptions { PluginLibraryPath = "/no/such/libonnxruntime_providers_cuda.so" }) }));
        StringAssert.Contains(plugin.Message, "/no/such/libonnxruntime_providers_cuda.so");
    }

    private sealed class NoiseRow
    {
        public string Prompt { get; set; } = string.Empty;

        public float[] Noise { get; set; } = Array.Empty<float>();
    }
}
