using System;
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
        for (int i = 0; i < destination.Length; i++)
        {
            Block(offset, (uint)i, _key0, _key1, out uint x, out uint y);
            double u = x * UScale + UOffset;
            double v = y * VScale + VOffset;
            destination[i] = (float)(Math.Sqrt(-2.0 * Math.Log(u)) * Math.Sin(v));
        }
        Offset++;
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
