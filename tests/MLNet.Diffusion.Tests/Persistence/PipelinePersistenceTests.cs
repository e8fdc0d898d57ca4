using System;
using System.Collections.Generic;
using System.IO;
using System.IO.Compression;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Persistence;

/// <summary>
/// Saving a fitted diffusion pipeline with <c>mlContext.Model.Save</c> and loading it in a fresh MLContext; the JSON
/// pipeline definition; what happens when the model folder has moved.
/// </summary>
[TestClass]
public sealed class PipelinePersistenceTests
{
    private const int Size = 64;
    private const int Steps = 4;

    public sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private static readonly Row[] s_rows =
    {
        new() { Prompt = "a red circle on a blue background", NegativePrompt = "", Seed = 3 },
        new() { Prompt = "a yellow triangle", NegativePrompt = "green", Seed = 11 },
    };

    private static ITransformer Fit(StableDiffusionModel model, IDataView data, bool seedColumn = true) =>
        model.MLContext.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(model.MLContext.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Steps = Steps,
                Width = Size,
                Height = Size,
                GuidanceScale = 4f,
                SeedColumnName = seedColumn ? "Seed" : null,
                BatchSize = 2,
            }))
            .Append(model.MLContext.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data);

    /// <summary>Each row's latents and the image's pixel bytes; the images have the pipeline's size.</summary>
    private static PipelineOutputs Read(IDataView view)
    {
        var outputs = PersistenceRoundTrip.Read(view, "Image", "Latents");
        foreach (var row in outputs.Rows)
            Assert.AreEqual(Size, row.Width);
        return outputs;
    }

    [TestMethod]
    public void SavedPipelineLoadsInAFreshContextAndGivesIdenticalImages()
    {
        using var saved = PersistenceRoundTrip.SaveAndLoad(() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder), s_rows,
            (model, data) => Fit(model, data), Read, loadSeed: 99);
        Assert.IsFalse(Flatten(saved.Loaded).OfType<DiffusionTransformer>().Any(), "the loaded model is made of ML.NET's own transforms");

        using var archive = ZipFile.OpenRead(saved.ZipPath);
        Assert.IsFalse(archive.Entries.Any(e => e.FullName.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase)), "no ONNX file in the zip");
        long size = new FileInfo(saved.ZipPath).Length;
        Assert.IsTrue(size < 64 * 1024, $"the saved pipeline is {size} bytes; it must hold configuration only");
    }

    [TestMethod]
    public void WithoutASeedColumnTheResolvedSeedIsSavedAndRowsAreNumberedInOrder()
    {
        // SaveAndLoad compares the loaded model's outputs with the fitted pipeline's.
        using var saved = PersistenceRoundTrip.SaveAndLoad(() => StableDiffusionModel.Load(new MLContext(seed: 5), ShapesTestModel.Folder), s_rows,
            (model, data) => Fit(model, data, seedColumn: false), Read, loadSeed: 6);
    }

    [TestMethod]
    public void FromLoadedModelRebuildsTheBatchedStages()
    {
        using var saved = PersistenceRoundTrip.SaveAndLoad(() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder), s_rows,
            (model, data) => Fit(model, data), Read, loadSeed: 2);
        var definition = DiffusionPipelineDefinition.FromTransformer(saved.Loaded, saved.InputSchema);
        Assert.AreEqual(Path.GetFullPath(ShapesTestModel.Folder).TrimEnd(Path.DirectorySeparatorChar), definition.ModelDirectory.TrimEnd(Path.DirectorySeparatorChar));
        CollectionAssert.AreEqual(new[] { DiffusionStageKind.EncodePrompt, DiffusionStageKind.DenoiseLatents, DiffusionStageKind.DecodeLatents },
            definition.Stages.Select(s => s.Kind).ToArray());

        using var sd = DiffusionPipeline.LoadModel(saved.MLContext, saved.Loaded, saved.InputSchema, out var pipeline);
        var stages = pipeline.ToArray();
        Assert.AreEqual(3, stages.Length, string.Join(", ", stages.Select(s => s.GetType().Name)));
        Assert.IsInstanceOfType<PromptEncodingTransformer>(stages[0]);
        var denoise = (LatentDenoisingTransformer)stages[1];
        Assert.AreEqual(Steps, denoise.Options.Steps);
        Assert.AreEqual("Seed", denoise.Options.SeedColumnName);
        Assert.IsInstanceOfType<LatentDecodingTransformer>(stages[2]);
        var output = pipeline.Transform(saved.Input);
        Assert.AreEqual(4 * (Size / 8) * (Size / 8), ((VectorDataViewType)output.Schema["Latents"].Type).Size, "fixed-size latents again");
        PersistenceRoundTrip.AssertSame(saved.Expected, Read(output));
    }

    [TestMethod]
    public void JsonDefinitionRoundTripsAndRebuildsTheSameStages()
    {
        string path = PersistenceRoundTrip.TempFile("pipeline.json");
        try
        {
            using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
            var data = model.MLContext.Data.LoadFromEnumerable(s_rows);
            var fitted = Fit(model, data);
            var expected = Read(fitted.Transform(data));
            var definition = DiffusionPipelineDefinition.FromTransformer(fitted);
            definition.Save(path);
            string json = File.ReadAllText(path);
            StringAssert.Contains(json, "\"DenoiseLatents\"");
            Assert.IsFalse(json.Contains("Progress", StringComparison.Ordinal) || json.Contains("CancellationToken", StringComparison.Ordinal), json);

            var read = DiffusionPipelineDefinition.Load(path);
            Assert.AreEqual(definition.ToJson(), read.ToJson());
            Assert.AreEqual(model.Directory, read.ModelDirectory);
            using var again = StableDiffusionModel.Load(new MLContext(seed: 42), read.ModelDirectory);
            var rebuilt = read.Build(again);
            PersistenceRoundTrip.AssertSame(expected, Read(rebuilt.Transform(again.MLContext.Data.LoadFromEnumerable(s_rows))));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void AMovedModelFolderGivesAClearErrorNamingThePath()
    {
        string folder = PersistenceRoundTrip.TempFile("model");
        string zip = PersistenceRoundTrip.TempFile("moved.zip");
        try
        {
            CopyDirectory(ShapesTestModel.Folder, folder);
            using (var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder))
            {
                var data = model.MLContext.Data.LoadFromEnumerable(s_rows);
                model.MLContext.Model.Save(Fit(model, data), data.Schema, zip);
            }
            Directory.Delete(folder, recursive: true);

            var ml = new MLContext();
            var loaded = ml.Model.Load(zip, out var inputSchema);
            var moved = Assert.ThrowsExactly<DirectoryNotFoundException>(() => DiffusionPipeline.LoadModel(ml, loaded, inputSchema, out _));
            StringAssert.Contains(moved.Message, folder);
            StringAssert.Contains(moved.Message, "docs/persistence.md");

            var output = loaded.Transform(ml.Data.LoadFromEnumerable(s_rows));
            var e = Assert.Throws<Exception>(() => Read(output));
            var messages = new List<string>();
            for (Exception? x = e; x is not null; x = x.InnerException)
                messages.Add(x.Message);
            Assert.IsTrue(messages.Any(m => m.Contains(folder, StringComparison.Ordinal)), string.Join(" | ", messages));
        }
        finally
        {
            if (Directory.Exists(folder))
                Directory.Delete(folder, recursive: true);
            File.Delete(zip);
        }
    }

    [TestMethod]
    public void SavingAStageThatNeverSawASchemaExplainsWhy()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var data = model.MLContext.Data.LoadFromEnumerable(s_rows);
        var definition = DiffusionPipelineDefinition.FromTransformer(Fit(model, data));
        var built = definition.Build(model);
        string zip = PersistenceRoundTrip.TempFile("unused.zip");
        try
        {
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => model.MLContext.Model.Save(built, data.Schema, zip));
            StringAssert.Contains(e.Message, "EncodePrompt");
            StringAssert.Contains(e.Message, "docs/persistence.md");
            built.Transform(data);
            model.MLContext.Model.Save(built, data.Schema, zip);
            Assert.IsTrue(new FileInfo(zip).Length > 0);
        }
        finally
        {
            File.Delete(zip);
        }
    }

    private static IEnumerable<ITransformer> Flatten(ITransformer t) =>
        t is IEnumerable<ITransformer> chain ? chain.SelectMany(Flatten) : new[] { t };

    private static void CopyDirectory(string source, string destination)
    {
        foreach (string dir in Directory.GetDirectories(source, "*", SearchOption.AllDirectories))
            Directory.CreateDirectory(Path.Combine(destination, Path.GetRelativePath(source, dir)));
        Directory.CreateDirectory(destination);
        foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
            File.Copy(file, Path.Combine(destination, Path.GetRelativePath(source, file)));
    }
}
