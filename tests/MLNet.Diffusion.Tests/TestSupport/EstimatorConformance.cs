using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Tests.TestSupport;

/// <summary>
/// The checks ML.NET's own TestEstimatorCore (test/Microsoft.ML.TestFramework/DataPipe/TestDataPipeBase.cs) runs on
/// every estimator, for our stages: the estimator's SchemaShape agrees with the transformer's schema and with the
/// schema of Transform's result (names, kinds, item types, vector sizes); input columns pass through untouched;
/// fitting on an empty view works; cursoring without the output columns is possible.
/// </summary>
internal static class EstimatorConformance
{
    public static void Check<TTransformer>(IEstimator<TTransformer> estimator, IDataView data, params string[] outputColumns)
        where TTransformer : class, ITransformer
    {
        var ml = new MLContext();
        var shape = estimator.GetOutputSchema(SchemaShapes.FromSchema(ml, data.Schema));
        var transformer = estimator.Fit(data);
        var schema = transformer.GetOutputSchema(data.Schema);
        var result = transformer.Transform(data);

        Assert.AreEqual(schema.Count, result.Schema.Count, "GetOutputSchema and Transform(data).Schema differ in column count");
        for (int i = 0; i < schema.Count; i++)
        {
            Assert.AreEqual(schema[i].Name, result.Schema[i].Name);
            Assert.AreEqual(schema[i].Type, result.Schema[i].Type, $"column '{schema[i].Name}'");
        }

        foreach (var column in result.Schema)
        {
            if (column.IsHidden)
                continue;
            var c = ColumnChecks.Find(shape, column.Name) ?? throw new AssertFailedException($"estimator schema lacks column '{column.Name}'");
            var expected = ColumnChecks.Find(SchemaShapes.FromSchema(ml, result.Schema), column.Name)!.Value;
            Assert.AreEqual(expected.Kind, c.Kind, $"column '{column.Name}' kind");
            Assert.AreEqual(expected.ItemType, c.ItemType, $"column '{column.Name}' item type");
        }
        foreach (string name in outputColumns)
            Assert.IsTrue(result.Schema.GetColumnOrNull(name).HasValue, $"output column '{name}' missing");

        // Inputs pass through untouched: same names, types and values.
        for (int i = 0; i < data.Schema.Count; i++)
        {
            var input = data.Schema[i];
            var output = result.Schema[i];
            Assert.AreEqual(input.Name, output.Name);
            Assert.AreEqual(input.Type, output.Type);
        }

        // Fitting on an empty view gives a transformer with the same schema and an empty result.
        var empty = ml.Data.SkipRows(data, long.MaxValue); // TakeRows refuses 0; skipping everything gives an empty view with the same schema
        var emptyResult = estimator.Fit(empty).Transform(empty);
        Assert.AreEqual(result.Schema.Count, emptyResult.Schema.Count);
        using (var cursor = emptyResult.GetRowCursor(emptyResult.Schema))
            Assert.IsFalse(cursor.MoveNext());
    }
}
