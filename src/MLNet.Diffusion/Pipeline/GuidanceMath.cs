using System;
using System.Numerics;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// The per-step math of the denoising loop after the UNet call, in one pass over memory: classifier-free guidance
/// ε = ε_u + g·(ε_c − ε_u) (Ho &amp; Salimans 2022, eq. 6) together with the check that every row of the result is
/// finite. The two-step form (a subtraction pass, a multiply-add pass, then a sum per row) read the batch four times.
/// </summary>
internal static class GuidanceMath
{
    /// <summary>
    /// Rows [0, count) of <paramref name="prediction"/> are unconditional, [count, 2·count) conditional, each
    /// <paramref name="rowLength"/> values; writes ε_u + g·(ε_c − ε_u) into <paramref name="guided"/> with the same
    /// float32 operations, in the same order, as the two-step form (subtract, multiply, add: no fused multiply-add), and
    /// returns the first row whose result holds a NaN or an infinity, or −1.
    /// </summary>
    public static int Combine(ReadOnlySpan<float> prediction, float guidanceScale, Span<float> guided, int count, int rowLength)
    {
        int half = count * rowLength;
        if (prediction.Length != 2 * half || guided.Length != half)
            throw new ArgumentException($"Expected a prediction of 2×{count}×{rowLength} values and room for {count}×{rowLength}, got {prediction.Length} and {guided.Length}.", nameof(prediction));
        var uncond = prediction.Slice(0, half);
        var cond = prediction.Slice(half, half);
        int bad = -1;
        for (int r = 0; r < count; r++)
        {
            int start = r * rowLength;
            if (!CombineRow(uncond.Slice(start, rowLength), cond.Slice(start, rowLength), guidanceScale, guided.Slice(start, rowLength)) && bad < 0)
                bad = r;
        }
        return bad;
    }

    /// <summary>The first of <paramref name="count"/> rows of <paramref name="values"/> that holds a NaN or an infinity, or −1.</summary>
    public static int FirstNonFiniteRow(ReadOnlySpan<float> values, int count, int rowLength)
    {
        if (values.Length != count * rowLength)
            throw new ArgumentException($"Expected {count}×{rowLength} values, got {values.Length}.", nameof(values));
        for (int r = 0; r < count; r++)
            if (!IsFinite(values.Slice(r * rowLength, rowLength)))
                return r;
        return -1;
    }

    /// <summary>The error of a non-finite UNet result, naming the row, the step and the timestep.</summary>
    public static InvalidOperationException NonFinite(long row, int step, float t) => new(
        $"The UNet produced non-finite values (NaN or infinity) for row {row} at step {step + 1} (timestep {t}). "
        + "Check the model (an fp16 model overflowing, or a broken export) and the inputs of that row.");

    // x·0 is 0 for every finite x and NaN for ±∞ and NaN: the accumulated x·0 is NaN exactly when a value is not finite
    // (a sum of the values themselves could also overflow on finite ones).
    private static bool CombineRow(ReadOnlySpan<float> u, ReadOnlySpan<float> c, float g, Span<float> guided)
    {
        int i = 0;
        float check = 0f;
        if (Vector.IsHardwareAccelerated && u.Length >= Vector<float>.Count)
        {
            int n = Vector<float>.Count;
            var scale = new Vector<float>(g);
            var acc = Vector<float>.Zero;
            for (; i <= u.Length - n; i += n)
            {
                var vu = new Vector<float>(u.Slice(i, n));
                var v = (new Vector<float>(c.Slice(i, n)) - vu) * scale + vu;
                v.CopyTo(guided.Slice(i, n));
                acc += v * Vector<float>.Zero;
            }
            check = Vector.Sum(acc);
        }
        for (; i < u.Length; i++)
        {
            float v = (c[i] - u[i]) * g + u[i];
            guided[i] = v;
            check += v * 0f;
        }
        return check == 0f;
    }

    private static bool IsFinite(ReadOnlySpan<float> values)
    {
        int i = 0;
        float check = 0f;
        if (Vector.IsHardwareAccelerated && values.Length >= Vector<float>.Count)
        {
            int n = Vector<float>.Count;
            var acc = Vector<float>.Zero;
            for (; i <= values.Length - n; i += n)
                acc += new Vector<float>(values.Slice(i, n)) * Vector<float>.Zero;
            check = Vector.Sum(acc);
        }
        for (; i < values.Length; i++)
            check += values[i] * 0f;
        return check == 0f;
    }
}
