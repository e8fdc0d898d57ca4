using System;
using System.Collections.Generic;
using System.Text.RegularExpressions;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// AUTOMATIC1111's attention syntax, as its <c>parse_prompt_attention</c> (modules/prompt_parser.py): <c>(x)</c>
/// multiplies by 1.1, <c>[x]</c> divides by 1.1, <c>(x:w)</c> multiplies by w, nesting multiplies, brackets left
/// open are closed at the end, <c>\( \) \[ \] \\</c> are literals, runs of equal weight merge, and <c>BREAK</c>
/// (a whole word, upper case) becomes the marker <c>["BREAK", −1]</c>.
/// </summary>
/// <remarks>
/// The same regular expression and the same stack walk as A1111, so that every quirk carries over (pinned by the
/// fixtures that <c>tests/…/Prompting/Fixtures/make_a1111_fixtures.py</c> made by running A1111's code):
/// <list type="bullet">
/// <item>a <c>BREAK</c> inside brackets has its −1 multiplied and is then no break (it is encoded as the word with
/// a negative weight);</item>
/// <item>a lone backslash is dropped; <c>:</c> and unmatched closing brackets are plain text;</item>
/// <item>weights are doubles multiplied in A1111's order, so <c>(((house:1.3)))</c> is 1.5730000000000004.</item>
/// </list>
/// One decision of ours: where A1111 raises (<c>(x:1.2.3)</c>, <c>(x:.)</c> — a weight that is not a number while
/// a round bracket is open: Python's <c>float()</c> throws), this throws <see cref="ArgumentException"/> naming
/// the weight and its position, rather than guessing what was meant.
/// </remarks>
internal static class A1111Attention
{
    /// <summary>A1111's <c>round_bracket_multiplier</c>.</summary>
    public const double RoundBracketMultiplier = 1.1;

    /// <summary>A1111's <c>square_bracket_multiplier</c> (1 / 1.1, computed as A1111 does).</summary>
    public const double SquareBracketMultiplier = 1 / 1.1;

    // re_attention, alternative for alternative (re.X whitespace removed).
    private static readonly Regex s_attention = new(
        @"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:",
        RegexOptions.CultureInvariant);

    // re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)
    private static readonly Regex s_break = new(@"\s*\bBREAK\b\s*", RegexOptions.CultureInvariant | RegexOptions.Singleline);

    /// <summary>Parses <paramref name="text"/> into weighted pieces exactly as A1111's <c>parse_prompt_attention</c>.</summary>
    /// <param name="text">The prompt (one AND part of it, after prompt editing has chosen the step's text).</param>
    /// <returns>At least one piece; <c>[("", 1)]</c> for an empty prompt.</returns>
    /// <exception cref="ArgumentException">A <c>(…:w)</c> weight is not a number (A1111 raises here too).</exception>
    public static List<WeightedText> Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var texts = new List<string>();
        var weights = new List<double>();
        var roundBrackets = new List<int>();
        var squareBrackets = new List<int>();

        foreach (Match m in s_attention.Matches(text))
        {
            string token = m.Value;
            Group weight = m.Groups[1];

            if (token.StartsWith('\\'))
            {
                Append(texts, weights, token.Substring(1), 1.0);
            }
            else if (token == "(")
            {
                roundBrackets.Add(texts.Count);
            }
            else if (token == "[")
            {
                squareBrackets.Add(texts.Count);
            }
            else if (weight.Success && roundBrackets.Count > 0)
            {
                MultiplyRange(weights, Pop(roundBrackets), ParseWeight(weight.Value, text, weight.Index));
            }
            else if (token == ")" && roundBrackets.Count > 0)
            {
                MultiplyRange(weights, Pop(roundBrackets), RoundBracketMultiplier);
            }
            else if (token == "]" && squareBrackets.Count > 0)
            {
                MultiplyRange(weights, Pop(squareBrackets), SquareBracketMultiplier);
            }
            else
            {
                string[] parts = s_break.Split(token);
                for (int i = 0; i < parts.Length; i++)
                {
                    if (i > 0)
                    {
                        Append(texts, weights, WeightedText.BreakText, -1.0);
                    }

                    Append(texts, weights, parts[i], 1.0);
                }
            }
        }

        // Brackets left open close at the end, the round ones first, each in the order it was opened.
        foreach (int position in roundBrackets)
        {
            MultiplyRange(weights, position, RoundBracketMultiplier);
        }

        foreach (int position in squareBrackets)
        {
            MultiplyRange(weights, position, SquareBracketMultiplier);
        }

        if (texts.Count == 0)
        {
            Append(texts, weights, string.Empty, 1.0);
        }

        // Merge runs of identical weights (A1111 compares the doubles exactly; a BREAK's −1 takes part too).
        var result = new List<WeightedText>(texts.Count);
        for (int i = 0; i < texts.Count; i++)
        {
            if (result.Count > 0 && result[^1].Weight == weights[i])
            {
                result[^1] = result[^1] with { Text = result[^1].Text + texts[i] };
            }
            else
            {
                result.Add(new WeightedText(texts[i], weights[i]));
            }
        }

        return result;
    }

    private static void Append(List<string> texts, List<double> weights, string text, double weight)
    {
        texts.Add(text);
        weights.Add(weight);
    }

    private static int Pop(List<int> stack)
    {
        int value = stack[^1];
        stack.RemoveAt(stack.Count - 1);
        return value;
    }

    private static void MultiplyRange(List<double> weights, int start, double multiplier)
    {
        for (int p = start; p < weights.Count; p++)
        {
            weights[p] *= multiplier;
        }
    }

    private static double ParseWeight(string value, string prompt, int index)
    {
        if (PromptNumbers.TryParsePythonFloat(value, out double weight))
        {
            return weight;
        }

        throw new ArgumentException(
            $"The attention weight '{value}' at index {index} of the prompt \"{prompt}\" is not a number. "
            + "Write (text:1.2), or escape the brackets as \\( \\) to keep them as text.",
            nameof(prompt));
    }
}
