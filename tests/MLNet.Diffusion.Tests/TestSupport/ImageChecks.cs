using System;
using Microsoft.ML.Data;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.TestSupport;

/// <summary>Reads what a generated Shapes image shows (the mean colour inside and outside a shape's region) and compares results.</summary>
internal static class ImageChecks
{
    /// <summary>‖actual − expected‖₂ / ‖expected‖₂, accumulated in double.</summary>
    public static double RelativeL2(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length != expected.Length)
            throw new ArgumentException($"Lengths differ: {actual.Length} and {expected.Length}.", nameof(actual));
        double err = 0, norm = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double d = (double)actual[i] - expected[i];
            err += d * d;
            norm += (double)expected[i] * expected[i];
        }
        return Math.Sqrt(err / norm);
    }

    /// <summary>Mean RGB of the pixels well inside (<c>inside</c>) and well outside the shape at a position, eroded by <paramref name="margin"/> pixels.</summary>
    public static (double[] Inside, double[] Outside) RegionMeans(MLImage image, ShapeKind shape, ShapePosition position, int margin)
    {
        if (image.Width != image.Height)
            throw new ArgumentException("Shapes images are square.");
        int n = image.Width;
        byte[] coverage = ShapesDataset.Coverage(shape, position, n);
        var pixels = image.Pixels;
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        var inside = new double[3];
        var outside = new double[3];
        int ni = 0, no = 0;
        for (int y = 0; y < n; y++)
        {
            for (int x = 0; x < n; x++)
            {
                bool allIn = true, allOut = true;
                for (int dy = -margin; dy <= margin; dy += Math.Max(1, margin))
                {
                    for (int dx = -margin; dx <= margin; dx += Math.Max(1, margin))
                    {
                        int xx = Math.Clamp(x + dx, 0, n - 1), yy = Math.Clamp(y + dy, 0, n - 1);
                        byte c = coverage[yy * n + xx];
                        allIn &= c == 16;
                        allOut &= c == 0;
                    }
                }
                if (!allIn && !allOut)
                    continue;
                int p = 4 * (y * n + x);
                double r = pixels[p + (bgra ? 2 : 0)], g = pixels[p + 1], b = pixels[p + (bgra ? 0 : 2)];
                var target = allIn ? inside : outside;
                target[0] += r;
                target[1] += g;
                target[2] += b;
                if (allIn)
                    ni++;
                else
                    no++;
            }
        }
        for (int c = 0; c < 3; c++)
        {
            inside[c] /= Math.Max(1, ni);
            outside[c] /= Math.Max(1, no);
        }
        return (inside, outside);
    }

    public static ShapeColor NearestShapeColor(double[] rgb)
    {
        ShapeColor best = default;
        double bestD = double.MaxValue;
        foreach (ShapeColor c in Enum.GetValues<ShapeColor>())
        {
            double d = Distance(rgb, ShapesDataset.GetRgb(c));
            if (d < bestD)
                (best, bestD) = (c, d);
        }
        return best;
    }

    public static BackgroundColor NearestBackground(double[] rgb)
    {
        BackgroundColor best = default;
        double bestD = double.MaxValue;
        foreach (BackgroundColor c in Enum.GetValues<BackgroundColor>())
        {
            double d = Distance(rgb, ShapesDataset.GetRgb(c));
            if (d < bestD)
                (best, bestD) = (c, d);
        }
        return best;
    }

    public static double Distance(double[] rgb, Rgb p) =>
        Math.Sqrt(Math.Pow(rgb[0] - p.R, 2) + Math.Pow(rgb[1] - p.G, 2) + Math.Pow(rgb[2] - p.B, 2));
}
