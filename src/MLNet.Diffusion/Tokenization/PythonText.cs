using System;
using System.Globalization;
using System.Text;

namespace MLNet.Diffusion.Tokenization;

/// <summary>
/// The few Python <c>str</c> semantics the CLIP reference relies on and .NET spells differently:
/// <c>isspace</c>, <c>strip</c>, <c>re.sub(r'\s+', ' ', …)</c> and <c>lower</c>.
/// </summary>
internal static class PythonText
{
    /// <summary>
    /// Python's <c>str.isspace</c> for one UTF-16 unit: .NET's white space plus U+001C–U+001F, which Python
    /// counts as space because their bidirectional class is B/S.
    /// </summary>
    internal static bool IsSpace(char c) => char.IsWhiteSpace(c) || (c >= '\u001C' && c <= '\u001F');

    /// <summary>Python's <c>re.sub(r'\s+', ' ', s).strip()</c>: runs of space become one ' ', ends trimmed.</summary>
    internal static string CollapseWhitespaceAndStrip(string s)
    {
        int start = 0;
        int end = s.Length;
        while (start < end && IsSpace(s[start]))
        {
            start++;
        }

        while (end > start && IsSpace(s[end - 1]))
        {
            end--;
        }

        // Fast path: nothing to collapse.
        bool clean = true;
        for (int i = start; i < end; i++)
        {
            char c = s[i];
            if (IsSpace(c) && (c != ' ' || IsSpace(s[i + 1])))
            {
                clean = false;
                break;
            }
        }

        if (clean)
        {
            return start == 0 && end == s.Length ? s : s.Substring(start, end - start);
        }

        var sb = new StringBuilder(end - start);
        bool inSpace = false;
        for (int i = start; i < end; i++)
        {
            char c = s[i];
            if (IsSpace(c))
            {
                if (!inSpace)
                {
                    sb.Append(' ');
                    inSpace = true;
                }
            }
            else
            {
                sb.Append(c);
                inSpace = false;
            }
        }

        return sb.ToString();
    }

    /// <summary>
    /// Python's <c>str.lower()</c>: the full lower-case mapping per code point. It differs from
    /// <see cref="string.ToLowerInvariant()"/> in two places: U+0130 'İ' becomes "i̇" (i + U+0307,
    /// SpecialCasing.txt), and capital sigma becomes final 'ς' at the end of a word (the Final_Sigma rule).
    /// </summary>
    internal static string Lower(string s)
    {
        // ASCII fast path: Python and .NET agree.
        bool ascii = true;
        bool hasUpper = false;
        foreach (char c in s)
        {
            if (c >= 0x80)
            {
                ascii = false;
                break;
            }

            hasUpper |= c >= 'A' && c <= 'Z';
        }

        if (ascii)
        {
            return hasUpper ? s.ToLowerInvariant() : s;
        }

        var sb = new StringBuilder(s.Length + 4);
        Span<char> buffer = stackalloc char[2];
        int i = 0;
        while (i < s.Length)
        {
            Rune.DecodeFromUtf16(s.AsSpan(i), out Rune rune, out int consumed);
            if (rune.Value == 0x0130)
            {
                sb.Append("i\u0307");
            }
            else if (rune.Value == 0x03A3)
            {
                sb.Append(IsFinalSigma(s, i) ? '\u03C2' : '\u03C3');
            }
            else
            {
                Rune lower = Rune.ToLowerInvariant(rune);
                int written = lower.EncodeToUtf16(buffer);
                sb.Append(buffer[..written]);
            }

            i += consumed;
        }

        return sb.ToString();
    }

    /// <summary>
    /// Python's <c>str.upper()</c> for the values of lower-case HTML entity names: the simple mapping, plus the
    /// SpecialCasing expansions that those values can hit (ß → SS, ŉ → ʼN, Latin ligatures ﬀ…ﬆ).
    /// </summary>
    internal static string Upper(string s)
    {
        var sb = new StringBuilder(s.Length + 2);
        Span<char> buffer = stackalloc char[2];
        foreach (Rune rune in s.EnumerateRunes())
        {
            string? special = rune.Value switch
            {
                0x00DF => "SS",
                0x0149 => "\u02BCN",
                0xFB00 => "FF",
                0xFB01 => "FI",
                0xFB02 => "FL",
                0xFB03 => "FFI",
                0xFB04 => "FFL",
                0xFB05 or 0xFB06 => "ST",
                _ => null,
            };
            if (special is not null)
            {
                sb.Append(special);
            }
            else
            {
                int written = Rune.ToUpperInvariant(rune).EncodeToUtf16(buffer);
                sb.Append(buffer[..written]);
            }
        }

        return sb.ToString();
    }

    /// <summary>
    /// Unicode's Final_Sigma condition as CPython applies it: a cased letter before (skipping case-ignorable
    /// characters) and no cased letter after (skipping case-ignorable characters).
    /// </summary>
    private static bool IsFinalSigma(string s, int index)
    {
        int j = index;
        bool casedBefore = false;
        while (j > 0)
        {
            Rune.DecodeLastFromUtf16(s.AsSpan(0, j), out Rune r, out int n);
            j -= n;
            if (IsCaseIgnorable(r))
            {
                continue;
            }

            casedBefore = IsCased(r);
            break;
        }

        if (!casedBefore)
        {
            return false;
        }

        j = index + 1;
        while (j < s.Length)
        {
            Rune.DecodeFromUtf16(s.AsSpan(j), out Rune r, out int n);
            j += n;
            if (IsCaseIgnorable(r))
            {
                continue;
            }

            return !IsCased(r);
        }

        return true;
    }

    // Cased: Lu, Ll, Lt. (Unicode's definition also counts Other_Lowercase/Other_Uppercase, e.g. ª º ʰ;
    // those matter here only next to a capital sigma.)
    private static bool IsCased(Rune r) => Rune.GetUnicodeCategory(r) is UnicodeCategory.UppercaseLetter
        or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter;

    // Case_Ignorable: Mn, Me, Cf, Lm, Sk, and Word_Break MidLetter/MidNumLet/Single_Quote characters.
    private static bool IsCaseIgnorable(Rune r)
    {
        switch (r.Value)
        {
            case 0x0027 or 0x002E or 0x003A or 0x00B7 or 0x0387 or 0x05F4 or 0x2018 or 0x2019
                or 0x2024 or 0x2027 or 0xFE13 or 0xFE52 or 0xFE55 or 0xFF07 or 0xFF0E or 0xFF1A:
                return true;
        }

        return Rune.GetUnicodeCategory(r) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark
            or UnicodeCategory.Format or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol;
    }
}
