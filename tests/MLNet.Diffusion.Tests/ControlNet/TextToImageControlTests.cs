using System;
using System.IO;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using TextToImage;

namespace MLNet.Diffusion.Tests.ControlNet;

/// <summary>The TextToImage sample's <c>--control image.png [--control-scale S]</c> (README's ControlNet command).</summary>
[TestClass]
public sealed class TextToImageControlTests
{
    [TestMethod]
    public void ControlAndControlScaleAreParsedAndChecked()
    {
        var a = Arguments.Parse(new[] { "--prompt", "x", "--control", "c.png", "--control-scale", "0.5" });
        Assert.AreEqual("c.png", a.Control);
        Assert.AreEqual(0.5f, a.ControlScale);
        Assert.AreEqual(1f, Arguments.Parse(new[] { "--prompt", "x", "--control", "c.png" }).ControlScale, "diffusers' default controlnet_conditioning_scale");
        Assert.IsNull(Arguments.Parse(new[] { "--prompt", "x" }).Control);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--control-scale", "2" })).Message, "--control-scale needs --control");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--control", "c.png", "--control-scale", "-1" })).Message, "--control-scale must be in [0, 10]");
    }

    [TestMethod]
    [DoNotParallelize] // redirects Console.Out and Console.Error
    public void ASquareSilhouetteGivesASquareInThePromptsColours()
    {
        using var run = new SampleConsole("mlnet-control-sample");
        string dir = run.Directory;
        var error = run.Error;
        string control = Path.Combine(dir, "square-left.png");
        using (var silhouette = ShapesControlNetTests.Silhouette(ShapeKind.Square, ShapePosition.Left))
            PngFile.Save(silhouette, control);
        string output = Path.Combine(dir, "out.png");
        int code = Program.Main(new[] { "--model", ShapesControlNetTests.Folder, "--prompt", "an orange shape on a blue background", "--control", control,
            "--width", "128", "--height", "128", "--seed", "2", "--output", output });
        Assert.AreEqual(0, code, error.ToString());
        using var image = MLImage.CreateFromFile(output);
        var (inside, outside) = ImageChecks.RegionMeans(image, ShapeKind.Square, ShapePosition.Left, margin: 3);
        Assert.AreEqual(ShapeColor.Orange, ImageChecks.NearestShapeColor(inside));
        Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(ShapeColor.Orange)) < 40, "the square is where the silhouette is");
        Assert.AreEqual(BackgroundColor.Blue, ImageChecks.NearestBackground(outside));
        var text = PngFile.ReadText(output);
        Assert.AreEqual(control, text["control"]);
        Assert.AreEqual("1", text["control_scale"]);
    }
}
