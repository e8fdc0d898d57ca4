using System;
using System.IO;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Samples;

/// <summary>
/// Issue 21, point 5: every sample reports any failure as one line naming the problem and exits non-zero — never a stack
/// trace. Each case runs a sample's Main in-process against one bad input.
/// </summary>
[TestClass]
[DoNotParallelize] // redirects Console.Out and Console.Error
public sealed class SampleErrorTests
{
    private static string s_dir = null!;

    [ClassInitialize]
    public static void CreateBadInputs(TestContext context)
    {
        s_dir = Path.Combine(Path.GetTempPath(), "mlnet-sample-errors-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(s_dir);
        // A model folder whose scheduler_config.json has an invalid value (issue 21: it aborted TextToImage with exit 134).
        string badConfig = Path.Combine(s_dir, "bad-config");
        CopyDirectory(ShapesTestModel.Folder, badConfig);
        string config = Path.Combine(badConfig, "scheduler", "scheduler_config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"num_train_timesteps\": 1000", "\"num_train_timesteps\": -5", StringComparison.Ordinal));
        StringAssert.Contains(File.ReadAllText(config), "-5");
        File.WriteAllText(Path.Combine(s_dir, "not-an-image.png"), "this is text, not a PNG");
        Directory.CreateDirectory(Path.Combine(s_dir, "a-directory.png"));
        File.WriteAllText(Path.Combine(s_dir, "unknown-column.csv"), "Prompt,Colour\na circle,red\n");
        File.WriteAllText(Path.Combine(s_dir, "prompts.csv"), "Prompt,Seed\na circle,1\n");
        File.WriteAllText(Path.Combine(s_dir, "a-file"), "not a directory");
        var item = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Center);
        using (var image = ShapesImages.Render(item, 64))
            PngFile.Save(image, Path.Combine(s_dir, "init.png"));
    }

    [ClassCleanup]
    public static void DeleteBadInputs() => Directory.Delete(s_dir, recursive: true);

    [TestMethod]
    [DataRow("TextToImage", "--model {dir}/missing-model --prompt x", "missing-model")]
    [DataRow("TextToImage", "--model {dir}/bad-config --prompt x --width 64 --height 64 --steps 2", "num_train_timesteps")]
    [DataRow("TextToImage", "--model {shapes} --prompt x --init-image {dir}/not-an-image.png", "not-an-image.png' could not be decoded as an image")]
    [DataRow("TextToImage", "--model {shapes} --prompt x --init-image {dir}/a-directory.png", "a-directory.png' is a directory")]
    [DataRow("TextToImage", "--model {shapes} --prompt x --init-image {dir}/missing.png", "missing.png' does not exist")]
    [DataRow("TextToImage", "--model {shapes} --prompt x --width 64 --height 64 --steps 2 --init-image {dir}/init.png --mask {dir}/not-an-image.png", "could not be decoded as an image")]
    [DataRow("TextToImage", "--prompt x --steps 0", "--steps must be in [1, 1000]")]
    [DataRow("BatchFromCsv", "--model {dir}/missing-model --input {dir}/prompts.csv --output-dir {dir}/out1", "missing-model")]
    [DataRow("BatchFromCsv", "--model {dir}/bad-config --input {dir}/prompts.csv --output-dir {dir}/out2 --width 64 --height 64 --steps 2", "num_train_timesteps")]
    [DataRow("BatchFromCsv", "--model {shapes} --input {dir}/unknown-column.csv --output-dir {dir}/out3", "unknown column 'Colour'")]
    [DataRow("BatchFromCsv", "--model {shapes} --input {dir}/a-directory.png --output-dir {dir}/out4", "a-directory.png")]
    [DataRow("BatchFromCsv", "--model {shapes} --input {dir}/prompts.csv --output-dir {dir}/a-file", "a-file")]
    [DataRow("ComposePipeline", "--model {dir}/missing-model", "missing-model")]
    [DataRow("ComposePipeline", "--model {dir}/bad-config", "num_train_timesteps")]
    [DataRow("ComposePipeline", "--unknown", "--unknown")]
    public void ABadInputIsOneLineNamingTheProblemAndANonZeroExitCode(string sample, string arguments, string expected)
    {
        string[] args = arguments.Split(' ').Select(a => a.Replace("{dir}", s_dir, StringComparison.Ordinal).Replace("{shapes}", ShapesTestModel.Folder, StringComparison.Ordinal)).ToArray();
        var (previousOut, previousError) = (Console.Out, Console.Error);
        var error = new StringWriter();
        int code;
        try
        {
            Console.SetOut(TextWriter.Null);
            Console.SetError(error);
            code = sample switch
            {
                "TextToImage" => TextToImage.Program.Main(args),
                "BatchFromCsv" => BatchFromCsv.Program.Main(args),
                "ComposePipeline" => ComposePipeline.Program.Main(args),
                _ => throw new ArgumentOutOfRangeException(nameof(sample)),
            };
        }
        finally
        {
            Console.SetOut(previousOut);
            Console.SetError(previousError);
        }
        string output = error.ToString();
        Assert.AreNotEqual(0, code, output);
        var errors = output.Split('\n').Where(l => l.StartsWith("error: ", StringComparison.Ordinal)).ToArray();
        Assert.AreEqual(1, errors.Length, output);
        StringAssert.Contains(errors[0], expected, output);
        Assert.IsFalse(output.Contains("   at ", StringComparison.Ordinal), "no stack trace: " + output);
        Assert.AreEqual(errors[0].TrimEnd(), output.TrimEnd().Split('\n').Last().TrimEnd(), "the error is the last line");
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from))
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        foreach (string dir in Directory.GetDirectories(from))
            CopyDirectory(dir, Path.Combine(to, Path.GetFileName(dir)));
    }
}
