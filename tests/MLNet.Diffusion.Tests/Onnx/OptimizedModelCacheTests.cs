using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Onnx;

/// <summary>
/// The cache of ONNX Runtime's optimised graphs (<see cref="OptimizedModelCache"/>): a second load reads the saved graph
/// and computes the same outputs, a changed model file rebuilds its entry, weight variants never use it.
/// </summary>
[TestClass]
public sealed class OptimizedModelCacheTests
{
    private static StableDiffusionModel Load(string folder, string? cache) =>
        StableDiffusionModel.Load(new MLContext(seed: 1), folder, new StableDiffusionModelOptions { OptimizedModelCacheDirectory = cache });

    private static float[] PredictNoise(OnnxComponent unet)
    {
        const int n = ShapesTestModel.LatentLength;
        var random = new Random(7);
        float[] sample = Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        float[] states = ShapesTestModel.Encode("a red circle on a white background");
        return ShapesTestModel.Run(unet.Session,
            ("sample", sample, new long[] { 1, 4, ShapesTestModel.LatentSize, ShapesTestModel.LatentSize }),
            ("timestep", new[] { 501f }, new long[] { 1 }),
            ("encoder_hidden_states", states, new long[] { 1, 77, states.Length / 77 }))["out_sample"].Data;
    }

    private static string[] Entries(string cache) => Directory.Exists(cache) ? Directory.GetDirectories(cache) : Array.Empty<string>();

    private static string EntryOf(string cache, string component) =>
        Entries(cache).Single(e => File.ReadAllText(Path.Combine(e, "stamp.txt")).Contains(Path.Combine(component, "model.onnx") + "\n", StringComparison.Ordinal));

    [TestMethod]
    public void TheSecondLoadReadsTheSavedGraphAndComputesTheSame()
    {
        using var temp = new TempFolder();
        string folder = temp.CopyOf(ShapesTestModel.Folder, "shapes");
        string cache = temp.Path("cache");
        float[] reference;
        using (var plain = Load(folder, null))
            reference = PredictNoise(plain.Unet);
        Assert.AreEqual(0, Entries(cache).Length, "null turns the cache off");

        using (var cold = Load(folder, cache))
            CollectionAssert.AreEqual(reference, PredictNoise(cold.Unet), "the session that saved the graph");
        string entry = EntryOf(cache, "unet");
        Assert.IsTrue(File.Exists(Path.Combine(entry, "model.onnx")));
        Assert.AreEqual(0, Directory.GetDirectories(cache, "*.tmp-*").Length, "no staging folder is left");
        DateTime written = File.GetLastWriteTimeUtc(Path.Combine(entry, "model.onnx"));

        using (var warm = Load(folder, cache))
            CollectionAssert.AreEqual(reference, PredictNoise(warm.Unet), "the session read from the cache");
        Assert.AreEqual(written, File.GetLastWriteTimeUtc(Path.Combine(EntryOf(cache, "unet"), "model.onnx")), "a hit does not rewrite the entry");
        Assert.AreEqual(3, Entries(cache).Length, "text encoder, UNet and VAE decoder (the encoder opens on first use)");
    }

    [TestMethod]
    public void AChangedModelFileRebuildsItsEntry()
    {
        using var temp = new TempFolder();
        string folder = temp.CopyOf(ShapesTestModel.Folder, "shapes");
        string cache = temp.Path("cache");
        string unet = Path.Combine(folder, "unet", "model.onnx");
        using (Load(folder, cache))
        {
        }
        string stamp = File.ReadAllText(Path.Combine(EntryOf(cache, "unet"), "stamp.txt"));

        // Touched: a new modification time.
        File.SetLastWriteTimeUtc(unet, File.GetLastWriteTimeUtc(unet).AddMinutes(1));
        using (Load(folder, cache))
        {
        }
        string touched = File.ReadAllText(Path.Combine(EntryOf(cache, "unet"), "stamp.txt"));
        Assert.AreNotEqual(stamp, touched);

        // Other bytes with the same size and time: the content hash tells. The edited file must still load, so a
        // float of the biggest initializer's raw data changes.
        var reader = OnnxModelReader.Open(unet);
        var target = reader.Initializers.Where(i => i.ElementType == TensorElementType.Float).MaxBy(i => i.ElementCount)!;
        float[] values = reader.ReadSingles(target.Name);
        byte[] bytes = File.ReadAllBytes(unet);
        byte[] pattern = BitConverter.GetBytes(values[0]).Concat(BitConverter.GetBytes(values[1])).Concat(BitConverter.GetBytes(values[2])).ToArray();
        int at = bytes.AsSpan().IndexOf(pattern);
        Assert.IsTrue(at >= 0, "the initializer's raw data is in the file");
        bytes[at] ^= 1;
        DateTime time = File.GetLastWriteTimeUtc(unet);
        File.WriteAllBytes(unet, bytes);
        File.SetLastWriteTimeUtc(unet, time);
        float[] edited;
        using (var model = Load(folder, null))
            edited = PredictNoise(model.Unet);
        using (var model = Load(folder, cache))
            CollectionAssert.AreEqual(edited, PredictNoise(model.Unet), "the rebuilt entry has the edited weights");
        Assert.AreNotEqual(touched, File.ReadAllText(Path.Combine(EntryOf(cache, "unet"), "stamp.txt")));
    }

    [TestMethod]
    public void AnUnreadableEntryIsRebuilt()
    {
        using var temp = new TempFolder();
        string folder = temp.CopyOf(ShapesTestModel.Folder, "shapes");
        string cache = temp.Path("cache");
        float[] reference;
        using (var model = Load(folder, cache))
            reference = PredictNoise(model.Unet);
        string entry = EntryOf(cache, "unet");
        File.WriteAllText(Path.Combine(entry, "model.onnx"), "not a model");
        using (var model = Load(folder, cache))
            CollectionAssert.AreEqual(reference, PredictNoise(model.Unet));
        Assert.IsTrue(new FileInfo(Path.Combine(EntryOf(cache, "unet"), "model.onnx")).Length > 100, "rebuilt");
    }

    [TestMethod]
    public void EntriesOfDeletedModelsArePruned()
    {
        using var temp = new TempFolder();
        string cache = temp.Path("cache");
        string gone = temp.CopyOf(ShapesTestModel.Folder, "gone");
        using (Load(gone, cache))
        {
        }
        Assert.AreEqual(3, Entries(cache).Length);
        Directory.Delete(gone, recursive: true);
        string kept = temp.CopyOf(ShapesTestModel.Folder, "kept");
        using (Load(kept, cache))
        {
        }
        Assert.AreEqual(3, Entries(cache).Length, "the deleted folder's entries went, the loaded folder's came");
        Assert.IsTrue(Entries(cache).All(e => File.ReadAllText(Path.Combine(e, "stamp.txt")).Contains("kept", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void WeightVariantsIgnoreTheCache()
    {
        using var temp = new TempFolder();
        string folder = temp.CopyOf(ShapesTestModel.Folder, "shapes");
        string cache = temp.Path("cache");
        var reader = OnnxModelReader.Open(Path.Combine(folder, "unet", "model.onnx"));
        var target = reader.Initializers.Where(i => i.ElementType == TensorElementType.Float).MaxBy(i => i.ElementCount)!;
        float[] changedValues = reader.ReadSingles(target.Name).Select(v => v + 0.5f).ToArray();

        float[] expected;
        using (var plain = Load(folder, null))
        {
            using var variant = new WeightVariant("plus-half");
            variant.Add(target.Name, target.Dims.ToArray(), TensorElementType.Float, changedValues);
            expected = PredictNoise(plain.Open("unet", variant));
        }
        for (int load = 0; load < 2; load++)
        {
            using var model = Load(folder, cache);
            int entries = Entries(cache).Length;
            using var variant = new WeightVariant("plus-half");
            variant.Add(target.Name, target.Dims.ToArray(), TensorElementType.Float, changedValues);
            float[] actual = PredictNoise(model.Open("unet", variant));
            CollectionAssert.AreEqual(expected, actual, $"load {load}: the variant's weights, not the cached base graph's");
            Assert.AreEqual(entries, Entries(cache).Length, "a variant session writes no entry");
        }
    }

    [TestMethod]
    public void AModelWithExternalDataIsCachedWithItsInitializers()
    {
        string tinySd = SharedModels.RequireTinySd();
        using var temp = new TempFolder();
        string cache = temp.Path("cache");
        var rows = new Dictionary<string, float[]>();
        foreach (string? dir in new[] { null, cache, cache })
        {
            using var model = Load(tinySd, dir);
            var unet = model.Unet;
            float[] sample = Enumerable.Range(0, 4 * 8 * 8).Select(i => MathF.Sin(i)).ToArray();
            float[] states = Enumerable.Range(0, 77 * model.Info.HiddenSize).Select(i => MathF.Cos(i * 0.1f)).ToArray();
            float[] result = ShapesTestModel.Run(unet.Session,
                ("sample", sample, new long[] { 1, 4, 8, 8 }),
                ("timestep", new[] { 501f }, new long[] { 1 }),
                ("encoder_hidden_states", states, new long[] { 1, 77, model.Info.HiddenSize })).Values.First().Data;
            if (rows.TryGetValue("first", out var first))
                CollectionAssert.AreEqual(first, result);
            else
                rows["first"] = result;
        }
        string entry = EntryOf(cache, "unet");
        Assert.IsTrue(File.Exists(Path.Combine(entry, "model.onnx.data")), "the initializers are saved beside the graph");
        StringAssert.Contains(File.ReadAllText(Path.Combine(entry, "stamp.txt")), "file=weights.pb;", "the external data file is in the stamp");
    }

    /// <summary>A temporary folder removed with its contents.</summary>
    private sealed class TempFolder : IDisposable
    {
        private readonly string _root = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "mlnet-optcache-" + Guid.NewGuid().ToString("N")[..8]);

        public string Path(string name) => System.IO.Path.Combine(_root, name);

        public string CopyOf(string source, string name)
        {
            string target = Path(name);
            foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
            {
                string to = System.IO.Path.Combine(target, System.IO.Path.GetRelativePath(source, file));
                Directory.CreateDirectory(System.IO.Path.GetDirectoryName(to)!);
                File.Copy(file, to);
            }
            return target;
        }

        public void Dispose()
        {
            try
            {
                Directory.Delete(_root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
