using System;
using System.Collections.Generic;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace MLNet.Diffusion.Tokenization;

/// <summary>
/// CLIP's word splitter, the pattern of <c>clip/simple_tokenizer.py</c>
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// (case-insensitive, applied with <c>findall</c>), evaluated over code points.
/// </summary>
/// <remarks>
/// Why not <see cref="RegexPreTokenizer"/> with that pattern: .NET's regex sees UTF-16 units, so a letter or
/// digit outside the Basic Multilingual Plane (𝐀, 𝟏, most CJK extension B) is two surrogates that are
/// neither \p{L} nor \p{N}; and <see cref="RegexPreTokenizer"/> carves special tokens out of the text
/// anywhere, while the reference only recognises them where a match starts (inside a run of punctuation,
/// "!&lt;|endoftext|&gt;" is punctuation plus the word "endoftext"). This scanner takes the alternatives in
/// the same order at each position, classifying each <see cref="Rune"/>; it holds no state and is safe to
/// share between threads.
/// </remarks>
internal sealed class ClipPreTokenizer : PreTokenizer
{
    private static readonly string[] s_contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

    private readonly string[] _specialTokens;

    /// <summary>Creates the splitter; <paramref name="specialTokens"/> are matched (ordinally) before anything else.</summary>
    internal ClipPreTokenizer(IReadOnlyList<string> specialTokens)
    {
        _specialTokens = new string[specialTokens.Count];
        for (int i = 0; i < _specialTokens.Length; i++)
        {
            _specialTokens[i] = specialTokens[i];
        }
    }

    /// <inheritdoc/>
    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return PreTokenize(text.AsSpan());
    }

    /// <inheritdoc/>
    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text)
    {
        var pieces = new List<(int Offset, int Length)>(Math.Max(4, text.Length / 4));
        Split(text, pieces);
        return pieces;
    }

    /// <summary>Appends the (offset, length) of each word of <paramref name="text"/> to <paramref name="pieces"/>.</summary>
    internal void Split(ReadOnlySpan<char> text, List<(int Offset, int Length)> pieces)
    {
        int i = 0;
        while (i < text.Length)
        {
            int length = MatchAt(text, i);
            if (length > 0)
            {
                pieces.Add((i, length));
                i += length;
            }
            else
            {
                // No alternative matches: white space, skipped one code point at a time like findall does.
                Rune.DecodeFromUtf16(text.Slice(i), out _, out int consumed);
                i += consumed;
            }
        }
    }

    private int MatchAt(ReadOnlySpan<char> text, int start)
    {
        ReadOnlySpan<char> rest = text.Slice(start);

        // 1. Special tokens, only where a match starts (the text is lower-case by now, as are the specials).
        foreach (string special in _specialTokens)
        {
            if (rest.StartsWith(special, StringComparison.Ordinal))
            {
                return special.Length;
            }
        }

        // 2. Contractions, in the reference's order ('re before 'd etc. cannot clash: all start with ').
        if (rest[0] == '\'')
        {
            foreach (string contraction in s_contractions)
            {
                if (rest.StartsWith(contraction, StringComparison.OrdinalIgnoreCase))
                {
                    return contraction.Length;
                }
            }
        }

        Rune.DecodeFromUtf16(rest, out Rune first, out int firstLength);

        // 3. A run of letters.
        if (Rune.IsLetter(first))
        {
            return RunLength(rest, firstLength, CharClass.Letter);
        }

        // 4. One number character (\p{N}: Nd, Nl, No), never a run: "2024" is four words.
        if (Rune.IsNumber(first))
        {
            return firstLength;
        }

        // 5. A run of what is neither white space, letter nor number (punctuation, symbols, marks, emoji).
        if (!Rune.IsWhiteSpace(first))
        {
            return RunLength(rest, firstLength, CharClass.Other);
        }

        return 0;
    }

    private static int RunLength(ReadOnlySpan<char> rest, int length, CharClass cls)
    {
        while (length < rest.Length)
        {
            Rune.DecodeFromUtf16(rest.Slice(length), out Rune r, out int n);
            if (Classify(r) != cls)
            {
                break;
            }

            length += n;
        }

        return length;
    }

    private static CharClass Classify(Rune r) =>
        Rune.IsLetter(r) ? CharClass.Letter
        : Rune.IsNumber(r) ? CharClass.Number
        : Rune.IsWhiteSpace(r) ? CharClass.Space
        : CharClass.Other;

    private enum CharClass
    {
        Letter,
        Number,
        Space,
        Other,
    }
}
