using System;
using System.IO;
using System.Linq;
using BatchFromCsv;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Prompting;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using TextToImage;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// The samples' <c>--prompt-syntax</c> and <c>--emphasis</c> (and BatchFromCsv's <c>PromptSyntax</c> column): A1111's prompt
/// editing runs from the command line on the Shapes model, and the PNG's AUTOMATIC1111 parameters record the syntax.
/// </summary>
[TestClass]
public sealed class PromptSyntaxSampleTests
{
    [TestMethod]
    public void PromptSyntaxAndEmphasisAreParsedAndChecked()
    {
        Assert.AreEqual(PromptSyntax.Plain, Arguments.Parse(new[] { "--prompt", "x" }).PromptSyntax);
        var a = Arguments.Parse(new[] { "--prompt", "x", "--prompt-syntax", "a1111", "--emphasis", "no-norm" });
        Assert.AreEqual((PromptSyntax.A1111, PromptEmphasis.NoNorm), (a.PromptSyntax, a.Emphasis));
        Assert.AreEqual(PromptSyntax.Compel, Arguments.Parse(new[] { "--prompt", "x", "--prompt-syntax", "compel" }).PromptSyntax);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--prompt-syntax", "lisp" })).Message, "lisp");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Arguments.Parse(new[] { "--prompt", "x", "--emphasis", "no-norm" })).Message,
            "--emphasis goes with --prompt-syntax a1111");
    }

    [TestMethod]
    [DoNotParallelize] // redirects Console.Out and Console.Error
    public void TextToImageRunsPromptEditingAndRecordsTheSyntax()
    {
        using var run = new SampleConsole("mlnet-syntax-sample");
        string dir = run.Directory;
        var error = run.Error;
        string output = Path.Combine(dir, "edited.png");
        int code = TextToImage.Program.Main(new[]
        {
            "--model", ShapesTestModel.Folder, "--prompt", "a [red:blue:0.5] circle AND a square :0.3", "--prompt-syntax", "a1111", "--emphasis", "no-norm",
            "--steps", "4", "--width", "64", "--height", "64", "--seed", "3", "--output", output,
        });
        Assert.AreEqual(0, code, error.ToString());
        var parameters = GenerationParameters.Parse(PngFile.ReadText(output)[GenerationParameters.PngKeyword]);
        Assert.AreEqual("a [red:blue:0.5] circle AND a square :0.3", parameters.Prompt);
        Assert.AreEqual(PromptSyntax.A1111, parameters.PromptSyntax);
        Assert.AreEqual(PromptEmphasis.NoNorm, parameters.Emphasis);
        CollectionAssert.Contains(parameters.Extra.ToArray(), new System.Collections.Generic.KeyValuePair<string, string>("Pad conds", "True"));
    }

    [TestMethod]
    public void BatchFromCsvReadsThePromptSyntaxColumn()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-syntax-batch-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            string csv = Path.Combine(dir, "prompts.csv");
            File.WriteAllText(csv, "Prompt,Seed,PromptSyntax\na [red|blue] circle,1,a1111\na (red:1.2) circle,2,\na red++ circle,3,compel\nx,4,lisp\n");
            var settings = new BatchSettings(csv, Path.Combine(dir, "out"), null, 4, 7.5f, 64, 64, null, 2, Emphasis: PromptEmphasis.NoNorm);
            using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
            var result = BatchJob.Run(settings, model, TextWriter.Null, () => false, null, default);
            Assert.AreEqual(3, result.Written);
            Assert.AreEqual("PromptSyntax", result.Failed[0].Column);
            StringAssert.Contains(result.Failed[0].Problem, "'lisp' is unknown");
            GenerationParameters Row(int i) => GenerationParameters.Parse(PngFile.ReadText(Path.Combine(settings.OutputDirectory, $"row-000{i}.png"))[GenerationParameters.PngKeyword]);
            Assert.AreEqual((PromptSyntax?)PromptSyntax.A1111, Row(0).PromptSyntax);
            Assert.AreEqual((PromptEmphasis?)PromptEmphasis.NoNorm, Row(0).Emphasis);
            Assert.IsNull(Row(1).PromptSyntax, "a row without a value is read with --prompt-syntax (plain): no key");
            Assert.AreEqual((PromptSyntax?)PromptSyntax.Compel, Row(2).PromptSyntax);
            Assert.IsNull(Row(2).Emphasis, "emphasis is A1111's setting");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
