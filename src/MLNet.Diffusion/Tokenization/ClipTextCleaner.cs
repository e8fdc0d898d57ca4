using System;
using System.Collections.Generic;
using System.Text;

namespace MLNet.Diffusion.Tokenization;

/// <summary>
/// The text clean-up that OpenAI CLIP's tokenizer (<c>clip/simple_tokenizer.py</c>) applies before BPE:
/// <c>whitespace_clean(basic_clean(text)).lower()</c>, where <c>basic_clean</c> is
/// <c>ftfy.fix_text</c>, then <c>html.unescape</c> twice, then <c>strip</c>.
/// </summary>
/// <remarks>
/// <para>
/// ftfy's default fixes are reproduced in ftfy 6's order, repeated until the text stops changing:
/// HTML entities (skipped from the first line that contains '&lt;'), mojibake repair, C1 controls to
/// Windows-1252, Latin ligatures, full-/half-width forms, curly quotes, line breaks, surrogates,
/// terminal escapes, control characters, NFC.
/// </para>
/// <para>
/// Approximated: ftfy's mojibake repair weighs candidate encodings (Windows-1250/1251/1252/…, MacRoman,
/// cp437) with a "badness" score and also restores lost bytes (0xA0 turned into a space, 0x1A/'?'
/// placeholders). Here only UTF-8 read as Windows-1252 or Latin-1 is repaired, and conservatively:
/// a maximal run of non-ASCII Windows-1252 characters is re-decoded when its bytes are valid UTF-8 and
/// its continuation bytes are not all ordinary punctuation (so "Brontë…”" stays as written).
/// </para>
/// <para>
/// Requires ICU (NFC/NFKC normalisation): under <c>InvariantGlobalization</c> <see cref="string.Normalize()"/>
/// silently does nothing, so <see cref="Clean"/> throws <see cref="InvalidOperationException"/> instead of
/// producing different tokens.
/// </para>
/// </remarks>
internal static class ClipTextCleaner
{
    private const int MaxFixPasses = 16;

    private static readonly Lazy<Dictionary<char, string>> s_widthMap = new(BuildWidthMap);
    private static readonly Dictionary<char, byte> s_windows1252Bytes = BuildWindows1252Bytes();
    private static readonly UTF8Encoding s_strictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private static bool? s_normalizationWorks;

    /// <summary>
    /// Cleans <paramref name="text"/> the way CLIP's reference tokenizer does before BPE: ftfy's default
    /// fixes, <c>html.unescape</c> twice, whitespace collapsed to single spaces and trimmed, then Python's
    /// <c>str.lower()</c>.
    /// </summary>
    /// <param name="text">The prompt.</param>
    /// <returns>The cleaned, lower-case text; empty when only white space remains.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="text"/> is <see langword="null"/>.</exception>
    /// <exception cref="InvalidOperationException">
    /// Unicode normalisation is unavailable (the process runs with <c>InvariantGlobalization</c> or without ICU).
    /// </exception>
    public static string Clean(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        EnsureNormalization();
        if (text.Length == 0)
        {
            return text;
        }

        string s = IsPlainAscii(text) ? text : FixText(text);
        s = PythonHtml.Unescape(PythonHtml.Unescape(s));
        s = PythonText.CollapseWhitespaceAndStrip(s);
        return PythonText.Lower(s);
    }

    /// <summary>
    /// True when ftfy would leave the text unchanged for certain: printable ASCII, tab and newline only,
    /// and no '&amp;' (entities) — the common case for prompts.
    /// </summary>
    private static bool IsPlainAscii(string text)
    {
        foreach (char c in text)
        {
            if (c > '\u007E' || (c < ' ' && c != '\t' && c != '\n') || c == '&')
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// ftfy.fix_text with default settings: line by line (each keeping its '\n'); HTML unescaping stays off
    /// from the first line that contains '&lt;' onward.
    /// </summary>
    internal static string FixText(string text)
    {
        var sb = new StringBuilder(text.Length);
        bool unescapeHtml = true;
        int pos = 0;
        while (pos < text.Length)
        {
            int newline = text.IndexOf('\n', pos);
            int end = newline < 0 ? text.Length : newline + 1;
            string segment = text.Substring(pos, end - pos);
            if (unescapeHtml && segment.Contains('<'))
            {
                unescapeHtml = false;
            }

            sb.Append(FixSegment(segment, unescapeHtml));
            pos = end;
        }

        return sb.ToString();
    }

    private static string FixSegment(string text, bool unescapeHtml)
    {
        // Lone surrogates first (ftfy's fix_surrogates; .NET strings hold pairs already joined), so that
        // the steps below and string.Normalize never see ill-formed UTF-16.
        text = FixSurrogates(text);
        for (int pass = 0; pass < MaxFixPasses; pass++)
        {
            string original = text;
            if (unescapeHtml)
            {
                text = PythonHtml.FtfyUnescape(text);
            }

            text = FixMojibake(text);
            text = FixC1Controls(text);
            text = FixLatinLigatures(text);
            text = FixCharacterWidth(text);
            text = UncurlQuotes(text);
            text = FixLineBreaks(text);
            text = FixSurrogates(text);
            text = RemoveTerminalEscapes(text);
            text = RemoveControlChars(text);
            text = text.Normalize(NormalizationForm.FormC);
            if (string.Equals(text, original, StringComparison.Ordinal))
            {
                break;
            }
        }

        return text;
    }

    /// <summary>Throws when <see cref="string.Normalize()"/> is a no-op (InvariantGlobalization, no ICU).</summary>
    private static void EnsureNormalization()
    {
        s_normalizationWorks ??= NormalizationWorks(static s => s.Normalize(NormalizationForm.FormC));
        if (s_normalizationWorks != true)
        {
            throw NormalizationUnavailable();
        }
    }

    /// <summary>Probes a normaliser with "e" + U+0301, which NFC composes to "é".</summary>
    internal static bool NormalizationWorks(Func<string, string> normalizeFormC) =>
        string.Equals(normalizeFormC("e\u0301"), "\u00E9", StringComparison.Ordinal);

    /// <summary>The error for a process where Unicode normalisation silently does nothing.</summary>
    internal static InvalidOperationException NormalizationUnavailable() =>
        new("Unicode normalisation is unavailable in this process (InvariantGlobalization=true or no ICU "
            + "library): string.Normalize returns its input unchanged, so CLIP's text clean-up (NFC, full-width "
            + "forms) would tokenise differently from the reference. Remove <InvariantGlobalization>true"
            + "</InvariantGlobalization> (or DOTNET_SYSTEM_GLOBALIZATION_INVARIANT) and install ICU (libicu).");

    private static Dictionary<char, string> BuildWidthMap()
    {
        // ftfy's WIDTH_MAP: U+3000 to a space, and every U+FF01–U+FFEF whose NFKC form differs.
        var map = new Dictionary<char, string> { ['\u3000'] = " " };
        for (char c = '\uFF01'; c <= '\uFFEF'; c++)
        {
            string s = c.ToString();
            string alternate = s.Normalize(NormalizationForm.FormKC);
            if (!string.Equals(alternate, s, StringComparison.Ordinal))
            {
                map[c] = alternate;
            }
        }

        return map;
    }

    private static Dictionary<char, byte> BuildWindows1252Bytes()
    {
        var map = new Dictionary<char, byte>(160);
        for (int b = 0x80; b <= 0xFF; b++)
        {
            // Latin-1 reading: the byte's own code point (C1 controls included).
            map[(char)b] = (byte)b;
        }

        for (int b = 0x80; b <= 0x9F; b++)
        {
            // Windows-1252 reading of 0x80–0x9F.
            map[PythonHtml.Windows1252High[b - 0x80]] = (byte)b;
        }

        return map;
    }

    private static string FixSurrogates(string text)
    {
        for (int i = 0; i < text.Length; i++)
        {
            if (char.IsSurrogate(text[i]))
            {
                var sb = new StringBuilder(text.Length);
                foreach (Rune rune in text.EnumerateRunes())
                {
                    // Ill-formed UTF-16 enumerates as U+FFFD, which is what ftfy puts for a lone surrogate.
                    sb.Append(rune.ToString());
                }

                return sb.ToString();
            }
        }

        return text;
    }

    /// <summary>
    /// Conservative repair of UTF-8 that was decoded as Windows-1252 or Latin-1 ("cafÃ©" → "café",
    /// "itâ€™s" → "it’s"); see the class remarks for what ftfy does beyond this.
    /// </summary>
    internal static string FixMojibake(string text)
    {
        StringBuilder? sb = null;
        int copied = 0;
        int i = 0;
        while (i < text.Length)
        {
            if (text[i] < 0x80 || !s_windows1252Bytes.ContainsKey(text[i]))
            {
                i++;
                continue;
            }

            int runStart = i;
            while (i < text.Length && text[i] >= 0x80 && s_windows1252Bytes.ContainsKey(text[i]))
            {
                i++;
            }

            string? repaired = TryRepairRun(text.AsSpan(runStart, i - runStart));
            if (repaired is not null)
            {
                sb ??= new StringBuilder(text.Length);
                sb.Append(text, copied, runStart - copied).Append(repaired);
                copied = i;
            }
        }

        if (sb is null)
        {
            return text;
        }

        sb.Append(text, copied, text.Length - copied);
        return sb.ToString();
    }

    private static string? TryRepairRun(ReadOnlySpan<char> run)
    {
        if (run.Length < 2)
        {
            return null;
        }

        Span<byte> bytes = run.Length <= 256 ? stackalloc byte[run.Length] : new byte[run.Length];
        bool allContinuationsPunctuation = true;
        for (int k = 0; k < run.Length; k++)
        {
            byte b = s_windows1252Bytes[run[k]];
            bytes[k] = b;
            if (b < 0xC0 && !IsOrdinaryPunctuationByte(b))
            {
                allContinuationsPunctuation = false;
            }
        }

        if (allContinuationsPunctuation)
        {
            return null;
        }

        try
        {
            return s_strictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return null;
        }
    }

    // … ‘ ’ “ ” – — : the Windows-1252 punctuation that legitimately follows an accented letter.
    private static bool IsOrdinaryPunctuationByte(byte b) => b is 0x85 or 0x91 or 0x92 or 0x93 or 0x94 or 0x96 or 0x97;

    /// <summary>ftfy's fix_c1_controls: U+0080–U+009F read as Windows-1252 (undefined bytes stay).</summary>
    private static string FixC1Controls(string text)
    {
        if (text.AsSpan().IndexOfAnyInRange('\u0080', '\u009F') < 0)
        {
            return text;
        }

        char[] chars = text.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
        {
            if (chars[i] >= '\u0080' && chars[i] <= '\u009F')
            {
                chars[i] = PythonHtml.Windows1252High[chars[i] - 0x80];
            }
        }

        return new string(chars);
    }

    /// <summary>ftfy's fix_latin_ligatures (LIGATURES table of ftfy 6: typographic ligatures and digraphs).</summary>
    private static string FixLatinLigatures(string text)
    {
        StringBuilder? sb = null;
        for (int i = 0; i < text.Length; i++)
        {
            string? replacement = text[i] switch
            {
                '\u0132' => "IJ",
                '\u0133' => "ij",
                '\u0149' => "\u02BCn",
                '\u01F1' => "DZ",
                '\u01F2' => "Dz",
                '\u01F3' => "dz",
                '\u01C4' => "D\u017D",
                '\u01C5' => "D\u017E",
                '\u01C6' => "d\u017E",
                '\u01C7' => "LJ",
                '\u01C8' => "Lj",
                '\u01C9' => "lj",
                '\u01CA' => "NJ",
                '\u01CB' => "Nj",
                '\u01CC' => "nj",
                '\uFB00' => "ff",
                '\uFB01' => "fi",
                '\uFB02' => "fl",
                '\uFB03' => "ffi",
                '\uFB04' => "ffl",
                '\uFB05' => "\u017Ft",
                '\uFB06' => "st",
                _ => null,
            };
            sb = AppendReplacement(sb, text, i, replacement);
        }

        return sb?.ToString() ?? text;
    }

    /// <summary>ftfy's fix_character_width: full-width ASCII and half-width forms to their normal width.</summary>
    private static string FixCharacterWidth(string text)
    {
        if (text.AsSpan().IndexOfAnyInRange('\uFF01', '\uFFEF') < 0 && !text.Contains('\u3000'))
        {
            return text;
        }

        Dictionary<char, string> map = s_widthMap.Value;
        StringBuilder? sb = null;
        for (int i = 0; i < text.Length; i++)
        {
            sb = AppendReplacement(sb, text, i, map.TryGetValue(text[i], out string? r) ? r : null);
        }

        return sb?.ToString() ?? text;
    }

    /// <summary>ftfy's uncurl_quotes: [U+02BC U+2018–U+201B] → ', [U+201C–U+201F] → ".</summary>
    private static string UncurlQuotes(string text)
    {
        if (text.AsSpan().IndexOfAnyInRange('\u2018', '\u201F') < 0 && !text.Contains('\u02BC'))
        {
            return text;
        }

        char[] chars = text.ToCharArray();
        for (int i = 0; i < chars.Length; i++)
        {
            char c = chars[i];
            if (c == '\u02BC' || (c >= '\u2018' && c <= '\u201B'))
            {
                chars[i] = '\'';
            }
            else if (c >= '\u201C' && c <= '\u201F')
            {
                chars[i] = '"';
            }
        }

        return new string(chars);
    }

    /// <summary>ftfy's fix_line_breaks: \r\n, \r, U+2028, U+2029 and U+0085 become \n.</summary>
    private static string FixLineBreaks(string text)
    {
        if (text.AsSpan().IndexOfAny('\r', '\u2028', '\u2029') < 0 && !text.Contains('\u0085'))
        {
            return text;
        }

        return text.Replace("\r\n", "\n", StringComparison.Ordinal)
            .Replace('\r', '\n').Replace('\u2028', '\n').Replace('\u2029', '\n').Replace('\u0085', '\n');
    }

    /// <summary>ftfy's remove_terminal_escapes: ESC '[' (digits or ';')* letter.</summary>
    private static string RemoveTerminalEscapes(string text)
    {
        int esc = text.IndexOf('\u001B');
        if (esc < 0)
        {
            return text;
        }

        var sb = new StringBuilder(text.Length);
        sb.Append(text, 0, esc);
        int i = esc;
        while (i < text.Length)
        {
            if (text[i] == '\u001B' && i + 1 < text.Length && text[i + 1] == '[')
            {
                int j = i + 2;
                while (j < text.Length && (char.IsDigit(text[j]) || text[j] == ';'))
                {
                    j++;
                }

                if (j < text.Length && char.IsAsciiLetter(text[j]))
                {
                    i = j + 1;
                    continue;
                }
            }

            sb.Append(text[i]);
            i++;
        }

        return sb.ToString();
    }

    /// <summary>
    /// ftfy's remove_control_chars: U+0000–U+0008, U+000B, U+000E–U+001F, U+007F, U+206A–U+206F, U+FEFF,
    /// U+FFF9–U+FFFC (tab, newline, form feed and carriage return stay).
    /// </summary>
    private static string RemoveControlChars(string text)
    {
        StringBuilder? sb = null;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            bool remove = c <= '\u0008' || c == '\u000B' || (c >= '\u000E' && c <= '\u001F') || c == '\u007F'
                || (c >= '\u206A' && c <= '\u206F') || c == '\uFEFF' || (c >= '\uFFF9' && c <= '\uFFFC');
            sb = AppendReplacement(sb, text, i, remove ? string.Empty : null);
        }

        return sb?.ToString() ?? text;
    }

    /// <summary>
    /// Copy-on-write helper: appends <paramref name="replacement"/> for <c>text[i]</c> (or the character
    /// itself when null), allocating the builder only at the first replacement.
    /// </summary>
    private static StringBuilder? AppendReplacement(StringBuilder? sb, string text, int i, string? replacement)
    {
        if (replacement is null)
        {
            sb?.Append(text[i]);
            return sb;
        }

        if (sb is null)
        {
            sb = new StringBuilder(text.Length + 8);
            sb.Append(text, 0, i);
        }

        sb.Append(replacement);
        return sb;
    }
}
