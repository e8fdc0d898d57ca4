using System;
using System.Globalization;
using System.IO;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using TextToImage;

namespace MLNet.Diffusion.Tests.Samples;

[TestClass]
public sealed class TextToImageTests
{
    [TestMethod]
    public void InitImageAndStrengthAreParsedAndChecked()
    {
        var a = Arguments.Parse(new[] { "--prompt", "a blue circle", "--init-image", "in.png", "--strength", "0.3" });
        Assert.AreEqual("in.png", a.InitImage);
        Assert.AreEqual(0.3f, a.Strength);
        Assert.IsNull(a.Width, "without --width the size comes from the init image");
        Assert.IsNull(Arguments.Parse(new[] { "--prompt", "x", "--init-image", "in.png" }).Strength, "the default strength is applied when running");
        Assert.AreEqual(64, Arguments.Parse(new[] { "--prompt", "x", "--width", "64" }).Width);

        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--strength", "0.5" })).Message, "--init-image");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--init-image", "in.png", "--strength", "1.5" })).Message, "[0, 1]");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--init-image" })).Message, "--init-image");
    }

    [TestMethod]
    public void ArgumentsComeFromAResponseFile()
    {
        string rsp = Path.Combine(Path.GetTempPath(), "mlnet-args-" + Guid.NewGuid().ToString("N")[..8] + ".rsp");
        File.WriteAllText(rsp, "--prompt \"a blue circle on a white background\"\n--steps 3\n--width 64\n");
        try
        {
            var a = Arguments.Parse(new[] { "@" + rsp, "--seed", "5" });
            Assert.AreEqual("a blue circle on a white background", a.Prompt);
            Assert.AreEqual((3, 64, 5L), (a.Steps, a.Width, a.Seed));
        }
        finally
        {
            File.Delete(rsp);
        }
    }

    [TestMethod]
    [DoNotParallelize] // redirects Console.Out and Console.Error
    public void HelpListsTheOptionsAndExitsWithZero()
    {
        var (previousOut, previousError) = (Console.Out, Console.Error);
        var output = new StringWriter();
        try
        {
            Console.SetOut(output);
            Console.SetError(output);
            Assert.AreEqual(0, TextToImage.Program.Main(new[] { "--help" }));
            Assert.AreEqual(0, BatchFromCsv.Program.Main(new[] { "--help" }));
            Assert.AreEqual(0, ComposePipeline.Program.Main(new[] { "--help" }));
        }
        finally
        {
            Console.SetOut(previousOut);
            Console.SetError(previousError);
        }
        string help = output.ToString();
        foreach (string option in new[] { "--prompt", "--init-image", "--outpaint", "--scheduler", "@args.rsp", "--input", "--output-dir", "--batch-size", "--model" })
            StringAssert.Contains(help, option);
    }

    [TestMethod]
    [DoNotParallelize] // redirects Console.Out and Console.Error
    public void AnInitImageOfARedCircleWithThePromptABlueCircleComesOutBlue()
    {
        using var run = new SampleConsole("mlnet-img2img-sample");
        string dir = run.Directory;
        var error = run.Error;
        var item = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.White, ShapePosition.Right);
        string input = Path.Combine(dir, "red.png");
        ShapesImages.Render(item, 256).Save(input);
        string output = Path.Combine(dir, "blue.png");
        int code = TextToImage.Program.Main(new[] { "--model", ShapesTestModel.Folder, "--prompt", "a blue circle", "--init-image", input, "--seed", "7", "--output", output });
        Assert.AreEqual(0, code, error.ToString());

        using var image = MLImage.CreateFromFile(output);
        Assert.AreEqual(256, image.Width, "the size comes from the init image");
        var (inside, outside) = ImageChecks.RegionMeans(image, ShapeKind.Circle, ShapePosition.Right, margin: 6);
        Assert.AreEqual(ShapeColor.Blue, ImageChecks.NearestShapeColor(inside));
        Assert.AreEqual(BackgroundColor.White, ImageChecks.NearestBackground(outside));
        var text = PngFile.ReadText(output);
        Assert.AreEqual("0.8", text["strength"], "diffusers' default strength");
        Assert.AreEqual(input, text["init_image"]);

        Assert.AreEqual(1, TextToImage.Program.Main(new[] { "--model", ShapesTestModel.Folder, "--prompt", "x", "--init-image", Path.Combine(dir, "missing.png") }));
        StringAssert.Contains(error.ToString(), "missing.png");
        Assert.AreEqual(2, TextToImage.Program.Main(new[] { "--prompt", "x", "--strength", "0.5" }));
        StringAssert.Contains(error.ToString(), "--strength needs --init-image");
    }

    [TestMethod]
    public void RngAndReproduceChooseTheNoiseAndAreChecked()
    {
        Assert.AreEqual(NoiseOptions.Default, Arguments.Parse(new[] { "--prompt", "x" }).Noise);
        Assert.AreEqual(NoiseGenerator.TorchCpu, Arguments.Parse(new[] { "--prompt", "x", "--rng", "torch-cpu" }).Noise.Generator);
        Assert.AreEqual(NoiseOptions.Diffusers(), Arguments.Parse(new[] { "--prompt", "x", "--reproduce", "diffusers" }).Noise);
        Assert.AreEqual(NoiseOptions.ComfyUI(), Arguments.Parse(new[] { "--prompt", "x", "--reproduce", "comfyui" }).Noise);
        Assert.AreEqual(NoiseOptions.Automatic1111("NV", 31337), Arguments.Parse(new[] { "--prompt", "x", "--reproduce", "a1111", "--ensd", "31337" }).Noise);
        Assert.AreEqual(NoiseOptions.Automatic1111("CPU"), Arguments.Parse(new[] { "--prompt", "x", "--reproduce", "a1111", "--rng", "torch-cpu" }).Noise);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--rng", "cuda" })).Message, "cuda");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--reproduce", "diffusers", "--rng", "philox" })).Message, "--rng");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--reproduce", "comfyui", "--ensd", "5" })).Message, "--ensd");
    }

    [TestMethod]
    [DoNotParallelize] // redirects Console.Out and Console.Error
    public void APngsParametersGenerateThePngAgainByteForByte()
    {
        // Generate with the sample, read AUTOMATIC1111's 'parameters' chunk of its PNG, turn it back into arguments and
        // generate again: the same file, bytes included. Euler ancestral, so the steps' noise (Philox, seed + ENSD) counts.
        using var run = new SampleConsole("mlnet-roundtrip-sample");
        string dir = run.Directory;
        var error = run.Error;
        string first = Path.Combine(dir, "first.png");
        Assert.AreEqual(0, TextToImage.Program.Main(new[]
        {
            "--model", ShapesTestModel.Folder, "--prompt", "a green triangle", "--negative-prompt", "a red square", "--steps", "4", "--guidance", "5",
            "--width", "64", "--height", "64", "--seed", "1234", "--scheduler", "euler-a", "--reproduce", "a1111", "--ensd", "31337", "--output", first,
        }), error.ToString());

        var p = PngFile.ReadParameters(first) ?? throw new AssertFailedException("no 'parameters' chunk");
        Assert.AreEqual(("NV", 31337L, "Euler a", 1234L), (p.Rng, p.EtaNoiseSeedDelta, p.Sampler, p.Seed));
        string second = Path.Combine(dir, "second.png");
        Assert.AreEqual(0, TextToImage.Program.Main(new[]
        {
            "--model", ShapesTestModel.Folder, "--prompt", p.Prompt, "--negative-prompt", p.NegativePrompt, "--steps", p.Steps!.Value.ToString(CultureInfo.InvariantCulture),
            "--guidance", p.CfgScale!.Value.ToString(CultureInfo.InvariantCulture), "--width", p.Width!.Value.ToString(CultureInfo.InvariantCulture),
            "--height", p.Height!.Value.ToString(CultureInfo.InvariantCulture), "--seed", p.Seed!.Value.ToString(CultureInfo.InvariantCulture),
            "--scheduler", A1111Samplers.ToScheduler(p.Sampler!, p.ScheduleType)!, "--reproduce", "a1111", "--rng", Arguments.RngFromInfotext(p.Rng),
            "--ensd", (p.EtaNoiseSeedDelta ?? 0).ToString(CultureInfo.InvariantCulture), "--output", second,
        }), error.ToString());
        CollectionAssert.AreEqual(File.ReadAllBytes(first), File.ReadAllBytes(second));

        // Another generator from the same seed is another picture: the recorded RNG matters.
        string library = Path.Combine(dir, "library.png");
        Assert.AreEqual(0, TextToImage.Program.Main(new[]
        {
            "--model", ShapesTestModel.Folder, "--prompt", "a green triangle", "--negative-prompt", "a red square", "--steps", "4", "--guidance", "5",
            "--width", "64", "--height", "64", "--seed", "1234", "--scheduler", "euler-a", "--output", library,
        }), error.ToString());
        using var a = MLImage.CreateFromFile(first);
        using var b = MLImage.CreateFromFile(library);
        CollectionAssert.AreNotEqual(a.Pixels.ToArray(), b.Pixels.ToArray());
        Assert.AreEqual("MLNet", PngFile.ReadParameters(library)!.Rng);
    }
}
