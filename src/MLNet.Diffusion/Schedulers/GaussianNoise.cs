using System;
using System.Numerics;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// A seeded, platform-independent N(0, 1) generator: xoshiro256** (Blackman &amp; Vigna 2018) seeded through
/// SplitMix64, with the Box–Muller transform in double precision. The same seed gives the same floats on every
/// machine and .NET version, unlike <see cref="Random"/>, whose algorithm is not a compatibility promise.
/// It does not reproduce torch's generator: <see cref="Randomness.TorchCpuNoise"/> and <see cref="Randomness.PhiloxNoise"/>
/// do (chosen with <see cref="Randomness.NoiseOptions"/>); this one stays the library's default.
/// </summary>
public sealed class GaussianNoise : INoiseSource
{
    private ulong _s0, _s1, _s2, _s3;
    private double _spare;
    private bool _hasSpare;

    /// <summary>Creates a generator from a 64-bit seed.</summary>
    /// <param name="seed">The seed; every value, including 0, is valid.</param>
    public GaussianNoise(long seed)
    {
        ulong x = (ulong)seed;
        _s0 = SplitMix64(ref x);
        _s1 = SplitMix64(ref x);
        _s2 = SplitMix64(ref x);
        _s3 = SplitMix64(ref x);
    }

    /// <inheritdoc/>
    public void NextGaussian(Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = (float)NextGaussianDouble();
    }

    /// <summary>Returns one N(0, 1) sample in double precision.</summary>
    public double NextGaussianDouble()
    {
        if (_hasSpare)
        {
            _hasSpare = false;
            return _spare;
        }
        // Box–Muller on (0, 1] × [0, 1): u1 never 0, so the logarithm is finite.
        double u1 = (NextUInt64() >> 11) * (1.0 / (1UL << 53));
        u1 = 1.0 - u1;
        double u2 = (NextUInt64() >> 11) * (1.0 / (1UL << 53));
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        double theta = 2.0 * Math.PI * u2;
        _spare = r * Math.Sin(theta);
        _hasSpare = true;
        return r * Math.Cos(theta);
    }

    /// <summary>Returns a uniform double in [0, 1).</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    private ulong NextUInt64()
    {
        ulong result = BitOperations.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = BitOperations.RotateLeft(_s3, 45);
        return result;
    }

    private static ulong SplitMix64(ref ulong x)
    {
        ulong z = x += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
