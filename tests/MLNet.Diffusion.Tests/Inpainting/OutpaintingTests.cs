using System;
using System.Drawing;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>The outpainting canvas: the size rule, where the original lands, the two fills, the mask and the overlap.</summary>
[TestClass]
public sealed class OutpaintingTests
{
    /// <summary>An image whose every pixel is distinct: RGBA (x, y, x + y, 200).</summary>
    private static MLImage Gradient(int w = 100, int h = 60, bool bgra = false)
    {
        var p = new byte[w * h * 4];
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
            {
                int i = 4 * (y * w + x);
                (p[i], p[i + 1], p[i + 2], p[i + 3]) = ((byte)x, (byte)y, (byte)(x + y), 200);
                if (bgra)
                    (p[i], p[i + 2]) = (p[i + 2], p[i]);
            }
        return MLImage.CreateFromPixels(w, h, bgra ? MLPixelFormat.Bgra32 : MLPixelFormat.Rgba32, p);
    }

    private static (byte R, byte G, byte B, byte A) Pixel(MLImage image, int x, int y)
    {
        var p = image.Pixels;
        int i = 4 * (y * image.Width + x);
        return (p[i], p[i + 1], p[i + 2], p[i + 3]);
    }

    private static (byte, byte, byte, byte) Source(int x, int y) => ((byte)x, (byte)y, (byte)(x + y), 200);

    [TestMethod]
    public void Margins_AreRounded_SoTheImageStartsOnTheGrid_AndTheCanvasIsAMultipleOf8()
    {
        using var image = Gradient();
        using var canvas = Outpainting.Prepare(image, left: 5, top: 0, right: 10, bottom: 3);
        // left 5 → 8, top 0; width 8 + 100 + 10 = 118 → 120 (right 12); height 0 + 60 + 3 = 63 → 64 (bottom 4).
        Assert.AreEqual((8, 0, 12, 4), (canvas.Left, canvas.Top, canvas.Right, canvas.Bottom));
        Assert.AreEqual((120, 64), (canvas.Width, canvas.Height));
        Assert.AreEqual((120, 64), (canvas.Mask.Width, canvas.Mask.Height));
        Assert.AreEqual(MLPixelFormat.Rgba32, canvas.Image.PixelFormat);

        using var four = Outpainting.Prepare(image, 1, 1, 1, 1, new OutpaintOptions { Multiple = 4 });
        Assert.AreEqual((4, 4, 4, 4), (four.Left, four.Top, four.Right, four.Bottom)); // 4 + 100 + 1 = 105 → 108; 4 + 60 + 1 = 65 → 68
    }

    [TestMethod]
    public void TheOriginalIsCopiedExactly_TheBorderRepeatsTheEdge_AndTheMaskIsWhiteExactlyOnTheBorder()
    {
        using var image = Gradient();
        using var canvas = Outpainting.Prepare(image, 16, 8, 16, 8);
        Assert.AreEqual((16, 8, 20, 12), (canvas.Left, canvas.Top, canvas.Right, canvas.Bottom)); // 16 + 100 + 16 = 132 → 136
        for (int y = 0; y < canvas.Height; y++)
        {
            for (int x = 0; x < canvas.Width; x++)
            {
                bool original = x >= 16 && x < 116 && y >= 8 && y < 68;
                var expected = Source(Math.Clamp(x - 16, 0, 99), Math.Clamp(y - 8, 0, 59));
                Assert.AreEqual(expected, Pixel(canvas.Image, x, y), $"image ({x}, {y})");
                byte m = original ? (byte)0 : (byte)255;
                Assert.AreEqual((m, m, m, (byte)255), Pixel(canvas.Mask, x, y), $"mask ({x}, {y})");
            }
        }
    }

    [TestMethod]
    public void AColourFill_PaintsTheWholeBorder_AndBgraInputIsConverted()
    {
        using var image = Gradient(bgra: true);
        var fill = Color.FromArgb(10, 20, 30);
        using var canvas = Outpainting.Prepare(image, 0, 8, 8, 0, new OutpaintOptions { Fill = OutpaintFill.Color, FillColor = fill });
        // Width 0 + 100 + 8 = 108 → 112 (right 12); height 8 + 60 + 0 = 68 → 72: the bottom gains 4 rows although none were asked for.
        Assert.AreEqual((0, 8, 12, 4), (canvas.Left, canvas.Top, canvas.Right, canvas.Bottom));
        Assert.AreEqual(MLPixelFormat.Rgba32, canvas.Image.PixelFormat);
        for (int y = 0; y < canvas.Height; y++)
        {
            for (int x = 0; x < canvas.Width; x++)
            {
                bool original = x < 100 && y >= 8 && y < 68;
                var expected = original ? Source(x, y - 8) : ((byte)10, (byte)20, (byte)30, (byte)255);
                Assert.AreEqual(expected, Pixel(canvas.Image, x, y), $"image ({x}, {y})");
                Assert.AreEqual(original ? (byte)0 : (byte)255, Pixel(canvas.Mask, x, y).R, $"mask ({x}, {y})");
            }
        }
    }

    [TestMethod]
    public void TheOverlap_RepaintsTheOriginalsEdge_OnlyOnPaddedSides()
    {
        using var image = Gradient(96, 64);
        using var canvas = Outpainting.Prepare(image, 8, 0, 0, 16, new OutpaintOptions { Overlap = 4 });
        Assert.AreEqual((104, 80), (canvas.Width, canvas.Height));
        for (int y = 0; y < canvas.Height; y++)
        {
            for (int x = 0; x < canvas.Width; x++)
            {
                // Kept: the original [8, 104) × [0, 64) less 4 columns on the left and 4 rows at the bottom (padded sides).
                bool kept = x >= 12 && x < 104 && y < 60;
                Assert.AreEqual(kept ? (byte)0 : (byte)255, Pixel(canvas.Mask, x, y).G, $"mask ({x}, {y})");
            }
        }
        // The overlap changes only the mask: the original pixels are all still there.
        Assert.AreEqual(Source(0, 63), Pixel(canvas.Image, 8, 63));
    }

    [TestMethod]
    public void BadArguments_AreNamed()
    {
        using var image = Gradient();
        Assert.AreEqual("left", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Outpainting.Prepare(image, -1, 0, 8, 0)).ParamName);
        Assert.AreEqual("bottom", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Outpainting.Prepare(image, 0, 0, 8, -8)).ParamName);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => Outpainting.Prepare(image, 0, 0, 0, 0)).Message, "nothing to outpaint");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Outpainting.Prepare(image, 8, 0, 0, 0, new OutpaintOptions { Overlap = 26 })).Message, "Overlap");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Outpainting.Prepare(image, 8, 0, 0, 0, new OutpaintOptions { Multiple = 0 })).Message, "Multiple");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => Outpainting.Prepare(image, 9000, 0, 0, 0)).Message, "8192");
        Assert.ThrowsExactly<ArgumentNullException>(() => Outpainting.Prepare(null!, 8, 0, 0, 0));
    }
}
