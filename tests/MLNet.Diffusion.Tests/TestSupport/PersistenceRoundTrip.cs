using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.TestSupport;

/// <summary>One row of a pipeline's outputs: its float-vector columns in the order asked for, and the image's pixels.</summary>
internal sealed record OutputRow(float[][] Vectors, byte[] Pixels, int Width, int Height);

/// <summary>Every row's outputs, as read by <see cref="PersistenceRoundTrip.Read"/>.</summary>
internal sealed record PipelineOutputs(string[] VectorColumns, IReadOnlyList<OutputRow> Rows);

/// <summary>
/// The save-load-compare steps of the persistence tests: read a pipeline's outputs with one cursor, save the fitted
/// pipeline with <c>mlContext.Model.Save</c>, load it in a fresh MLContext and check that it gives the same values.
/// </summary>
internal static class PersistenceRoundTrip
{
    /// <summary>A file name under the temporary folder that no other test uses.</summary>
    public static string TempFile(string name) => Path.Combine(Path.GetTempPath(), $"mlnet-diffusion-{Guid.NewGuid():N}-{name}");

    /// <summary>
    /// Every listed output of every row, read by one cursor: a loaded model's cursor must ask for an output of each saved
    /// diffusion stage it passes (ML.NET's StatefulCustomMapping binds its inputs even when none of its outputs is read).
    /// </summary>
    /// <param name="view">The pipeline's output.</param>
    /// <param name="imageColumn">The MLImage column (DecodeLatents' output).</param>
    /// <param name="vectorColumns">The float-vector columns.</param>
    public static PipelineOutputs Read(IDataView view, string imageColumn, params string[] vectorColumns)
    {
        var rows = new List<OutputRow>();
        var columns = vectorColumns.Select(c => view.Schema[c]).Append(view.Schema[imageColumn]).ToArray();
        using var cursor = view.GetRowCursor(columns);
        var getters = vectorColumns.Select(c => cursor.GetGetter<VBuffer<float>>(view.Schema[c])).ToArray();
        var image = cursor.GetGetter<MLImage>(view.Schema[imageColumn]);
        while (cursor.MoveNext())
        {
            var vectors = new float[getters.Length][];
            for (int i = 0; i < getters.Length; i++)
            {
                VBuffer<float> v = default;
                getters[i](ref v);
                vectors[i] = v.DenseValues().ToArray();
            }
            MLImage img = null!;
            image(ref img);
            rows.Add(new OutputRow(vectors, img.Pixels.ToArray(), img.Width, img.Height));
        }
        return new PipelineOutputs(vectorColumns, rows);
    }

    /// <summary>
    /// Asserts that <paramref name="actual"/> holds exactly the values of <paramref name="expected"/>, and that the first
    /// two expected rows differ in their first column (the rows have different inputs, so an equal pair means the
    /// comparison could not fail).
    /// </summary>
    public static void AssertSame(PipelineOutputs expected, PipelineOutputs actual)
    {
        Assert.AreEqual(expected.Rows.Count, actual.Rows.Count, "rows");
        for (int r = 0; r < expected.Rows.Count; r++)
        {
            for (int c = 0; c < expected.VectorColumns.Length; c++)
                CollectionAssert.AreEqual(expected.Rows[r].Vectors[c], actual.Rows[r].Vectors[c], $"row {r}, {expected.VectorColumns[c]}");
            Assert.AreEqual((expected.Rows[r].Width, expected.Rows[r].Height), (actual.Rows[r].Width, actual.Rows[r].Height), $"image size of row {r}");
            CollectionAssert.AreEqual(expected.Rows[r].Pixels, actual.Rows[r].Pixels, $"image of row {r}");
        }
        if (expected.Rows.Count > 1)
            Assert.IsFalse(expected.Rows[0].Vectors[0].SequenceEqual(expected.Rows[1].Vectors[0]),
                $"rows with different inputs must differ in {expected.VectorColumns[0]}");
    }

    /// <summary>
    /// Fits the pipeline on a model from <paramref name="loadModel"/>, reads its outputs, saves it with
    /// <c>mlContext.Model.Save</c> (the model is disposed after), loads it into <c>new MLContext(seed: loadSeed)</c> and
    /// asserts that the loaded model gives the same outputs. The result deletes the saved file when disposed.
    /// </summary>
    /// <param name="loadModel">Loads the model the pipeline is fitted on.</param>
    /// <param name="rows">The input rows, loaded into each context.</param>
    /// <param name="fit">Builds and fits the pipeline.</param>
    /// <param name="read">Reads the pipeline's outputs (normally <see cref="Read"/> with the test's columns).</param>
    /// <param name="loadSeed">The seed of the fresh context, another than the fitting one's.</param>
    public static SavedPipeline SaveAndLoad<TRow>(Func<StableDiffusionModel> loadModel, TRow[] rows, Func<StableDiffusionModel, IDataView, ITransformer> fit,
        Func<IDataView, PipelineOutputs> read, int loadSeed)
        where TRow : class
    {
        string zip = TempFile("pipeline.zip");
        try
        {
            PipelineOutputs expected;
            using (var model = loadModel())
            {
                var data = model.MLContext.Data.LoadFromEnumerable(rows);
                var fitted = fit(model, data);
                expected = read(fitted.Transform(data));
                model.MLContext.Model.Save(fitted, data.Schema, zip);
            }

            // A fresh context with another seed: the same values, row at a time through ML.NET's own transforms.
            var ml = new MLContext(seed: loadSeed);
            var loaded = ml.Model.Load(zip, out var inputSchema);
            var input = ml.Data.LoadFromEnumerable(rows);
            AssertSame(expected, read(loaded.Transform(input)));
            return new SavedPipeline(zip, expected, ml, loaded, inputSchema, input);
        }
        catch
        {
            File.Delete(zip);
            throw;
        }
    }
}

/// <summary>A pipeline saved and loaded again by <see cref="PersistenceRoundTrip.SaveAndLoad"/>; disposing it deletes the saved file.</summary>
/// <param name="ZipPath">The saved model file.</param>
/// <param name="Expected">The fitted pipeline's outputs.</param>
/// <param name="MLContext">The fresh context the model was loaded in.</param>
/// <param name="Loaded">The loaded model.</param>
/// <param name="InputSchema">The input schema <c>mlContext.Model.Load</c> returned.</param>
/// <param name="Input">The rows, loaded in <paramref name="MLContext"/>.</param>
internal sealed record SavedPipeline(string ZipPath, PipelineOutputs Expected, MLContext MLContext, ITransformer Loaded, DataViewSchema InputSchema, IDataView Input)
    : IDisposable
{
    public void Dispose() => File.Delete(ZipPath);
}
