using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;

namespace MLNet.Diffusion.Tests.Imaging;

[TestClass]
public sealed class PngFileTests
{
    [TestMethod]
    public void GenerationParametersRoundTripThroughTheTextChunk()
    {
        var rgba = new byte[4 * 3 * 2];
        for (int i = 0; i < rgba.Length; i++)
            rgba[i] = i % 4 == 3 ? (byte)255 : (byte)(i * 10); // opaque, as generated images are
        using var image = MLImage.CreateFromPixels(3, 2, MLPixelFormat.Rgba32, rgba);
        var text = new Dictionary<string, string>
        {
            ["prompt"] = "a red circle — «über» 猫 🐱",
            ["negative_prompt"] = "",
            ["seed"] = "42",
        };
        string path = Path.Combine(Path.GetTempPath(), "mlnet-png-" + System.Guid.NewGuid().ToString("N")[..8] + ".png");
        try
        {
            PngFile.Save(image, path, text);
            var read = PngFile.ReadText(path);
            CollectionAssert.AreEquivalent(text.ToList(), read.ToList());
            // The file is still an ordinary PNG with the same pixels (reloads as BGRA).
            using var back = MLImage.CreateFromFile(path);
            Assert.AreEqual(3, back.Width);
            var p = back.Pixels.ToArray();
            Assert.AreEqual(rgba[0], p[back.PixelFormat == MLPixelFormat.Bgra32 ? 2 : 0]);
            Assert.AreEqual(rgba[1], p[1]);
        }
        finally
        {
            File.Delete(path);
        }
        Assert.ThrowsExactly<InvalidDataException>(() => PngFile.ReadText(new byte[] { 1, 2, 3, 4, 5, 6, 7, 8, 9 }));
    }
}
