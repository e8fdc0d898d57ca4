using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;

namespace MLNet.Diffusion.Tests.ControlNet;

/// <summary>
/// <see cref="PillowLanczosResampler"/> against Pillow 9.4.0's <c>Image.resize(size, LANCZOS)</c>
/// (ControlNet/Fixtures/make_lanczos_fixtures.py): byte for byte on upscales, downscales and one-axis resizes, and
/// PrepareControlImage's resize (diffusers' VaeImageProcessor with its default <c>resample="lanczos"</c>) equal to it / 255.
/// </summary>
[TestClass]
public sealed class PillowLanczosTests
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "ControlNet", "Fixtures", name);

    /// <summary>An RGB(A) image's R, G, B planes as bytes.</summary>
    private static byte[] Planes(MLImage image)
    {
        int plane = image.Width * image.Height;
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        var pixels = image.Pixels;
        var v = new byte[3 * plane];
        for (int p = 0; p < plane; p++)
        {
            v[p] = pixels[4 * p + (bgra ? 2 : 0)];
            v[plane + p] = pixels[4 * p + 1];
            v[2 * plane + p] = pixels[4 * p + (bgra ? 0 : 2)];
        }
        return v;
    }

    [TestMethod]
    [DataRow(64, 48)]
    [DataRow(24, 16)]
    [DataRow(50, 16)]
    [DataRow(80, 37)]
    [DataRow(13, 91)]
    public void ResizesAsPillowsLanczosByteForByte(int width, int height)
    {
        using var input = MLImage.CreateFromFile(Fixture("lanczos_input.png"));
        using var expected = MLImage.CreateFromFile(Fixture($"lanczos_{width}x{height}.png"));
        var resampler = new PillowLanczosResampler(input.Width, input.Height, width, height);
        var actual = new byte[3 * width * height];
        resampler.Resize(Planes(input), actual, 3);
        var want = Planes(expected);
        int differ = actual.Zip(want, (a, b) => a != b ? 1 : 0).Sum();
        Assert.AreEqual(0, differ, $"{differ} of {want.Length} values differ from Pillow's LANCZOS at {width}×{height}");
        // The fixture exercises the kernel's negative lobes: a bilinear-style positive filter never reaches 0 or 255 here.
        Assert.IsTrue(want.Contains((byte)0) || want.Contains((byte)255));
    }

    [TestMethod]
    public void PrepareControlImageResizesWithPillowsLanczos()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesControlNetTests.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Image = MLImage.CreateFromFile(Fixture("lanczos_input.png")) } });
        var control = ml.Transforms.PrepareControlImage(model, new PrepareControlImageOptions { Width = 64, Height = 48 })
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("ControlImage").Single().DenseValues().ToArray();
        using var expected = MLImage.CreateFromFile(Fixture("lanczos_64x48.png"));
        var want = Planes(expected);
        Assert.AreEqual(want.Length, control.Length);
        for (int i = 0; i < want.Length; i++)
            Assert.AreEqual(want[i] / 255f, control[i], $"value {i}");
    }

    private sealed class Row
    {
        [Microsoft.ML.Transforms.Image.ImageType(37, 50)]
        public MLImage? Image { get; set; }
    }
}
