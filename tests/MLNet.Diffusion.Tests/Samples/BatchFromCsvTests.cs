using System;
using System.IO;
using System.Linq;
using BatchFromCsv;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Samples;

[TestClass]
public sealed class BatchFromCsvTests
{
    [TestMethod]
    public void WritesOnePngPerRowAndStopsOnlyAtTheEndOfABatch()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-batch-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            string csv = Path.Combine(dir, "prompts.csv");
            File.WriteAllText(csv, "Prompt,NegativePrompt,Seed\n\"a red circle, on a blue background\",,1\na green square,red,2\na circle,,3\na yellow triangle,,4\na purple square,,5\n");
            using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
            var settings = new BatchSettings(csv, Path.Combine(dir, "all"), null, 4, 7.5f, 64, 64, null, 2);
            Assert.AreEqual(5, BatchJob.Run(settings, model, TextWriter.Null, () => false, null, default));
            Assert.AreEqual(5, Directory.GetFiles(settings.OutputDirectory, "*.png").Length);
            var text = PngFile.ReadText(Path.Combine(settings.OutputDirectory, "row-0000.png"));
            Assert.AreEqual("a red circle, on a blue background", text["prompt"]);
            Assert.AreEqual("1", text["seed"]);
            Assert.AreEqual("red", PngFile.ReadText(Path.Combine(settings.OutputDirectory, "row-0001.png"))["negative_prompt"]);
            StringAssert.Contains(File.ReadAllText(Path.Combine(settings.OutputDirectory, "summary.csv")), "row-0004.png,a purple square,,5");

            // A stop requested during the first batch: that batch (2 rows) is written, nothing after it.
            var stopped = settings with { OutputDirectory = Path.Combine(dir, "stopped") };
            Assert.AreEqual(2, BatchJob.Run(stopped, model, TextWriter.Null, () => true, null, default));
            CollectionAssert.AreEqual(new[] { "row-0000.png", "row-0001.png" }, Directory.GetFiles(stopped.OutputDirectory, "*.png").Select(Path.GetFileName).OrderBy(f => f).ToArray());
            Assert.IsTrue(File.Exists(Path.Combine(stopped.OutputDirectory, "summary.csv")));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
