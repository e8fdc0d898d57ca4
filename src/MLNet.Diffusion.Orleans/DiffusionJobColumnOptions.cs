using System;
using System.Collections.Generic;
using System.Globalization;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Orleans;

/// <summary>
/// The columns of an <see cref="IDataView"/> of prompts that
/// <see cref="DiffusionJob.Create(string, DiffusionPipelineDefinition, IDataView, string, DiffusionJobColumnOptions?, string?, int, TimeSpan?)"/>
/// reads into a job's rows. The default names are the BatchFromCsv sample's CSV headers (<c>Prompt</c>, <c>NegativePrompt</c>,
/// <c>Seed</c>, <c>Steps</c>, <c>Guidance</c>, <c>Scheduler</c>, <c>Width</c>, <c>Height</c>), so a CSV written for one
/// runs on the other. The prompt and seed columns are required. The others are optional: a column at its default name
/// is read when the data view has it; a name you set must be there; null never reads one.
/// </summary>
public sealed class DiffusionJobColumnOptions
{
    internal const string DefaultNegativePrompt = "NegativePrompt";
    internal const string DefaultSteps = "Steps";
    internal const string DefaultGuidance = "Guidance";
    internal const string DefaultScheduler = "Scheduler";
    internal const string DefaultWidth = "Width";
    internal const string DefaultHeight = "Height";

    /// <summary>The prompt: a text column (required).</summary>
    public string PromptColumnName { get; init; } = "Prompt";

    /// <summary>The negative prompt: a text column; an empty value is no negative prompt.</summary>
    public string? NegativePromptColumnName { get; init; } = DefaultNegativePrompt;

    /// <summary>The seed: an integer column, or whole numbers in a floating-point one (required: a row's image depends on it).</summary>
    public string SeedColumnName { get; init; } = "Seed";

    /// <summary>Denoising steps per row: integers (0 keeps the definition's) or floating point (a missing value, NaN, keeps it).</summary>
    public string? StepsColumnName { get; init; } = DefaultSteps;

    /// <summary>Guidance scale per row: floating point (a missing value, NaN, keeps the definition's) or integers.</summary>
    public string? GuidanceScaleColumnName { get; init; } = DefaultGuidance;

    /// <summary>Scheduler name per row (<c>SchedulerFactory.Names</c>): a text column; an empty value keeps the definition's.</summary>
    public string? SchedulerColumnName { get; init; } = DefaultScheduler;

    /// <summary>Image width per row: as <see cref="StepsColumnName"/> (0 or NaN keeps the definition's).</summary>
    public string? WidthColumnName { get; init; } = DefaultWidth;

    /// <summary>Image height per row: as <see cref="StepsColumnName"/> (0 or NaN keeps the definition's).</summary>
    public string? HeightColumnName { get; init; } = DefaultHeight;
}

/// <summary>
/// Reads the rows of an <see cref="IDataView"/> into <see cref="DiffusionJobRow"/>s: schema errors name the column, its type
/// and the type expected; value errors name the row and the column. Values that a row's settings cannot be (an unknown
/// scheduler, a width that is not a multiple of 8) pass through: they fail that row alone in the cluster, reported by index.
/// </summary>
internal static class DataViewJobRows
{
    public static DiffusionJobRow[] Read(IDataView data, DiffusionJobColumnOptions columns)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(columns);
        var schema = data.Schema;
        var prompt = Required(schema, columns.PromptColumnName, "prompt");
        var seed = Required(schema, columns.SeedColumnName, "seed");
        var negative = Optional(schema, columns.NegativePromptColumnName, DiffusionJobColumnOptions.DefaultNegativePrompt, "negative prompt");
        var steps = Optional(schema, columns.StepsColumnName, DiffusionJobColumnOptions.DefaultSteps, "steps");
        var guidance = Optional(schema, columns.GuidanceScaleColumnName, DiffusionJobColumnOptions.DefaultGuidance, "guidance scale");
        var scheduler = Optional(schema, columns.SchedulerColumnName, DiffusionJobColumnOptions.DefaultScheduler, "scheduler");
        var width = Optional(schema, columns.WidthColumnName, DiffusionJobColumnOptions.DefaultWidth, "width");
        var height = Optional(schema, columns.HeightColumnName, DiffusionJobColumnOptions.DefaultHeight, "height");

        // Types are checked before the first row is read, so a wrong column fails at once whatever the table's size.
        CheckText(prompt, "prompt");
        CheckNumber(seed, "seed");
        if (negative is { } n) CheckText(n, "negative prompt");
        if (steps is { } st) CheckNumber(st, "steps");
        if (guidance is { } g) CheckNumber(g, "guidance scale");
        if (scheduler is { } sc) CheckText(sc, "scheduler");
        if (width is { } w) CheckNumber(w, "width");
        if (height is { } h) CheckNumber(h, "height");

        var active = new List<DataViewSchema.Column> { prompt, seed };
        foreach (var c in new[] { negative, steps, guidance, scheduler, width, height })
        {
            if (c is { } column)
                active.Add(column);
        }
        var rows = new List<DiffusionJobRow>();
        using var cursor = data.GetRowCursor(active);
        var readPrompt = Text(cursor, prompt);
        var readSeed = Number(cursor, seed);
        var readNegative = negative is { } nc ? Text(cursor, nc) : null;
        var readSteps = steps is { } stc ? Number(cursor, stc) : null;
        var readGuidance = guidance is { } gc ? Number(cursor, gc) : null;
        var readScheduler = scheduler is { } scc ? Text(cursor, scc) : null;
        var readWidth = width is { } wc ? Number(cursor, wc) : null;
        var readHeight = height is { } hc ? Number(cursor, hc) : null;
        while (cursor.MoveNext())
        {
            long row = cursor.Position;
            string? schedulerName = readScheduler?.Invoke();
            rows.Add(new DiffusionJobRow
            {
                Prompt = readPrompt(),
                NegativePrompt = readNegative?.Invoke() ?? string.Empty,
                Seed = Seed(readSeed(), row, seed.Name),
                Steps = readSteps is null ? null : Size(readSteps(), row, steps!.Value.Name),
                GuidanceScale = readGuidance is null ? null : Guidance(readGuidance()),
                Scheduler = string.IsNullOrWhiteSpace(schedulerName) ? null : schedulerName.Trim(),
                Width = readWidth is null ? null : Size(readWidth(), row, width!.Value.Name),
                Height = readHeight is null ? null : Size(readHeight(), row, height!.Value.Name),
            });
        }
        return rows.ToArray();
    }

    private static DataViewSchema.Column Required(DataViewSchema schema, string? name, string what)
    {
        if (string.IsNullOrWhiteSpace(name))
            throw new ArgumentException($"The {what} column's name is empty: a diffusion job reads its {what} from a column.", "columns");
        return schema.GetColumnOrNull(name)
            ?? throw new ArgumentOutOfRangeException("data", $"The data view has no {what} column '{name}' (its columns: {Names(schema)}).");
    }

    private static DataViewSchema.Column? Optional(DataViewSchema schema, string? name, string defaultName, string what)
    {
        if (name is null)
            return null;
        if (schema.GetColumnOrNull(name) is { } column)
            return column;
        // A default name is read when present; a name the caller chose is a promise that the column exists (a typo is an error).
        if (string.Equals(name, defaultName, StringComparison.Ordinal))
            return null;
        throw new ArgumentOutOfRangeException("data", $"The data view has no {what} column '{name}' (its columns: {Names(schema)}); set the column name to null to read none.");
    }

    private static string Names(DataViewSchema schema)
    {
        var names = new List<string>(schema.Count);
        foreach (var c in schema)
        {
            if (!c.IsHidden)
                names.Add($"'{c.Name}'");
        }
        return names.Count == 0 ? "none" : string.Join(", ", names);
    }

    private static void CheckText(DataViewSchema.Column column, string what)
    {
        if (column.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException("data", $"The {what} column '{column.Name}' has type {column.Type}; expected String (text).");
    }

    private static void CheckNumber(DataViewSchema.Column column, string what)
    {
        var t = column.Type;
        if (t != NumberDataViewType.SByte && t != NumberDataViewType.Byte && t != NumberDataViewType.Int16 && t != NumberDataViewType.UInt16
            && t != NumberDataViewType.Int32 && t != NumberDataViewType.UInt32 && t != NumberDataViewType.Int64 && t != NumberDataViewType.UInt64
            && t != NumberDataViewType.Single && t != NumberDataViewType.Double)
        {
            throw new ArgumentOutOfRangeException("data", $"The {what} column '{column.Name}' has type {t}; expected a number (an integer type, Single or Double).");
        }
    }

    private static Func<string> Text(DataViewRow row, DataViewSchema.Column column)
    {
        var getter = row.GetGetter<ReadOnlyMemory<char>>(column);
        return () =>
        {
            ReadOnlyMemory<char> value = default;
            getter(ref value);
            return value.ToString();
        };
    }

    /// <summary>A number as a long (integer types) or a double (floating point): a seed keeps all 64 bits.</summary>
    private readonly record struct Value(long Integer, double Real, bool IsReal);

    private static Func<Value> Number(DataViewRow row, DataViewSchema.Column column)
    {
        var t = column.Type;
        if (t == NumberDataViewType.Single) return Wrap<float>(row, column, v => new Value(0, v, true));
        if (t == NumberDataViewType.Double) return Wrap<double>(row, column, v => new Value(0, v, true));
        if (t == NumberDataViewType.Int32) return Wrap<int>(row, column, v => new Value(v, 0, false));
        if (t == NumberDataViewType.Int64) return Wrap<long>(row, column, v => new Value(v, 0, false));
        if (t == NumberDataViewType.UInt32) return Wrap<uint>(row, column, v => new Value(v, 0, false));
        if (t == NumberDataViewType.UInt64) return Wrap<ulong>(row, column, v => new Value(unchecked((long)v), 0, false)); // as the stages read seeds
        if (t == NumberDataViewType.Int16) return Wrap<short>(row, column, v => new Value(v, 0, false));
        if (t == NumberDataViewType.UInt16) return Wrap<ushort>(row, column, v => new Value(v, 0, false));
        if (t == NumberDataViewType.SByte) return Wrap<sbyte>(row, column, v => new Value(v, 0, false));
        return Wrap<byte>(row, column, v => new Value(v, 0, false));
    }

    private static Func<Value> Wrap<T>(DataViewRow row, DataViewSchema.Column column, Func<T, Value> convert)
    {
        var getter = row.GetGetter<T>(column);
        return () =>
        {
            T value = default!;
            getter(ref value);
            return convert(value);
        };
    }

    private static long Seed(Value v, long row, string column)
    {
        if (!v.IsReal)
            return v.Integer;
        // Whole numbers up to 2^53 are exact in a double; beyond, the seed would not be the one written in the table.
        if (double.IsFinite(v.Real) && Math.Floor(v.Real) == v.Real && Math.Abs(v.Real) < 9.0e15)
            return (long)v.Real;
        throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture,
            $"Row {row}: seed column '{column}': {(double.IsNaN(v.Real) ? "the seed is missing" : $"{v.Real} is not a whole number")}; every row of a diffusion job needs its own seed."));
    }

    /// <summary>Steps, width or height: 0 or NaN keeps the definition's; other values pass (a bad one fails its row in the cluster).</summary>
    private static int? Size(Value v, long row, string column)
    {
        if (!v.IsReal)
        {
            if (v.Integer == 0)
                return null;
            if (v.Integer is < int.MinValue or > int.MaxValue)
                throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Row {row}: column '{column}': {v.Integer} is out of range."));
            return (int)v.Integer;
        }
        if (double.IsNaN(v.Real) || v.Real == 0)
            return null;
        if (double.IsFinite(v.Real) && Math.Floor(v.Real) == v.Real && v.Real >= int.MinValue && v.Real <= int.MaxValue)
            return (int)v.Real;
        throw new InvalidOperationException(string.Create(CultureInfo.InvariantCulture, $"Row {row}: column '{column}': {v.Real} is not a whole number."));
    }

    private static float? Guidance(Value v) => v.IsReal ? (double.IsNaN(v.Real) ? null : (float)v.Real) : (float)v.Integer;
}
