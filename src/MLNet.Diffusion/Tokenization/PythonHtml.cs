using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;

namespace MLNet.Diffusion.Tokenization;

/// <summary>
/// Python's <c>html.unescape</c> (CPython 3.11 <c>Lib/html/__init__.py</c>) and ftfy's stricter
/// <c>unescape_html</c>, re-implemented on the full HTML5 entity table.
/// </summary>
/// <remarks>
/// <see cref="System.Net.WebUtility.HtmlDecode(string)"/> is not used: it knows only the HTML 4
/// names, does not decode legacy names written without <c>;</c> (<c>&amp;amp</c>, <c>&amp;copy</c>)
/// nor apply the HTML5 replacement rules for numeric references (<c>&amp;#128;</c> → €).
/// </remarks>
internal static class PythonHtml
{
    private static readonly Dictionary<string, string> s_entities = BuildEntities();

    /// <summary>The longest entity name (without <c>&amp;</c>), bounding the prefix search.</summary>
    private static int s_longestName;

    /// <summary>
    /// Windows-1252 characters for bytes 0x80–0x9F (the HTML5 table of "invalid" numeric references,
    /// which is the same mapping); bytes that Windows-1252 leaves undefined map to themselves.
    /// </summary>
    internal static readonly char[] Windows1252High =
    [
        '\u20AC', '\u0081', '\u201A', '\u0192', '\u201E', '\u2026', '\u2020', '\u2021',
        '\u02C6', '\u2030', '\u0160', '\u2039', '\u0152', '\u008D', '\u017D', '\u008F',
        '\u0090', '\u2018', '\u2019', '\u201C', '\u201D', '\u2022', '\u2013', '\u2014',
        '\u02DC', '\u2122', '\u0161', '\u203A', '\u0153', '\u009D', '\u017E', '\u0178',
    ];

    /// <summary>Number of names in the table (2231 for the complete HTML5 list).</summary>
    internal static int EntityCount => s_entities.Count;

    private static Dictionary<string, string> BuildEntities()
    {
        var map = new Dictionary<string, string>(HtmlEntityTable.Count, StringComparer.Ordinal);
        string data = HtmlEntityTable.Data;
        int pos = 0;
        while (pos < data.Length)
        {
            int sep = data.IndexOf('\u0001', pos);
            int end = data.IndexOf('\u0002', sep);
            string name = data.Substring(pos, sep - pos);
            map[name] = data.Substring(sep + 1, end - sep - 1);
            s_longestName = Math.Max(s_longestName, name.Length);
            pos = end + 1;
        }

        return map;
    }

    /// <summary>Looks a name (without <c>&amp;</c>, with its <c>;</c> if any) up in the HTML5 table.</summary>
    internal static bool TryGetEntity(string name, out string value) => s_entities.TryGetValue(name, out value!);

    /// <summary>
    /// Python's <c>html.unescape</c>: replaces <c>&amp;(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f &lt;&amp;#;]{1,32};?)</c>
    /// matches by their character, with the longest-prefix rule for names and the HTML5 rules for numbers.
    /// </summary>
    internal static string Unescape(string s)
    {
        int amp = s.IndexOf('&');
        if (amp < 0)
        {
            return s;
        }

        var sb = new StringBuilder(s.Length);
        sb.Append(s, 0, amp);
        int i = amp;
        while (i < s.Length)
        {
            if (s[i] != '&')
            {
                sb.Append(s[i]);
                i++;
                continue;
            }

            int consumed = TryReplaceCharRef(s, i, sb);
            if (consumed == 0)
            {
                sb.Append('&');
                i++;
            }
            else
            {
                i += consumed;
            }
        }

        return sb.ToString();
    }

    /// <summary>
    /// At <paramref name="start"/> (an '&amp;'), matches Python's <c>_charref</c> pattern; on a match appends
    /// the replacement and returns the length consumed, else returns 0 and appends nothing.
    /// </summary>
    private static int TryReplaceCharRef(string s, int start, StringBuilder sb)
    {
        int p = start + 1;
        if (p >= s.Length)
        {
            return 0;
        }

        if (s[p] == '#')
        {
            // The alternatives are tried in order: decimal first, then hexadecimal.
            int q = p + 1;
            bool hex = false;
            int digitsStart = q;
            while (q < s.Length && IsAsciiDigit(s[q]))
            {
                q++;
            }

            if (q == digitsStart)
            {
                if (q < s.Length && (s[q] == 'x' || s[q] == 'X'))
                {
                    hex = true;
                    digitsStart = q + 1;
                    q = digitsStart;
                    while (q < s.Length && char.IsAsciiHexDigit(s[q]))
                    {
                        q++;
                    }
                }

                if (q == digitsStart)
                {
                    // "&#" followed by neither digits nor x+hex: the name alternative cannot match
                    // either, because '#' is excluded from names.
                    return 0;
                }
            }

            ReadOnlySpan<char> digits = s.AsSpan(digitsStart, q - digitsStart);
            if (q < s.Length && s[q] == ';')
            {
                q++;
            }

            AppendNumericReference(digits, hex, sb);
            return q - start;
        }

        // Named: [^\t\n\f <&#;]{1,32};?
        int n = p;
        while (n < s.Length && n - p < 32 && !IsNameStop(s[n]))
        {
            n++;
        }

        if (n == p)
        {
            return 0;
        }

        if (n < s.Length && s[n] == ';')
        {
            n++;
        }

        string name = s.Substring(p, n - p);
        if (s_entities.TryGetValue(name, out string? value))
        {
            sb.Append(value);
            return n - start;
        }

        // The longest prefix (at least two characters) that is a name, e.g. legacy "&copy" in "&copyright".
        for (int x = Math.Min(name.Length - 1, s_longestName); x > 1; x--)
        {
            if (s_entities.TryGetValue(name.Substring(0, x), out value))
            {
                sb.Append(value).Append(name, x, name.Length - x);
                return n - start;
            }
        }

        sb.Append('&').Append(name);
        return n - start;
    }

    private static void AppendNumericReference(ReadOnlySpan<char> digits, bool hex, StringBuilder sb)
    {
        // Python parses arbitrarily large integers; anything above 0x10FFFF becomes U+FFFD, so saturate.
        long num = 0;
        foreach (char c in digits)
        {
            int d = hex ? int.Parse(c.ToString(), NumberStyles.HexNumber, CultureInfo.InvariantCulture) : c - '0';
            num = num * (hex ? 16 : 10) + d;
            if (num > 0x10FFFF)
            {
                num = 0x110000;
            }
        }

        if (num == 0x00)
        {
            sb.Append('\uFFFD');
        }
        else if (num == 0x0D)
        {
            sb.Append('\r');
        }
        else if (num >= 0x80 && num <= 0x9F)
        {
            sb.Append(Windows1252High[num - 0x80]);
        }
        else if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF)
        {
            sb.Append('\uFFFD');
        }
        else if (IsInvalidCodePoint((int)num))
        {
            // Python's _invalid_codepoints: dropped.
        }
        else
        {
            sb.Append(char.ConvertFromUtf32((int)num));
        }
    }

    private static bool IsInvalidCodePoint(int cp) =>
        (cp >= 0x01 && cp <= 0x08) || cp == 0x0B || (cp >= 0x0E && cp <= 0x1F) || (cp >= 0x7F && cp <= 0x9F)
        || (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;

    private static bool IsAsciiDigit(char c) => c >= '0' && c <= '9';

    private static bool IsNameStop(char c) => c is '\t' or '\n' or '\f' or ' ' or '<' or '&' or '#' or ';';

    /// <summary>
    /// ftfy's <c>unescape_html</c>: only <c>&amp;#?[0-9A-Za-z]{1,24};</c> is considered; known names with
    /// <c>;</c> (and the all-upper-case spelling of lower-case names, e.g. <c>&amp;EACUTE;</c> → É, when that
    /// spelling means nothing to <c>html.unescape</c>) and numeric references that decode completely
    /// are replaced; anything else is left as written.
    /// </summary>
    internal static string FtfyUnescape(string s)
    {
        int amp = s.IndexOf('&');
        if (amp < 0)
        {
            return s;
        }

        StringBuilder? sb = null;
        int copied = 0;
        for (int i = amp; i < s.Length; i++)
        {
            if (s[i] != '&')
            {
                continue;
            }

            int p = i + 1;
            if (p < s.Length && s[p] == '#')
            {
                p++;
            }

            int q = p;
            while (q < s.Length && q - p < 24 && char.IsAsciiLetterOrDigit(s[q]))
            {
                q++;
            }

            if (q == p || q >= s.Length || s[q] != ';')
            {
                continue;
            }

            string entity = s.Substring(i, q + 1 - i);
            string? replacement = FtfyEntity(entity);
            if (replacement is null)
            {
                continue;
            }

            sb ??= new StringBuilder(s.Length);
            sb.Append(s, copied, i - copied).Append(replacement);
            copied = q + 1;
            i = q;
        }

        if (sb is null)
        {
            return s;
        }

        sb.Append(s, copied, s.Length - copied);
        return sb.ToString();
    }

    private static string? FtfyEntity(string entity)
    {
        string name = entity.Substring(1);
        if (s_entities.TryGetValue(name, out string? value))
        {
            return value;
        }

        if (name[0] == '#')
        {
            string unescaped = Unescape(entity);
            return unescaped.Contains(';') ? null : unescaped;
        }

        // Upper-cased spelling of a lower-case name: decoded to the upper-cased character, but only
        // when html.unescape would leave that spelling unchanged (no name or legacy prefix matches).
        string lower = name.ToLowerInvariant();
        if (lower != name && name == lower.ToUpperInvariant()
            && s_entities.TryGetValue(lower, out string? lowerValue)
            && Unescape(entity) == entity)
        {
            return PythonText.Upper(lowerValue);
        }

        return null;
    }
}
