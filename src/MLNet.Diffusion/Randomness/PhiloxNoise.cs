using System;
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
        int i = 0;
        if (Avx2.IsSupported)
            i = FillAvx2(offset, destination);
        for (; i < destination.Length; i++)
        {
            Block(offset, (uint)i, _key0, _key1, out uint x, out uint y);
            destination[i] = BoxMuller(x, y);
        }
        Offset++;
    }

    /// <summary>One value from the first two output words: √(−2 ln u)·sin v in double, rounded to float32.</summary>
    private static float BoxMuller(uint x, uint y)
    {
        double u = x * UScale + UOffset;
        double v = y * VScale + VOffset;
        return (float)(Math.Sqrt(-2.0 * Math.Log(u)) * Math.Sin(v));
    }

    /// <summary>
    /// The Philox rounds of four counters at once (AVX2 <c>vpmuludq</c>: 32×32 → 64-bit products of each 64-bit lane's
    /// low word), the same integer arithmetic as <see cref="Block"/>; the Box–Muller stays scalar in double, so every
    /// value is bit-identical to the scalar path. Returns how many values it wrote (a multiple of 4).
    /// </summary>
    private int FillAvx2(uint offset, Span<float> destination)
    {
        int whole = destination.Length & ~3;
        var m0 = Vector256.Create((ulong)M0).AsUInt32();
        var m1 = Vector256.Create((ulong)M1).AsUInt32();
        var low = Vector256.Create(0xFFFFFFFFUL);
        var first = Vector256.Create((ulong)offset);
        var lanes = Vector256.Create(0UL, 1UL, 2UL, 3UL);
        Span<ulong> x = stackalloc ulong[4];
        Span<ulong> y = stackalloc ulong[4];
        for (int i = 0; i < whole; i += 4)
        {
            // Counter (offset, 0, i + lane, 0); every lane holds a 32-bit word in the low half of a 64-bit lane.
            var c0 = first;
            var c1 = Vector256<ulong>.Zero;
            var c2 = lanes + Vector256.Create((ulong)(uint)i);
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
            c0.CopyTo(x);
            c1.CopyTo(y);
            for (int lane = 0; lane < 4; lane++)
                destination[i + lane] = BoxMuller((uint)x[lane], (uint)y[lane]);
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
