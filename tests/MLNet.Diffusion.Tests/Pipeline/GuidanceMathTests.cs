using System;
using System.Numerics.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Tests.Pipeline;

/// <summary>
/// The one-pass guidance combine and finite check of the denoising loop: the same bits as the two-step formula
/// (TensorPrimitives subtract, then multiply-add), and the first non-finite row named, on vector bodies and tails.
/// </summary>
[TestClass]
public sealed class GuidanceMathTests
{
    private static float[] Random(int length, int seed, float scale = 3f)
    {
        var random = new Random(seed);
        var values = new float[length];
        for (int i = 0; i < values.Length; i++)
            values[i] = (float)(random.NextDouble() * 2 - 1) * scale;
        return values;
    }

    [TestMethod]
    public void Combine_EqualsTheTwoStepFormula_BitForBit()
    {
        foreach (var (count, rowLength) in new[] { (1, 1), (1, 7), (2, 9), (1, 16), (3, 33), (4, 1024), (2, 16387) })
        {
            foreach (float g in new[] { 7.5f, 1.5f, 0f, -2.25f, 13.37f })
            {
                var prediction = Random(2 * count * rowLength, count * 31 + rowLength);
                int half = count * rowLength;
                var expected = new float[half];
                TensorPrimitives.Subtract(prediction.AsSpan(half, half), prediction.AsSpan(0, half), expected);
                TensorPrimitives.MultiplyAdd(expected, g, prediction.AsSpan(0, half), expected);

                var guided = new float[half];
                Assert.AreEqual(-1, GuidanceMath.Combine(prediction, g, guided, count, rowLength));
                for (int i = 0; i < half; i++)
                    Assert.AreEqual(BitConverter.SingleToInt32Bits(expected[i]), BitConverter.SingleToInt32Bits(guided[i]), $"{count}×{rowLength}, g = {g}: value {i}");
            }
        }
    }

    [TestMethod]
    public void Combine_NamesTheFirstRowWithANaNOrAnInfinity_WhereverItIs()
    {
        const int count = 4, rowLength = 37; // a vector body and a tail per row
        foreach (float poison in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
        {
            foreach (int position in new[] { 0, 5, 31, 36 })
            {
                foreach (int row in new[] { 0, 2, 3 })
                {
                    foreach (bool conditional in new[] { false, true })
                    {
                        var prediction = Random(2 * count * rowLength, 5);
                        prediction[(conditional ? count + row : row) * rowLength + position] = poison;
                        var guided = new float[count * rowLength];
                        Assert.AreEqual(row, GuidanceMath.Combine(prediction, 7.5f, guided, count, rowLength), $"{poison} at row {row}, position {position}, conditional {conditional}");
                    }
                }
            }
        }
    }

    [TestMethod]
    public void Combine_ReportsOverflowToInfinity_AndTheFirstOfSeveralBadRows()
    {
        var prediction = new float[2 * 3 * 8];
        prediction[3 * 8 + 8 + 2] = 3e38f; // conditional row 1: (3e38 − 0)·7.5 overflows to +∞
        prediction[3 * 8 + 16 + 4] = float.NaN; // conditional row 2
        var guided = new float[3 * 8];
        Assert.AreEqual(1, GuidanceMath.Combine(prediction, 7.5f, guided, 3, 8));
        Assert.IsTrue(float.IsPositiveInfinity(guided[8 + 2]));
    }

    [TestMethod]
    public void FirstNonFiniteRow_ChecksValues_NotTheirSum()
    {
        var values = new float[3 * 20];
        Array.Fill(values, 3e38f); // finite values whose sum would overflow: finite
        Assert.AreEqual(-1, GuidanceMath.FirstNonFiniteRow(values, 3, 20));
        values[2 * 20 + 19] = float.NegativeInfinity;
        Assert.AreEqual(2, GuidanceMath.FirstNonFiniteRow(values, 3, 20));
        values[20] = float.NaN;
        Assert.AreEqual(1, GuidanceMath.FirstNonFiniteRow(values, 3, 20));
    }

    [TestMethod]
    public void TheLoopsError_NamesRowStepAndTimestep()
    {
        var values = new float[2 * 10];
        values[15] = float.NaN;
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => LatentDenoiser.CheckFinite(values, 2, 10, firstRow: 40, step: 6, t: 701f));
        StringAssert.Contains(e.Message, "row 41");
        StringAssert.Contains(e.Message, "step 7");
        StringAssert.Contains(e.Message, "timestep 701");
        Assert.ThrowsExactly<ArgumentException>(() => GuidanceMath.Combine(new float[10], 7.5f, new float[4], 1, 4));
    }
}
