using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// A CLIP-format byte-level BPE vocabulary in which every word of <see cref="ShapesDataset.PromptWords"/> is one token.
/// Layout as CLIP's (openai/CLIP simple_tokenizer.py): ids 0–255 are the 256 byte characters in GPT-2's
/// bytes_to_unicode order, 256–511 the same characters with the end-of-word suffix <c>&lt;/w&gt;</c>, then one token
/// per merge (in merge order), then <c>&lt;|startoftext|&gt;</c> and <c>&lt;|endoftext|&gt;</c>.
/// </summary>
internal sealed class ShapesTokenizerFiles
{
    public const string StartOfText = "<|startoftext|>";
    public const string EndOfText = "<|endoftext|>";
    public const string EndOfWord = "</w>";
    public const int MaxLength = 77;

    private readonly List<string> _tokens = new();
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly List<(string Left, string Right)> _merges = new();
    private readonly Dictionary<(string, string), int> _ranks = new();

    private ShapesTokenizerFiles(IEnumerable<string> words)
    {
        foreach (var (_, c) in ByteOrder())
            AddToken(c.ToString());
        foreach (var (_, c) in ByteOrder())
            AddToken(c + EndOfWord);

        // Merges are generated word by word: run BPE with the merges so far and, while the word is not one token,
        // append a merge of its first two current tokens. Appending at the highest rank never changes a word already
        // done: BPE merges, at each step, the lowest-ranked pair present; every step of a finished word had a ranked
        // pair present that is older (lower) than any merge added later, and a finished word is one token with no pairs
        // left, so its merge sequence is unchanged. The same argument shows the current word replays its earlier steps,
        // and each added merge shortens it, so the loop ends.
        foreach (string word in words)
        {
            if (word.Length == 0 || !IsLowerAsciiLetters(word))
                throw new ArgumentException($"Prompt word '{word}' must be lower-case ASCII letters (CLIP lower-cases and splits on letter runs).", nameof(words));
            List<string> parts;
            while ((parts = Bpe(word)).Count > 1)
            {
                var pair = (parts[0], parts[1]);
                _ranks.Add(pair, _merges.Count);
                _merges.Add(pair);
                // Two different splits can make the same string ("ab"+"c", "a"+"bc"): the vocabulary keeps one entry.
                AddToken(parts[0] + parts[1]);
            }
        }
        AddToken(StartOfText);
        AddToken(EndOfText);
    }

    /// <summary>Token strings in id order.</summary>
    public IReadOnlyList<string> Tokens => _tokens;

    /// <summary>The merges in rank order.</summary>
    public IReadOnlyList<(string Left, string Right)> Merges => _merges;

    /// <summary>The id of <c>&lt;|startoftext|&gt;</c>.</summary>
    public int StartId => _ids[StartOfText];

    /// <summary>The id of <c>&lt;|endoftext|&gt;</c> (also the padding and unknown token).</summary>
    public int EndId => _ids[EndOfText];

    /// <summary>Vocabulary size.</summary>
    public int Count => _tokens.Count;

    /// <summary>The vocabulary for <see cref="ShapesDataset.PromptWords"/>.</summary>
    public static ShapesTokenizerFiles Create() => new(ShapesDataset.PromptWords);

    /// <summary>The id of a token string.</summary>
    public int Id(string token) => _ids[token];

    /// <summary>
    /// CLIP's BPE of one pre-tokenized, lower-case word: start from its characters with <c>&lt;/w&gt;</c> on the last,
    /// repeatedly merge every occurrence (left to right) of the adjacent pair with the lowest merge rank.
    /// </summary>
    public List<string> Bpe(string word)
    {
        var parts = new List<string>(word.Length);
        var map = BytesToUnicode();
        byte[] bytes = Encoding.UTF8.GetBytes(word);
        for (int i = 0; i < bytes.Length; i++)
            parts.Add(map[bytes[i]] + (i == bytes.Length - 1 ? EndOfWord : string.Empty));
        while (parts.Count > 1)
        {
            int best = int.MaxValue;
            (string, string) bestPair = default;
            for (int i = 0; i + 1 < parts.Count; i++)
            {
                if (_ranks.TryGetValue((parts[i], parts[i + 1]), out int r) && r < best)
                {
                    best = r;
                    bestPair = (parts[i], parts[i + 1]);
                }
            }
            if (best == int.MaxValue)
                break;
            var merged = new List<string>(parts.Count);
            for (int i = 0; i < parts.Count; i++)
            {
                if (i + 1 < parts.Count && parts[i] == bestPair.Item1 && parts[i + 1] == bestPair.Item2)
                {
                    merged.Add(parts[i] + parts[i + 1]);
                    i++;
                }
                else
                {
                    merged.Add(parts[i]);
                }
            }
            parts = merged;
        }
        return parts;
    }

    /// <summary>
    /// Ids for a prompt the way CLIP's tokenizer makes them for prompts of our words: start token, one BPE run per
    /// letter run (lower-cased), end token, padded with the end token to 77. Other characters are skipped; this is
    /// for building and testing the model, not a general CLIP tokenizer.
    /// </summary>
    public int[] Encode(string prompt)
    {
        var ids = new List<int> { StartId };
        var word = new StringBuilder();
        void Flush()
        {
            if (word.Length == 0)
                return;
            foreach (string t in Bpe(word.ToString()))
                ids.Add(_ids[t]);
            word.Clear();
        }
        foreach (char c in prompt.ToLowerInvariant())
        {
            if (c is >= 'a' and <= 'z')
                word.Append(c);
            else
                Flush();
        }
        Flush();
        if (ids.Count > MaxLength - 1)
            ids.RemoveRange(MaxLength - 1, ids.Count - (MaxLength - 1));
        ids.Add(EndId);
        while (ids.Count < MaxLength)
            ids.Add(EndId);
        return ids.ToArray();
    }

    /// <summary>Writes vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json (CLIPTokenizer format).</summary>
    /// <param name="directory">The tokenizer folder.</param>
    /// <param name="padToken">The padding token: <c>&lt;|endoftext|&gt;</c> as SD 1.x, or <c>"!"</c> as SD 2.x and SDXL's tokenizer_2.</param>
    public void Write(string directory, string padToken = EndOfText)
    {
        Directory.CreateDirectory(directory);
        JsonFiles.Write(Path.Combine(directory, "vocab.json"), w =>
        {
            w.WriteStartObject();
            for (int i = 0; i < _tokens.Count; i++)
                w.WriteNumber(_tokens[i], i);
            w.WriteEndObject();
        });

        var merges = new StringBuilder("#version: 0.2\n");
        foreach (var (left, right) in _merges)
            merges.Append(left).Append(' ').Append(right).Append('\n');
        File.WriteAllBytes(Path.Combine(directory, "merges.txt"), new UTF8Encoding(false).GetBytes(merges.ToString()));

        JsonFiles.Write(Path.Combine(directory, "special_tokens_map.json"), w =>
        {
            w.WriteStartObject();
            AddedToken(w, "bos_token", StartOfText, typed: false);
            AddedToken(w, "eos_token", EndOfText, typed: false);
            w.WriteString("pad_token", padToken);
            AddedToken(w, "unk_token", EndOfText, typed: false);
            w.WriteEndObject();
        });

        JsonFiles.Write(Path.Combine(directory, "tokenizer_config.json"), w =>
        {
            w.WriteStartObject();
            w.WriteBoolean("add_prefix_space", false);
            AddedToken(w, "bos_token", StartOfText, typed: true);
            w.WriteBoolean("do_lower_case", true);
            AddedToken(w, "eos_token", EndOfText, typed: true);
            w.WriteString("errors", "replace");
            w.WriteNumber("model_max_length", MaxLength);
            w.WriteString("name_or_path", "MLNet.Diffusion.Shapes");
            w.WriteString("pad_token", padToken);
            w.WriteString("special_tokens_map_file", "./special_tokens_map.json");
            w.WriteString("tokenizer_class", "CLIPTokenizer");
            AddedToken(w, "unk_token", EndOfText, typed: true);
            w.WriteEndObject();
        });
    }

    private static void AddedToken(Utf8JsonWriter w, string name, string content, bool typed)
    {
        w.WriteStartObject(name);
        if (typed)
            w.WriteString("__type", "AddedToken");
        w.WriteString("content", content);
        w.WriteBoolean("lstrip", false);
        w.WriteBoolean("normalized", true);
        w.WriteBoolean("rstrip", false);
        w.WriteBoolean("single_word", false);
        w.WriteEndObject();
    }

    private void AddToken(string token)
    {
        if (_ids.TryAdd(token, _tokens.Count))
            _tokens.Add(token);
    }

    private static bool IsLowerAsciiLetters(string s)
    {
        foreach (char c in s)
            if (c is < 'a' or > 'z')
                return false;
        return true;
    }

    /// <summary>
    /// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves ('!'…'~', '¡'…'¬', '®'…'ÿ', in that order),
    /// the other 68 bytes to U+0100 onwards in byte order. Returned indexed by byte; the id order is <see cref="ByteOrder"/>.
    /// </summary>
    private static char[] BytesToUnicode()
    {
        var map = new char[256];
        foreach (var (b, c) in ByteOrder())
            map[b] = c;
        return map;
    }

    /// <summary>(byte, character) pairs in CLIP's vocabulary order: the printable ranges first, then the rest.</summary>
    private static IEnumerable<(int Byte, char Char)> ByteOrder()
    {
        var printable = new bool[256];
        for (int b = '!'; b <= '~'; b++)
            printable[b] = true;
        for (int b = 0xA1; b <= 0xAC; b++)
            printable[b] = true;
        for (int b = 0xAE; b <= 0xFF; b++)
            printable[b] = true;
        for (int b = 0; b < 256; b++)
            if (printable[b])
                yield return (b, (char)b);
        int n = 0;
        for (int b = 0; b < 256; b++)
            if (!printable[b])
                yield return (b, (char)(256 + n++));
    }
}

/// <summary>Writes small JSON files deterministically: indented, UTF-8 without BOM, '\n' line ends, non-ASCII unescaped.</summary>
internal static class JsonFiles
{
    public static void Write(string path, Action<Utf8JsonWriter> write) =>
        File.WriteAllBytes(path, new UTF8Encoding(false).GetBytes(ToText(write)));

    public static string ToText(Action<Utf8JsonWriter> write)
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions
        {
            Indented = true,
            Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        }))
        {
            write(w);
        }
        // Utf8JsonWriter's indented line ending is Environment.NewLine on .NET 8; normalise for identical bytes everywhere.
        return Encoding.UTF8.GetString(stream.ToArray()).Replace("\r\n", "\n", StringComparison.Ordinal) + "\n";
    }
}
