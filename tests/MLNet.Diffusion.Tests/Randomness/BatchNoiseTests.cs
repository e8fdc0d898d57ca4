using System;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Randomness;

/// <summary>
/// <see cref="BatchNoise"/>: the batch policies of diffusers, ComfyUI and AUTOMATIC1111, and the step-noise stream.
/// </summary>
[TestClass]
public sealed class BatchNoiseTests
{
    private static float[] Draw(INoiseSource source, int count)
    {
        var values = new float[count];
        source.NextGaussian(values);
        return values;
    }

    [TestMethod]
    public void Default_IsTodaysGenerator_OnePerRow()
    {
        var batch = NoiseOptions.Default.CreateBatch(new long[] { 3, 9 }, 20);
        var both = Draw(batch, 40);
        CollectionAssert.AreEqual(Draw(new GaussianNoise(3), 20), both[..20]);
        CollectionAssert.AreEqual(Draw(new GaussianNoise(9), 20), both[20..]);
    }

    [TestMethod]
    public void GeneratorPerRow_IsAListOfGenerators_AndStepsContinueEachRowsStream()
    {
        // diffusers: generator=[torch.Generator().manual_seed(s) for s in seeds]; randn_tensor draws row r from generator r,
        // initial latents then one draw per step.
        long[] seeds = { 42, 7, 42 };
        const int row = 4 * 8 * 8;
        var batch = NoiseOptions.Diffusers().CreateBatch(seeds, row);
        var expected = seeds.Select(s => new TorchCpuNoise(s)).ToArray();
        for (int draw = 0; draw < 3; draw++)
        {
            var all = Draw(batch, seeds.Length * row);
            for (int r = 0; r < seeds.Length; r++)
                CollectionAssert.AreEqual(Draw(expected[r], row), all[(r * row)..((r + 1) * row)], $"draw {draw}, row {r}");
        }
    }

    [TestMethod]
    public void GeneratorPerBatch_IsOneRandnOfTheBatchShape()
    {
        // torch.randn((2, 4, 8, 9), generator=torch.Generator().manual_seed(seed)) from the committed fixture: not the same as
        // two draws of (1, 4, 8, 9), since 288 is not a multiple of 16.
        using var doc = NoiseFixtures.Load("torch_cpu_avx2.json");
        var cases = doc.RootElement.GetProperty("cases").EnumerateArray().Where(c => c.GetProperty("shape").ToString() == "[2,4,8,9]").ToList();
        Assert.IsTrue(cases.Count > 5);
        foreach (var c in cases)
        {
            long seed = c.GetProperty("seed").GetInt64();
            var batch = NoiseOptions.Diffusers(oneGeneratorForBatch: true).CreateBatch(new[] { seed, seed + 1 }, 4 * 8 * 9);
            Assert.IsNull(NoiseFixtures.FirstDifference(NoiseFixtures.Floats(c.GetProperty("bits")), Draw(batch, 2 * 288)), $"seed {seed}");
        }
        var perRow = NoiseOptions.Diffusers().CreateBatch(new long[] { 0, 0 }, 288);
        var perBatch = NoiseOptions.Diffusers(true).CreateBatch(new long[] { 0, 0 }, 288);
        Assert.IsNotNull(NoiseFixtures.FirstDifference(Draw(perRow, 576), Draw(perBatch, 576)));
    }

    [TestMethod]
    public void StepNoiseSeedOffset_RestartsTheStreamAfterTheInitialNoise()
    {
        // ComfyUI on the CPU: initial noise randn(batch) from the seed, ancestral noise from a generator seeded with seed + 1.
        var batch = NoiseOptions.ComfyUI().CreateBatch(new long[] { 100, 555 }, 64);
        var expectedInitial = new TorchCpuNoise(100);
        var expectedSteps = new TorchCpuNoise(101);
        CollectionAssert.AreEqual(Draw(expectedInitial, 128), Draw(batch, 128));
        CollectionAssert.AreEqual(Draw(expectedSteps, 128), Draw(batch, 128));
        CollectionAssert.AreEqual(Draw(expectedSteps, 128), Draw(batch, 128));
    }

    [TestMethod]
    public void Automatic1111_PhiloxPerImage_WithEnsd()
    {
        // modules/rng.py ImageRNG: per image, first() from create_generator(seed); with ENSD, the generators are then
        // re-created from seed + ENSD for every later next().
        var batch = NoiseOptions.Automatic1111("NV", 31337).CreateBatch(new long[] { 1000, 1001 }, 16);
        var first = Draw(batch, 32);
        var second = Draw(batch, 32);
        CollectionAssert.AreEqual(Draw(new PhiloxNoise(1000), 16), first[..16]);
        CollectionAssert.AreEqual(Draw(new PhiloxNoise(1001), 16), first[16..]);
        CollectionAssert.AreEqual(Draw(new PhiloxNoise(1000 + 31337), 16), second[..16]);
        CollectionAssert.AreEqual(Draw(new PhiloxNoise(1001 + 31337), 16), second[16..]);

        var cpu = NoiseOptions.Automatic1111("cpu");
        Assert.AreEqual(NoiseGenerator.TorchCpu, cpu.Generator);
        Assert.IsNull(cpu.StepNoiseSeedOffset, "ENSD 0 continues the stream");
        Assert.AreEqual(NoiseGenerator.Philox, NoiseOptions.Automatic1111().Generator, "GPU, the default, is emulated with Philox");
        Assert.ThrowsExactly<ArgumentException>(() => NoiseOptions.Automatic1111("TPU"));
    }

    [TestMethod]
    public void RowDraws_AndSkippedInitialDraws_KeepEachRowsStream()
    {
        // A row whose initial noise is given (diffusers' latents=) draws nothing initially; its steps start at the
        // generator's beginning, while the other rows continue theirs.
        var batch = NoiseOptions.Diffusers().CreateBatch(new long[] { 5, 6 }, 32);
        var row0 = new float[32];
        batch.NextGaussian(0, row0);
        batch.SkipInitialDraw(1);
        var step = Draw(batch, 64);
        var g5 = new TorchCpuNoise(5);
        CollectionAssert.AreEqual(Draw(g5, 32), row0);
        CollectionAssert.AreEqual(Draw(g5, 32), step[..32]);
        CollectionAssert.AreEqual(Draw(new TorchCpuNoise(6), 32), step[32..]);
    }

    [TestMethod]
    public void BadShapes_AndRowCallsOnASharedGenerator_AreRefused()
    {
        var batch = NoiseOptions.Diffusers().CreateBatch(new long[] { 1, 2 }, 10);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => batch.NextGaussian(new float[19])).Message, "2 rows of 10 values");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => batch.NextGaussian(2, new float[10]));
        Assert.ThrowsExactly<ArgumentException>(() => batch.NextGaussian(0, new float[9]));
        var shared = NoiseOptions.ComfyUI().CreateBatch(new long[] { 1, 2 }, 10);
        Assert.ThrowsExactly<InvalidOperationException>(() => shared.NextGaussian(0, new float[10]));
        Assert.ThrowsExactly<ArgumentException>(() => NoiseOptions.Default.CreateBatch(ReadOnlySpan<long>.Empty, 10));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => NoiseOptions.Default.CreateBatch(new long[] { 1 }, 0));
    }
}
