using System;
using System.Diagnostics;
using System.Numerics.Tensors;
using System.Threading;
using System.Threading.Tasks;
using MLNet.Diffusion.Randomness;

namespace MLNet.Diffusion.Benchmarks.Randomness;

/// <summary>
/// Issue 14 point 8: the evidence that <see cref="PhiloxNoise"/>'s vectorised <c>log</c>/<c>sin</c> keep every value
/// bit-identical to the scalar double-precision path. <c>-- philox-exactness [VALUES]</c>:
/// (1) over every one of the 2³² u and 2³² v the generator can form, the largest distance in double ulps between
/// <see cref="TensorPrimitives"/>' <c>Log</c>/<c>Sin</c> and <see cref="Math.Log(double)"/>/<see cref="Math.Sin"/>;
/// (2) over VALUES generated values (default 2²⁶), how many float32 results would flip without the midpoint fallback,
/// how many fall back, the largest double-ulp distance between the two products, and whether every value equals
/// <see cref="PhiloxNoise.ScalarValue"/>.
/// </summary>
internal static class PhiloxExactnessCheck
{
    private const int Block = 1 << 14;

    // rng_philox.py's float32 constants, as PhiloxNoise forms u and v.
    private const double UScale = 2.3283064e-10f;
    private const double UOffset = 2.3283064e-10f / 2f;
    private const double VScale = (float)(2.3283064e-10 * 6.2831855);
    private const double VOffset = (float)(2.3283064e-10 * 6.2831855) / 2f;

    public static int Run(string[] args)
    {
        long values = args.Length > 0 ? long.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture) : 1L << 26;
        bool skipExhaustive = Array.IndexOf(args, "--no-exhaustive") >= 0;
        var clock = Stopwatch.StartNew();
        if (!skipExhaustive)
        {
            var (logMax, logAt) = Exhaustive(UScale, UOffset, TensorPrimitives.Log, Math.Log);
            Console.WriteLine($"log: max |vector - Math.Log| over all 2^32 u = {logMax} ulp (x = {logAt}) [{clock.Elapsed.TotalSeconds:F0} s]");
            var (sinMax, sinAt) = Exhaustive(VScale, VOffset, TensorPrimitives.Sin, Math.Sin);
            Console.WriteLine($"sin: max |vector - Math.Sin| over all 2^32 v = {sinMax} ulp (y = {sinAt}) [{clock.Elapsed.TotalSeconds:F0} s]");
        }
        Products(values);
        Console.WriteLine($"[{clock.Elapsed.TotalSeconds:F0} s]");
        return 0;
    }

    private delegate void SpanFunction(ReadOnlySpan<double> x, Span<double> destination);

    // The largest ulp distance over x = 0 … 2³² − 1 of f(x·scale + offset), vectorised against scalar.
    private static (long Max, long At) Exhaustive(double scale, double offset, SpanFunction vector, Func<double, double> scalar)
    {
        long max = -1, at = 0;
        var gate = new object();
        long blocks = (1L << 32) / Block;
        Parallel.For(0L, blocks, () => (new double[Block], new double[Block], -1L, 0L), (b, _, state) =>
        {
            var (input, output, localMax, localAt) = state;
            long first = b * Block;
            for (int i = 0; i < Block; i++)
                input[i] = (uint)(first + i) * scale + offset;
            vector(input, output);
            for (int i = 0; i < Block; i++)
            {
                long d = Math.Abs(BitConverter.DoubleToInt64Bits(output[i]) - BitConverter.DoubleToInt64Bits(scalar(input[i])));
                if (d > localMax)
                {
                    localMax = d;
                    localAt = first + i;
                }
            }
            return (input, output, localMax, localAt);
        }, state =>
        {
            lock (gate)
            {
                if (state.Item3 > max)
                {
                    max = state.Item3;
                    at = state.Item4;
                }
            }
        });
        return (max, at);
    }

    // Draws of 2¹⁴ values from successive seeds: the vectorised products against the scalar ones.
    private static void Products(long values)
    {
        long flips = 0, fallbacks = 0, mismatches = 0, maxUlps = 0, done = 0;
        var products = new double[Block];
        var scratch = new double[Block];
        var drawn = new float[Block];
        for (long seed = 0; done < values; seed++)
        {
            var noise = new PhiloxNoise(seed);
            noise.ProductsInDouble(0, 0, products, scratch);
            noise.NextGaussian(drawn);
            uint key0 = (uint)(ulong)seed, key1 = (uint)((ulong)seed >> 32);
            for (int i = 0; i < Block; i++)
            {
                PhiloxNoise.Block(0, (uint)i, key0, key1, out uint x, out uint y);
                double scalar = Math.Sqrt(-2.0 * Math.Log(x * UScale + UOffset)) * Math.Sin(y * VScale + VOffset);
                maxUlps = Math.Max(maxUlps, Math.Abs(BitConverter.DoubleToInt64Bits(products[i]) - BitConverter.DoubleToInt64Bits(scalar)));
                if ((float)products[i] != (float)scalar)
                    flips++;
                long distance = (BitConverter.DoubleToInt64Bits(products[i]) & ((1L << 29) - 1)) - (1L << 28);
                if (Math.Abs(distance) <= PhiloxNoise.RoundingMarginUlps)
                    fallbacks++;
                if (BitConverter.SingleToInt32Bits(drawn[i]) != BitConverter.SingleToInt32Bits((float)scalar))
                    mismatches++;
            }
            done += Block;
        }
        Console.WriteLine($"products over {done} values (seeds 0…{done / Block - 1}, 2^14 each): max |vector - scalar| = {maxUlps} double ulp; "
            + $"float32 flips without the fallback = {flips}; values within {PhiloxNoise.RoundingMarginUlps} ulp of a midpoint (recomputed) = {fallbacks}; "
            + $"NextGaussian values differing from the scalar path = {mismatches}");
    }
}
