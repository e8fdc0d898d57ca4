using System;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;

namespace MLNet.Diffusion.Tests.ImageToImage;

/// <summary>
/// The resize EncodeImage uses: Pillow's BILINEAR filter (libImaging/Resample.c, precompute_coeffs: triangle kernel,
/// support × the downscale factor, centre (i + 0.5)·scale, taps normalised). Expected weights are worked out by hand
/// from that algorithm in each test.
/// </summary>
[TestClass]
public sealed class ImageResamplerTests
{
    private static float[] Resize(float[] source, int sourceWidth, int sourceHeight, int width, int height, int channels = 1)
    {
        var destination = new float[channels * width * height];
        new ImageResampler(sourceWidth, sourceHeight, width, height).Resize(source, destination, channels);
        return destination;
    }

    [TestMethod]
    public void HalvingARowWeighsFourPixelsAsPillowDoes()
    {
        // 4 → 2, scale 2, support 2. Output 0: centre 1, taps x = 0, 1, 2 at distances 0.5, 0.5, 1.5 (/2) → 0.75, 0.75, 0.25 → (3a + 3b + c)/7.
        // Output 1: centre 3, taps x = 1, 2, 3 at distances 1.5, 0.5, 0.5 (/2) → (b + 3c + 3d)/7 (x = 4 is outside).
        float a = 1, b = 2, c = 4, d = 8;
        var result = Resize(new[] { a, b, c, d }, 4, 1, 2, 1);
        Assert.AreEqual((3 * a + 3 * b + c) / 7, result[0], 1e-6f);
        Assert.AreEqual((b + 3 * c + 3 * d) / 7, result[1], 1e-6f);
    }

    [TestMethod]
    public void DoublingAColumnInterpolatesBilinearly()
    {
        // 2 → 4, scale 0.5, support 1: centres 0.25, 0.75, 1.25, 1.75 → a, ¾a + ¼b, ¼a + ¾b, b (edges clamp by renormalising).
        float a = 10, b = 30;
        var result = Resize(new[] { a, b }, 1, 2, 1, 4);
        CollectionAssert.AreEqual(new[] { a, 0.75f * a + 0.25f * b, 0.25f * a + 0.75f * b, b }, result);
    }

    [TestMethod]
    public void TheSameSizeIsTheIdentityAndAConstantStaysConstant()
    {
        var random = new Random(3);
        var source = Enumerable.Range(0, 3 * 7 * 5).Select(_ => (float)random.NextDouble()).ToArray();
        CollectionAssert.AreEqual(source, Resize(source, 7, 5, 7, 5, channels: 3));

        // Normalised taps: any size to any size keeps a constant image constant, per channel.
        var constant = Enumerable.Repeat(0.25f, 13 * 11).Concat(Enumerable.Repeat(-0.5f, 13 * 11)).ToArray();
        var resized = Resize(constant, 13, 11, 8, 24, channels: 2);
        Assert.IsTrue(resized.Take(8 * 24).All(v => Math.Abs(v - 0.25f) < 1e-6f));
        Assert.IsTrue(resized.Skip(8 * 24).All(v => Math.Abs(v + 0.5f) < 1e-6f));
    }

    [TestMethod]
    public void AWholeRowShrinksToItsMean()
    {
        // Shrinking 64 → 1 averages every pixel with triangle weights symmetric about the centre: a left-right
        // gradient (symmetric about the centre) shrinks to its mean.
        var row = Enumerable.Range(0, 64).Select(x => (float)x).ToArray();
        Assert.AreEqual(31.5f, Resize(row, 64, 1, 1, 1)[0], 1e-4f);
    }

    [TestMethod]
    public void WrongLengthsAreNamed()
    {
        var resampler = new ImageResampler(4, 4, 2, 2);
        Assert.ThrowsExactly<ArgumentException>(() => resampler.Resize(new float[15], new float[4], 1));
        Assert.ThrowsExactly<ArgumentException>(() => resampler.Resize(new float[16], new float[5], 1));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new ImageResampler(0, 4, 2, 2));
    }
}
