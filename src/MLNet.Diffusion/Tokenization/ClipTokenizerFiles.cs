using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using System.Text.Json;

namespace MLNet.Diffusion.Tokenization;

/// <summary>
/// The files of a Hugging Face CLIP tokenizer folder, parsed with errors that name the file and the problem:
/// <c>vocab.json</c> (token → id), <c>merges.txt</c> (BPE merges in rank order), and the optional
/// <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c> (special tokens, <c>model_max_length</c>).
/// <see cref="ClipTokenizer"/> builds its BPE from what these return.
/// </summary>
internal static class ClipTokenizerFiles
{
    public const string Vocabulary = "vocab.json";
    public const string Merges = "merges.txt";
    public const string TokenizerConfig = "tokenizer_config.json";
    public const string SpecialTokensMap = "special_tokens_map.json";

    // model_max_length values above this are "no limit" placeholders (transformers writes 1e30).
    private const long MaxSensibleModelMaxLength = 1 << 20;

    public static string RequireFile(string directory, string name)
    {
        string path = Path.Combine(directory, name);
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"Tokenizer file '{name}' not found in '{directory}'.", path);
        }

        return path;
    }

    public static Dictionary<string, int> ReadVocabulary(Stream stream, string name)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(stream);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{name}: not valid JSON ({ex.Message}).", ex);
        }

        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{name}: expected a JSON object mapping tokens to ids, found {doc.RootElement.ValueKind}.");
            }

            var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (JsonProperty entry in doc.RootElement.EnumerateObject())
            {
                if (entry.Value.ValueKind != JsonValueKind.Number || !entry.Value.TryGetInt32(out int id) || id < 0)
                {
                    throw new InvalidDataException($"{name}: the id of token '{entry.Name}' is not a non-negative integer ({entry.Value.GetRawText()}).");
                }

                vocab[entry.Name] = id;
            }

            if (vocab.Count == 0)
            {
                throw new InvalidDataException($"{name}: the vocabulary is empty.");
            }

            return vocab;
        }
    }

    public static string[] BuildReverseVocabulary(Dictionary<string, int> vocab, string name)
    {
        var idToToken = new string[vocab.Count];
        foreach (KeyValuePair<string, int> entry in vocab)
        {
            if (entry.Value >= idToToken.Length)
            {
                throw new InvalidDataException($"{name}: ids must be 0..{idToToken.Length - 1}; token '{entry.Key}' has id {entry.Value}.");
            }

            if (idToToken[entry.Value] is not null)
            {
                throw new InvalidDataException($"{name}: id {entry.Value} is used by both '{idToToken[entry.Value]}' and '{entry.Key}'.");
            }

            idToToken[entry.Value] = entry.Key;
        }

        return idToToken;
    }

    /// <summary>
    /// Reads merges.txt: skips a <c>#version</c> header and blank lines at the end; every other line must be
    /// "a b" with both halves and their concatenation in the vocabulary. A malformed or dangling (result not in
    /// the vocabulary) last line is ignored — some widely copied merges.txt files end with one; anywhere else it
    /// is an error.
    /// </summary>
    public static List<string> ReadMerges(Stream stream, string name, Dictionary<string, int> vocab)
    {
        var lines = new List<string>();
        using (var reader = new StreamReader(stream, Encoding.UTF8, detectEncodingFromByteOrderMarks: true, bufferSize: 1 << 16, leaveOpen: true))
        {
            string? line;
            while ((line = reader.ReadLine()) is not null)
            {
                lines.Add(line);
            }
        }

        int first = lines.Count > 0 && lines[0].StartsWith("#version", StringComparison.Ordinal) ? 1 : 0;
        int last = lines.Count - 1;
        while (last >= first && lines[last].Trim().Length == 0)
        {
            last--;
        }

        var merges = new List<string>(Math.Max(0, last - first + 1));
        for (int i = first; i <= last; i++)
        {
            string? problem = CheckMerge(lines[i], vocab);
            if (problem is not null)
            {
                if (i == last && i > first)
                {
                    break;
                }

                throw new InvalidDataException($"{name}: line {i + 1} {problem}: '{lines[i]}'.");
            }

            merges.Add(lines[i]);
        }

        if (merges.Count == 0)
        {
            throw new InvalidDataException($"{name}: no merges found.");
        }

        return merges;
    }

    private static string? CheckMerge(string line, Dictionary<string, int> vocab)
    {
        int space = line.IndexOf(' ');
        if (space <= 0 || space == line.Length - 1 || line.IndexOf(' ', space + 1) >= 0 || line.Contains('\t'))
        {
            return "is not a pair \"a b\"";
        }

        string left = line.Substring(0, space);
        string right = line.Substring(space + 1);
        if (!vocab.ContainsKey(left) || !vocab.ContainsKey(right) || !vocab.ContainsKey(left + right))
        {
            return "merges tokens that are not in the vocabulary";
        }

        return null;
    }

    /// <summary>
    /// The special tokens and <c>model_max_length</c> of a tokenizer folder: transformers loads tokenizer_config.json,
    /// then special_tokens_map.json overrides the special tokens. Absent files leave the SD 1.x defaults.
    /// </summary>
    public static ClipTokenizerOptions ReadOptions(string directory)
    {
        var options = new ClipTokenizerOptions();
        ReadTokenizerConfig(Path.Combine(directory, TokenizerConfig), options);
        ReadSpecialTokensMap(Path.Combine(directory, SpecialTokensMap), options);
        return options;
    }

    private static void ReadTokenizerConfig(string path, ClipTokenizerOptions options)
    {
        using JsonDocument? doc = ReadOptionalJson(path);
        if (doc is null)
        {
            return;
        }

        ReadSpecialTokens(doc.RootElement, path, options);
        if (doc.RootElement.TryGetProperty("model_max_length", out JsonElement max))
        {
            if (max.ValueKind != JsonValueKind.Number)
            {
                throw new InvalidDataException($"{path}: model_max_length must be a number, found {max.GetRawText()}.");
            }

            // transformers writes 1e30 (VERY_LARGE_INTEGER) for "unbounded"; keep the CLIP default then.
            if (max.TryGetInt64(out long value) && value >= 3 && value <= MaxSensibleModelMaxLength)
            {
                options.ModelMaxLength = (int)value;
            }
        }
    }

    private static void ReadSpecialTokensMap(string path, ClipTokenizerOptions options)
    {
        using JsonDocument? doc = ReadOptionalJson(path);
        if (doc is not null)
        {
            ReadSpecialTokens(doc.RootElement, path, options);
        }
    }

    private static void ReadSpecialTokens(JsonElement root, string path, ClipTokenizerOptions options)
    {
        options.StartToken = ReadToken(root, "bos_token", path) ?? options.StartToken;
        options.EndToken = ReadToken(root, "eos_token", path) ?? options.EndToken;
        options.PadToken = ReadToken(root, "pad_token", path) ?? options.PadToken;
    }

    /// <summary>A special token written either as a string or as an AddedToken object with "content".</summary>
    private static string? ReadToken(JsonElement root, string key, string path)
    {
        if (!root.TryGetProperty(key, out JsonElement value) || value.ValueKind == JsonValueKind.Null)
        {
            return null;
        }

        if (value.ValueKind == JsonValueKind.String)
        {
            return value.GetString();
        }

        if (value.ValueKind == JsonValueKind.Object && value.TryGetProperty("content", out JsonElement content)
            && content.ValueKind == JsonValueKind.String)
        {
            return content.GetString();
        }

        throw new InvalidDataException($"{path}: {key} must be a string or an object with a string \"content\", found {value.GetRawText()}.");
    }

    private static JsonDocument? ReadOptionalJson(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            using FileStream stream = File.OpenRead(path);
            JsonDocument doc = JsonDocument.Parse(stream);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new InvalidDataException($"{path}: expected a JSON object.");
            }

            return doc;
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({ex.Message}).", ex);
        }
    }
}
