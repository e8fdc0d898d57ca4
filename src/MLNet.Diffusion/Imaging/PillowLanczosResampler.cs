using System;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// Pillow's <c>Image.resize(size, Image.LANCZOS)</c> on 8-bit planes, bit for bit (libImaging/Resample.c of Pillow 9–11:
/// <c>precompute_coeffs</c>, <c>normalize_coeffs_8bpc</c>, <c>ImagingResampleHorizontal_8bpc</c> then
/// <c>ImagingResampleVertical_8bpc</c>): the Lanczos-3 kernel <c>sinc(x)·sinc(x/3)</c> on [−3, 3), its support widened by
/// the downscale factor, taps normalised to sum 1 in double, then turned into fixed-point integers with 22 fractional
/// bits (rounded half away from zero); each pass sums integer products from ½ in that precision and clips to 0…255
/// (<c>clip8</c>), so the horizontal pass's result is an 8-bit image, as Pillow's intermediate image. It is the resize
/// diffusers' <c>VaeImageProcessor</c> does by default (<c>resample="lanczos"</c>), the ControlNet pipelines' control
/// image processor included. A pass whose size does not change is skipped, as Pillow skips it.
/// </summary>
internal sealed class PillowLanczosResampler
{
    /// <summary>Pillow's <c>PRECISION_BITS</c> for 8-bit images: 32 − 8 − 2.</summary>
    private const int PrecisionBits = 32 - 8 - 2;

    /// <summary>Pillow's LANCZOS filter support (a = 3).</summary>
    private const double Support = 3.0;

    private readonly Axis? _horizontal;
    private readonly Axis? _vertical;
    private byte[] _rows = Array.Empty<byte>();

    public PillowLanczosResampler(int sourceWidth, int sourceHeight, int width, int height)
    {
        if (sourceWidth < 1 || sourceHeight < 1 || width < 1 || height < 1)
            throw new ArgumentOutOfRangeException(nameof(sourceWidth), $"Cannot resize {sourceWidth}×{sourceHeight} to {width}×{height}.");
        SourceWidth = sourceWidth;
        SourceHeight = sourceHeight;
        Width = width;
        Height = height;
        _horizontal = sourceWidth == width ? null : new Axis(sourceWidth, width);
        _vertical = sourceHeight == height ? null : new Axis(sourceHeight, height);
    }

    public int SourceWidth { get; }

    public int SourceHeight { get; }

    public int Width { get; }

    public int Height { get; }

    /// <summary>Resizes <paramref name="channels"/> planes of SourceHeight×SourceWidth bytes into planes of Height×Width bytes.</summary>
    public void Resize(ReadOnlySpan<byte> source, Span<byte> destination, int channels)
    {
        int sourcePlane = SourceWidth * SourceHeight, plane = Width * Height;
        if (source.Length != channels * sourcePlane)
            throw new ArgumentException($"Expected {channels}×{SourceHeight}×{SourceWidth} values, got {source.Length}.", nameof(source));
        if (destination.Length != channels * plane)
            throw new ArgumentException($"Expected room for {channels}×{Height}×{Width} values, got {destination.Length}.", nameof(destination));
        if (_rows.Length != SourceHeight * Width)
            _rows = new byte[SourceHeight * Width];
        for (int c = 0; c < channels; c++)
        {
            var src = source.Slice(c * sourcePlane, sourcePlane);
            var dst = destination.Slice(c * plane, plane);
            // 1. Horizontal pass (Pillow: first, into an 8-bit image SourceHeight × Width).
            Span<byte> rows = _rows;
            if (_horizontal is { } h)
            {
                for (int y = 0; y < SourceHeight; y++)
                {
                    var inRow = src.Slice(y * SourceWidth, SourceWidth);
                    var outRow = rows.Slice(y * Width, Width);
                    for (int x = 0; x < Width; x++)
                    {
                        var k = h.Taps(x);
                        int first = h.First[x];
                        int ss = 1 << (PrecisionBits - 1);
                        for (int i = 0; i < k.Length; i++)
                            ss += inRow[first + i] * k[i];
                        outRow[x] = Clip8(ss);
                    }
                }
            }
            else
            {
                src.CopyTo(rows);
            }

            // 2. Vertical pass over the intermediate image.
            if (_vertical is { } v)
            {
                for (int y = 0; y < Height; y++)
                {
                    var k = v.Taps(y);
                    int first = v.First[y];
                    var outRow = dst.Slice(y * Width, Width);
                    for (int x = 0; x < Width; x++)
                    {
                        int ss = 1 << (PrecisionBits - 1);
                        for (int i = 0; i < k.Length; i++)
                            ss += rows[(first + i) * Width + x] * k[i];
                        outRow[x] = Clip8(ss);
                    }
                }
            }
            else
            {
                rows.Slice(0, plane).CopyTo(dst);
            }
        }
    }

    /// <summary>Pillow's <c>clip8</c>: the sum's integer part, clipped to 0…255.</summary>
    private static byte Clip8(int value)
    {
        if (value >= 1 << PrecisionBits << 8)
            return 255;
        if (value <= 0)
            return 0;
        return (byte)(value >> PrecisionBits);
    }

    /// <summary>One axis's fixed-point taps (<see cref="PillowFilterTaps"/> with Lanczos-3, then <c>normalize_coeffs_8bpc</c>).</summary>
    private sealed class Axis
    {
        private readonly int[] _taps;
        private readonly int _stride;

        public Axis(int inSize, int outSize)
        {
            var taps = new PillowFilterTaps(inSize, outSize, Support, PillowFilterTaps.Lanczos3);
            _stride = taps.Stride;
            _taps = new int[outSize * _stride];
            for (int xx = 0; xx < outSize; xx++)
            {
                var k = taps.Taps(xx);
                // normalize_coeffs_8bpc: (int)(±0.5 + k·2^22), C's truncation toward zero.
                for (int x = 0; x < k.Length; x++)
                    _taps[xx * _stride + x] = k[x] < 0 ? (int)(-0.5 + k[x] * (1 << PrecisionBits)) : (int)(0.5 + k[x] * (1 << PrecisionBits));
            }
            First = taps.First;
            Count = taps.Count;
        }

        public int[] First { get; }

        public int[] Count { get; }

        public ReadOnlySpan<int> Taps(int index) => _taps.AsSpan(index * _stride, Count[index]);
    }
}
