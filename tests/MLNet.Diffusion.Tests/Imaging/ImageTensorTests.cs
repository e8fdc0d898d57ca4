using System;
using System.Linq;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Tests.Randomness;

namespace MLNet.Diffusion.Tests.Imaging;

/// <summary>
/// <see cref="ImageTensor.ToRgba"/> is vectorised; every pixel must equal diffusers' postprocess done one value at a time:
/// (x·0.5 + 0.5) clamped to [0, 1], ·255, rounded half to even (diffusers' postprocess), NaN → 0, alpha 255, on vector bodies
/// and scalar tails alike; and byte-equal to diffusers' own postprocess run with PyTorch and NumPy (Fixtures/Imaging).
/// </summary>
[TestClass]
public sealed class ImageTensorTests
{
    /// <summary>The reference: the scalar formula, written out independently of the library.</summary>
    private static byte Reference(float v)
    {
        float x = v * 0.5f;
        x += 0.5f;
        if (float.IsNaN(x) || x <= 0f)
            return 0;
        if (x >= 1f)
            return 255;
        return (byte)Math.Round(x * 255f, MidpointRounding.ToEven);
    }

    private static readonly float[] s_edges =
    {
        -1f, 1f, 0f, -0f, -1.5f, 1.5f, -1.0000001f, 1.0000001f, 0.99999994f, -0.99999994f, float.NaN, float.PositiveInfinity,
        float.NegativeInfinity, float.MaxValue, float.MinValue, float.Epsilon, -float.Epsilon,
        // Values whose byte value lands on or next to a rounding boundary k + 0.5.
        (0.5f - 127.5f) / 127.5f, (1.5f - 127.5f) / 127.5f, (127.5f - 127.5f) / 127.5f, (254.5f - 127.5f) / 127.5f,
        MathF.BitDecrement((254.5f - 127.5f) / 127.5f), MathF.BitIncrement((254.5f - 127.5f) / 127.5f),
        MathF.BitDecrement((0.5f - 127.5f) / 127.5f), MathF.BitIncrement((0.5f - 127.5f) / 127.5f),
        (254.99f - 127.5f) / 127.5f, (0.01f - 127.5f) / 127.5f, 2f, -2f, 1e-20f, -1e-20f,
    };

    [TestMethod]
    public void ToRgba_EqualsTheScalarFormula_OnEdgeValues_AndRandomValues_AtEverySize()
    {
        var random = new Random(11);
        // Widths that leave every tail length of 8- and 16-lane vectors, and sizes below one vector.
        foreach (var (width, height) in new[] { (1, 1), (3, 1), (7, 1), (5, 3), (9, 2), (16, 1), (17, 3), (33, 5), (64, 64) })
        {
            int plane = width * height;
            var chw = new float[3 * plane];
            for (int i = 0; i < chw.Length; i++)
                chw[i] = i % 3 == 0 ? s_edges[(i / 3 + width) % s_edges.Length] : (float)(random.NextDouble() * 2.6 - 1.3);
            var rgba = new byte[4 * plane];
            ImageTensor.ToRgba(chw, width, height, rgba);
            for (int p = 0; p < plane; p++)
            {
                for (int c = 0; c < 3; c++)
                    Assert.AreEqual(Reference(chw[c * plane + p]), rgba[4 * p + c], $"{width}×{height}: pixel {p} channel {c} from {chw[c * plane + p]:R}");
                Assert.AreEqual(255, rgba[4 * p + 3], $"{width}×{height}: pixel {p} alpha");
            }
        }
    }

    [TestMethod]
    public void ToRgba_IsByteEqualToDiffusersPostprocess_OnRoundingBoundaries_AtEveryTailLength()
    {
        // Fixtures/Imaging/make_postprocess.py: diffusers' denormalize → pt_to_numpy → numpy_to_pil run with PyTorch and
        // NumPy on values next to every k + 0.5 and k; hundreds of them are exact halves, where rounding half up is wrong.
        using var doc = NoiseFixtures.Load("../Imaging/diffusers_postprocess.json");
        var values = NoiseFixtures.Floats(doc.RootElement.GetProperty("bits"));
        var expected = doc.RootElement.GetProperty("bytes").EnumerateArray().Select(e => e.GetByte()).ToArray();
        Assert.IsTrue(doc.RootElement.GetProperty("exact_halves").GetInt32() > 500);
        // Widths 1..17 put every value both in vector bodies and in every scalar tail position.
        for (int width = 1; width <= 17; width++)
        {
            for (int start = 0; start < values.Length; start += width)
            {
                int w = Math.Min(width, values.Length - start);
                var chw = new float[3 * w];
                for (int c = 0; c < 3; c++)
                    values.AsSpan(start, w).CopyTo(chw.AsSpan(c * w));
                var rgba = new byte[4 * w];
                ImageTensor.ToRgba(chw, w, 1, rgba);
                for (int p = 0; p < w; p++)
                    for (int c = 0; c < 3; c++)
                        Assert.AreEqual(expected[start + p], rgba[4 * p + c], $"width {width}: value {values[start + p]:R} (bits {BitConverter.SingleToUInt32Bits(values[start + p]):X8}) channel {c}");
            }
        }
    }

    [TestMethod]
    public void ToImage_HoldsTheRgbaBytes_AndLaterImagesDoNotChangeEarlierOnes()
    {
        // ToImage converts into a pooled scratch that MLImage copies: two images made one after the other stay distinct.
        var first = new float[3 * 4 * 2];
        var second = new float[3 * 4 * 2];
        for (int i = 0; i < first.Length; i++)
        {
            first[i] = -1f + i / 12f;
            second[i] = 1f - i / 12f;
        }
        using var a = ImageTensor.ToImage(first, 4, 2);
        using var b = ImageTensor.ToImage(second, 4, 2);
        var expectedA = new byte[32];
        var expectedB = new byte[32];
        ImageTensor.ToRgba(first, 4, 2, expectedA);
        ImageTensor.ToRgba(second, 4, 2, expectedB);
        Assert.AreEqual(MLPixelFormat.Rgba32, a.PixelFormat);
        CollectionAssert.AreEqual(expectedA, a.Pixels.ToArray());
        CollectionAssert.AreEqual(expectedB, b.Pixels.ToArray());
    }

    [TestMethod]
    public void ToRgba_WrongLengths_NameTheExpectedSizes()
    {
        var e = Assert.ThrowsExactly<ArgumentException>(() => ImageTensor.ToRgba(new float[10], 2, 2, new byte[16]));
        StringAssert.Contains(e.Message, "12");
        e = Assert.ThrowsExactly<ArgumentException>(() => ImageTensor.ToRgba(new float[12], 2, 2, new byte[15]));
        StringAssert.Contains(e.Message, "16");
    }
}
