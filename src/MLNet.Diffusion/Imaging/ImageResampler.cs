using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// Resizes planar float images (CHW) from one fixed size to another with Pillow's <c>Image.resize(…, BILINEAR)</c>
/// filter (libImaging/Resample.c, <c>precompute_coeffs</c>): a separable convolution with the triangle kernel whose
/// support widens by the downscale factor, so shrinking averages every source pixel (no aliasing) and enlarging
/// interpolates bilinearly. Unlike Pillow it stays in float between the two passes (no 8-bit rounding). The
/// coefficients are computed once per size pair; the vertical pass runs on whole rows with <see cref="TensorPrimitives"/>.
/// </summary>
internal sealed class ImageResampler
{
    private readonly Axis _horizontal;
    private readonly Axis _vertical;
    private float[] _rows = Array.Empty<float>();

    public ImageResampler(int sourceWidth, int sourceHeight, int width, int height)
    {
        if (sourceWidth < 1 || sourceHeight < 1 || width < 1 || height < 1)
            throw new ArgumentOutOfRangeException(nameof(sourceWidth), $"Cannot resize {sourceWidth}×{sourceHeight} to {width}×{height}.");
        SourceWidth = sourceWidth;
        SourceHeight = sourceHeight;
        Width = width;
        Height = height;
        _horizontal = new Axis(sourceWidth, width);
        _vertical = new Axis(sourceHeight, height);
    }

    public int SourceWidth { get; }

    public int SourceHeight { get; }

    public int Width { get; }

    public int Height { get; }

    /// <summary>Resizes <paramref name="channels"/> planes of <see cref="SourceHeight"/>×<see cref="SourceWidth"/> into planes of <see cref="Height"/>×<see cref="Width"/>.</summary>
    public void Resize(ReadOnlySpan<float> source, Span<float> destination, int channels)
    {
        int sourcePlane = SourceWidth * SourceHeight, plane = Width * Height;
        if (source.Length != channels * sourcePlane)
            throw new ArgumentException($"Expected {channels}×{SourceHeight}×{SourceWidth} values, got {source.Length}.", nameof(source));
        if (destination.Length != channels * plane)
            throw new ArgumentException($"Expected room for {channels}×{Height}×{Width} values, got {destination.Length}.", nameof(destination));
        if (_rows.Length != SourceHeight * Width)
            _rows = new float[SourceHeight * Width];
        for (int c = 0; c < channels; c++)
        {
            var src = source.Slice(c * sourcePlane, sourcePlane);
            var dst = destination.Slice(c * plane, plane);

            // 1. Horizontal pass: every source row to the new width.
            for (int y = 0; y < SourceHeight; y++)
            {
                var inRow = src.Slice(y * SourceWidth, SourceWidth);
                var outRow = _rows.AsSpan(y * Width, Width);
                for (int x = 0; x < Width; x++)
                {
                    int first = _horizontal.First[x], count = _horizontal.Count[x];
                    outRow[x] = TensorPrimitives.Dot(inRow.Slice(first, count), _horizontal.Weights(x, count));
                }
            }

            // 2. Vertical pass: each output row is a weighted sum of whole intermediate rows.
            for (int y = 0; y < Height; y++)
            {
                int first = _vertical.First[y], count = _vertical.Count[y];
                var weights = _vertical.Weights(y, count);
                var outRow = dst.Slice(y * Width, Width);
                TensorPrimitives.Multiply(_rows.AsSpan(first * Width, Width), weights[0], outRow);
                for (int k = 1; k < count; k++)
                    TensorPrimitives.MultiplyAdd(_rows.AsSpan((first + k) * Width, Width), weights[k], outRow, outRow);
            }
        }
    }

    /// <summary>The normalised filter taps of one axis in float: for output index i, source indices First[i] … First[i] + Count[i] − 1.</summary>
    private sealed class Axis
    {
        private readonly float[] _weights;
        private readonly int _stride;

        public Axis(int inSize, int outSize)
        {
            var taps = new PillowFilterTaps(inSize, outSize, support: 1.0, PillowFilterTaps.Triangle);
            _stride = taps.Stride;
            _weights = new float[outSize * _stride];
            for (int i = 0; i < outSize; i++)
            {
                var t = taps.Taps(i);
                for (int k = 0; k < t.Length; k++)
                    _weights[i * _stride + k] = (float)t[k];
            }
            First = taps.First;
            Count = taps.Count;
        }

        public int[] First { get; }

        public int[] Count { get; }

        public ReadOnlySpan<float> Weights(int index, int count) => _weights.AsSpan(index * _stride, count);
    }
}
