using System;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// The filter taps of one resize axis as Pillow computes them (libImaging/Resample.c, <c>precompute_coeffs</c>, the box
/// being the whole axis): for output index i the centre is (i + ½)·scale, the filter's support widens by the downscale
/// factor, the taps cover source indices <see cref="First"/>[i] … <see cref="First"/>[i] + <see cref="Count"/>[i] − 1,
/// each is <c>filter((x + xmin − center + ½)·(1/filterScale))</c>, and they are normalised to sum 1 in double. The two
/// resamplers turn these doubles into their own precision (<see cref="ImageResampler"/>: float;
/// <see cref="PillowLanczosResampler"/>: Pillow's 8-bit fixed point).
/// </summary>
internal sealed class PillowFilterTaps
{
    private readonly double[] _taps;

    /// <param name="inSize">The source length of the axis.</param>
    /// <param name="outSize">The output length of the axis.</param>
    /// <param name="support">The filter's support at scale 1 (bilinear's triangle: 1; Lanczos-3: 3).</param>
    /// <param name="filter">The filter kernel.</param>
    public PillowFilterTaps(int inSize, int outSize, double support, Func<double, double> filter)
    {
        double scale = (double)inSize / outSize;
        double filterScale = Math.Max(scale, 1.0);
        double widened = support * filterScale;
        double ss = 1.0 / filterScale;
        Stride = (int)Math.Ceiling(widened) * 2 + 1;
        _taps = new double[outSize * Stride];
        First = new int[outSize];
        Count = new int[outSize];
        for (int i = 0; i < outSize; i++)
        {
            double center = (i + 0.5) * scale;
            int min = Math.Max((int)(center - widened + 0.5), 0);
            int count = Math.Min((int)(center + widened + 0.5), inSize) - min;
            var taps = _taps.AsSpan(i * Stride, count);
            double total = 0.0;
            for (int k = 0; k < count; k++)
            {
                taps[k] = filter((k + min - center + 0.5) * ss);
                total += taps[k];
            }
            if (total != 0.0)
            {
                for (int k = 0; k < count; k++)
                    taps[k] /= total;
            }
            First[i] = min;
            Count[i] = count;
        }
    }

    /// <summary>The number of tap slots per output index (the most any index uses).</summary>
    public int Stride { get; }

    /// <summary>The first source index of each output index.</summary>
    public int[] First { get; }

    /// <summary>The number of source indices of each output index.</summary>
    public int[] Count { get; }

    /// <summary>The normalised taps of output index <paramref name="index"/>.</summary>
    public ReadOnlySpan<double> Taps(int index) => _taps.AsSpan(index * Stride, Count[index]);

    /// <summary>Pillow's <c>bilinear_filter</c> (support 1): the triangle 1 − |x| on (−1, 1).</summary>
    public static double Triangle(double x)
    {
        x = Math.Abs(x);
        return x < 1.0 ? 1.0 - x : 0.0;
    }

    /// <summary>Pillow's <c>lanczos_filter</c> (support 3): sinc(x)·sinc(x/3) on [−3, 3), 0 elsewhere.</summary>
    public static double Lanczos3(double x) => x >= -3.0 && x < 3.0 ? Sinc(x) * Sinc(x / 3.0) : 0.0;

    private static double Sinc(double x)
    {
        if (x == 0.0)
            return 1.0;
        x *= Math.PI;
        return Math.Sin(x) / x;
    }
}
