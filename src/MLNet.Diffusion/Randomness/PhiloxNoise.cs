using System;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Randomness;

/// <summary>
/// The Philox 4×32-10 generator with which AUTOMATIC1111's web UI reproduces <c>torch.randn(…, device="cuda")</c> on any
/// device (its "NV" random number source, <c>modules/rng_philox.py</c>): each <see cref="NextGaussian"/> call is one
/// <c>Generator.randn(shape)</c> call of that module.
/// </summary>
/// <remarks>
/// <para>
/// Philox 4×32 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) with 10 rounds. Value i of call
/// number <see cref="Offset"/> comes from the counter (offset, 0, i, 0) and the key (low, high 32 bits of the seed);
/// the first two output words go through one branch of Box–Muller,
/// √(−2 ln u)·sin v with u = (x + ½)·2⁻³² and v = (y + ½)·2π·2⁻³², evaluated in double with A1111's float32 constants and
/// rounded to float32; the other two words and the cosine branch are discarded. The offset grows by one per call,
/// whatever the number of values drawn.
/// </para>
/// <para>
/// The <c>log</c>/<c>sin</c> run vectorised (<see cref="TensorPrimitives"/>) on blocks of values; a product within a few
/// thousand double ulps of a float32 rounding midpoint is recomputed with <see cref="Math.Log(double)"/> and
/// <see cref="Math.Sin"/>, so every value is the one the scalar double-precision evaluation gives.
/// </para>
/// <para>
/// A1111 documents this as matching the CUDA generator "mostly"; it is bit-exact to A1111's own Python code (pinned by
/// the fixtures in <c>Fixtures/Noise</c>), and the last bit of a value can differ from A1111 where NumPy's float64
/// <c>log</c>/<c>sin</c> and the C library's differ by an ulp around a float32 rounding boundary (not seen in the
/// fixtures).
/// </para>
/// </remarks>
public sealed class PhiloxNoise : INoiseSource
{
    private const uint M0 = 0xD2511F53u;
    private const uint M1 = 0xCD9E8D57u;
    private const uint W0 = 0x9E3779B9u;
    private const uint W1 = 0xBB67AE85u;
    private const int Rounds = 10;

    // rng_philox.py's constants are float32 arrays; NumPy promotes uint32 × float32 to float64, so the arithmetic is
    // double precision on these float32 values.
    private const float TwoPow32Inverse = 2.3283064e-10f;
    private const float TwoPow32Inverse2Pi = (float)(2.3283064e-10 * 6.2831855);
    private const double UScale = TwoPow32Inverse;
    private const double UOffset = TwoPow32Inverse / 2f;
    private const double VScale = TwoPow32Inverse2Pi;
    private const double VOffset = TwoPow32Inverse2Pi / 2f;

    // Values are computed in blocks of this many, in double on the stack (4 KiB per array).
    private const int BlockLength = 512;

    // A double's low 29 mantissa bits are those float32 drops; a value with exactly 2²⁸ there is a rounding midpoint.
    private const long FloatDroppedBits = (1L << 29) - 1;
    private const long FloatMidpoint = 1L << 28;

    /// <summary>
    /// How many double ulps from a float32 rounding midpoint a vectorised product must be to be rounded as it is.
    /// </summary>
    internal const long RoundingMarginUlps = 1L << 12;

    private readonly uint _key0;
    private readonly uint _key1;

    /// <summary>Creates the generator <c>rng_philox.Generator(seed)</c>.</summary>
    /// <param name="seed">The seed; its 64 bits are the Philox key (negative values as their two's complement).</param>
    public PhiloxNoise(long seed)
    {
        Seed = seed;
        _key0 = (uint)(ulong)seed;
        _key1 = (uint)((ulong)seed >> 32);
    }

    /// <summary>The seed this generator was created with.</summary>
    public long Seed { get; }

    /// <summary>The number of draws made so far: the first counter word of the next draw.</summary>
    public long Offset { get; private set; }

    /// <summary>Fills <paramref name="destination"/> as one <c>randn</c> call and advances <see cref="Offset"/> by one.</summary>
    /// <param name="destination">The span to fill.</param>
    public void NextGaussian(Span<float> destination)
    {
        // rng_philox.py stores the offset in a uint32 counter word.
        uint offset = (uint)Offset;
        Span<double> radius = stackalloc double[BlockLength];
        Span<double> angle = stackalloc double[BlockLength];
        for (int start = 0; start < destination.Length; start += BlockLength)
        {
            int count = Math.Min(BlockLength, destination.Length - start);
            var block = destination.Slice(start, count);
            var r = radius[..count];
            var a = angle[..count];
            ProductsInDouble(offset, (uint)start, r, a);
            RoundOrRecompute(offset, (uint)start, r, block);
        }
        Offset++;
    }

    /// <summary>
    /// Values <paramref name="start"/>… of call <paramref name="offset"/> as √(−2 ln u)·sin v in double with the vectorised
    /// <see cref="TensorPrimitives"/> <c>Log</c>/<c>Sin</c>, not yet rounded; <paramref name="angle"/> is scratch.
    /// </summary>
    internal void ProductsInDouble(uint offset, uint start, Span<double> radius, Span<double> angle)
    {
        Uniforms(offset, start, radius, angle);
        TensorPrimitives.Log(radius, radius);
        TensorPrimitives.Multiply(radius, -2.0, radius);
        TensorPrimitives.Sqrt(radius, radius);
        TensorPrimitives.Sin(angle, angle);
        TensorPrimitives.Multiply(radius, angle, radius);
    }

    /// <summary>
    /// Rounds the double products to float32, except those within <see cref="RoundingMarginUlps"/> double ulps of a
    /// float32 rounding midpoint, which are recomputed with the scalar <see cref="Math.Log(double)"/>/<see cref="Math.Sin"/>
    /// path (<see cref="ScalarValue"/>).
    /// </summary>
    /// <remarks>
    /// The vectorised <c>Log</c>/<c>Sin</c> may differ from the C library's in the last bits of the double; the float32
    /// result can only differ where the double lies between the two paths' values and a midpoint between floats
    /// (low 29 mantissa bits 2²⁸). Over every u and every v this generator can produce (2³² each, docs/benchmarks.md
    /// "Noise sources"), the vectorised and scalar functions differ by a few ulps at most, so the two products differ by
    /// far fewer than the margin's 2¹² ulps: outside the margin both round to the same float32. About 1.5·10⁻⁵ of the
    /// values fall inside it.
    /// </remarks>
    private void RoundOrRecompute(uint offset, uint start, ReadOnlySpan<double> products, Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
        {
            double value = products[i];
            long midpointDistance = (BitConverter.DoubleToInt64Bits(value) & FloatDroppedBits) - FloatMidpoint;
            destination[i] = (ulong)(midpointDistance + RoundingMarginUlps) <= 2 * RoundingMarginUlps
                ? ScalarValue(offset, start + (uint)i, _key0, _key1)
                : (float)value;
        }
    }

    /// <summary>
    /// Value <paramref name="index"/> of call <paramref name="offset"/> the way rng_philox.py computes it: one Philox block,
    /// √(−2 ln u)·sin v in double with the C library's <c>log</c>/<c>sin</c>, rounded to float32.
    /// </summary>
    internal static float ScalarValue(uint offset, uint index, uint key0, uint key1)
    {
        Block(offset, index, key0, key1, out uint x, out uint y);
        double u = x * UScale + UOffset;
        double v = y * VScale + VOffset;
        return (float)(Math.Sqrt(-2.0 * Math.Log(u)) * Math.Sin(v));
    }

    /// <summary>
    /// The uniforms u and v of values <paramref name="start"/>… of call <paramref name="offset"/>, in double exactly as
    /// <see cref="ScalarValue"/> forms them: the Philox rounds four counters at once where AVX2 is available, the rest
    /// with <see cref="Block"/>.
    /// </summary>
    private void Uniforms(uint offset, uint start, Span<double> u, Span<double> v)
    {
        int i = 0;
        if (Avx2.IsSupported)
            i = UniformsAvx2(offset, start, u, v);
        for (; i < u.Length; i++)
        {
            Block(offset, start + (uint)i, _key0, _key1, out uint x, out uint y);
            u[i] = x * UScale + UOffset;
            v[i] = y * VScale + VOffset;
        }
    }

    /// <summary>
    /// The Philox rounds of four counters at once (AVX2 <c>vpmuludq</c>: 32×32 → 64-bit products of each 64-bit lane's
    /// low word), the same integer arithmetic as <see cref="Block"/>; each 32-bit output word becomes the double it is
    /// exactly (its bits under the exponent of 2⁵², minus 2⁵²), then the same multiply and add as the scalar path (no
    /// fused multiply-add, which would round once instead of twice). Returns how many values it wrote (a multiple of 4).
    /// </summary>
    private int UniformsAvx2(uint offset, uint start, Span<double> u, Span<double> v)
    {
        int whole = u.Length & ~3;
        var m0 = Vector256.Create((ulong)M0).AsUInt32();
        var m1 = Vector256.Create((ulong)M1).AsUInt32();
        var low = Vector256.Create(0xFFFFFFFFUL);
        var first = Vector256.Create((ulong)offset);
        var lanes = Vector256.Create(0UL, 1UL, 2UL, 3UL);
        var twoPow52Bits = Vector256.Create(0x4330000000000000UL);
        var twoPow52 = Vector256.Create(4503599627370496.0);
        var uScale = Vector256.Create(UScale);
        var uOffset = Vector256.Create(UOffset);
        var vScale = Vector256.Create(VScale);
        var vOffset = Vector256.Create(VOffset);
        for (int i = 0; i < whole; i += 4)
        {
            // Counter (offset, 0, start + i + lane, 0); every lane holds a 32-bit word in the low half of a 64-bit lane.
            var c0 = first;
            var c1 = Vector256<ulong>.Zero;
            var c2 = lanes + Vector256.Create((ulong)(uint)(start + (uint)i));
            var c3 = Vector256<ulong>.Zero;
            uint k0 = _key0, k1 = _key1;
            for (int round = 0; round < Rounds; round++)
            {
                var p0 = Avx2.Multiply(c0.AsUInt32(), m0);
                var p1 = Avx2.Multiply(c2.AsUInt32(), m1);
                var n0 = Vector256.ShiftRightLogical(p1, 32) ^ c1 ^ Vector256.Create((ulong)k0);
                var n2 = Vector256.ShiftRightLogical(p0, 32) ^ c3 ^ Vector256.Create((ulong)k1);
                c1 = p1 & low;
                c3 = p0 & low;
                c0 = n0;
                c2 = n2;
                k0 += W0;
                k1 += W1;
            }
            var x = (c0 | twoPow52Bits).AsDouble() - twoPow52;
            var y = (c1 | twoPow52Bits).AsDouble() - twoPow52;
            (x * uScale + uOffset).CopyTo(u[i..]);
            (y * vScale + vOffset).CopyTo(v[i..]);
        }
        return whole;
    }

    /// <summary>Philox 4×32-10 on the counter (c0, 0, c2, 0); returns the first two output words.</summary>
    internal static void Block(uint c0, uint c2, uint key0, uint key1, out uint out0, out uint out1)
    {
        uint c1 = 0, c3 = 0;
        for (int round = 0; round < Rounds; round++)
        {
            ulong p0 = (ulong)c0 * M0;
            ulong p1 = (ulong)c2 * M1;
            uint n0 = (uint)(p1 >> 32) ^ c1 ^ key0;
            uint n2 = (uint)(p0 >> 32) ^ c3 ^ key1;
            c1 = (uint)p1;
            c3 = (uint)p0;
            c0 = n0;
            c2 = n2;
            key0 += W0;
            key1 += W1;
        }
        out0 = c0;
        out1 = c1;
    }
}
