using System;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Randomness;

namespace MLNet.Diffusion.Tests.Randomness;

/// <summary>
/// <see cref="PhiloxNoise"/> against AUTOMATIC1111's NV generator (<c>modules/rng_philox.py</c>, run with NumPy to make
/// <c>Fixtures/Noise/philox_a1111.json</c>) and its published docstring.
/// </summary>
[TestClass]
public sealed class PhiloxNoiseTests
{
    [TestMethod]
    public void Seed0_Shape3x4_IsTheDocstringOfRngPhilox()
    {
        // modules/rng_philox.py: "g = Generator(seed=0); print(g.randn(shape=(3, 4)))" → expected output.
        float[] published =
        {
            -0.92466259f, -0.42534415f, -2.6438457f, 0.14518388f,
            -0.12086647f, -0.57972564f, -0.62285122f, -0.32838709f,
            -1.07454231f, -0.36314407f, -1.67105067f, 2.26550497f,
        };
        var values = new float[12];
        new PhiloxNoise(0).NextGaussian(values);
        // The docstring was printed by an older NumPy; today's code gives these values to within 2 ulps of float32.
        for (int i = 0; i < 12; i++)
            Assert.AreEqual(published[i], values[i], 5e-7f, $"value {i}");
    }

    [TestMethod]
    public void SuccessiveCalls_AreBitIdenticalToRngPhilox_ForEverySeed()
    {
        using var doc = NoiseFixtures.Load("philox_a1111.json");
        int draws = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            long seed = (long)c.GetProperty("seed").GetUInt64();
            var noise = new PhiloxNoise(seed);
            int call = 0;
            foreach (var d in c.GetProperty("draws").EnumerateArray())
            {
                var expected = NoiseFixtures.Floats(d.GetProperty("bits"));
                var values = new float[NoiseFixtures.Count(d.GetProperty("shape"))];
                Assert.AreEqual(call, noise.Offset, "the offset counts the calls");
                noise.NextGaussian(values);
                Assert.IsNull(NoiseFixtures.FirstDifference(expected, values), $"seed {seed}, call {call}");
                call++;
                draws++;
            }
        }
        Assert.IsTrue(draws >= 24);
    }

    [TestMethod]
    public void Latent1x4x64x64_Seed42_HasRngPhiloxsHash()
    {
        using var doc = NoiseFixtures.Load("philox_a1111.json");
        var latent = doc.RootElement.GetProperty("latent_1x4x64x64_seed42");
        var values = new float[4 * 64 * 64];
        new PhiloxNoise(42).NextGaussian(values);
        var first = NoiseFixtures.Floats(latent.GetProperty("first_bits"));
        Assert.IsNull(NoiseFixtures.FirstDifference(first, values.AsSpan(0, first.Length)));
        Assert.AreEqual(latent.GetProperty("sha256").GetString(), NoiseFixtures.Sha256(values));
    }

    [TestMethod]
    public void Philox4x32_10_MatchesTheRandom123KnownAnswer()
    {
        // Random123's kat_vectors: philox4x32 10 rounds, counter 0, key 0 → 6627e8d5 e169c58d bc57ac4c 9b00dbd8; this
        // class keeps counter words 1 and 3 at zero and returns the first two output words.
        PhiloxNoise.Block(0, 0, 0, 0, out uint x, out uint y);
        Assert.AreEqual(0x6627E8D5u, x);
        Assert.AreEqual(0xE169C58Du, y);
    }

    [TestMethod]
    public void VectorisedDraws_EqualTheScalarDoublePrecisionPath_ValueForValue()
    {
        // The vectorised log/sin (with the scalar recomputation near float32 rounding midpoints) against rng_philox.py's
        // scalar evaluation (PhiloxNoise.ScalarValue) over 2^20 values: lengths that end in a partial Philox group of four
        // and a partial block, negative and 64-bit seeds, later calls.
        int checkedValues = 0;
        foreach (long seed in new[] { 0L, 1L, -1L, 42L, 0x1234_5678_9ABC_DEF0L })
        {
            var noise = new PhiloxNoise(seed);
            uint key0 = (uint)(ulong)seed, key1 = (uint)((ulong)seed >> 32);
            foreach (int length in new[] { 1, 3, 511, 513, 16384 + 7, 4 * 64 * 64 * 12 })
            {
                uint offset = (uint)noise.Offset;
                var values = new float[length];
                noise.NextGaussian(values);
                for (int i = 0; i < length; i++)
                {
                    float expected = PhiloxNoise.ScalarValue(offset, (uint)i, key0, key1);
                    if (BitConverter.SingleToInt32Bits(expected) != BitConverter.SingleToInt32Bits(values[i]))
                        Assert.Fail($"seed {seed}, call {offset}, value {i}: {values[i]:R} vs the scalar path's {expected:R}");
                }
                checkedValues += length;
            }
        }
        Assert.IsTrue(checkedValues > 1 << 20);
    }
}
