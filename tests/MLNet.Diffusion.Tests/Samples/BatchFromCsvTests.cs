using System;
using System.IO;
using System.Linq;
using System.Text;
using BatchFromCsv;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Samples;

[TestClass]
public sealed class BatchFromCsvTests
{
    private static readonly Lazy<StableDiffusionModel> s_model = new(() => StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder));

    private static BatchSettings Settings(string csv, string output, int batchSize = 2) => new(csv, output, null, 4, 7.5f, 64, 64, null, batchSize);

    private static string NewDirectory()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-batch-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    [TestMethod]
    public void WritesOnePngPerRowAndStopsOnlyAtTheEndOfABatch()
    {
        string dir = NewDirectory();
        try
        {
            string csv = Path.Combine(dir, "prompts.csv");
            File.WriteAllText(csv, "Prompt,NegativePrompt,Seed\n\"a red circle, on a blue background\",,1\na green square,red,2\na circle,,3\na yellow triangle,,4\na purple square,,5\n");
            var settings = Settings(csv, Path.Combine(dir, "all"));
            Assert.AreEqual(5, BatchJob.Run(settings, s_model.Value, TextWriter.Null, () => false, null, default).Written);
            Assert.AreEqual(5, Directory.GetFiles(settings.OutputDirectory, "*.png").Length);
            var text = PngFile.ReadText(Path.Combine(settings.OutputDirectory, "row-0000.png"));
            Assert.AreEqual("a red circle, on a blue background", text["prompt"]);
            Assert.AreEqual("1", text["seed"]);
            Assert.AreEqual("red", PngFile.ReadText(Path.Combine(settings.OutputDirectory, "row-0001.png"))["negative_prompt"]);
            StringAssert.Contains(File.ReadAllText(Path.Combine(settings.OutputDirectory, "summary.csv")), "row-0004.png,a purple square,,5");

            // A stop requested during the first batch: that batch (2 rows) is written, nothing after it.
            var stopped = settings with { OutputDirectory = Path.Combine(dir, "stopped") };
            var result = BatchJob.Run(stopped, s_model.Value, TextWriter.Null, () => true, null, default);
            Assert.AreEqual(2, result.Written);
            Assert.IsTrue(result.Stopped);
            CollectionAssert.AreEqual(new[] { "row-0000.png", "row-0001.png" }, Directory.GetFiles(stopped.OutputDirectory, "*.png").Select(Path.GetFileName).OrderBy(f => f).ToArray());
            Assert.IsTrue(File.Exists(Path.Combine(stopped.OutputDirectory, "summary.csv")));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void ColumnsAreMappedByHeaderNameInAnyOrderAndCase_AndPerRowSettingsFormRuns()
    {
        // Issue 21: "Prompt,Seed" was read by position (the seed became the negative prompt, every seed was 0).
        string dir = NewDirectory();
        try
        {
            string csv = Path.Combine(dir, "prompts.csv");
            File.WriteAllText(csv, "seed , PROMPT,width,Steps,scheduler\n3,a red circle on a blue background,,,\n7,a green square,32,2,DDIM\n9,a blue circle,32,2,ddim\n11,a yellow triangle,,,\n");
            var settings = Settings(csv, Path.Combine(dir, "out"));
            var result = BatchJob.Run(settings, s_model.Value, TextWriter.Null, () => false, null, default);
            Assert.AreEqual((4L, 0L), (result.Written, result.FailedCount));
            var first = PngFile.ReadText(Path.Combine(settings.OutputDirectory, "row-0000.png"));
            Assert.AreEqual("a red circle on a blue background", first["prompt"]);
            Assert.AreEqual("3", first["seed"]);
            Assert.AreEqual(string.Empty, first["negative_prompt"]);
            Assert.AreEqual("4", first["steps"], "an absent value takes the command line's");
            var second = PngFile.ReadText(Path.Combine(settings.OutputDirectory, "row-0001.png"));
            Assert.AreEqual(("7", "2", "32x64", "ddim"), (second["seed"], second["steps"], second["size"], second["scheduler"]));
            using (var image = MLImage.CreateFromFile(Path.Combine(settings.OutputDirectory, "row-0002.png")))
                Assert.AreEqual((32, 64), (image.Width, image.Height));
            using (var image = MLImage.CreateFromFile(Path.Combine(settings.OutputDirectory, "row-0003.png")))
                Assert.AreEqual((64, 64), (image.Width, image.Height));

            // Without a Seed column each row gets its index as seed, never one seed for all.
            string noSeed = Path.Combine(dir, "noseed.csv");
            File.WriteAllText(noSeed, "Prompt\na circle\na square\n");
            var other = settings with { Input = noSeed, OutputDirectory = Path.Combine(dir, "noseed") };
            BatchJob.Run(other, s_model.Value, TextWriter.Null, () => false, null, default);
            Assert.AreEqual("1", PngFile.ReadText(Path.Combine(other.OutputDirectory, "row-0001.png"))["seed"]);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    [DataRow("Prompt,Sed\nx,1\n", "unknown column 'Sed'")]
    [DataRow("Prompt,seed,Seed\nx,1,2\n", "column 'Seed' appears twice")]
    [DataRow("NegativePrompt,Seed\nx,1\n", "no Prompt column")]
    [DataRow("", "is empty")]
    public void AnUnknownDuplicatedOrMissingColumnIsRefusedNamingItAndTheKnownOnes(string content, string expected)
    {
        string dir = NewDirectory();
        try
        {
            string csv = Path.Combine(dir, "bad.csv");
            File.WriteAllText(csv, content);
            var e = Assert.ThrowsExactly<InvalidDataException>(() => PromptCsv.Open(csv, Settings(csv, dir)).Dispose());
            StringAssert.Contains(e.Message, expected);
            StringAssert.Contains(e.Message, "Prompt, NegativePrompt, Seed, Steps, Guidance, Scheduler, Width, Height, Strength, InitImage, Mask");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void ABadValueIsReportedWithItsRowAndColumn_AndTheOtherRowsAreGenerated()
    {
        string dir = NewDirectory();
        try
        {
            string csv = Path.Combine(dir, "prompts.csv");
            File.WriteAllText(csv, "Prompt,Seed,Steps,Width,Guidance\na circle,1,,,\na square,abc,,,\n\"two\nlines\",2,0,,\na triangle,3,,60,\na circle,4,,,x\na square,5,,,\na circle,6\nbad \"quote\",7,,,\n");
            var result = BatchJob.Run(Settings(csv, Path.Combine(dir, "out")), s_model.Value, TextWriter.Null, () => false, null, default);
            Assert.AreEqual(2, result.Written);
            Assert.AreEqual(6, result.FailedCount);
            var failed = result.Failed.Select(f => (f.Index, f.Line, f.Column)).ToArray();
            CollectionAssert.AreEqual(new[] { (1L, 3L, "Seed"), (2L, 4L, "Steps"), (3L, 6L, "Width"), (4L, 7L, "Guidance"), (6L, 9L, "*"), (7L, 10L, "*") }, failed);
            StringAssert.Contains(result.Failed[0].ToString(), "line 3 (row 1), column Seed: 'abc' is not an integer");
            StringAssert.Contains(result.Failed[2].Problem, "60 is not a multiple of 8");
            StringAssert.Contains(result.Failed[4].Problem, "2 field(s), but the header has 5");
            StringAssert.Contains(result.Failed[5].Problem, "bad quoting");
            CollectionAssert.AreEqual(new[] { "row-0000.png", "row-0005.png" }, Directory.GetFiles(Path.Combine(dir, "out"), "*.png").Select(Path.GetFileName).OrderBy(f => f).ToArray());
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void ARestartSkipsRowsWhosePngHasTheSameParameters_AndRedoesChangedOnes()
    {
        string dir = NewDirectory();
        try
        {
            string csv = Path.Combine(dir, "prompts.csv");
            File.WriteAllText(csv, "Prompt,Seed\na red circle,1\na green square,2\na circle,3\na yellow triangle,4\na purple square,5\n");
            var settings = Settings(csv, Path.Combine(dir, "out"));
            // As after Ctrl+C: the first batch written, then stopped.
            Assert.AreEqual(2, BatchJob.Run(settings, s_model.Value, TextWriter.Null, () => true, null, default).Written);
            string first = Path.Combine(settings.OutputDirectory, "row-0000.png");
            var written = File.GetLastWriteTimeUtc(first);
            File.WriteAllText(first + ".partial", "a PNG being written when the process was killed");

            var resumed = BatchJob.Run(settings, s_model.Value, TextWriter.Null, () => false, null, default);
            Assert.AreEqual((3L, 2L, 0L), (resumed.Written, resumed.Skipped, resumed.FailedCount), "nothing done twice, nothing lost");
            Assert.AreEqual(written, File.GetLastWriteTimeUtc(first));
            Assert.AreEqual(5, Directory.GetFiles(settings.OutputDirectory, "*.png").Length);
            Assert.AreEqual(0, Directory.GetFiles(settings.OutputDirectory, "*.partial").Length);
            Assert.AreEqual(6, File.ReadAllLines(Path.Combine(settings.OutputDirectory, "summary.csv")).Length, "the summary lists skipped rows too");

            // Another seed (or steps, size, …) for a row: its PNG no longer matches and is made again.
            File.WriteAllText(csv, "Prompt,Seed\na red circle,1\na green square,22\na circle,3\na yellow triangle,4\na purple square,5\n");
            var changed = BatchJob.Run(settings, s_model.Value, TextWriter.Null, () => false, null, default);
            Assert.AreEqual((1L, 4L), (changed.Written, changed.Skipped));
            Assert.AreEqual("22", PngFile.ReadText(Path.Combine(settings.OutputDirectory, "row-0001.png"))["seed"]);
            var otherSteps = BatchJob.Run(settings with { Steps = 3 }, s_model.Value, TextWriter.Null, () => false, null, default);
            Assert.AreEqual((5L, 0L), (otherSteps.Written, otherSteps.Skipped), "other default steps: every row again");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    [DoNotParallelize] // GC.GetTotalMemory is process-wide: another test class allocating beside it would be measured too
    public void A100000RowCsvIsStreamed_MemoryDoesNotGrowWithTheFile()
    {
        string dir = NewDirectory();
        try
        {
            string csv = Path.Combine(dir, "big.csv");
            using (var writer = new StreamWriter(csv, false, new UTF8Encoding(false)))
            {
                writer.Write("Prompt,NegativePrompt,Seed,Steps\n");
                for (int i = 0; i < 100_000; i++)
                    writer.Write($"\"a red circle, number {i}, on a blue background\",blurry,{i},{1 + (i % 30)}\n");
            }
            long fileBytes = new FileInfo(csv).Length;
            Assert.AreEqual(100_000, PromptCsv.CountRows(csv));

            using var reader = PromptCsv.Open(csv, Settings(csv, dir));
            long rows = 0, after1000 = 0, seedSum = 0;
            while (reader.Read(out var prompt, out var error))
            {
                Assert.IsNull(error, error?.ToString());
                seedSum += prompt!.Row.Seed;
                if (++rows == 1000)
                    after1000 = GC.GetTotalMemory(forceFullCollection: true);
            }
            long atEnd = GC.GetTotalMemory(forceFullCollection: true);
            Assert.AreEqual(100_000, rows);
            Assert.AreEqual(99_999L * 100_000 / 2, seedSum);
            // The file is ~6 MB and 100,000 parsed rows would hold far more; a streaming reader keeps its buffer only.
            Assert.IsTrue(fileBytes > 5_000_000, $"file {fileBytes} bytes");
            Assert.IsTrue(atEnd - after1000 < 1_000_000, $"memory grew by {atEnd - after1000} bytes between row 1,000 and row 100,000");
            GC.KeepAlive(reader);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
