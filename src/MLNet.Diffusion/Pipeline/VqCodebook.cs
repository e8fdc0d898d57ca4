using System;
using System.IO;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// The codebook E [K, C] of a VQ autoencoder (diffusers <c>VQModel.quantize.embedding.weight</c>, shipped as
/// <c>vqvae_decoder/codebook.npy</c>) and the host form of its quantisation: each latent vector z (one per latent pixel,
/// across the C channels) becomes its nearest codebook vector E[k], k = argmin_j ‖z − E_j‖² (diffusers
/// <c>VectorQuantizer.forward</c>: <c>argmin(cdist(z, E))</c>; the square root does not change the argmin). Ties go to
/// the lowest j, as <c>torch.argmin</c> breaks them.
/// </summary>
internal sealed class VqCodebook
{
    private readonly float[] _values;

    private VqCodebook(float[] values, int size, int dimension)
    {
        _values = values;
        Size = size;
        Dimension = dimension;
    }

    /// <summary>K, the number of codebook vectors.</summary>
    public int Size { get; }

    /// <summary>C, the length of each vector (the latent channels).</summary>
    public int Dimension { get; }

    /// <summary>Row k of the codebook.</summary>
    public ReadOnlySpan<float> Vector(int k) => _values.AsSpan(k * Dimension, Dimension);

    /// <summary>Reads <c>vqvae_decoder/codebook.npy</c> of <paramref name="directory"/>, or returns null when it is absent.</summary>
    /// <exception cref="InvalidDataException">The file is not a float32 [K, <paramref name="channels"/>] array of finite values, or
    /// K differs from the config's <paramref name="size"/>.</exception>
    public static VqCodebook? Load(string directory, int channels, int? size)
    {
        string path = Path.Combine(directory, ModelFolder.Codebook);
        if (!File.Exists(path))
            return null;
        var (values, shape) = NpyFile.ReadFloat32(path);
        var codebook = Create(values, shape, channels, path);
        if (size is int k && k != codebook.Size)
            throw new InvalidDataException($"'{path}' has {codebook.Size} codebook vectors but vqvae_decoder/config.json sets num_vq_embeddings {k}.");
        return codebook;
    }

    /// <summary>A codebook from values [K, C] in C order; <paramref name="source"/> names them in errors.</summary>
    public static VqCodebook Create(float[] values, int[] shape, int channels, string source)
    {
        ArgumentNullException.ThrowIfNull(values);
        if (shape.Length != 2 || shape[0] < 1 || shape[1] != channels || values.Length != shape[0] * shape[1])
            throw new InvalidDataException($"'{source}' has shape [{string.Join(", ", shape)}]; a VQ codebook is [K, {channels}] (K ≥ 1 vectors of the {channels} latent channels).");
        for (int i = 0; i < values.Length; i++)
        {
            if (!float.IsFinite(values[i]))
                throw new InvalidDataException($"'{source}' holds a non-finite value at row {i / channels}, column {i % channels}.");
        }
        return new VqCodebook(values, shape[0], channels);
    }

    /// <summary>
    /// Quantises <paramref name="count"/> planar latents [C, h, w]: writes E[k] for each latent pixel into
    /// <paramref name="quantized"/> (may be <paramref name="latents"/> itself) and, when not empty, k into
    /// <paramref name="indices"/> ([count, h, w]).
    /// </summary>
    public void Quantize(ReadOnlySpan<float> latents, int count, int plane, Span<float> quantized, Span<int> indices)
    {
        int c = Dimension, len = c * plane;
        if (latents.Length != count * len || quantized.Length != latents.Length)
            throw new ArgumentException($"Expected {count}×{c}×{plane} latent values in and out, got {latents.Length} and {quantized.Length}.", nameof(latents));
        if (!indices.IsEmpty && indices.Length != count * plane)
            throw new ArgumentException($"Expected room for {count}×{plane} indices, got {indices.Length}.", nameof(indices));
        Span<float> z = c <= 64 ? stackalloc float[c] : new float[c];
        var codebook = _values.AsSpan();
        for (int r = 0; r < count; r++)
        {
            int rowStart = r * len;
            for (int p = 0; p < plane; p++)
            {
                for (int ch = 0; ch < c; ch++)
                    z[ch] = latents[rowStart + ch * plane + p];
                int best = 0;
                float bestDistance = float.PositiveInfinity;
                for (int k = 0; k < Size; k++)
                {
                    var e = codebook.Slice(k * c, c);
                    float d = 0f;
                    for (int ch = 0; ch < c; ch++)
                    {
                        float diff = z[ch] - e[ch];
                        d += diff * diff;
                    }
                    // Strictly smaller: the first of equal distances wins (torch.argmin). A NaN latent never wins, so it maps to E[0].
                    if (d < bestDistance)
                    {
                        bestDistance = d;
                        best = k;
                    }
                }
                var chosen = codebook.Slice(best * c, c);
                for (int ch = 0; ch < c; ch++)
                    quantized[rowStart + ch * plane + p] = chosen[ch];
                if (!indices.IsEmpty)
                    indices[r * plane + p] = best;
            }
        }
    }
}
