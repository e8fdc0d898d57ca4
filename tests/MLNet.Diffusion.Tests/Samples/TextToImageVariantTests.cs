using System;
using System.IO;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using TextToImage;

namespace MLNet.Diffusion.Tests.Samples;

/// <summary>TextToImage's <c>--variant unconditional|vq</c> (issue 18): the embedded Shapes model's LDMPipeline variants, no prompt.</summary>
[TestClass]
public sealed class TextToImageVariantTests
{
    [TestMethod]
    public void TheVariantAndPromptRulesAreChecked()
    {
        Assert.AreEqual("vq", Arguments.Parse(new[] { "--variant", "vq" }).Variant);
        Assert.AreEqual(ShapesVariant.Unconditional, Arguments.Parse(new[] { "--variant", "unconditional" }).ShapesVariant);
        Assert.IsFalse(Arguments.Parse(new[] { "--variant", "vq" }).HasPrompt);
        Assert.IsTrue(Arguments.Parse(new[] { "--prompt", "x" }).HasPrompt);
        Assert.AreEqual(ShapesVariant.Standard, Arguments.Parse(new[] { "--prompt", "x" }).ShapesVariant);
        Assert.IsFalse(Arguments.Parse(new[] { "--model", "m" }).HasPrompt, "a --model may be unconditional: checked when it is loaded");

        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(Array.Empty<string>())).Message, "--prompt");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--variant", "kl" })).Message, "kl");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--variant", "vq", "--model", "m" })).Message, "--model");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--variant", "vq", "--init-image", "x.png" })).Message, "--init-image");
    }

    [TestMethod]
    [DoNotParallelize] // redirects Console.Out and Console.Error
    public void TheKlAndVqVariantsDrawTheSameCircleFromTheSameSeed()
    {
        using var run = new SampleConsole("mlnet-variant-sample");
        string dir = run.Directory;
        var error = run.Error;
        string kl = Path.Combine(dir, "kl.png"), vq = Path.Combine(dir, "vq.png");
        Assert.AreEqual(0, TextToImage.Program.Main(new[] { "--variant", "unconditional", "--seed", "3", "--output", kl }), error.ToString());
        Assert.AreEqual(0, TextToImage.Program.Main(new[] { "--variant", "vq", "--seed", "3", "--output", vq }), error.ToString());
        using var klImage = MLImage.CreateFromFile(kl);
        using var vqImage = MLImage.CreateFromFile(vq);
        Assert.AreEqual((256, 256), (klImage.Width, klImage.Height), "the Shapes variants default to their native 256×256");
        Assert.AreEqual((256, 256), (vqImage.Width, vqImage.Height));
        var klItem = NearestItem(klImage);
        Assert.AreEqual(ShapeKind.Circle, klItem.Shape, klItem.Prompt);
        Assert.AreEqual(klItem, NearestItem(vqImage), "the same seed gives the same latents; only the decoder differs");
        Assert.IsFalse(klImage.Pixels.SequenceEqual(vqImage.Pixels), "the VQ decoder quantises the latents");

        // A text-conditioned --model still needs a prompt; the error names it.
        Assert.AreEqual(1, TextToImage.Program.Main(new[] { "--model", ShapesTestModel.Folder, "--steps", "1", "--output", Path.Combine(dir, "x.png") }));
        StringAssert.Contains(error.ToString(), "--prompt is required");
    }

    /// <summary>The dataset item nearest to an image (mean absolute difference of the 8-bit channels).</summary>
    private static ShapesItem NearestItem(MLImage image)
    {
        byte[] pixels = image.Pixels.ToArray();
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        return ShapesDataset.Items.MinBy(item =>
        {
            byte[] rgb = ShapesDataset.RenderRgb(item, 256);
            long sum = 0;
            for (int p = 0; p < 256 * 256; p++)
            {
                for (int c = 0; c < 3; c++)
                    sum += Math.Abs(pixels[4 * p + (bgra ? 2 - c : c)] - rgb[3 * p + c]);
            }
            return sum;
        })!;
    }
}
