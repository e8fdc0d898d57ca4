using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using MLNet.Diffusion.Randomness;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// The generation parameters AUTOMATIC1111's web UI writes into its PNGs' <c>parameters</c> text chunk (its "infotext",
/// read by its PNG Info tab, ComfyUI and image sites): the prompt, a <c>Negative prompt:</c> line, then
/// <c>Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x512, …</c>.
/// <see cref="ToInfotext"/> writes the format of <c>create_infotext</c> (<c>modules/processing.py</c>) and
/// <see cref="Parse"/> reads it as <c>parse_generation_parameters</c> (<c>modules/infotext_utils.py</c>) does.
/// </summary>
public sealed record GenerationParameters
{
    // parse_generation_parameters' re_param: a key, then a JSON-quoted value or anything up to the next comma.
    private static readonly Regex s_parameter = new(@"\s*(\w[\w \-/]+):\s*(""(?:\\.|[^\\""])+""|[^,]*)(?:,|$)", RegexOptions.CultureInvariant);
    private static readonly Regex s_imageSize = new(@"^(\d+)x(\d+)$", RegexOptions.CultureInvariant);

    /// <summary>The PNG text keyword AUTOMATIC1111 writes and reads.</summary>
    public const string PngKeyword = "parameters";

    /// <summary>The prompt (may span several lines).</summary>
    public string Prompt { get; init; } = string.Empty;

    /// <summary>The negative prompt; empty when none.</summary>
    public string NegativePrompt { get; init; } = string.Empty;

    /// <summary><c>Steps</c>: the number of denoising steps.</summary>
    public int? Steps { get; init; }

    /// <summary><c>Sampler</c>: AUTOMATIC1111's sampler name (<see cref="A1111Samplers"/> maps it to this library's schedulers).</summary>
    public string? Sampler { get; init; }

    /// <summary><c>Schedule type</c>: <c>Automatic</c>, <c>Karras</c>, … (AUTOMATIC1111 1.9 and later).</summary>
    public string? ScheduleType { get; init; }

    /// <summary><c>CFG scale</c>: the guidance scale.</summary>
    public float? CfgScale { get; init; }

    /// <summary><c>Seed</c>.</summary>
    public long? Seed { get; init; }

    /// <summary>The width of <c>Size</c> (<c>512x768</c> is width 512, height 768).</summary>
    public int? Width { get; init; }

    /// <summary>The height of <c>Size</c>.</summary>
    public int? Height { get; init; }

    /// <summary><c>Model hash</c>: AUTOMATIC1111's short model hash (the first 10 hex digits of the checkpoint's SHA-256).</summary>
    public string? ModelHash { get; init; }

    /// <summary><c>Model</c>: the checkpoint's name.</summary>
    public string? Model { get; init; }

    /// <summary><c>Denoising strength</c> (image-to-image).</summary>
    public float? DenoisingStrength { get; init; }

    /// <summary><c>Clip skip</c>; written only above 1, as AUTOMATIC1111 does.</summary>
    public int? ClipSkip { get; init; }

    /// <summary><c>ENSD</c>: the eta noise seed delta.</summary>
    public long? EtaNoiseSeedDelta { get; init; }

    /// <summary><c>RNG</c>: <c>CPU</c> or <c>NV</c>; absent means <c>GPU</c> (AUTOMATIC1111's default).</summary>
    public string? Rng { get; init; }

    /// <summary>
    /// <c>Emphasis</c>: AUTOMATIC1111's emphasis mode (<c>None</c>, <c>Ignore</c>, <c>Original</c>, <c>No norm</c>), which it writes
    /// only when it is not its default <c>Original</c>; null when not written.
    /// </summary>
    public Prompting.PromptEmphasis? Emphasis { get; init; }

    /// <summary>
    /// <c>Prompt syntax</c>: how this library read the prompt (<c>a1111</c> or <c>compel</c>), written only when not
    /// <see cref="Prompting.PromptSyntax.Plain"/>. AUTOMATIC1111 has no such key (it always reads its own syntax, and its PNG
    /// Info keeps the pair as an extra parameter); it tells a reader that <c>(red:1.3)</c> in the prompt was a weight,
    /// not text. Null when not written, which means plain text.
    /// </summary>
    public Prompting.PromptSyntax? PromptSyntax { get; init; }

    /// <summary>Every other <c>key: value</c> pair, in order, values unquoted (written after the known keys).</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Extra { get; init; } = Array.Empty<KeyValuePair<string, string>>();

    /// <summary>Equal when every parameter is equal, <see cref="Extra"/> compared pair by pair in order.</summary>
    /// <param name="other">The other parameters.</param>
    public bool Equals(GenerationParameters? other)
        => other is not null
            && Prompt == other.Prompt && NegativePrompt == other.NegativePrompt && Steps == other.Steps
            && Sampler == other.Sampler && ScheduleType == other.ScheduleType && CfgScale == other.CfgScale
            && Seed == other.Seed && Width == other.Width && Height == other.Height && ModelHash == other.ModelHash
            && Model == other.Model && DenoisingStrength == other.DenoisingStrength && ClipSkip == other.ClipSkip
            && EtaNoiseSeedDelta == other.EtaNoiseSeedDelta && Rng == other.Rng && Emphasis == other.Emphasis
            && PromptSyntax == other.PromptSyntax && Extra.SequenceEqual(other.Extra);

    /// <inheritdoc/>
    public override int GetHashCode() => HashCode.Combine(Prompt, NegativePrompt, Steps, Sampler, Seed, Width, Height, Extra.Count);

    /// <summary>
    /// The noise that reproduces AUTOMATIC1111's: its random number source (<see cref="Rng"/>, GPU when absent) and ENSD,
    /// one generator per image (<see cref="NoiseOptions.Automatic1111"/>).
    /// </summary>
    public NoiseOptions ToNoiseOptions() => NoiseOptions.Automatic1111(Rng ?? "GPU", EtaNoiseSeedDelta ?? 0);

    /// <summary>Writes the parameters as AUTOMATIC1111's <c>create_infotext</c> does.</summary>
    /// <returns>The prompt, the negative prompt line when there is one, and the comma-separated parameters.</returns>
    public string ToInfotext()
    {
        var pairs = new List<(string Key, string? Value)>
        {
            ("Steps", Steps?.ToString(CultureInfo.InvariantCulture)),
            ("Sampler", Sampler),
            ("Schedule type", ScheduleType),
            ("CFG scale", Format(CfgScale)),
            ("Seed", Seed?.ToString(CultureInfo.InvariantCulture)),
            ("Size", Width is { } w && Height is { } h ? string.Create(CultureInfo.InvariantCulture, $"{w}x{h}") : null),
            ("Model hash", ModelHash),
            ("Model", Model),
            ("Denoising strength", Format(DenoisingStrength)),
            ("Clip skip", ClipSkip is > 1 ? ClipSkip.Value.ToString(CultureInfo.InvariantCulture) : null),
            ("ENSD", EtaNoiseSeedDelta is { } ensd and not 0 ? ensd.ToString(CultureInfo.InvariantCulture) : null),
            ("RNG", Rng is { } rng && !string.Equals(rng, "GPU", StringComparison.Ordinal) ? rng : null),
            ("Emphasis", Emphasis is { } emphasis and not Prompting.PromptEmphasis.Original ? EmphasisName(emphasis) : null),
            ("Prompt syntax", PromptSyntax is { } syntax and not Prompting.PromptSyntax.Plain ? SyntaxName(syntax) : null),
        };
        pairs.AddRange(Extra.Select(kv => (kv.Key, (string?)kv.Value)));
        // create_infotext: `k if k == v else f'{k}: {quote(v)}'` for every value that is not None.
        string parameters = string.Join(", ", pairs.Where(p => p.Value is not null)
            .Select(p => p.Key == p.Value ? p.Key : $"{p.Key}: {Quote(p.Value!)}"));
        string negative = NegativePrompt.Length > 0 ? $"\nNegative prompt: {NegativePrompt}" : string.Empty;
        return $"{Prompt}{negative}\n{parameters}".Trim();
    }

    /// <summary>Reads an infotext as AUTOMATIC1111's <c>parse_generation_parameters</c> does.</summary>
    /// <param name="infotext">The text, e.g. a PNG's <c>parameters</c> chunk.</param>
    /// <returns>The parameters; other keys, and known keys whose value does not parse (<c>Steps: many</c>), are kept in
    /// <see cref="Extra"/>. Like AUTOMATIC1111, it never fails on odd text.</returns>
    public static GenerationParameters Parse(string infotext)
    {
        ArgumentNullException.ThrowIfNull(infotext);
        var lines = infotext.Trim().Split('\n').ToList();
        string lastLine = lines[^1];
        lines.RemoveAt(lines.Count - 1);
        if (s_parameter.Matches(lastLine).Count < 3)
        {
            lines.Add(lastLine);
            lastLine = string.Empty;
        }

        var prompt = new StringBuilder();
        var negative = new StringBuilder();
        bool doneWithPrompt = false;
        foreach (string raw in lines)
        {
            string line = raw.Trim();
            if (line.StartsWith("Negative prompt:", StringComparison.Ordinal))
            {
                doneWithPrompt = true;
                line = line[16..].Trim();
            }
            var target = doneWithPrompt ? negative : prompt;
            if (target.Length > 0)
                target.Append('\n');
            target.Append(line);
        }

        var result = new GenerationParameters { Prompt = prompt.ToString(), NegativePrompt = negative.ToString() };
        var extra = new List<KeyValuePair<string, string>>();
        foreach (Match m in s_parameter.Matches(lastLine))
        {
            string key = m.Groups[1].Value;
            string value = m.Groups[2].Value;
            if (value.Length >= 2 && value[0] == '"' && value[^1] == '"')
                value = Unquote(value);
            if (value.Length == 0)
                continue; // parse_generation_parameters fails on v[0] of an empty value, reports it and drops the key
            result = key switch
            {
                "Steps" when TryInt(value, out int steps) => result with { Steps = steps },
                "Sampler" => result with { Sampler = value },
                "Schedule type" => result with { ScheduleType = value },
                "CFG scale" when TryFloat(value, out float cfg) => result with { CfgScale = cfg },
                "Seed" when TryLong(value, out long seed) => result with { Seed = seed },
                "Size" when s_imageSize.Match(value) is { Success: true } size
                    && TryInt(size.Groups[1].Value, out int width) && TryInt(size.Groups[2].Value, out int height)
                    => result with { Width = width, Height = height },
                "Model hash" => result with { ModelHash = value },
                "Model" => result with { Model = value },
                "Denoising strength" when TryFloat(value, out float strength) => result with { DenoisingStrength = strength },
                "Clip skip" when TryInt(value, out int clipSkip) => result with { ClipSkip = clipSkip },
                "ENSD" when TryLong(value, out long ensd) => result with { EtaNoiseSeedDelta = ensd },
                "RNG" => result with { Rng = value },
                "Emphasis" when TryEmphasis(value, out var emphasis) => result with { Emphasis = emphasis },
                "Prompt syntax" when TrySyntax(value, out var syntax) => result with { PromptSyntax = syntax },
                // Other keys, and known keys whose value does not parse (AUTOMATIC1111 keeps every value as text).
                _ => Keep(result, extra, key, value),
            };
        }
        return result with { Extra = extra.ToArray() };
    }

    /// <summary>AUTOMATIC1111's names of its emphasis modes (<c>modules/sd_emphasis.py</c>: <c>name</c> of each class).</summary>
    private static string EmphasisName(Prompting.PromptEmphasis emphasis) => emphasis switch
    {
        Prompting.PromptEmphasis.None => "None",
        Prompting.PromptEmphasis.Ignore => "Ignore",
        Prompting.PromptEmphasis.NoNorm => "No norm",
        _ => "Original",
    };

    private static bool TryEmphasis(string value, out Prompting.PromptEmphasis emphasis)
    {
        foreach (var mode in new[] { Prompting.PromptEmphasis.None, Prompting.PromptEmphasis.Ignore, Prompting.PromptEmphasis.Original, Prompting.PromptEmphasis.NoNorm })
        {
            if (string.Equals(EmphasisName(mode), value, StringComparison.Ordinal))
            {
                emphasis = mode;
                return true;
            }
        }
        emphasis = default;
        return false;
    }

    /// <summary>The <c>Prompt syntax</c> value: the samples' <c>--prompt-syntax</c> spelling.</summary>
    private static string SyntaxName(Prompting.PromptSyntax syntax) => syntax switch
    {
        Prompting.PromptSyntax.A1111 => "a1111",
        Prompting.PromptSyntax.Compel => "compel",
        _ => "plain",
    };

    private static bool TrySyntax(string value, out Prompting.PromptSyntax syntax)
    {
        foreach (var s in new[] { Prompting.PromptSyntax.Plain, Prompting.PromptSyntax.A1111, Prompting.PromptSyntax.Compel })
        {
            if (string.Equals(SyntaxName(s), value, StringComparison.OrdinalIgnoreCase))
            {
                syntax = s;
                return true;
            }
        }
        syntax = default;
        return false;
    }

    private static GenerationParameters Keep(GenerationParameters result, List<KeyValuePair<string, string>> extra, string key, string value)
    {
        extra.Add(new(key, value));
        return result;
    }

    /// <summary>AUTOMATIC1111's <c>quote</c>: values with a comma, newline or colon become JSON strings (non-ASCII kept).</summary>
    internal static string Quote(string value)
    {
        if (value.IndexOfAny(new[] { ',', '\n', ':' }) < 0)
            return value;
        // json.dumps(text, ensure_ascii=False): escape the quote, the backslash and control characters only.
        var sb = new StringBuilder(value.Length + 2).Append('"');
        foreach (char c in value)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20)
                        sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else
                        sb.Append(c);
                    break;
            }
        }
        return sb.Append('"').ToString();
    }

    /// <summary>AUTOMATIC1111's <c>unquote</c>: a JSON string when it parses as one, the text unchanged otherwise.</summary>
    internal static string Unquote(string value)
    {
        try
        {
            return JsonSerializer.Deserialize<string>(value) ?? value;
        }
        catch (JsonException)
        {
            return value;
        }
    }

    /// <summary>Python's <c>str</c> of a float for the values this library holds: shortest round trip, integral values without a fraction.</summary>
    private static string? Format(float? value) => value?.ToString("R", CultureInfo.InvariantCulture);

    private static bool TryInt(string value, out int v) => int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out v);

    private static bool TryLong(string value, out long v) => long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out v);

    private static bool TryFloat(string value, out float v) => float.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out v);
}
