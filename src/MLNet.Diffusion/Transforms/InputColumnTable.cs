using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Transforms;

/// <summary>The kinds of input column the stages read.</summary>
internal enum InputColumnKind
{
    /// <summary>A String (prompts).</summary>
    Text,

    /// <summary>A vector of Single, fixed or variable size.</summary>
    FloatVector,

    /// <summary>An integer of any type, or whole numbers in Single/Double (seeds, timesteps).</summary>
    Integer,

    /// <summary>An MLImage.</summary>
    Image,

    /// <summary>A Single scalar (per-row scales).</summary>
    Number,
}

/// <summary>
/// The input columns of one stage, written once: each column's name, kind and the wording of what is expected, plus
/// for vectors the size the transformer can check against a <see cref="DataViewSchema"/> (a <see cref="SchemaShape"/>
/// records only the kind). It serves the estimator's check (<see cref="Validate(SchemaShape)"/>), the transformer's
/// (<see cref="Validate(DataViewSchema)"/>) and the cursor's list of columns to read (<see cref="Names"/>).
/// </summary>
internal sealed class InputColumnTable
{
    private readonly List<Entry> _entries = new();
    private readonly List<string> _names = new();

    /// <summary>The columns, in the order they were added.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>Adds a column; a null <paramref name="column"/> (an optional column that is not set) adds nothing.</summary>
    /// <param name="column">The column's name, or null.</param>
    /// <param name="kind">What the column must hold.</param>
    /// <param name="expected">What is expected, in the transformer's messages (sizes included).</param>
    /// <param name="shapeExpected">What is expected, in the estimator's messages; null: <paramref name="expected"/>.</param>
    /// <param name="size">A vector's exact size (0: any).</param>
    /// <param name="sizeMultiple">A vector's size must be a multiple of this (0: any).</param>
    /// <param name="sizeExpected">What is expected when only the size is wrong; null: <paramref name="expected"/>.</param>
    public InputColumnTable Add(string? column, InputColumnKind kind, string expected, string? shapeExpected = null, int size = 0, int sizeMultiple = 0, string? sizeExpected = null)
    {
        if (column is null)
            return this;
        _entries.Add(new Entry(column, kind, expected, shapeExpected ?? expected, size, sizeMultiple, sizeExpected ?? expected));
        _names.Add(column);
        return this;
    }

    /// <summary>Checks the columns' presence, types and vector sizes; throws <see cref="ArgumentOutOfRangeException"/> naming the column.</summary>
    public void Validate(DataViewSchema inputSchema)
    {
        foreach (var e in _entries)
        {
            var c = ColumnChecks.Require(inputSchema, e.Column, e.Expected, Accepts(e.Kind));
            if (c.Type is VectorDataViewType v && v.Size > 0 && (e.Size > 0 && v.Size != e.Size || e.SizeMultiple > 0 && v.Size % e.SizeMultiple != 0))
                throw DiffusionTransformer.SchemaMismatch(nameof(inputSchema), e.Column, e.SizeExpected, $"Vector<Single> of size {v.Size}");
        }
    }

    /// <summary>Checks the columns' presence and kinds in a <see cref="SchemaShape"/> (estimator time); throws naming the column.</summary>
    public void Validate(SchemaShape inputSchema)
    {
        foreach (var e in _entries)
            ColumnChecks.Require(inputSchema, e.Column, e.ShapeExpected, AcceptsShape(e.Kind));
    }

    private static Func<DataViewType, bool> Accepts(InputColumnKind kind) => kind switch
    {
        InputColumnKind.Text => ColumnChecks.IsText,
        InputColumnKind.FloatVector => ColumnChecks.IsFloatVector,
        InputColumnKind.Integer => ColumnChecks.IsSeed,
        InputColumnKind.Number => ColumnChecks.IsSingle,
        _ => ColumnChecks.IsImage,
    };

    private static Func<SchemaShape.Column, bool> AcceptsShape(InputColumnKind kind) => kind switch
    {
        InputColumnKind.Text => ColumnChecks.IsText,
        InputColumnKind.FloatVector => ColumnChecks.IsFloatVector,
        InputColumnKind.Integer => ColumnChecks.IsSeed,
        InputColumnKind.Number => ColumnChecks.IsSingle,
        _ => ColumnChecks.IsImage,
    };

    private sealed record Entry(string Column, InputColumnKind Kind, string Expected, string ShapeExpected, int Size, int SizeMultiple, string SizeExpected);
}

/// <summary>
/// A float-vector input column read row by row into batch slots, each value checked to have the expected length (an
/// error names the row, the column and both lengths): the per-row buffers a stage gathers into its batch.
/// </summary>
internal sealed class VectorColumnSlots
{
    private readonly ValueGetter<VBuffer<float>> _getter;
    private readonly string _column;
    private readonly string _what;
    private readonly string _expected;
    private readonly int _length;
    private VBuffer<float> _buffer;

    /// <param name="input">The cursor's input row.</param>
    /// <param name="column">The column.</param>
    /// <param name="length">The values each row must have.</param>
    /// <param name="slots">Rows per batch.</param>
    /// <param name="what">What the column holds, for errors ("initial-noise").</param>
    /// <param name="expected">The expected value, for errors; null: the length.</param>
    public VectorColumnSlots(DataViewRow input, string column, int length, int slots, string what, string? expected = null)
    {
        _getter = input.GetGetter<VBuffer<float>>(input.Schema[column]);
        _column = column;
        _what = what;
        _length = length;
        _expected = expected ?? length.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Slots = new float[slots][];
    }

    /// <summary>The rows read, by batch slot.</summary>
    public float[]?[] Slots { get; }

    /// <summary>Reads the input row into batch slot <paramref name="slot"/>.</summary>
    public float[] Read(int slot, long position)
    {
        _getter(ref _buffer);
        if (_buffer.Length != _length)
            throw new InvalidOperationException($"Row {position}: {_what} column '{_column}' has {_buffer.Length} values; expected {_expected}.");
        var values = Slots[slot] ??= new float[_length];
        _buffer.CopyTo(values);
        return values;
    }

    /// <summary>Copies slots [start, start + count) one after the other into <paramref name="destination"/>.</summary>
    public void Gather(int start, int count, Span<float> destination)
    {
        for (int r = 0; r < count; r++)
            Slots[start + r].AsSpan().CopyTo(destination.Slice(r * _length, _length));
    }
}

/// <summary>Input-column checks shared by the stages, with ML.NET's "Schema mismatch" wording.</summary>
internal static class ColumnChecks
{
    public static DataViewSchema.Column Require(DataViewSchema schema, string column, string expected, Func<DataViewType, bool> accepts)
    {
        var c = schema.GetColumnOrNull(column) ?? throw DiffusionTransformer.ColumnNotFound(nameof(schema), column, expected);
        if (!accepts(c.Type))
            throw DiffusionTransformer.SchemaMismatch(nameof(schema), column, expected, c.Type.ToString() ?? "unknown");
        return c;
    }

    public static void Require(SchemaShape shape, string column, string expected, Func<SchemaShape.Column, bool> accepts)
    {
        var c = Find(shape, column) ?? throw DiffusionTransformer.ColumnNotFound(nameof(shape), column, expected);
        if (!accepts(c))
            throw DiffusionTransformer.SchemaMismatch(nameof(shape), column, expected, Describe(c));
    }

    public static SchemaShape.Column? Find(SchemaShape shape, string name)
    {
        foreach (var c in shape)
            if (c.Name == name)
                return c;
        return null;
    }

    public static string Describe(SchemaShape.Column c) => c.Kind switch
    {
        SchemaShape.Column.VectorKind.Scalar => c.ItemType.ToString() ?? "unknown",
        SchemaShape.Column.VectorKind.Vector => $"Vector<{c.ItemType}>",
        _ => $"VarVector<{c.ItemType}>",
    };

    public static bool IsText(DataViewType t) => t is TextDataViewType;

    public static bool IsFloatVector(DataViewType t) => t is VectorDataViewType v && v.ItemType == NumberDataViewType.Single;

    public static bool IsText(SchemaShape.Column c) => c.Kind == SchemaShape.Column.VectorKind.Scalar && c.ItemType is TextDataViewType;

    public static bool IsFloatVector(SchemaShape.Column c) => c.Kind != SchemaShape.Column.VectorKind.Scalar && c.ItemType == NumberDataViewType.Single;

    /// <summary>The expected type of a seed column, for error messages.</summary>
    public const string SeedDescription = "an integer seed (Int32, Int64, UInt32, UInt64; or whole numbers in Single/Double)";

    /// <summary>Seeds: any integer type, or a floating-point type holding whole numbers (CSV loaders read numbers as Single).</summary>
    public static bool IsSeed(DataViewType t) => t == NumberDataViewType.Int32 || t == NumberDataViewType.Int64 || t == NumberDataViewType.UInt32
        || t == NumberDataViewType.UInt64 || t == NumberDataViewType.Int16 || t == NumberDataViewType.UInt16 || t == NumberDataViewType.Single || t == NumberDataViewType.Double;

    /// <summary>A Single, or a vector of Single (one value per row: a saved stage's slot).</summary>
    public static bool IsSingle(DataViewType t) => t == NumberDataViewType.Single || IsFloatVector(t);

    public static bool IsSingle(SchemaShape.Column c) => c.ItemType == NumberDataViewType.Single;

    public static bool IsSeed(SchemaShape.Column c) => c.Kind == SchemaShape.Column.VectorKind.Scalar && IsSeed(c.ItemType);

    public static bool IsImage(DataViewType t) => t is Microsoft.ML.Transforms.Image.ImageDataViewType;

    public static bool IsImage(SchemaShape.Column c) => c.Kind == SchemaShape.Column.VectorKind.Scalar && c.ItemType is Microsoft.ML.Transforms.Image.ImageDataViewType;
}
