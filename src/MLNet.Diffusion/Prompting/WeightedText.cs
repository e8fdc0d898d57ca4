namespace MLNet.Diffusion.Prompting;

/// <summary>A piece of prompt text and the multiplier its token states get (A1111 and compel both flatten to these).</summary>
/// <param name="Text">The text, with the syntax removed (escapes resolved).</param>
/// <param name="Weight">The multiplier; A1111 marks a <c>BREAK</c> with −1 (see <see cref="IsBreak"/>).</param>
internal readonly record struct WeightedText(string Text, double Weight)
{
    /// <summary>The text A1111 uses for a chunk break.</summary>
    public const string BreakText = "BREAK";

    /// <summary>
    /// Whether this is A1111's chunk-break marker: exactly <c>["BREAK", -1]</c>, as <c>tokenize_line</c> tests it.
    /// A <c>BREAK</c> inside brackets had its −1 multiplied (e.g. −1.1) and is therefore not a break in A1111: it is
    /// encoded as the word "break" with a negative weight, and so it is here.
    /// </summary>
    public bool IsBreak => Weight == -1.0 && Text == BreakText;
}
