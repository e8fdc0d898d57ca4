using System;
using System.Linq;
using System.Text.Json;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Randomness;

namespace MLNet.Diffusion.Tests.Randomness;

/// <summary>
/// <see cref="TorchCpuNoise"/> against <c>torch.randn</c> on the CPU (Debian's PyTorch 1.13.1; fixtures and the script that
/// made them in <c>Fixtures/Noise</c>): every seed, size and sequence bit for bit, for both CPU kernels.
/// </summary>
[TestClass]
public sealed class TorchCpuNoiseTests
{
    [TestMethod]
    public void Seed0_Randn8_IsPyTorchsPublishedTensor()
    {
        // torch.manual_seed(0); torch.randn(8) — printed in PyTorch's docs and countless tutorials:
        // tensor([ 1.5410, -0.2934, -2.1788,  0.5684, -1.0845, -1.3986,  0.4033,  0.8380])
        var values = new float[8];
        new TorchCpuNoise(0).NextGaussian(values);
        float[] published = { 1.5410f, -0.2934f, -2.1788f, 0.5684f, -1.0845f, -1.3986f, 0.4033f, 0.8380f };
        for (int i = 0; i < 8; i++)
            Assert.AreEqual(published[i], values[i], 5e-5f, $"value {i}");
    }

    [TestMethod]
    [DataRow("torch_cpu_avx2.json", TorchCpuKernel.Avx2)]
    [DataRow("torch_cpu_default.json", TorchCpuKernel.Portable)]
    public void EverySeedAndShape_IsBitIdenticalToTorchRandn(string fixture, TorchCpuKernel kernel)
    {
        using var doc = NoiseFixtures.Load(fixture);
        int checkedCases = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            long seed = c.GetProperty("seed").GetInt64();
            string shape = c.GetProperty("shape").ToString();
            var values = new float[NoiseFixtures.Count(c.GetProperty("shape"))];
            new TorchCpuNoise(seed, kernel).NextGaussian(values);
            if (c.TryGetProperty("bits", out var bits))
            {
                Assert.IsNull(NoiseFixtures.FirstDifference(NoiseFixtures.Floats(bits), values), $"seed {seed}, shape {shape}");
            }
            else
            {
                var first = NoiseFixtures.Floats(c.GetProperty("first_bits"));
                Assert.IsNull(NoiseFixtures.FirstDifference(first, values.AsSpan(0, first.Length)), $"seed {seed}, shape {shape}, first values");
                Assert.AreEqual(c.GetProperty("sha256").GetString(), NoiseFixtures.Sha256(values), $"seed {seed}, shape {shape}: SHA-256 of all values");
            }
            checkedCases++;
        }
        Assert.IsTrue(checkedCases > 100, $"only {checkedCases} cases in {fixture}");
    }

    [TestMethod]
    [DataRow("torch_cpu_avx2.json", TorchCpuKernel.Avx2)]
    [DataRow("torch_cpu_default.json", TorchCpuKernel.Portable)]
    public void SequencesOfDraws_ContinueTheStream_AndKeepTheCachedScalarSample(string fixture, TorchCpuKernel kernel)
    {
        using var doc = NoiseFixtures.Load(fixture);
        foreach (var s in doc.RootElement.GetProperty("sequences").EnumerateArray())
        {
            long seed = s.GetProperty("seed").GetInt64();
            var noise = new TorchCpuNoise(seed, kernel);
            int call = 0;
            foreach (var draw in s.GetProperty("draws").EnumerateArray())
            {
                var expected = NoiseFixtures.Floats(draw);
                var values = new float[expected.Length];
                noise.NextGaussian(values);
                Assert.IsNull(NoiseFixtures.FirstDifference(expected, values), $"seed {seed}, call {call} ({expected.Length} values)");
                call++;
            }
        }
    }

    [TestMethod]
    public void Seeds_KeepOnlyTheLow32Bits()
    {
        var a = new float[40];
        var b = new float[40];
        new TorchCpuNoise(-1).NextGaussian(a);
        new TorchCpuNoise(uint.MaxValue).NextGaussian(b);
        CollectionAssert.AreEqual(a, b, "−1 acts as 2³² − 1");
        new TorchCpuNoise(1L << 32).NextGaussian(a);
        new TorchCpuNoise(0).NextGaussian(b);
        CollectionAssert.AreEqual(a, b, "2³² acts as 0");
    }

    [TestMethod]
    public void VectorAndScalarBlocks_GiveTheSameBits_OnEveryUniform()
    {
        // The vector path (AVX2 + FMA) and the scalar fallback must agree bit for bit; sweep uniforms k·2⁻²⁴ across [0, 1)
        // including both ends, where log(1 − u) and the quadrant boundaries of sin/cos sit.
        var vector = new float[16];
        var scalar = new float[16];
        var random = new Random(5);
        for (int trial = 0; trial < 20000; trial++)
        {
            for (int i = 0; i < 16; i++)
            {
                uint k = trial < 2 ? (trial == 0 ? 0u : 0xFFFFFFu) : (uint)random.Next(1 << 24);
                vector[i] = scalar[i] = k * (1f / (1 << 24));
            }
            TorchBoxMuller.Avx2Block(vector);
            TorchBoxMuller.Avx2BlockScalar(scalar);
            Assert.IsNull(NoiseFixtures.FirstDifference(scalar, vector), $"trial {trial}");
        }
        Assert.IsTrue(vector.All(float.IsFinite));
    }

    [TestMethod]
    public void TinySdLatents_Seed42_AreTorchRandn_1x4x32x32()
    {
        // The tiny-sd export's text-to-image start: torch.Generator().manual_seed(42); torch.randn((1, 4, 32, 32)).
        using var doc = NoiseFixtures.Load("torch_cpu_avx2.json");
        var c = doc.RootElement.GetProperty("cases").EnumerateArray()
            .Single(e => e.GetProperty("seed").GetInt64() == 42 && e.GetProperty("shape").ToString() == "[1,4,32,32]");
        var values = new float[4 * 32 * 32];
        new TorchCpuNoise(42).NextGaussian(values);
        Assert.AreEqual(c.GetProperty("sha256").GetString(), NoiseFixtures.Sha256(values));
    }

    [TestMethod]
    public void UnknownKernel_IsRefused()
    {
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new TorchCpuNoise(0, (TorchCpuKernel)7));
        Assert.AreEqual("kernel", e.ParamName);
    }
}
