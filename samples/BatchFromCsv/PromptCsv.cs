using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using CsvHelper;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Schedulers;

namespace BatchFromCsv;

/// <summary>The row the ML.NET pipeline reads (<c>LoadFromEnumerable</c> of one run of rows at a time).</summary>
public sealed class PromptRow
{
    /// <summary>The prompt.</summary>
    public string Prompt { get; set; } = string.Empty;

    /// <summary>The negative prompt (may be empty).</summary>
    public string NegativePrompt { get; set; } = string.Empty;

    /// <summary>The seed.</summary>
    public long Seed { get; set; }

    /// <summary>Image-to-image: the init image's full path; empty otherwise.</summary>
    public string InitImagePath { get; set; } = string.Empty;

    /// <summary>Inpainting: the mask's full path; empty otherwise.</summary>
    public string MaskPath { get; set; } = string.Empty;
}

/// <summary>
/// The settings a CSV row may override; rows with equal settings share one fitted pipeline and are generated as one run.
/// </summary>
internal sealed record RowSettings(int Steps, float Guidance, string? Scheduler, int Width, int Height, float? Strength, bool InitImage, bool Mask,
    MLNet.Diffusion.Prompting.PromptSyntax Syntax = MLNet.Diffusion.Prompting.PromptSyntax.Plain);

/// <summary>A parsed CSV row: its index among the data rows (0-based; the PNG is <c>row-{Index:D4}.png</c>) and its first line.</summary>
internal sealed record CsvPrompt(long Index, long Line, PromptRow Row, RowSettings Settings)
{
    /// <summary>The PNG written for this row.</summary>
    public string FileName => string.Create(CultureInfo.InvariantCulture, $"row-{Index:D4}.png");
}

/// <summary>A row that could not be read: where, which column, and why.</summary>
internal sealed record CsvRowError(long Index, long Line, string Column, string Problem)
{
    /// <inheritdoc/>
    public override string ToString() => string.Create(CultureInfo.InvariantCulture, $"line {Line} (row {Index}), column {Column}: {Problem}");
}

/// <summary>
/// Streams a prompts CSV (RFC 4180: quoted fields may hold commas, quotes and line breaks) with CsvHelper's reader, one record
/// at a time over a fixed-size buffer, mapping columns by header name. ML.NET's TextLoader would map by position and turn a value it cannot parse
/// into a default (seed "abc" → 0) without a word, which is what issue 21 reports; here every value is checked and a bad
/// one is reported with its row and column.
/// </summary>
internal sealed class PromptCsv : IDisposable
{
    /// <summary>The columns a prompts CSV may have (header names, case-insensitive); only <c>Prompt</c> is required.</summary>
    public static readonly IReadOnlyList<string> KnownColumns = new[]
    {
        "Prompt", "NegativePrompt", "Seed", "Steps", "Guidance", "Scheduler", "Width", "Height", "Strength", "InitImage", "Mask", "PromptSyntax",
    };

    private readonly CsvReader _csv;
    private readonly Dictionary<string, int> _columns;
    private readonly int _fieldCount;
    private readonly BatchSettings _defaults;
    private readonly string _baseDirectory;

    /// <summary>Malformed records reported by the scanner (which runs ahead of <see cref="Read"/>) by record number, header included.</summary>
    private readonly Dictionary<long, CsvMalformedReason> _malformed = new();
    private long _index = -1;

    private PromptCsv(string path, BatchSettings defaults)
    {
        _defaults = defaults;
        _baseDirectory = Path.GetDirectoryName(Path.GetFullPath(path)) ?? ".";
        _csv = CsvReader.FromFile(path, Options(r => _malformed[r.RecordNumber] = r.Reason), FileOptions.SequentialScan);
        try
        {
            var header = _csv.Headers;
            if (header.Count == 0)
                throw new InvalidDataException($"'{path}' is empty; it needs a header line naming its columns ({string.Join(", ", KnownColumns)}).");
            _fieldCount = header.Count;
            _columns = MapHeader(path, header);
        }
        catch
        {
            _csv.Dispose();
            throw;
        }
    }

    /// <summary>Opens a CSV and reads its header.</summary>
    /// <param name="path">The CSV file.</param>
    /// <param name="defaults">The values of the columns the file does not have (or leaves empty).</param>
    /// <exception cref="InvalidDataException">The header has an unknown or duplicated column, or no Prompt column.</exception>
    public static PromptCsv Open(string path, BatchSettings defaults) => new(path, defaults);

    /// <summary>Counts the data rows without checking them (for the progress bar's total), streaming.</summary>
    public static long CountRows(string path)
    {
        using var csv = CsvReader.FromFile(path, Options(null), FileOptions.SequentialScan);
        long rows = 0;
        while (csv.Read())
            rows++;
        return rows;
    }

    /// <summary>Reads the next data row.</summary>
    /// <returns>False at the end of the file; otherwise exactly one of <paramref name="prompt"/> and <paramref name="error"/>.</returns>
    public bool Read(out CsvPrompt? prompt, out CsvRowError? error)
    {
        prompt = null;
        error = null;
        if (!_csv.Read())
            return false;
        _index++;
        long line = _csv.LineNumber;
        if (_malformed.Remove(_csv.RowNumber + 1, out var reason))
        {
            error = new CsvRowError(_index, line, "*", $"bad quoting (RFC 4180): {reason}");
            return true;
        }
        if (_csv.FieldCount != _fieldCount)
        {
            error = new CsvRowError(_index, line, "*", $"{_csv.FieldCount} field(s), but the header has {_fieldCount}");
            return true;
        }
        try
        {
            prompt = Parse();
        }
        catch (RowException e)
        {
            error = new CsvRowError(_index, line, e.Column, e.Message);
        }
        return true;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        _csv.Dispose();
    }

    /// <summary>RFC 4180 with a comma separator (not guessed), values trimmed, line numbers tracked for messages.</summary>
    private static CsvReaderOptions Options(Action<CsvMalformedRecord>? onMalformed) => new()
    {
        Separator = ',',
        HasHeader = true,
        TrimWhitespace = true,
        TrackLineNumbers = true,
        OnMalformedRecord = onMalformed,
    };

    private static Dictionary<string, int> MapHeader(string path, IReadOnlyList<string> header)
    {
        var columns = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        string known = string.Join(", ", KnownColumns);
        for (int i = 0; i < header.Count; i++)
        {
            string name = header[i].Trim();
            string? canonical = KnownColumns.FirstOrDefault(k => string.Equals(k, name, StringComparison.OrdinalIgnoreCase));
            if (canonical is null)
                throw new InvalidDataException($"'{path}': unknown column '{name}' (column {i + 1} of the header); the known columns are {known}.");
            if (!columns.TryAdd(canonical, i))
                throw new InvalidDataException($"'{path}': column '{name}' appears twice in the header (columns {columns[canonical] + 1} and {i + 1}); the known columns are {known}.");
        }
        if (!columns.ContainsKey("Prompt"))
            throw new InvalidDataException($"'{path}': the header has no Prompt column (it has: {string.Join(", ", header)}); the known columns are {known}.");
        return columns;
    }

    private CsvPrompt Parse()
    {
        string? Cell(string column) => _columns.TryGetValue(column, out int i) && _csv.GetString(i) is { Length: > 0 } v ? v : null;

        string prompt = Cell("Prompt") ?? throw new RowException("Prompt", "the prompt is empty");
        long seed = Cell("Seed") is { } s ? Integer("Seed", s, int.MinValue, int.MaxValue) : _index; // no seed: the row's index
        int steps = Cell("Steps") is { } st ? (int)Integer("Steps", st, 1, 1000) : _defaults.Steps;
        float guidance = Cell("Guidance") is { } g ? Number("Guidance", g, 0, 100) : _defaults.Guidance;
        string? scheduler = Cell("Scheduler") is { } sc ? Scheduler(sc) : _defaults.Scheduler;
        int width = Cell("Width") is { } w ? Size("Width", w) : _defaults.Width;
        int height = Cell("Height") is { } h ? Size("Height", h) : _defaults.Height;
        string? init = Cell("InitImage") is { } ii ? Image("InitImage", ii) : null;
        string? mask = Cell("Mask") is { } m ? Image("Mask", m) : null;
        float? strength = Cell("Strength") is { } sg ? Number("Strength", sg, 0, 1) : null;
        var syntax = Cell("PromptSyntax") is { } ps ? Syntax(ps) : _defaults.PromptSyntax;
        if (mask is not null && init is null)
            throw new RowException("Mask", "a mask needs an InitImage (the picture whose white part it repaints)");
        if (strength is not null && init is null)
            throw new RowException("Strength", "a strength needs an InitImage (it says how much of that picture to change)");
        if (init is not null)
            strength ??= mask is null ? 0.8f : 1f; // diffusers' defaults: 0.8 for image-to-image, 1 for inpainting

        var row = new PromptRow { Prompt = prompt, NegativePrompt = Cell("NegativePrompt") ?? string.Empty, Seed = seed, InitImagePath = init ?? string.Empty, MaskPath = mask ?? string.Empty };
        return new CsvPrompt(_index, _csv.LineNumber, row, new RowSettings(steps, guidance, scheduler, width, height, strength, init is not null, mask is not null, syntax));
    }

    private static long Integer(string column, string text, long min, long max)
        => long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) && v >= min && v <= max
            ? v : throw new RowException(column, $"'{text}' is not an integer in [{min}, {max}]");

    private static float Number(string column, string text, float min, float max)
        => float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float v) && v >= min && v <= max
            ? v : throw new RowException(column, $"'{text}' is not a number in [{min}, {max}]");

    private static int Size(string column, string text)
    {
        int v = (int)Integer(column, text, 8, 4096);
        return v % 8 == 0 ? v : throw new RowException(column, $"{v} is not a multiple of 8");
    }

    private static MLNet.Diffusion.Prompting.PromptSyntax Syntax(string name) => name.ToLowerInvariant() switch
    {
        "plain" => MLNet.Diffusion.Prompting.PromptSyntax.Plain,
        "a1111" => MLNet.Diffusion.Prompting.PromptSyntax.A1111,
        "compel" => MLNet.Diffusion.Prompting.PromptSyntax.Compel,
        _ => throw new RowException("PromptSyntax", $"'{name}' is unknown; use plain, a1111 or compel"),
    };

    private static string Scheduler(string name)
    {
        foreach (string known in SchedulerFactory.Names)
        {
            if (string.Equals(known, name, StringComparison.OrdinalIgnoreCase))
                return known;
        }
        throw new RowException("Scheduler", $"'{name}' is unknown; use one of: {string.Join(", ", SchedulerFactory.Names)}");
    }

    /// <summary>A picture path (relative to the CSV's folder), checked by decoding it, so that a bad file fails its row only.</summary>
    private string Image(string column, string path)
    {
        string full = Path.GetFullPath(path, _baseDirectory);
        try
        {
            using var image = ImageFile.Load(full);
        }
        catch (IOException e)
        {
            throw new RowException(column, e.Message);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new RowException(column, e.Message);
        }
        return full;
    }

    private sealed class RowException : Exception
    {
        public RowException(string column, string message)
            : base(message) => Column = column;

        public string Column { get; }
    }
}
