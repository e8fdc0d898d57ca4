using System;
using System.Collections.Generic;
using System.Text.RegularExpressions;

namespace MLNet.Diffusion.Prompting;

/// <summary>One AND part of a prompt: which distinct text it encodes and its weight.</summary>
/// <param name="TextIndex">Index into <see cref="A1111Conjunction.Texts"/>.</param>
/// <param name="Weight">The part's weight (<c>text :1.5</c>), 1 when none is written.</param>
internal readonly record struct ConjunctionPart(int TextIndex, double Weight);

/// <summary>
/// A1111's composable diffusion: a prompt split at every whole word <c>AND</c>, each part with an optional trailing
/// weight <c>:w</c>, as <c>get_multicond_prompt_list</c> (modules/prompt_parser.py) does it for one prompt.
/// </summary>
/// <remarks>
/// <para>
/// A1111 splits before anything else (so an <c>AND</c> inside brackets splits too), then schedules and encodes
/// each distinct text once. At every step the denoiser combines the noise predictions as
/// <c>CFGDenoiser.combine_denoised</c> does: <c>uncond + Σ_parts (cond_part − uncond) · weight · cfg_scale</c>;
/// parts of different token lengths are stacked by repeating each one's last token state
/// (<see cref="ConditioningPadding.RepeatLastToken"/>, A1111's <c>stack_conds</c>).
/// </para>
/// <para>
/// The weight regex is A1111's <c>re_weight</c>: the part's text keeps its leading spaces and loses its trailing
/// ones; <c>a :1.5x</c> has no weight (the number must end the part). Python's and .NET's <c>\b</c> and <c>\d</c>
/// agree on letters and decimal digits, which is all these patterns test.
/// </para>
/// </remarks>
internal sealed class A1111Conjunction
{
    // re_AND = re.compile(r"\bAND\b")
    private static readonly Regex s_and = new(@"\bAND\b", RegexOptions.CultureInvariant);

    // re_weight = re.compile(r"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$")
    private static readonly Regex s_weight = new(
        @"^((?:\s|.)*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", RegexOptions.CultureInvariant);

    private A1111Conjunction(IReadOnlyList<string> texts, IReadOnlyList<ConjunctionPart> parts)
    {
        Texts = texts;
        Parts = parts;
    }

    /// <summary>The distinct texts to schedule and encode, in order of first appearance.</summary>
    public IReadOnlyList<string> Texts { get; }

    /// <summary>The parts in prompt order (at least one).</summary>
    public IReadOnlyList<ConjunctionPart> Parts { get; }

    /// <summary>Splits <paramref name="prompt"/> as A1111's <c>get_multicond_prompt_list([prompt])</c>.</summary>
    /// <param name="prompt">The whole prompt.</param>
    /// <returns>The distinct texts and the weighted parts.</returns>
    public static A1111Conjunction Split(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var texts = new List<string>();
        var indexes = new Dictionary<string, int>(StringComparer.Ordinal);
        var parts = new List<ConjunctionPart>();
        foreach (string subprompt in s_and.Split(prompt))
        {
            Match match = s_weight.Match(subprompt);
            string text = subprompt;
            double weight = 1.0;
            if (match.Success)
            {
                text = match.Groups[1].Value;
                if (match.Groups[2].Success)
                {
                    PromptNumbers.TryParsePythonFloat(match.Groups[2].Value, out weight);
                }
            }

            if (!indexes.TryGetValue(text, out int index))
            {
                index = texts.Count;
                texts.Add(text);
                indexes.Add(text, index);
            }

            parts.Add(new ConjunctionPart(index, weight));
        }

        return new A1111Conjunction(texts, parts);
    }
}
