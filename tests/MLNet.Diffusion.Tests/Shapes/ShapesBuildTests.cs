using System;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using System.Threading.Tasks;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Shapes;

[TestClass]
public sealed class ShapesBuildTests
{
    [TestMethod]
    public void Build_IsDeterministic_AndSmall()
    {
        string first = ShapesTestModel.Folder;
        string second = Path.Combine(Path.GetTempPath(), "mlnet-shapes-det-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            // Build time is measured by the benchmark project, never asserted in a unit test.
            ShapesModel.Build(second);
            var a = Hashes(first);
            var b = Hashes(second);
            CollectionAssert.AreEqual(a.Select(x => x.Path).ToArray(), b.Select(x => x.Path).ToArray());
            for (int i = 0; i < a.Length; i++)
                Assert.AreEqual(a[i].Hash, b[i].Hash, $"{a[i].Path} differs between two builds");
            long bytes = Directory.EnumerateFiles(second, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
            Console.WriteLine($"Build: {a.Length} files, {bytes / 1e6:F2} MB");
            foreach (var (path, hash) in a)
                Console.WriteLine($"  {path} {hash[..16]}");
            Assert.IsTrue(bytes < 20_000_000, $"{bytes} bytes");
        }
        finally
        {
            Directory.Delete(second, recursive: true);
        }
    }

    [TestMethod]
    public void EnsureBuilt_ConcurrentCallers_GetOneCompleteFolder()
    {
        string cache = Path.Combine(Path.GetTempPath(), "mlnet-shapes-cache-" + Guid.NewGuid().ToString("N")[..8]);
        var options = new ShapesModelOptions { ImageSize = 64 };
        try
        {
            var folders = Task.WhenAll(Enumerable.Range(0, 3).Select(_ => Task.Run(() => ShapesModel.EnsureBuilt(cache, options)))).GetAwaiter().GetResult();
            Assert.AreEqual(1, folders.Distinct().Count());
            string folder = folders[0];
            StringAssert.StartsWith(Path.GetFileName(folder), "shapes-");
            Assert.IsTrue(File.Exists(Path.Combine(folder, ShapesModel.CompletionMarkerFileName)));
            Assert.IsTrue(File.Exists(Path.Combine(folder, "unet", "model.onnx")));
            CollectionAssert.AreEqual(new[] { folder }, Directory.GetDirectories(cache), "no temporary folders left behind");

            // Cached: a second call returns at once without rebuilding.
            DateTime written = File.GetLastWriteTimeUtc(Path.Combine(folder, "unet", "model.onnx"));
            Assert.AreEqual(folder, ShapesModel.EnsureBuilt(cache, options));
            Assert.AreEqual(written, File.GetLastWriteTimeUtc(Path.Combine(folder, "unet", "model.onnx")));

            // Other options, other folder; a folder without the marker is not used but replaced.
            string other = ShapesModel.EnsureBuilt(cache, new ShapesModelOptions { ImageSize = 64, MatchStrength = 5 });
            Assert.AreNotEqual(folder, other);
            File.Delete(Path.Combine(other, ShapesModel.CompletionMarkerFileName));
            File.Delete(Path.Combine(other, "unet", "model.onnx"));
            Assert.AreEqual(other, ShapesModel.EnsureBuilt(cache, new ShapesModelOptions { ImageSize = 64, MatchStrength = 5 }));
            Assert.IsTrue(File.Exists(Path.Combine(other, "unet", "model.onnx")));
        }
        finally
        {
            Directory.Delete(cache, recursive: true);
        }
    }

    [TestMethod]
    public void Options_AreValidated()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-shapes-never-" + Guid.NewGuid().ToString("N")[..8]);
        // A flag this version does not build (the first reserved one, or an undefined bit once all are built) is named.
        var unbuilt = Enum.GetValues<ShapesVariant>().Where(v => v != 0 && (ShapesModelOptions.BuiltVariants & v) == 0)
            .DefaultIfEmpty((ShapesVariant)(1 << 30)).First();
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ShapesModel.Build(dir, new ShapesModelOptions { Variant = ShapesVariant.Float16 | unbuilt }));
        StringAssert.Contains(e.Message, $"'{unbuilt}'");
        var both = Assert.ThrowsExactly<ArgumentException>(() => ShapesModel.Build(dir, new ShapesModelOptions { Variant = ShapesVariant.ExternalWeights | ShapesVariant.ExternalWeightsPb }));
        Assert.AreEqual("Variant", both.ParamName);
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ShapesModel.Build(dir, new ShapesModelOptions { ImageSize = 100 }));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ShapesModel.Build(dir, new ShapesModelOptions { MatchStrength = float.NaN }));
        Assert.IsFalse(Directory.Exists(dir));
    }

    private static (string Path, string Hash)[] Hashes(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => (Path.GetRelativePath(folder, f).Replace('\\', '/'), Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f)))))
            .OrderBy(x => x.Item1, StringComparer.Ordinal)
            .ToArray();
}
