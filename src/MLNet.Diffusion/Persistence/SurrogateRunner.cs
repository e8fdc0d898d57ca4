using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Persistence;

/// <summary>Per-cursor state of a loaded surrogate: the row counter (positions for rows without a seed column) and the runner.</summary>
internal sealed class SurrogateState
{
    public static readonly Action<SurrogateState> Init = _ => { };

    public long Count;
    public SurrogateRunner? Runner;

    /// <summary>The runner of <paramref name="json"/>, moved to the next row, with the row's slots set by <paramref name="set"/>.</summary>
    public SurrogateRunner Run(string json, Action<SurrogateRunner> set)
    {
        var runner = Runner is { } r && r.Json == json ? r : Runner = new SurrogateRunner(json);
        runner.Advance(Count++);
        set(runner);
        return runner;
    }

    /// <summary>The first value of a per-slot vector (a configuration computed from a vector key, a seed saved as a one-value vector).</summary>
    public static T First<T>(T[] values) => values.Length > 0 ? values[0]
        : throw new InvalidOperationException("A saved diffusion stage's input vector has no values; the saved configuration or seed cannot be read.");

    public static InvalidOperationException NoImage(SurrogateRunner runner, string stage, string what) =>
        new($"Row {runner.Position}: the saved {stage} stage's {what} column has no image (null).");
}

#pragma warning disable SA1300, IDE1006 // Member names are the surrogate's slot names.

/// <summary>Output of a saved stage with one vector result.</summary>
internal sealed class OneOutput
{
    public float[] __sd_out0 { get; set; } = Array.Empty<float>();
}

/// <summary>Output of a saved stage with two vector results (the second empty when the stage writes none).</summary>
internal sealed class TwoOutputs
{
    public float[] __sd_out0 { get; set; } = Array.Empty<float>();

    public float[] __sd_out1 { get; set; } = Array.Empty<float>();
}

/// <summary>Output of DecodeLatents: the image and the optional pixel vector.</summary>
internal sealed class ImageOutputs
{
    /// <summary>ML.NET needs a size to type an image member; 1×1 stands for "any size", as in the stages' schema shapes.</summary>
    [ImageType(1, 1)]
    public MLImage? __sd_image { get; set; }

    public float[] __sd_out1 { get; set; } = Array.Empty<float>();
}

#pragma warning restore SA1300, IDE1006

/// <summary>
/// Runs a saved stage on one row at a time through its <see cref="IRowToRowMapper"/>, over a row whose slots (the
/// stage's input list, <see cref="DiffusionStageDefinition.Inputs"/>) are set per call. Every contract version of a
/// stage — the current one and the legacy aliases — runs through this one reader.
/// </summary>
internal sealed class SurrogateRunner
{
    private readonly SettableRow _row;
    private readonly DataViewRow _mapped;
    private readonly DataViewSchema _outputSchema;

    public SurrogateRunner(string json)
    {
        Json = json;
        var (definition, stage) = SurrogateChain.StageFor(json);
        var columns = new List<(string, DataViewType)>();
        foreach (var input in definition.Inputs)
        {
            columns.Add((input.Slot, input.Type switch
            {
                SlotType.Text => TextDataViewType.Instance,
                SlotType.Image => new ImageDataViewType(),
                SlotType.Int64 => NumberDataViewType.Int64,
                // DecodeLatents needs its latents' shape from the column type; the saved configuration holds it.
                _ => stage is LatentDecodingTransformer decode
                    ? new VectorDataViewType(NumberDataViewType.Single, stage.Model.Info.LatentChannels, decode.Options.LatentHeight ?? 0, decode.Options.LatentWidth ?? 0)
                    : new VectorDataViewType(NumberDataViewType.Single),
            }));
        }
        _row = new SettableRow(columns);
        var mapper = stage.GetRowToRowMapper(_row.Schema);
        _outputSchema = mapper.OutputSchema;
        var active = _outputSchema.Where(col => col.Index >= _row.Schema.Count).ToArray();
        _mapped = mapper.GetRow(_row, active);
    }

    public string Json { get; }

    public long Position => _row.PositionValue;

    public void Set(string slot, object value) => _row.Set(slot, value);

    public void Advance(long position) => _row.PositionValue = position;

    public void ReadInto(OneOutput dst) => dst.__sd_out0 = ReadVector(Slots.Output0);

    public void ReadInto(TwoOutputs dst)
    {
        dst.__sd_out0 = ReadVector(Slots.Output0);
        dst.__sd_out1 = Has(Slots.Output1) ? ReadVector(Slots.Output1) : Array.Empty<float>();
    }

    public void ReadInto(ImageOutputs dst)
    {
        dst.__sd_image = ReadImage(Slots.Image);
        dst.__sd_out1 = Has(Slots.Output1) ? ReadVector(Slots.Output1) : Array.Empty<float>();
    }

    public float[] ReadVector(string slot)
    {
        VBuffer<float> value = default;
        _mapped.GetGetter<VBuffer<float>>(_outputSchema[slot])(ref value);
        return value.DenseValues().ToArray();
    }

    public MLImage ReadImage(string slot)
    {
        MLImage value = null!;
        _mapped.GetGetter<MLImage>(_outputSchema[slot])(ref value);
        return value;
    }

    public bool Has(string slot) => _outputSchema.GetColumnOrNull(slot) is not null;
}

/// <summary>A one-row <see cref="DataViewRow"/> whose values are set from outside before each read.</summary>
internal sealed class SettableRow : DataViewRow
{
    private readonly object?[] _values;

    public SettableRow(IReadOnlyList<(string Name, DataViewType Type)> columns)
    {
        var builder = new DataViewSchema.Builder();
        foreach (var (name, type) in columns)
            builder.AddColumn(name, type);
        Schema = builder.ToSchema();
        _values = new object?[columns.Count];
    }

    public override DataViewSchema Schema { get; }

    public override long Position => PositionValue;

    public long PositionValue;

    public override long Batch => 0;

    public void Set(string column, object value) => _values[Schema[column].Index] = value;

    public override bool IsColumnActive(DataViewSchema.Column column) => true;

    public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
    {
        int i = column.Index;
        if (typeof(TValue) == typeof(ReadOnlyMemory<char>))
            return (ValueGetter<TValue>)(Delegate)(ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = ((string?)_values[i] ?? string.Empty).AsMemory());
        if (typeof(TValue) == typeof(VBuffer<float>))
            return (ValueGetter<TValue>)(Delegate)(ValueGetter<VBuffer<float>>)((ref VBuffer<float> v) =>
                StageWorker.WriteVector((float[]?)_values[i] ?? Array.Empty<float>(), ref v));
        if (typeof(TValue) == typeof(long))
            return (ValueGetter<TValue>)(Delegate)(ValueGetter<long>)((ref long v) => v = (long)(_values[i] ?? 0L));
        if (typeof(TValue) == typeof(MLImage))
            return (ValueGetter<TValue>)(Delegate)(ValueGetter<MLImage>)((ref MLImage v) => v = (MLImage)_values[i]!);
        throw new InvalidOperationException($"Column '{column.Name}' cannot be read as {typeof(TValue).Name}.");
    }

    public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId v) => v = new DataViewRowId((ulong)PositionValue, 0);
}

/// <summary>An empty data view of a given schema: fits the surrogate chain on the schema the stage was used with.</summary>
internal sealed class EmptyDataView : IDataView
{
    public EmptyDataView(DataViewSchema schema) => Schema = schema;

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => 0;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => new Cursor(Schema);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => new DataViewRowCursor[] { new Cursor(Schema) };

    private sealed class Cursor : DataViewRowCursor
    {
        public Cursor(DataViewSchema schema) => Schema = schema;

        public override DataViewSchema Schema { get; }

        public override long Position => -1;

        public override long Batch => 0;

        public override bool MoveNext() => false;

        public override bool IsColumnActive(DataViewSchema.Column column) => true;

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) =>
            throw new InvalidOperationException("An empty data view has no rows.");

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId v) => v = default;
    }
}

/// <summary>
/// Types an <see cref="MLImage"/> member as an image of any size (<c>new ImageDataViewType()</c>, what LoadImages and
/// DecodeLatents produce). ML.NET's own <see cref="ImageTypeAttribute"/> needs a positive size, and a typed cursor
/// rejects an image column whose type no attribute registered; sized image columns are accepted as well.
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
internal sealed class AnySizeImageTypeAttribute : DataViewTypeAttribute
{
    public override void Register() => DataViewTypeManager.Register(new ImageDataViewType(), typeof(MLImage), this);

    public override bool Equals(DataViewTypeAttribute other) => other is AnySizeImageTypeAttribute;

    public override bool Equals(object? obj) => obj is AnySizeImageTypeAttribute;

    public override int GetHashCode() => typeof(AnySizeImageTypeAttribute).GetHashCode();
}
