using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// Applies token weights to text-encoder states: A1111's emphasis modes (<c>modules/sd_emphasis.py</c>) as a pure
/// function over a row-major <c>[tokens, D]</c> span, so the encoding recipe can call it on each chunk's states.
/// </summary>
/// <remarks>
/// <para>
/// "Original" (<c>EmphasisOriginal.after_transformers</c>): <c>mean₀ = mean(z)</c>; <c>z ← z · w[token]</c>;
/// <c>z ← z · (mean₀ / mean(z))</c>. A1111 takes the means over the whole tensor it encoded in one call, i.e.
/// over the batch of texts encoded together (the chunk <i>i</i> of every schedule text of one prompt); pass those
/// rows as one span (<c>[batch·77, D]</c>) to get exactly that, or one chunk's 77 rows for a per-chunk mean.
/// The means are taken in double and rounded to float, then divided in float like torch's 0-d float32 tensors.
/// </para>
/// <para>
/// A chunk whose states average to zero makes "Original" divide by rounding noise: that is A1111's maths and is
/// kept (a model with a zero final LayerNorm bias, e.g. <c>tiny-sd</c>, shows it — use <c>tiny-sd-lnbias</c>).
/// "No norm" multiplies only; "Ignore" and "None" leave the states alone.
/// </para>
/// <para>
/// compel's maths is different and belongs to the compel wiring: a weighted token becomes
/// <c>z_empty + (z − z_empty) · w</c> (the empty prompt's states at the same position), and a weight <c>w &lt; 1</c>
/// is realised by blending with the states of the prompt encoded without the down-weighted phrase (blend weight
/// <c>tan((1 − w) · π/2)</c>), since ONNX text encoders take no attention mask; see <see cref="CompelPrompt"/>.
/// </para>
/// </remarks>
internal static class PromptWeighting
{
    /// <summary>Applies <paramref name="mode"/> to <paramref name="states"/> in place.</summary>
    /// <param name="states">Row-major <c>[multipliers.Length, dimension]</c> states, changed in place.</param>
    /// <param name="dimension">The hidden size D (768 for SD 1.x).</param>
    /// <param name="multipliers">One weight per token row (a chunk's <see cref="PromptChunk.Multipliers"/>).</param>
    /// <param name="mode">The emphasis mode.</param>
    /// <exception cref="ArgumentException">The span lengths do not match <c>tokens × dimension</c>.</exception>
    public static void Apply(Span<float> states, int dimension, ReadOnlySpan<float> multipliers, PromptEmphasis mode)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        if ((long)multipliers.Length * dimension != states.Length)
        {
            throw new ArgumentException(
                $"The states hold {states.Length} values but {multipliers.Length} token weights × dimension {dimension} = "
                + $"{(long)multipliers.Length * dimension}; they must match.",
                nameof(states));
        }

        if (mode is PromptEmphasis.None or PromptEmphasis.Ignore)
        {
            return;
        }

        float originalMean = mode == PromptEmphasis.Original ? Mean(states) : 0f;
        for (int token = 0; token < multipliers.Length; token++)
        {
            float w = multipliers[token];
            if (w != 1f)
            {
                Span<float> row = states.Slice(token * dimension, dimension);
                TensorPrimitives.Multiply(row, w, row);
            }
        }

        if (mode == PromptEmphasis.Original)
        {
            float newMean = Mean(states);
            float ratio = originalMean / newMean;
            TensorPrimitives.Multiply(states, ratio, states);
        }
    }

    private static float Mean(ReadOnlySpan<float> values)
    {
        // Summed in double in blocks, so the mean of a 77×2048 chunk does not depend on float summation order.
        double sum = 0;
        const int Block = 4096;
        for (int start = 0; start < values.Length; start += Block)
        {
            ReadOnlySpan<float> block = values.Slice(start, Math.Min(Block, values.Length - start));
            double blockSum = 0;
            foreach (float v in block)
            {
                blockSum += v;
            }

            sum += blockSum;
        }

        return (float)(sum / values.Length);
    }
}
