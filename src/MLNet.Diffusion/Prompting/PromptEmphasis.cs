namespace MLNet.Diffusion.Prompting;

/// <summary>
/// How token weights written with A1111's syntax change the text encoder's states (A1111's "Emphasis mode"
/// setting, <c>modules/sd_emphasis.py</c>).
/// </summary>
public enum PromptEmphasis
{
    /// <summary>A1111's "None": no parsing at all — brackets, weights and <c>BREAK</c> are plain text.</summary>
    None,

    /// <summary>A1111's "Ignore": the syntax is parsed (and removed from the text, <c>BREAK</c> works), the weights are not applied.</summary>
    Ignore,

    /// <summary>
    /// A1111's "Original" (its default): each token's states are multiplied by its weight, then the whole chunk
    /// is rescaled so that its mean equals the mean before weighting.
    /// </summary>
    Original,

    /// <summary>A1111's "No norm": multiplied by the weights, not rescaled (A1111 suggests it for SDXL).</summary>
    NoNorm,
}
