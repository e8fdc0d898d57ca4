namespace MLNet.Diffusion.Prompting;

/// <summary>Which prompt syntax the text encoding stage reads (the option the wiring round adds to <c>EncodePromptOptions</c>).</summary>
public enum PromptSyntax
{
    /// <summary>The text as written, in 75-token windows; brackets and numbers are ordinary text (today's behaviour, diffusers parity).</summary>
    Plain,

    /// <summary>
    /// AUTOMATIC1111's: <c>(x)</c>, <c>(x:1.3)</c>, <c>[x]</c>, <c>BREAK</c>, prompt editing <c>[a:b:0.5]</c>,
    /// alternation <c>[a|b]</c>, and <c>AND</c> with weights (docs/prompt-syntax.md).
    /// </summary>
    A1111,

    /// <summary>compel's: <c>word+</c>, <c>(phrase)1.3</c>, <c>(phrase)--</c>, <c>.blend()</c>, <c>.and()</c> (docs/prompt-syntax.md).</summary>
    Compel,
}
