using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Orleans;

namespace MLNet.Diffusion.Tests.Orleans;

/// <summary>
/// Issue 19: "a job = the rows of an IDataView of prompts (prompt, negative, seed, per-row settings)". The columns have
/// BatchFromCsv's header names by default; schema errors name the column and its type, value errors the row.
/// </summary>
[TestClass]
public sealed class DiffusionJobFromDataViewTests
{
    private static readonly MLContext s_ml = new(1);

    private sealed class FullRow
    {
        public string Prompt { get; set; } = string.Empty;
        public string NegativePrompt { get; set; } = string.Empty;
        public long Seed { get; set; }
        public int Steps { get; set; }
        public float Guidance { get; set; }
        public string Scheduler { get; set; } = string.Empty;
        public int Width { get; set; }
        public int Height { get; set; }
    }

    private static DiffusionJob Job(IDataView data, DiffusionJobColumnOptions? columns = null)
        => DiffusionJob.Create("dv", OrleansJobs.Definition, data, "unused-sink", columns);

    [TestMethod]
    public void EveryColumnBecomesTheRowsValueAndMissingValuesKeepTheDefinitionsSettings()
    {
        var data = s_ml.Data.LoadFromEnumerable(new[]
        {
            new FullRow { Prompt = "a red circle", NegativePrompt = "blue", Seed = 5_000_000_000L, Steps = 3, Guidance = 4.5f, Scheduler = " euler ", Width = 72, Height = 56 },
            new FullRow { Prompt = "a green square", Seed = -7, Guidance = float.NaN },
            new FullRow { Prompt = "a blue triangle", Seed = 9, Guidance = 0f, Width = 64 },
        });
        var rows = Job(data).Rows;
        CollectionAssert.AreEqual(new[]
        {
            new DiffusionJobRow { Prompt = "a red circle", NegativePrompt = "blue", Seed = 5_000_000_000L, Steps = 3, GuidanceScale = 4.5f, Scheduler = "euler", Width = 72, Height = 56 },
            new DiffusionJobRow { Prompt = "a green square", Seed = -7 },
            // Guidance 0 is a setting (no guidance), not a missing value; steps and sizes of 0 are not settings.
            new DiffusionJobRow { Prompt = "a blue triangle", Seed = 9, GuidanceScale = 0f, Width = 64 },
        }, rows);
    }

    [TestMethod]
    public void APromptAndSeedTableGivesTheSameJobAsTheSameRowsGivenDirectly()
    {
        var expected = OrleansJobs.Rows(12);
        var data = s_ml.Data.LoadFromEnumerable(expected.Select(r => new { r.Prompt, r.NegativePrompt, Seed = (int)r.Seed }).ToArray());
        var fromView = Job(data);
        var fromRows = DiffusionJob.Create("dv", OrleansJobs.Definition, expected, "unused-sink");
        CollectionAssert.AreEqual(fromRows.Rows, fromView.Rows);
        Assert.AreEqual(fromRows.PipelineJson, fromView.PipelineJson);
    }

    [TestMethod]
    public void ACsvWithBatchFromCsvsHeadersLoadsWithBlankCellsAsMissingSettings()
    {
        string path = Path.Combine(Path.GetTempPath(), "mlnet-job-dv-" + Guid.NewGuid().ToString("N")[..8] + ".csv");
        File.WriteAllText(path, "Prompt,NegativePrompt,Seed,Steps,Guidance,Scheduler\n" +
                                "a red circle,blue,1,,,\n" +
                                "a green square,,2,6,3.5,ddim\n");
        try
        {
            // Floating-point settings columns with MissingRealsAsNaNs: a blank cell is NaN, a missing value. (Without it ML.NET's
            // text loader reads a blank number as 0, which for guidance is a setting: no guidance.)
            var data = s_ml.Data.LoadFromTextFile(path, new TextLoader.Options
            {
                Columns = new[]
                {
                    new TextLoader.Column("Prompt", DataKind.String, 0), new TextLoader.Column("NegativePrompt", DataKind.String, 1),
                    new TextLoader.Column("Seed", DataKind.Int64, 2), new TextLoader.Column("Steps", DataKind.Single, 3),
                    new TextLoader.Column("Guidance", DataKind.Single, 4), new TextLoader.Column("Scheduler", DataKind.String, 5),
                },
                Separators = new[] { ',' },
                HasHeader = true,
                MissingRealsAsNaNs = true,
            });
            CollectionAssert.AreEqual(new[]
            {
                new DiffusionJobRow { Prompt = "a red circle", NegativePrompt = "blue", Seed = 1 },
                new DiffusionJobRow { Prompt = "a green square", Seed = 2, Steps = 6, GuidanceScale = 3.5f, Scheduler = "ddim" },
            }, Job(data).Rows);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void CustomColumnNamesAreRead()
    {
        var data = s_ml.Data.LoadFromEnumerable(new[] { new { Text = "a red circle", Avoid = "blue", RowSeed = 3f, Cfg = 2.0 } });
        var rows = Job(data, new DiffusionJobColumnOptions { PromptColumnName = "Text", NegativePromptColumnName = "Avoid", SeedColumnName = "RowSeed", GuidanceScaleColumnName = "Cfg" }).Rows;
        CollectionAssert.AreEqual(new[] { new DiffusionJobRow { Prompt = "a red circle", NegativePrompt = "blue", Seed = 3, GuidanceScale = 2f } }, rows);
    }

    [TestMethod]
    public void AMissingRequiredColumnIsNamedWithTheColumnsTheDataViewHas()
    {
        var noSeed = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a red circle", Steps = 4 } });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Job(noSeed));
        StringAssert.Contains(e.Message, "no seed column 'Seed'");
        StringAssert.Contains(e.Message, "'Prompt', 'Steps'");

        var noPrompt = s_ml.Data.LoadFromEnumerable(new[] { new { Text = "a red circle", Seed = 1L } });
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Job(noPrompt));
        StringAssert.Contains(e.Message, "no prompt column 'Prompt'");
    }

    [TestMethod]
    public void AnOptionalColumnNamedByTheCallerMustExistButADefaultNameIsReadOnlyWhenPresent()
    {
        var data = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a red circle", Seed = 1L } });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Job(data, new DiffusionJobColumnOptions { StepsColumnName = "Stpes" }));
        StringAssert.Contains(e.Message, "no steps column 'Stpes'");
        Assert.AreEqual(1, Job(data).Rows.Length);
        // Null reads no column even where the data view has one of the default name.
        var withSteps = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a red circle", Seed = 1L, Steps = 9 } });
        Assert.IsNull(Job(withSteps, new DiffusionJobColumnOptions { StepsColumnName = null }).Rows[0].Steps);
    }

    [TestMethod]
    public void AWrongTypedColumnIsNamedWithItsTypeAndTheTypeExpected()
    {
        var textSeed = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a red circle", Seed = "one" } });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Job(textSeed));
        StringAssert.Contains(e.Message, "seed column 'Seed' has type String; expected a number");

        var numberPrompt = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = 3f, Seed = 1L } });
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Job(numberPrompt));
        StringAssert.Contains(e.Message, "prompt column 'Prompt' has type Single; expected String");

        var textWidth = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a red circle", Seed = 1L, Width = "wide" } });
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Job(textWidth));
        StringAssert.Contains(e.Message, "width column 'Width' has type String");

        var vectorGuidance = s_ml.Data.LoadFromEnumerable(new[] { new VectorRow { Prompt = "a red circle", Seed = 1, Guidance = new[] { 1f, 2f } } });
        e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Job(vectorGuidance));
        StringAssert.Contains(e.Message, "guidance scale column 'Guidance' has type Vector<Single, 2>");
    }

    private sealed class VectorRow
    {
        public string Prompt { get; set; } = string.Empty;
        public long Seed { get; set; }
        [VectorType(2)]
        public float[] Guidance { get; set; } = Array.Empty<float>();
    }

    [TestMethod]
    public void AMissingOrFractionalSeedAndAFractionalStepCountNameTheirRow()
    {
        var data = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a", Seed = 1f }, new { Prompt = "b", Seed = float.NaN } });
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => Job(data));
        StringAssert.Contains(e.Message, "Row 1: seed column 'Seed': the seed is missing");

        data = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a", Seed = 1.5 } });
        e = Assert.ThrowsExactly<InvalidOperationException>(() => Job(data));
        StringAssert.Contains(e.Message, "Row 0: seed column 'Seed': 1.5 is not a whole number");

        var steps = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a", Seed = 1L, Steps = 4f }, new { Prompt = "b", Seed = 2L, Steps = 2.5f } });
        e = Assert.ThrowsExactly<InvalidOperationException>(() => Job(steps));
        StringAssert.Contains(e.Message, "Row 1: column 'Steps': 2.5 is not a whole number");
    }

    [TestMethod]
    public void ADefinitionWithoutASeedColumnIsRefusedBeforeTheTableIsRead()
    {
        var definition = new DiffusionPipelineDefinition
        {
            ModelDirectory = OrleansJobs.Definition.ModelDirectory,
            Stages = OrleansJobs.Definition.Stages.Select(s => s is DenoiseLatentsStageDefinition d ? d with { SeedColumnName = null } : s).ToArray(),
        };
        // The table has no seed column either: the definition's error comes first.
        var data = s_ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a red circle" } });
        var e = Assert.ThrowsExactly<ArgumentException>(() => DiffusionJob.Create("dv", definition, data, "unused-sink"));
        StringAssert.Contains(e.Message, "must read a seed column");
    }
}
