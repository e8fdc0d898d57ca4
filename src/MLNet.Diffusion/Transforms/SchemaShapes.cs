using System;
using System.Collections.Concurrent;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;

using MLNet.Diffusion;

namespace MLNet.Diffusion.Transforms;

/// <summary>
/// Mints <see cref="SchemaShape.Column"/>s for new output columns. ML.NET keeps the column constructor internal
/// (MLNET-NOTES.md), so the public route is to let a <c>CustomMapping</c> estimator whose output schema definition
/// names the column and overrides its type report it from <c>GetOutputSchema</c>; results are cached per (name, type).
/// </summary>
internal static class SchemaShapes
{
    private static readonly ConcurrentDictionary<(string, string), SchemaShape.Column> s_cache = new();

    private static readonly System.Reflection.MethodInfo s_mint =
        typeof(SchemaShapes).GetMethod(nameof(Mint), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!;

    public static SchemaShape.Column Create(MLContext mlContext, string name, DataViewType type) =>
        s_cache.GetOrAdd((name, type.ToString() + Describe(type)), _ => type is ImageDataViewType
            ? Mint<ImageHolder>(mlContext, name, type)
            : (SchemaShape.Column)s_mint.MakeGenericMethod(typeof(Holder<>).MakeGenericType(type.RawType)).Invoke(null, new object[] { mlContext, name, type })!);

    /// <summary>The <see cref="SchemaShape"/> of a schema (ML.NET's own SchemaShape.Create is internal).</summary>
    public static SchemaShape FromSchema(MLContext mlContext, DataViewSchema schema)
    {
        var columns = new System.Collections.Generic.List<SchemaShape.Column>();
        foreach (var c in schema)
            if (!c.IsHidden)
                columns.Add(Create(mlContext, c.Name, c.Type));
        return new SchemaShape(columns);
    }

    private static string Describe(DataViewType type) =>
        type is VectorDataViewType v ? "[" + string.Join(",", v.Dimensions) + "]" : string.Empty;

    private static SchemaShape.Column Mint<THolder>(MLContext mlContext, string name, DataViewType type)
        where THolder : class, new()
    {
        var output = SchemaDefinition.Create(typeof(THolder));
        output[0].ColumnName = name;
        output[0].ColumnType = type;
        var estimator = mlContext.Transforms.CustomMapping<NoInput, THolder>((_, _) => { }, contractName: null, outputSchemaDefinition: output);
        return ColumnChecks.Find(estimator.GetOutputSchema(new SchemaShape(Array.Empty<SchemaShape.Column>())), name)
            ?? throw new InvalidOperationException($"Could not create the schema column '{name}'.");
    }

    private sealed class NoInput
    {
    }

    private sealed class Holder<T>
    {
        public T Value { get; set; } = default!;
    }

    private sealed class ImageHolder
    {
        [ImageType(1, 1)]
        public MLImage? Value { get; set; }
    }
}
