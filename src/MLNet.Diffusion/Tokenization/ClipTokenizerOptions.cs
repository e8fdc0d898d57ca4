namespace MLNet.Diffusion.Tokenization;

/// <summary>
/// Options for <see cref="ClipTokenizer.Create(System.IO.Stream, System.IO.Stream, ClipTokenizerOptions?)"/>;
/// the defaults are those of Stable Diffusion 1.x (OpenAI CLIP ViT-L/14).
/// </summary>
public sealed class ClipTokenizerOptions
{
    /// <summary>The token written before the prompt (<c>bos_token</c>). Default <c>&lt;|startoftext|&gt;</c>.</summary>
    public string StartToken { get; set; } = ClipTokenizer.DefaultStartToken;

    /// <summary>The token written after the prompt (<c>eos_token</c>). Default <c>&lt;|endoftext|&gt;</c>.</summary>
    public string EndToken { get; set; } = ClipTokenizer.DefaultEndToken;

    /// <summary>
    /// The token that fills the sequence after the end token (<c>pad_token</c>); <see langword="null"/> (default)
    /// pads with <see cref="EndToken"/> as SD 1.x does. SD 2.x pads with <c>"!"</c> (id 0).
    /// </summary>
    public string? PadToken { get; set; }

    /// <summary>The fixed sequence length, start and end tokens included (<c>model_max_length</c>). Default 77.</summary>
    public int ModelMaxLength { get; set; } = ClipTokenizer.DefaultModelMaxLength;
}
