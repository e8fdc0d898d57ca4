using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Compression;
using System.Linq;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Persistence;

/// <summary>
/// Pipelines saved by the version before persistence was reshaped (Persistence/Fixtures/README.md) load with today's
/// code and give bit-identical outputs: through their version-1 contracts as saved, pointed at the model folder built
/// on this machine, rebuilt as batched stages, and from their version-1 JSON definitions.
/// </summary>
[TestClass]
public sealed class PersistenceFixtureTests
{
    private static FixtureScenario Scenario(string name) => PersistenceFixtures.All.Single(s => s.Name == name);

    /// <summary>The contract names a saved zip holds (ML.NET's string table is UTF-16).</summary>
    private static SortedSet<string> Contracts(string zip)
    {
        var found = new SortedSet<string>(StringComparer.Ordinal);
        using var archive = ZipFile.OpenRead(zip);
        foreach (var entry in archive.Entries)
        {
            using var stream = entry.Open();
            using var memory = new MemoryStream();
            stream.CopyTo(memory);
            byte[] bytes = memory.ToArray();
            for (int offset = 0; offset < 2; offset++)
                foreach (Match m in Regex.Matches(Encoding.Unicode.GetString(bytes, offset, (bytes.Length - offset) & ~1), @"MLNet\.Diffusion\.[A-Za-z.]+\.v\d+"))
                    found.Add(m.Value);
        }
        return found;
    }

    private static void AssertOutputs(FixtureScenario scenario, ExpectedOutputs actual, string how)
    {
        var differences = ExpectedOutputs.Load(scenario.ExpectedPath).Differences(actual);
        Assert.AreEqual(0, differences.Count, $"{scenario.Name}, {how}: " + string.Join("; ", differences));
    }

    [TestMethod]
    [DataRow("text-to-image")]
    [DataRow("text-to-image-unseeded")]
    [DataRow("image-to-image")]
    [DataRow("inpainting")]
    [DataRow("sdxl")]
    [DataRow("sdxl-image-to-image")]
    public void AVersion1ZipRunsThroughItsLegacyContractsWhenTheFolderIsBackAtItsSavedPath(string name)
    {
        var scenario = Scenario(name);
        Assert.IsTrue(Contracts(scenario.ZipPath).All(c => c.EndsWith(".v1", StringComparison.Ordinal)), "the fixture holds version-1 contracts only");
        var ml = new MLContext(seed: 7);
        var loaded = ml.Model.Load(scenario.ZipPath, out var inputSchema);
        string saved = DiffusionPipelineDefinition.FromTransformer(loaded, inputSchema).ModelDirectory;

        // "Put the folder back" (docs/persistence.md): the saved path is the temporary folder of the run that wrote the
        // fixtures, so the folder built for this run is copied there for the duration of the test (only what is missing:
        // a folder whose deletion at that run's exit was cut short may be left), and what was copied is removed after.
        var added = CopyMissing(scenario.Folder(), saved);
        try
        {
            AssertOutputs(scenario, scenario.Read(loaded.Transform(scenario.Input(ml))), "loaded as saved");
        }
        finally
        {
            for (int i = added.Count - 1; i >= 0; i--)
            {
                if (File.Exists(added[i]))
                    File.Delete(added[i]);
                else if (Directory.Exists(added[i]) && !Directory.EnumerateFileSystemEntries(added[i]).Any())
                    Directory.Delete(added[i]);
            }
        }
    }

    [TestMethod]
    [DataRow("text-to-image")]
    [DataRow("text-to-image-unseeded")]
    [DataRow("image-to-image")]
    [DataRow("inpainting")]
    [DataRow("sdxl")]
    [DataRow("sdxl-image-to-image")]
    public void AVersion1ZipPointedAtTheLocalFolderGivesItsSavedOutputsAndSavesAgainInVersion2(string name)
    {
        var scenario = Scenario(name);
        var ml = new MLContext(seed: 7);
        var loaded = ml.Model.Load(scenario.ZipPath, out var inputSchema);
        var input = scenario.Input(ml);

        // The user-facing remedy for a moved folder: the loaded stages, re-saved on the new folder, row at a time.
        var moved = DiffusionPipeline.WithModelDirectory(ml, loaded, input.Schema, scenario.Folder());
        Assert.IsFalse(moved.OfType<DiffusionTransformer>().Any(), "still ML.NET's own transforms");
        AssertOutputs(scenario, scenario.Read(moved.Transform(input)), "WithModelDirectory");

        // Saving it again writes one version-2 contract per stage, and that loads too.
        string zip = PersistenceRoundTrip.TempFile(name + ".zip");
        try
        {
            ml.Model.Save(moved, input.Schema, zip);
            var contracts = Contracts(zip);
            // The current contracts: v2, and DenoiseLatents v4 (v3: ControlNet's slots; v4: the prompt schedule's; docs/persistence.md).
            Assert.IsTrue(contracts.Count > 0 && contracts.All(c => c.EndsWith(".v2", StringComparison.Ordinal) || c == "MLNet.Diffusion.DenoiseLatents.v4"), string.Join(", ", contracts));
            var fresh = new MLContext(seed: 8);
            AssertOutputs(scenario, scenario.Read(fresh.Model.Load(zip, out _).Transform(scenario.Input(fresh))), "saved again and loaded");
        }
        finally
        {
            File.Delete(zip);
        }

        // And as batched stages on a model loaded from the local folder.
        using var sd = StableDiffusionModel.Load(ml, scenario.Folder());
        var batched = DiffusionPipeline.FromLoadedModel(sd, loaded, inputSchema);
        Assert.IsTrue(batched.All(t => t is DiffusionTransformer), string.Join(", ", batched.Select(t => t.GetType().Name)));
        AssertOutputs(scenario, scenario.Read(batched.Transform(input)), "FromLoadedModel");
    }

    [TestMethod]
    [DataRow("text-to-image")]
    [DataRow("text-to-image-unseeded")]
    [DataRow("image-to-image")]
    [DataRow("inpainting")]
    [DataRow("sdxl")]
    [DataRow("sdxl-image-to-image")]
    public void AFormat1JsonDefinitionReadsAsTheZipsStagesAndGivesItsSavedOutputs(string name)
    {
        var scenario = Scenario(name);
        StringAssert.Contains(File.ReadAllText(scenario.DefinitionPath), "\"FormatVersion\": 1");
        var read = DiffusionPipelineDefinition.Load(scenario.DefinitionPath);
        Assert.AreEqual(1, read.FormatVersion);

        // The zip's saved configurations (format 1 too) read as the same records.
        var ml = new MLContext(seed: 7);
        var loaded = ml.Model.Load(scenario.ZipPath, out var inputSchema);
        var fromZip = DiffusionPipelineDefinition.FromTransformer(loaded, inputSchema);
        Assert.AreEqual(read.ModelDirectory, fromZip.ModelDirectory);
        Assert.AreEqual(read.Stages.Count, fromZip.Stages.Count);
        for (int i = 0; i < read.Stages.Count; i++)
        {
            // DecodeLatents' latent size is resolved from the input column when saved in a zip; the JSON leaves it null.
            var zipStage = fromZip.Stages[i] is DecodeLatentsStageDefinition d ? d with { LatentWidth = null, LatentHeight = null } : fromZip.Stages[i];
            Assert.AreEqual(read.Stages[i], zipStage, $"stage {i}");
        }

        // Written again it is format 2 and reads back equal.
        string json = read.ToJson();
        StringAssert.Contains(json, "\"FormatVersion\": 2");
        StringAssert.Contains(json, "\"kind\": ");
        CollectionAssert.AreEqual(read.Stages.ToArray(), DiffusionPipelineDefinition.FromJson(json).Stages.ToArray());

        using var sd = StableDiffusionModel.Load(ml, scenario.Folder());
        AssertOutputs(scenario, scenario.Read(read.Build(sd).Transform(scenario.Input(ml))), "JSON definition");
    }

    /// <summary>Copies the files of <paramref name="source"/> that <paramref name="destination"/> lacks; returns the folders and files it created, in order.</summary>
    private static List<string> CopyMissing(string source, string destination)
    {
        var added = new List<string>();
        foreach (string dir in new[] { source }.Concat(Directory.GetDirectories(source, "*", SearchOption.AllDirectories)))
        {
            string target = Path.Combine(destination, Path.GetRelativePath(source, dir));
            for (var missing = new Stack<string>(); ; target = Path.GetDirectoryName(target)!)
            {
                if (Directory.Exists(target))
                {
                    foreach (string m in missing)
                    {
                        Directory.CreateDirectory(m);
                        added.Add(m);
                    }
                    break;
                }
                missing.Push(target);
            }
        }
        foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(destination, Path.GetRelativePath(source, file));
            if (!File.Exists(target))
            {
                File.Copy(file, target);
                added.Add(target);
            }
        }
        return added;
    }
}
