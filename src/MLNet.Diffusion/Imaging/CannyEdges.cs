using System;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// Canny edge detection (Canny 1986) with OpenCV's semantics (<c>cv2.Canny(image, low, high, apertureSize=3,
/// L2gradient)</c>, imgproc/src/canny.cpp), the preprocessor of the Canny ControlNets: per channel a 3×3 Sobel gradient
/// with replicated borders; of a colour image, per pixel the channel of largest magnitude; magnitude |dx| + |dy| (L1) or
/// dx² + dy² against squared thresholds (L2); non-maximum suppression along the gradient direction quantised with
/// tan 22.5° in OpenCV's fixed point (the first neighbour compared with &gt;, the second with ≥ horizontally and
/// vertically, both with &gt; diagonally); then hysteresis: pixels above <c>high</c> are edges, and so is every pixel
/// above <c>low</c> 8-connected to an edge. Edges are 255, the rest 0.
/// </summary>
internal sealed class CannyEdges
{
    // OpenCV: CANNY_SHIFT = 15, TG22 = (int)(0.4142135623730950488016887242097 * (1 << CANNY_SHIFT) + 0.5).
    private const int Shift = 15;
    private const int Tg22 = 13573;
    private int[] _dx = Array.Empty<int>();
    private int[] _dy = Array.Empty<int>();
    private int[] _mag = Array.Empty<int>();
    private byte[] _map = Array.Empty<byte>();
    private int[] _stack = Array.Empty<int>();

    /// <summary>
    /// Finds the edges of an image.
    /// </summary>
    /// <param name="image">The image (RGBA32 or BGRA32; alpha ignored; RGB channels in that order, as OpenCV gets a numpy RGB array).</param>
    /// <param name="low">The low threshold (OpenCV's <c>threshold1</c>).</param>
    /// <param name="high">The high threshold (<c>threshold2</c>); the two are swapped when low &gt; high, as OpenCV does.</param>
    /// <param name="l2Gradient">OpenCV's <c>L2gradient</c>.</param>
    /// <param name="edges">Receives width·height bytes: 255 on edges, 0 elsewhere.</param>
    public void Detect(MLImage image, double low, double high, bool l2Gradient, Span<byte> edges)
    {
        int w = image.Width, h = image.Height, n = w * h;
        if (edges.Length != n)
            throw new ArgumentException($"Expected room for {n} edge values, got {edges.Length}.", nameof(edges));
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        if (!bgra && image.PixelFormat != MLPixelFormat.Rgba32)
            throw new ArgumentException($"Image pixel format {image.PixelFormat} is not supported; expected RGBA32 or BGRA32.", nameof(image));
        var pixels = image.Pixels;
        if (_mag.Length != n)
        {
            _dx = new int[n];
            _dy = new int[n];
            _mag = new int[n];
        }

        // 1. Gradients: Sobel 3×3 per channel (BORDER_REPLICATE), the channel of largest magnitude (the first on ties).
        ReadOnlySpan<int> channels = bgra ? stackalloc int[] { 2, 1, 0 } : stackalloc int[] { 0, 1, 2 };
        for (int y = 0; y < h; y++)
        {
            int ym = Math.Max(y - 1, 0), yp = Math.Min(y + 1, h - 1);
            for (int x = 0; x < w; x++)
            {
                int xm = Math.Max(x - 1, 0), xp = Math.Min(x + 1, w - 1);
                int best = -1, bdx = 0, bdy = 0;
                foreach (int c in channels)
                {
                    int a = pixels[4 * (ym * w + xm) + c], b = pixels[4 * (ym * w + x) + c], d = pixels[4 * (ym * w + xp) + c];
                    int l = pixels[4 * (y * w + xm) + c], r = pixels[4 * (y * w + xp) + c];
                    int e = pixels[4 * (yp * w + xm) + c], f = pixels[4 * (yp * w + x) + c], g = pixels[4 * (yp * w + xp) + c];
                    int dx = d - a + 2 * (r - l) + g - e;
                    int dy = e - a + 2 * (f - b) + g - d;
                    int m = l2Gradient ? dx * dx + dy * dy : Math.Abs(dx) + Math.Abs(dy);
                    if (m > best)
                    {
                        best = m;
                        bdx = dx;
                        bdy = dy;
                    }
                }
                int i = y * w + x;
                _dx[i] = bdx;
                _dy[i] = bdy;
                _mag[i] = best;
            }
        }

        // 2. Thresholds as OpenCV: swapped when low > high; for L2 clamped to 32767 and squared; then floored.
        if (low > high)
            (low, high) = (high, low);
        if (l2Gradient)
        {
            low = Math.Min(32767.0, low);
            high = Math.Min(32767.0, high);
            if (low > 0)
                low *= low;
            if (high > 0)
                high *= high;
        }
        int lo = (int)Math.Floor(low), hi = (int)Math.Floor(high);

        // 3. Non-maximum suppression: 0 = below low or suppressed, 1 = candidate (weak), 2 = edge (strong).
        if (_map.Length != n)
        {
            _map = new byte[n];
            _stack = new int[n];
        }
        int top = 0;
        for (int y = 0; y < h; y++)
        {
            for (int x = 0; x < w; x++)
            {
                int i = y * w + x, m = _mag[i];
                _map[i] = 0;
                if (m <= lo)
                    continue;
                int xs = _dx[i], ys = _dy[i];
                long ax = Math.Abs(xs), ay = (long)Math.Abs(ys) << Shift;
                long tg22x = ax * Tg22;
                bool max;
                if (ay < tg22x)
                {
                    max = m > Mag(x - 1, y, w, h) && m >= Mag(x + 1, y, w, h);
                }
                else
                {
                    long tg67x = tg22x + (ax << (Shift + 1));
                    if (ay > tg67x)
                    {
                        max = m > Mag(x, y - 1, w, h) && m >= Mag(x, y + 1, w, h);
                    }
                    else
                    {
                        int s = (xs ^ ys) < 0 ? -1 : 1;
                        max = m > Mag(x - s, y - 1, w, h) && m > Mag(x + s, y + 1, w, h);
                    }
                }
                if (!max)
                    continue;
                if (m > hi)
                {
                    _map[i] = 2;
                    _stack[top++] = i;
                }
                else
                {
                    _map[i] = 1;
                }
            }
        }

        // 4. Hysteresis: grow the edges through 8-connected candidates.
        while (top > 0)
        {
            int i = _stack[--top], x = i % w, y = i / w;
            for (int yy = Math.Max(y - 1, 0); yy <= Math.Min(y + 1, h - 1); yy++)
            {
                for (int xx = Math.Max(x - 1, 0); xx <= Math.Min(x + 1, w - 1); xx++)
                {
                    int j = yy * w + xx;
                    if (_map[j] == 1)
                    {
                        _map[j] = 2;
                        _stack[top++] = j;
                    }
                }
            }
        }
        for (int i = 0; i < n; i++)
            edges[i] = _map[i] == 2 ? (byte)255 : (byte)0;
    }

    /// <summary>A magnitude, 0 outside the image (OpenCV's zero-padded magnitude rows).</summary>
    private int Mag(int x, int y, int w, int h) => (uint)x < (uint)w && (uint)y < (uint)h ? _mag[y * w + x] : 0;
}
