using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Tests.ControlNet;

/// <summary>Control images: OpenCV's Canny exactly, and PrepareControlImage as diffusers' VaeImageProcessor for ControlNet.</summary>
[TestClass]
public sealed class ControlImageTests
{
    private static string Fixture(string name) => Path.Combine(AppContext.BaseDirectory, "ControlNet", "Fixtures", name);

    /// <summary>cv2.Canny (OpenCV 4.6.0) on a 64×48 RGB image: L1 100/200, L2 50/150, and thresholds given high-first (swapped).</summary>
    [TestMethod]
    [DataRow("canny_l1_100_200.png", 100.0, 200.0, false)]
    [DataRow("canny_l2_50_150.png", 50.0, 150.0, true)]
    [DataRow("canny_l1_200_60.png", 200.0, 60.0, false)]
    public void CannyMatchesOpenCvExactly(string expectedFile, double low, double high, bool l2)
    {
        using var image = MLImage.CreateFromFile(Fixture("canny_input.png"));
        using var expected = MLImage.CreateFromFile(Fixture(expectedFile));
        var edges = new byte[image.Width * image.Height];
        new CannyEdges().Detect(image, low, high, l2, edges);
        var want = Enumerable.Range(0, edges.Length).Select(i => expected.Pixels[4 * i]).ToArray();
        Assert.IsTrue(want.Count(v => v == 255) > 100, "the fixture has edges");
        int differ = edges.Zip(want, (a, b) => a != b ? 1 : 0).Sum();
        Assert.AreEqual(0, differ, $"{differ} of {edges.Length} pixels differ from OpenCV");
    }

    [TestMethod]
    public void PrepareControlImageGivesRgbBytesOver255AndFeedsTheControlNet()
    {
        string dir = ControlNetTests.RequireFolder();
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), dir);
        var ml = model.MLContext;
        string circle = Path.Combine(dir, "control_images", "circle.png");
        using var png = MLImage.CreateFromFile(circle);
        var rows = new[] { new ImageRow { Prompt = "a circle", Seed = 3, Image = MLImage.CreateFromFile(circle) } };
        var data = ml.Data.LoadFromEnumerable(rows);
        var prepared = ml.Transforms.PrepareControlImage(model, new PrepareControlImageOptions { ImageColumnName = "Image", Width = 64, Height = 64 }).Fit(data).Transform(data);
        var control = prepared.GetColumn<VBuffer<float>>("ControlImage").Single().DenseValues().ToArray();
        Assert.AreEqual(ControlNetTests.ImageLength, control.Length);
        int plane = 64 * 64;
        bool bgra = png.PixelFormat == MLPixelFormat.Bgra32;
        for (int i = 0; i < plane; i++)
        {
            Assert.AreEqual(png.Pixels[4 * i + (bgra ? 2 : 0)] / 255f, control[i]);
            Assert.AreEqual(png.Pixels[4 * i + 1] / 255f, control[plane + i]);
        }
        Assert.IsTrue(control.Max() == 1f && control.Min() == 0f, "white on black");

        // The prepared column feeds DenoiseLatents exactly as the same values given as a vector.
        var options = ControlNetTests.Options(new ControlNetUnit { ImageColumnName = "ControlImage" });
        var viaStage = ml.Transforms.PrepareControlImage(model, new PrepareControlImageOptions { ImageColumnName = "Image", Width = 64, Height = 64 })
            .Append(ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt"))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("Latents").Single().DenseValues().ToArray();
        var direct = ControlNetTests.Rows(3);
        direct[0].Prompt = "a circle";
        direct[0].Control = control;
        var viaVector = ControlNetTests.Latents(model, direct, ControlNetTests.Options(new ControlNetUnit { ImageColumnName = "Control" }))[0];
        CollectionAssert.AreEqual(viaVector, viaStage);
    }

    [TestMethod]
    public void PrepareControlImageResizesAndRunsCanny()
    {
        string dir = ControlNetTests.RequireFolder();
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), dir);
        var ml = model.MLContext;
        var rows = new[] { new FixtureRow { Image = MLImage.CreateFromFile(Fixture("canny_input.png")) } };
        var data = ml.Data.LoadFromEnumerable(rows);
        var canny = ml.Transforms.PrepareControlImage(model, new PrepareControlImageOptions { Width = 64, Height = 48, Preprocessor = ControlImagePreprocessor.Canny })
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("ControlImage").Single().DenseValues().ToArray();
        using var expected = MLImage.CreateFromFile(Fixture("canny_l1_100_200.png"));
        int plane = 64 * 48;
        for (int i = 0; i < plane; i++)
        {
            float v = expected.Pixels[4 * i] / 255f;
            Assert.AreEqual(v, canny[i]);
            Assert.AreEqual(v, canny[plane + i]);
            Assert.AreEqual(v, canny[2 * plane + i]);
        }
        var resized = ml.Transforms.PrepareControlImage(model, new PrepareControlImageOptions { Width = 32, Height = 32 })
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("ControlImage").Single().DenseValues().ToArray();
        Assert.AreEqual(3 * 32 * 32, resized.Length);
        Assert.IsTrue(resized.All(v => v >= 0f && v <= 1f));
        var none = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Transforms.PrepareControlImage(model, new PrepareControlImageOptions { Width = 32, Height = 32, ResizeMode = ImageResizeMode.None })
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("ControlImage").ToArray());
        StringAssert.Contains(none.Message, "64×48");
    }

    private sealed class ImageRow
    {
        public string Prompt { get; set; } = "edges";

        public int Seed { get; set; }

        [Microsoft.ML.Transforms.Image.ImageType(64, 64)]
        public MLImage? Image { get; set; }
    }

    private sealed class FixtureRow
    {
        [Microsoft.ML.Transforms.Image.ImageType(48, 64)]
        public MLImage? Image { get; set; }
    }
}
