using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using MLNet.Diffusion.SafeTensors;

namespace MLNet.Diffusion;

/// <summary>
/// A textual inversion embedding (Gal et al. 2022, "An Image is Worth One Word"): one or more learned vectors that a new
/// prompt token stands for. <see cref="Load"/> reads it from a <c>.safetensors</c> file; <see cref="StableDiffusionModel.WithTextualInversions(TextualInversion[])"/>
/// adds its token(s) to the tokenizer(s) and its vectors to the text encoder(s)' token-embedding table.
/// </summary>
/// <remarks>
/// <para>Layouts read (the tensor names decide, as in diffusers' <c>load_textual_inversion</c> and A1111's <c>textual_inversion.py</c>):</para>
/// <list type="bullet">
/// <item><description>diffusers <c>learned_embeds.safetensors</c>: one tensor named by its token, e.g. <c>{"&lt;cat-toy&gt;": [768]}</c>;
/// the token is the tensor's name.</description></item>
/// <item><description>AUTOMATIC1111: one tensor <c>emb_params</c> [n, D] (or <c>string_to_param.*</c>, the flattened form of the
/// <c>.pt</c> layout); the token is the file name without extension, as A1111 names embeddings.</description></item>
/// <item><description>SDXL (A1111 and most trainers): <c>clip_l</c> [n, 768] for <c>text_encoder</c> and <c>clip_g</c> [n, 1280] for
/// <c>text_encoder_2</c>; the token is the file name without extension.</description></item>
/// </list>
/// <para>
/// An embedding of n vectors becomes n tokens named as diffusers names them: <c>tok</c>, <c>tok_1</c>, …, <c>tok_{n−1}</c>;
/// <c>tok</c> in a prompt stands for all of them. Pickled files (<c>.pt</c>, <c>.bin</c>, <c>.ckpt</c>) are refused: loading one
/// can run arbitrary code. Files are treated as untrusted input: a malformed one fails naming the file and tensor.
/// </para>
/// </remarks>
public sealed class TextualInversion
{
    private const string A1111Key = "emb_params";
    private const string A1111PickleKey = "string_to_param.*";
    private const string ClipLKey = "clip_l";
    private const string ClipGKey = "clip_g";
    private const int MaxVectors = 4096;
    private const int MaxWidth = 1 << 16;

    private readonly float[] _values;
    private readonly float[]? _values2;

    private TextualInversion(string path, string token, TextualInversionLayout layout, int vectorCount, EmbeddingTensor first, EmbeddingTensor? second, float[] values, float[]? values2)
    {
        Path = path;
        Token = token;
        Layout = layout;
        VectorCount = vectorCount;
        First = first;
        Second = second;
        _values = values;
        _values2 = values2;
        var tokens = new string[vectorCount];
        tokens[0] = token;
        for (int i = 1; i < vectorCount; i++)
            tokens[i] = token + "_" + i.ToString(CultureInfo.InvariantCulture);
        Tokens = tokens;
    }

    /// <summary>The file's full path.</summary>
    public string Path { get; }

    /// <summary>The token a prompt writes to use the embedding (it stands for all of <see cref="Tokens"/>).</summary>
    public string Token { get; }

    /// <summary>The file layout found.</summary>
    public TextualInversionLayout Layout { get; }

    /// <summary>How many vectors (tokens) the embedding has.</summary>
    public int VectorCount { get; }

    /// <summary>The tokens added to the tokenizer: <see cref="Token"/>, then <c>Token_1</c> … <c>Token_{n−1}</c> (diffusers' naming).</summary>
    public IReadOnlyList<string> Tokens { get; }

    /// <summary>The width of the vectors (for SDXL: of the <c>clip_l</c> vectors).</summary>
    public int Width => First.Width;

    /// <summary>The vectors for the single text encoder, or SDXL's <c>clip_l</c> ones (for <c>text_encoder</c>).</summary>
    internal EmbeddingTensor First { get; }

    /// <summary>SDXL's <c>clip_g</c> vectors (for <c>text_encoder_2</c>); null for the one-encoder layouts.</summary>
    internal EmbeddingTensor? Second { get; }

    /// <summary>[<see cref="VectorCount"/>, <see cref="EmbeddingTensor.Width"/>] values of <paramref name="tensor"/> (row major).</summary>
    internal ReadOnlySpan<float> ValuesOf(EmbeddingTensor tensor) => ReferenceEquals(tensor, First) ? _values : _values2!;

    /// <summary>
    /// Reads a textual inversion embedding from a <c>.safetensors</c> file. Only load files from trusted sources.
    /// </summary>
    /// <param name="path">The <c>.safetensors</c> file.</param>
    /// <param name="token">The token to use instead of the file's (the diffusers key, or the file name for A1111/SDXL files); null keeps it.</param>
    /// <returns>The embedding.</returns>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="NotSupportedException">The file is a pickle checkpoint (<c>.pt</c>, <c>.bin</c>, <c>.ckpt</c>, …).</exception>
    /// <exception cref="InvalidDataException">The file is malformed, or its tensors are in no known layout or of a bad shape or
    /// dtype (the message names the file, the tensor and its shape).</exception>
    public static TextualInversion Load(string path, string? token = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (token is not null && string.IsNullOrWhiteSpace(token))
            throw new ArgumentException("The token, when given, must have a non-blank text.", nameof(token));
        string full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full))
            throw new FileNotFoundException($"Textual inversion file '{full}' does not exist.", full);
        using var file = SafeTensorsFile.Open(full);
        string name = file.FileName;
        string stem = System.IO.Path.GetFileNameWithoutExtension(full);
        var tensors = file.Tensors;

        if (tensors.Count == 2 && tensors.ContainsKey(ClipLKey) && tensors.ContainsKey(ClipGKey))
        {
            var l = Describe(file, ClipLKey);
            var g = Describe(file, ClipGKey);
            if (l.Count != g.Count)
                throw new InvalidDataException($"Textual inversion '{name}': '{ClipLKey}' has {l.Count} vector(s) [{Shape(file, ClipLKey)}] but '{ClipGKey}' has {g.Count} [{Shape(file, ClipGKey)}]; "
                    + "an SDXL embedding has as many vectors for both text encoders.");
            return new TextualInversion(full, token ?? stem, TextualInversionLayout.StableDiffusionXL, l.Count, l.Tensor, g.Tensor, file.ReadFloat32(ClipLKey), file.ReadFloat32(ClipGKey));
        }
        if (tensors.Count == 1)
        {
            string key = OnlyKey(tensors.Keys);
            var layout = key is A1111Key or A1111PickleKey ? TextualInversionLayout.A1111 : TextualInversionLayout.Diffusers;
            var d = Describe(file, key);
            string own = layout == TextualInversionLayout.Diffusers ? key : stem;
            if (string.IsNullOrWhiteSpace(own) && token is null)
                throw new InvalidDataException($"Textual inversion '{name}': its tensor name '{key}' cannot be a token; pass the token to Load.");
            return new TextualInversion(full, token ?? own, layout, d.Count, d.Tensor, null, file.ReadFloat32(key), null);
        }
        var keys = new List<string>(tensors.Keys);
        keys.Sort(StringComparer.Ordinal);
        throw new InvalidDataException($"Textual inversion '{name}' holds {tensors.Count} tensor(s) ({string.Join(", ", keys)}); a textual inversion file holds one tensor "
            + $"(diffusers {{token: vectors}}, or A1111's '{A1111Key}') or '{ClipLKey}' and '{ClipGKey}' (SDXL).");
    }

    /// <inheritdoc/>
    public override string ToString() => $"{Token} ({VectorCount} vector(s), {Layout}, {System.IO.Path.GetFileName(Path)})";

    private static string OnlyKey(IEnumerable<string> keys)
    {
        foreach (string key in keys)
            return key;
        throw new InvalidOperationException("No keys.");
    }

    private static string Shape(SafeTensorsFile file, string key) => string.Join(",", file.Tensors[key].Shape);

    /// <summary>A tensor of [D] (one vector) or [n, D] vectors; anything else is refused naming file, key and shape.</summary>
    private static (int Count, EmbeddingTensor Tensor) Describe(SafeTensorsFile file, string key)
    {
        long[] shape = file.Tensors[key].Shape;
        long count = shape.Length == 2 ? shape[0] : shape.Length == 1 ? 1 : -1;
        long width = shape.Length is 1 or 2 ? shape[^1] : -1;
        if (count < 1 || width < 1)
            throw new InvalidDataException($"Textual inversion '{file.FileName}': tensor '{key}' has shape [{string.Join(",", shape)}]; "
                + "an embedding is one vector [D] or n vectors [n, D], n and D at least 1.");
        // A prompt holds 75 tokens per chunk and CLIP widths are 512–1280: far larger tensors are not embeddings.
        if (count > MaxVectors || width > MaxWidth)
            throw new InvalidDataException($"Textual inversion '{file.FileName}': tensor '{key}' has shape [{string.Join(",", shape)}]; "
                + $"an embedding has at most {MaxVectors} vectors of at most {MaxWidth} values.");
        return ((int)count, new EmbeddingTensor(file.FileName, key, shape, (int)width));
    }
}

/// <summary>The file layout of a <see cref="TextualInversion"/>.</summary>
public enum TextualInversionLayout
{
    /// <summary>diffusers' <c>learned_embeds.safetensors</c>: one tensor named by its token.</summary>
    Diffusers,

    /// <summary>AUTOMATIC1111's <c>emb_params</c> (or <c>string_to_param.*</c>): one tensor; the token is the file name.</summary>
    A1111,

    /// <summary>SDXL's <c>clip_l</c> + <c>clip_g</c>: vectors for both text encoders; the token is the file name.</summary>
    StableDiffusionXL,
}

/// <summary>One tensor of vectors of a textual inversion file, for messages and width checks.</summary>
/// <param name="File">The file name.</param>
/// <param name="Key">The tensor's name.</param>
/// <param name="Shape">Its shape as stored.</param>
/// <param name="Width">The vector width D.</param>
internal sealed record EmbeddingTensor(string File, string Key, long[] Shape, int Width);
