using System;
using System.IO;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Tests.Inpainting;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using TextToImage;

namespace MLNet.Diffusion.Tests.Samples;

/// <summary>The TextToImage sample's --mask and --outpaint (README's inpainting commands).</summary>
[TestClass]
public sealed class TextToImageInpaintingTests
{
    [TestMethod]
    public void MaskAndOutpaintAreParsedAndChecked()
    {
        var a = Arguments.Parse(new[] { "--prompt", "x", "--init-image", "in.png", "--mask", "m.png" });
        Assert.AreEqual("m.png", a.Mask);
        Assert.IsNull(a.Strength, "the inpainting default (1) is applied when running");
        Assert.AreEqual((8, 0, 64, 2), Arguments.Parse(new[] { "--prompt", "x", "--init-image", "in.png", "--outpaint", "8, 0,64,2" }).Outpaint);

        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--mask", "m.png" })).Message, "--mask needs --init-image");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--outpaint", "0,0,8,0" })).Message, "--outpaint needs --init-image");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--init-image", "i", "--mask", "m", "--outpaint", "0,0,8,0" })).Message, "cannot be combined");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--init-image", "i", "--outpaint", "0,0,8" })).Message, "four margins");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--init-image", "i", "--outpaint", "0,0,-8,0" })).Message, "[0, 4096]");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--init-image", "i", "--outpaint", "0,0,0,0" })).Message, "at least one positive");
    }

    [TestMethod]
    public void TheReadmesMaskIsTheCentreBox()
    {
        // samples/TextToImage/masks/center-box-256.png: white on [64, 192)², black elsewhere (it covers any centred shape at 256 px).
        string? path = null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null && path is null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "samples", "TextToImage", "masks", "center-box-256.png");
            if (File.Exists(candidate))
                path = candidate;
        }
        if (path is null)
            Assert.Inconclusive("samples/TextToImage/masks/center-box-256.png not found above " + AppContext.BaseDirectory);
        using var mask = MLImage.CreateFromFile(path);
        using var expected = InpaintingImages.Box(256, 64, 192);
        Assert.AreEqual(0.0, ShapesImages.MeanAbsoluteDifference(expected, mask));
    }

    [TestMethod]
    [DoNotParallelize] // redirects Console.Out and Console.Error
    public void MaskRepaintsTheCircle_AndOutpaintExtendsThePicture()
    {
        using var run = new SampleConsole("mlnet-inpaint-sample");
        string dir = run.Directory;
        var error = run.Error;
        var item = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Center);
        string input = Path.Combine(dir, "red.png"), maskPath = Path.Combine(dir, "mask.png");
        using (var red = ShapesImages.Render(item, 256))
            PngFile.Save(red, input);
        using (var box = InpaintingImages.Box(256, 64, 192))
            PngFile.Save(box, maskPath);

        string green = Path.Combine(dir, "green.png");
        int code = Program.Main(new[] { "--model", ShapesTestModel.Folder, "--prompt", "a green circle in the center on a blue background", "--init-image", input, "--mask", maskPath, "--seed", "1", "--output", green });
        Assert.AreEqual(0, code, error.ToString());
        using (var image = MLImage.CreateFromFile(green))
        {
            var (inside, outside) = ImageChecks.RegionMeans(image, ShapeKind.Circle, ShapePosition.Center, margin: 6);
            Assert.AreEqual(ShapeColor.Green, ImageChecks.NearestShapeColor(inside));
            Assert.AreEqual(BackgroundColor.Blue, ImageChecks.NearestBackground(outside));
        }
        Assert.AreEqual("1", PngFile.ReadText(green)["strength"], "diffusers' inpainting default strength");
        Assert.AreEqual(maskPath, PngFile.ReadText(green)["mask"]);

        string wide = Path.Combine(dir, "wide.png");
        code = Program.Main(new[] { "--model", ShapesTestModel.Folder, "--prompt", "a red circle on a blue background", "--init-image", input, "--outpaint", "60,0,64,0", "--seed", "1", "--output", wide });
        Assert.AreEqual(0, code, error.ToString());
        using (var image = MLImage.CreateFromFile(wide))
        using (var canvas = MLImage.CreateFromFile(Path.Combine(dir, "wide-canvas.png")))
        using (var mask = MLImage.CreateFromFile(Path.Combine(dir, "wide-mask.png")))
        {
            // 60 → 64 on the left: 64 + 256 + 64 = 384.
            Assert.AreEqual((384, 256), (image.Width, image.Height));
            Assert.AreEqual((384, 256), (canvas.Width, canvas.Height));
            Assert.AreEqual((384, 256), (mask.Width, mask.Height));
            var border = InpaintingPipelineTests.Mean(image, (x, _) => x < 64 || x >= 320);
            Assert.AreEqual(BackgroundColor.Blue, ImageChecks.NearestBackground(border));
            var centre = InpaintingPipelineTests.Mean(image, (x, y) => Math.Abs(x - 192) < 30 && Math.Abs(y - 128) < 30);
            Assert.AreEqual(ShapeColor.Red, ImageChecks.NearestShapeColor(centre), "the original circle stays");
        }
        Assert.AreEqual("60,0,64,0", PngFile.ReadText(wide)["outpaint"]);
    }
}
