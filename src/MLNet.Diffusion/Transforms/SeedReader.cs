using System;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Transforms;

/// <summary>Reads an integer of any type (or a whole number in a floating-point column) as Int64: seeds, timesteps.</summary>
internal static class SeedReader
{
    public static Func<long> Create(DataViewRow row, DataViewSchema.Column column)
    {
        var t = column.Type;
        if (t == NumberDataViewType.Int32) return Wrap<int>(row, column, v => v);
        if (t == NumberDataViewType.Int64) return Wrap<long>(row, column, v => v);
        if (t == NumberDataViewType.UInt32) return Wrap<uint>(row, column, v => v);
        if (t == NumberDataViewType.UInt64) return Wrap<ulong>(row, column, v => unchecked((long)v));
        if (t == NumberDataViewType.Int16) return Wrap<short>(row, column, v => v);
        if (t == NumberDataViewType.UInt16) return Wrap<ushort>(row, column, v => v);
        if (t == NumberDataViewType.Single) return Wrap<float>(row, column, v => Whole(v, column.Name));
        if (t == NumberDataViewType.Double) return Wrap<double>(row, column, v => Whole(v, column.Name));
        throw new ArgumentOutOfRangeException(nameof(column), $"Seed column '{column.Name}' has type {t}; expected an integer type.");
    }

    /// <summary>Reads a row's value; a non-whole value becomes an error naming the row and the column ("seed column 'S'").</summary>
    public static long Read(Func<long> getter, long position, string column, string what = "seed")
    {
        try
        {
            return getter();
        }
        catch (FormatException e)
        {
            throw new InvalidOperationException($"Row {position}: {what} column '{column}': {e.Message}", e);
        }
    }

    private static long Whole(double v, string name) =>
        double.IsFinite(v) && Math.Floor(v) == v && Math.Abs(v) < 9.0e15 ? (long)v
            : throw new FormatException($"seed value {v} in column '{name}' is not a whole number.");

    private static Func<long> Wrap<T>(DataViewRow row, DataViewSchema.Column column, Func<T, long> convert)
    {
        var getter = row.GetGetter<T>(column);
        return () =>
        {
            T value = default!;
            getter(ref value);
            return convert(value);
        };
    }
}

/// <summary>
/// The seed of each row of a cursor (<see cref="RowSeed"/>'s rule): read from the seed column when the options name one,
/// else the base seed (the options' or the model's default) plus the row's position. All four seeded stages use it.
/// </summary>
internal sealed class RowSeeds
{
    private readonly Func<long>? _getter;
    private readonly string? _columnName;
    private readonly int _baseSeed;

    public RowSeeds(DataViewRow input, string? seedColumnName, int? seed, StableDiffusionModel model)
    {
        if (seedColumnName is not null)
            _getter = SeedReader.Create(input, input.Schema[seedColumnName]);
        _columnName = seedColumnName;
        _baseSeed = RowSeed.Base(seed, model);
    }

    /// <summary>The seed of the row at <paramref name="position"/> (the cursor's current row).</summary>
    public long Read(long position) => _getter is null ? RowSeed.At(_baseSeed, position) : SeedReader.Read(_getter, position, _columnName!);
}
