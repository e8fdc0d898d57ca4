using System;

namespace MLNet.Diffusion;

/// <summary>
/// A LoRA file to merge into a model and its multiplier (A1111's <c>&lt;lora:name:0.8&gt;</c>, kohya's <c>multiplier</c>):
/// <c>W' = W + Scale · (alpha / rank) · up · down</c> for every module the file changes.
/// </summary>
/// <remarks>
/// Only <c>.safetensors</c> files are read (pickled <c>.ckpt</c>/<c>.pt</c>/<c>.bin</c> files are refused), and they are
/// treated as untrusted input: a malformed file fails with an <see cref="System.IO.InvalidDataException"/> naming it.
/// </remarks>
/// <param name="Path">The <c>.safetensors</c> file.</param>
/// <param name="Scale">The multiplier: 0 = no effect, 1 = as trained; negative values subtract the LoRA.</param>
public sealed record LoraReference(string Path, float Scale = 1f)
{
    /// <summary>Parses <c>path</c> or <c>path:scale</c> (the scale after the last ':' when it is a number; Windows drive letters are kept).</summary>
    /// <param name="text">The text, e.g. <c>loras/style.safetensors:0.7</c>.</param>
    /// <exception cref="FormatException">The text is empty.</exception>
    public static LoraReference Parse(string text)
    {
        if (string.IsNullOrWhiteSpace(text))
            throw new FormatException("A LoRA reference needs a path, optionally followed by ':scale'.");
        int colon = text.LastIndexOf(':');
        if (colon > 1 && float.TryParse(text.AsSpan(colon + 1), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out float scale))
            return new LoraReference(text[..colon], scale);
        return new LoraReference(text);
    }
}
