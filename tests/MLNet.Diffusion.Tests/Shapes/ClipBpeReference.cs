using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;

namespace MLNet.Diffusion.Tests.Shapes;

/// <summary>
/// A deliberately plain, independent reading of CLIP's BPE (openai/CLIP simple_tokenizer.py) for prompts made of
/// lower-case ASCII words: each word becomes its characters with "&lt;/w&gt;" on the last, then the lowest-ranked
/// adjacent pair (merges.txt line order) is merged until none is ranked. It checks the Shapes tokenizer files without
/// depending on the builder's own BPE.
/// </summary>
internal sealed class ClipBpeReference
{
    private readonly Dictionary<string, int> _vocab;
    private readonly Dictionary<string, int> _ranks;

    private ClipBpeReference(Dictionary<string, int> vocab, Dictionary<string, int> ranks)
    {
        _vocab = vocab;
        _ranks = ranks;
    }

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    public int StartId => _vocab["<|startoftext|>"];

    public int EndId => _vocab["<|endoftext|>"];

    public static ClipBpeReference FromFolder(string folder)
    {
        var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(Path.Combine(folder, "vocab.json")))!;
        var lines = File.ReadAllLines(Path.Combine(folder, "merges.txt"));
        if (lines.Length == 0 || !lines[0].StartsWith("#version", StringComparison.Ordinal))
            throw new InvalidDataException("merges.txt must start with a #version line.");
        var ranks = new Dictionary<string, int>();
        for (int i = 1; i < lines.Length; i++)
            if (lines[i].Length > 0)
                ranks.Add(lines[i], i - 1); // key "left right"
        return new ClipBpeReference(vocab, ranks);
    }

    public List<string> Bpe(string word)
    {
        var parts = word.Select(c => c.ToString()).ToList();
        parts[^1] += "</w>";
        while (parts.Count > 1)
        {
            int bestRank = int.MaxValue, at = -1;
            for (int i = 0; i + 1 < parts.Count; i++)
            {
                if (_ranks.TryGetValue(parts[i] + " " + parts[i + 1], out int r) && r < bestRank)
                {
                    bestRank = r;
                    at = i;
                }
            }
            if (at < 0)
                break;
            parts[at] += parts[at + 1];
            parts.RemoveAt(at + 1);
        }
        return parts;
    }

    /// <summary>start, BPE ids of each letter run, end, padded with end to 77.</summary>
    public int[] Encode(string prompt)
    {
        var ids = new List<int> { StartId };
        foreach (string word in LetterRuns(prompt.ToLowerInvariant()))
            ids.AddRange(Bpe(word).Select(t => _vocab[t]));
        ids.Add(EndId);
        while (ids.Count < 77)
            ids.Add(EndId);
        return ids.ToArray();
    }

    private static IEnumerable<string> LetterRuns(string s)
    {
        int start = 0;
        for (int i = 0; i <= s.Length; i++)
        {
            if (i == s.Length || s[i] is < 'a' or > 'z')
            {
                if (i > start)
                    yield return s[start..i];
                start = i + 1;
            }
        }
    }
}
