using System;
using System.Collections.Generic;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace MLNet.Diffusion.Tokenization;

/// <summary>
/// The tokenizers <see cref="ClipTokenizer.FromFolder"/> built in this process, keyed by the SHA-256 of exactly what
/// builds one (the bytes of <c>vocab.json</c> and <c>merges.txt</c> and the special tokens and length read from the
/// folder's configs) and held weakly: loading a model folder again, or another folder with the same tokenizer files
/// (every SD 1.x fine-tune ships CLIP's), reuses the parsed tokenizer while one is alive instead of parsing 1.5 MB of
/// vocabulary and merges and rebuilding the BPE tables again (docs/benchmarks.md, "Model loads").
/// </summary>
/// <remarks>
/// A <see cref="ClipTokenizer"/> is immutable and safe to use concurrently, and it keeps no file names, so a tokenizer
/// built from the same bytes and options is indistinguishable from a new one. Failures are not cached: a folder whose
/// files are malformed throws on every call.
/// </remarks>
internal static class ClipTokenizerCache
{
    private static readonly Dictionary<string, WeakReference<ClipTokenizer>> s_tokenizers = new(StringComparer.Ordinal);

    /// <summary>The key of a tokenizer built from these inputs.</summary>
    public static string Key(byte[] vocabJson, byte[] merges, ClipTokenizerOptions options)
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        // Lengths first, so that no two different inputs concatenate to the same bytes.
        string header = string.Create(CultureInfo.InvariantCulture,
            $"{vocabJson.Length}\n{merges.Length}\n{options.StartToken.Length}:{options.StartToken}\n{options.EndToken.Length}:{options.EndToken}\n"
            + $"{(options.PadToken is null ? "-" : options.PadToken.Length + ":" + options.PadToken)}\n{options.ModelMaxLength}\n");
        hash.AppendData(Encoding.UTF8.GetBytes(header));
        hash.AppendData(vocabJson);
        hash.AppendData(merges);
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    /// <summary>The live tokenizer built under <paramref name="key"/>, if any.</summary>
    public static bool TryGet(string key, out ClipTokenizer tokenizer)
    {
        lock (s_tokenizers)
        {
            if (s_tokenizers.TryGetValue(key, out var entry) && entry.TryGetTarget(out var live))
            {
                tokenizer = live;
                return true;
            }
        }
        tokenizer = null!;
        return false;
    }

    /// <summary>Remembers <paramref name="tokenizer"/> under <paramref name="key"/>; drops entries whose tokenizer was collected.</summary>
    public static void Add(string key, ClipTokenizer tokenizer)
    {
        lock (s_tokenizers)
        {
            List<string>? dead = null;
            foreach (var (k, entry) in s_tokenizers)
            {
                if (!entry.TryGetTarget(out _))
                    (dead ??= new List<string>()).Add(k);
            }
            if (dead is not null)
            {
                foreach (string k in dead)
                    s_tokenizers.Remove(k);
            }
            s_tokenizers[key] = new WeakReference<ClipTokenizer>(tokenizer);
        }
    }
}
