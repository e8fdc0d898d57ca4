using System;
using System.Globalization;

namespace MLNet.Diffusion.Prompting;

/// <summary>Number parsing as Python's <c>float(str)</c> does it for the strings the prompt grammars let through.</summary>
internal static class PromptNumbers
{
    private const NumberStyles PythonFloatStyle =
        NumberStyles.AllowLeadingSign | NumberStyles.AllowDecimalPoint | NumberStyles.AllowExponent
        | NumberStyles.AllowLeadingWhite | NumberStyles.AllowTrailingWhite;

    /// <summary>
    /// Parses <paramref name="value"/> like Python's <c>float()</c>: correctly rounded, invariant, and Unicode
    /// decimal digits accepted (Python maps them to 0–9; .NET alone would not).
    /// </summary>
    /// <param name="value">Digits, one optional sign, point and exponent.</param>
    /// <param name="result">The value.</param>
    /// <returns>Whether it is a number.</returns>
    public static bool TryParsePythonFloat(string value, out double result)
    {
        ArgumentNullException.ThrowIfNull(value);
        string ascii = value;
        for (int i = 0; i < value.Length; i++)
        {
            char c = value[i];
            if (c > '\u007f' && char.IsDigit(c))
            {
                char[] chars = value.ToCharArray();
                for (int j = i; j < chars.Length; j++)
                {
                    if (chars[j] > '\u007f' && char.IsDigit(chars[j]))
                    {
                        chars[j] = (char)('0' + (int)char.GetNumericValue(chars[j]));
                    }
                }

                ascii = new string(chars);
                break;
            }
        }

        // Python's float() rejects what NumberStyles would also let through only through AllowThousands / currency,
        // which are off; "1.", ".5", "+.5" and "1e3" parse in both.
        return double.TryParse(ascii, PythonFloatStyle, CultureInfo.InvariantCulture, out result);
    }
}
