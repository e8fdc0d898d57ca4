using System;
using System.Buffers.Binary;
using System.Drawing;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Imaging;

/// <summary>What the new border of an outpainting canvas starts as (<see cref="OutpaintOptions.Fill"/>).</summary>
public enum OutpaintFill
{
    /// <summary>Each new pixel repeats the nearest pixel of the image's edge (edge replication, numpy's <c>mode="edge"</c>).</summary>
    Edge,

    /// <summary>Every new pixel is <see cref="OutpaintOptions.FillColor"/>.</summary>
    Color,
}

/// <summary>Settings of <see cref="Outpainting.Prepare"/>.</summary>
public sealed class OutpaintOptions
{
    /// <summary>
    /// How the new border is filled; default <see cref="OutpaintFill.Edge"/>. The fill is what image-to-image starts from
    /// in the border (it matters when <see cref="DenoiseLatentsOptions"/>' strength is below 1); an inpainting UNet never sees it,
    /// because the masked image is gray wherever the mask repaints.
    /// </summary>
    public OutpaintFill Fill { get; init; } = OutpaintFill.Edge;

    /// <summary>The colour of the new border with <see cref="OutpaintFill.Color"/> (alpha is ignored); default mid gray (128, 128, 128).</summary>
    public Color FillColor { get; init; } = Color.FromArgb(128, 128, 128);

    /// <summary>
    /// Pixels of the original image, along each side that gains a border, that the mask also marks for repainting, so the
    /// new content can blend into the old; default 0 (the original image is kept entirely). At most a quarter of the
    /// image's width (left and right) or height (top and bottom).
    /// </summary>
    public int Overlap { get; init; }

    /// <summary>The canvas size and the image's offset are multiples of this (the VAE's spatial factor); default 8.</summary>
    public int Multiple { get; init; } = 8;
}

/// <summary>
/// An outpainting canvas from <see cref="Outpainting.Prepare"/>: the padded image and its mask (white = repaint), the
/// same size, and the margins actually added. Dispose it to release both images.
/// </summary>
public sealed class OutpaintCanvas : IDisposable
{
    internal OutpaintCanvas(MLImage image, MLImage mask, int left, int top, int right, int bottom)
    {
        Image = image;
        Mask = mask;
        Left = left;
        Top = top;
        Right = right;
        Bottom = bottom;
    }

    /// <summary>The padded image (RGBA32): the original at (<see cref="Left"/>, <see cref="Top"/>), the border filled as the options say.</summary>
    public MLImage Image { get; }

    /// <summary>The mask (RGBA32, same size): white (255) where the picture is to be painted, black (0) where it is kept.</summary>
    public MLImage Mask { get; }

    /// <summary>Columns added on the left (the requested margin rounded up to the multiple).</summary>
    public int Left { get; }

    /// <summary>Rows added at the top (the requested margin rounded up to the multiple).</summary>
    public int Top { get; }

    /// <summary>Columns added on the right (at least the requested margin; more to make the width a multiple).</summary>
    public int Right { get; }

    /// <summary>Rows added at the bottom (at least the requested margin; more to make the height a multiple).</summary>
    public int Bottom { get; }

    /// <summary>The canvas width.</summary>
    public int Width => Image.Width;

    /// <summary>The canvas height.</summary>
    public int Height => Image.Height;

    /// <summary>Releases both images.</summary>
    public void Dispose()
    {
        Image.Dispose();
        Mask.Dispose();
    }
}

/// <summary>
/// Outpainting: extending a picture beyond its borders is inpainting on a larger canvas. <see cref="Prepare"/> pads the
/// image and builds the mask that marks the new border for repainting; the canvas then goes through the inpainting
/// stages (<c>PrepareInpainting</c>, <c>DenoiseLatents</c> with a mask) like any image and mask.
/// </summary>
public static class Outpainting
{
    /// <summary>Largest canvas side, in pixels (as <see cref="DenoiseLatentsOptions"/> accepts).</summary>
    public const int MaxCanvasSize = 8192;

    /// <summary>
    /// Pads <paramref name="image"/> by the given margins and builds the outpainting mask. Sizes follow one rule, so the
    /// original image starts on the latent grid and the canvas fits the VAE: the left and top margins are rounded up
    /// to multiples of <see cref="OutpaintOptions.Multiple"/>; the right and bottom margins are rounded up so that the
    /// canvas width and height are multiples too (so they grow further when the image's own size is not a multiple).
    /// </summary>
    /// <param name="image">The picture to extend (RGBA32 or BGRA32).</param>
    /// <param name="left">Columns to add on the left (≥ 0).</param>
    /// <param name="top">Rows to add at the top (≥ 0).</param>
    /// <param name="right">Columns to add on the right (≥ 0).</param>
    /// <param name="bottom">Rows to add at the bottom (≥ 0).</param>
    /// <param name="options">Fill, overlap and multiple; defaults when null.</param>
    /// <returns>The canvas; the caller disposes it.</returns>
    /// <exception cref="ArgumentOutOfRangeException">A margin is negative, the canvas would exceed <see cref="MaxCanvasSize"/>, or an option is out of range.</exception>
    /// <exception cref="ArgumentException">All margins are 0, or the image's pixel format is not RGBA32/BGRA32.</exception>
    public static OutpaintCanvas Prepare(MLImage image, int left, int top, int right, int bottom, OutpaintOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        options ??= new OutpaintOptions();
        ArgumentOutOfRangeException.ThrowIfNegative(left);
        ArgumentOutOfRangeException.ThrowIfNegative(top);
        ArgumentOutOfRangeException.ThrowIfNegative(right);
        ArgumentOutOfRangeException.ThrowIfNegative(bottom);
        if (left == 0 && top == 0 && right == 0 && bottom == 0)
            throw new ArgumentException("At least one margin (left, top, right, bottom) must be positive: there is nothing to outpaint.", nameof(left));
        int multiple = options.Multiple;
        if (multiple < 1 || multiple > 64)
            throw new ArgumentOutOfRangeException(nameof(options), multiple, "OutpaintOptions.Multiple must be in [1, 64].");
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        if (!bgra && image.PixelFormat != MLPixelFormat.Rgba32)
            throw new ArgumentException($"Image pixel format {image.PixelFormat} is not supported; expected RGBA32 or BGRA32.", nameof(image));
        int w = image.Width, h = image.Height;
        if (options.Overlap < 0 || options.Overlap > w / 4 && (left > 0 || right > 0) || options.Overlap > h / 4 && (top > 0 || bottom > 0))
            throw new ArgumentOutOfRangeException(nameof(options), options.Overlap, $"OutpaintOptions.Overlap must be in [0, a quarter of the image's side]; the image is {w}×{h}.");

        // The size rule: left/top up to a multiple; right/bottom up so that the canvas is a multiple.
        long l = RoundUp(left, multiple), t = RoundUp(top, multiple);
        long canvasWidth = RoundUp(l + w + right, multiple), canvasHeight = RoundUp(t + h + bottom, multiple);
        if (canvasWidth > MaxCanvasSize || canvasHeight > MaxCanvasSize)
            throw new ArgumentOutOfRangeException(nameof(image), $"The canvas would be {canvasWidth}×{canvasHeight} pixels; at most {MaxCanvasSize}×{MaxCanvasSize}.");
        int cw = (int)canvasWidth, ch = (int)canvasHeight, x0 = (int)l, y0 = (int)t;
        int r = cw - x0 - w, b = ch - y0 - h;

        var pixels = new byte[cw * ch * 4];
        var source = image.Pixels;
        uint fill = Rgba(options.FillColor.R, options.FillColor.G, options.FillColor.B);
        for (int y = 0; y < ch; y++)
        {
            var row = pixels.AsSpan(y * cw * 4, cw * 4);
            int sy = Math.Clamp(y - y0, 0, h - 1);
            bool inside = y >= y0 && y < y0 + h;
            var src = source.Slice(sy * w * 4, w * 4);
            if (inside || options.Fill == OutpaintFill.Edge)
            {
                CopyRow(src, row.Slice(x0 * 4, w * 4), bgra);
                if (options.Fill == OutpaintFill.Edge)
                {
                    FillPixels(row.Slice(0, x0 * 4), ReadRgba(src, 0, bgra));
                    FillPixels(row.Slice((x0 + w) * 4), ReadRgba(src, w - 1, bgra));
                    continue;
                }
                FillPixels(row.Slice(0, x0 * 4), fill);
                FillPixels(row.Slice((x0 + w) * 4), fill);
            }
            else
            {
                FillPixels(row, fill);
            }
        }

        // The mask: white everywhere but the kept part of the original (shrunk by the overlap on the padded sides).
        var mask = new byte[cw * ch * 4];
        FillPixels(mask, Rgba(255, 255, 255));
        int o = options.Overlap;
        int keepLeft = x0 + (x0 > 0 ? o : 0), keepRight = x0 + w - (r > 0 ? o : 0);
        int keepTop = y0 + (y0 > 0 ? o : 0), keepBottom = y0 + h - (b > 0 ? o : 0);
        uint black = Rgba(0, 0, 0);
        for (int y = keepTop; y < keepBottom; y++)
            FillPixels(mask.AsSpan((y * cw + keepLeft) * 4, (keepRight - keepLeft) * 4), black);

        return new OutpaintCanvas(
            MLImage.CreateFromPixels(cw, ch, MLPixelFormat.Rgba32, pixels),
            MLImage.CreateFromPixels(cw, ch, MLPixelFormat.Rgba32, mask),
            x0, y0, r, b);
    }

    private static long RoundUp(long value, int multiple) => (value + multiple - 1) / multiple * multiple;

    /// <summary>An RGBA32 pixel as the 4 bytes R, G, B, A in memory order.</summary>
    private static uint Rgba(byte red, byte green, byte blue, byte alpha = 255) =>
        BinaryPrimitives.ReadUInt32LittleEndian(stackalloc byte[] { red, green, blue, alpha });

    /// <summary>Pixel <paramref name="x"/> of an RGBA32 or BGRA32 row as RGBA32.</summary>
    private static uint ReadRgba(ReadOnlySpan<byte> row, int x, bool bgra) =>
        bgra ? Rgba(row[4 * x + 2], row[4 * x + 1], row[4 * x], row[4 * x + 3]) : BinaryPrimitives.ReadUInt32LittleEndian(row.Slice(4 * x, 4));

    private static void FillPixels(Span<byte> destination, uint rgba) =>
        System.Runtime.InteropServices.MemoryMarshal.Cast<byte, uint>(destination).Fill(BitConverter.IsLittleEndian ? rgba : BinaryPrimitives.ReverseEndianness(rgba));

    private static void CopyRow(ReadOnlySpan<byte> source, Span<byte> destination, bool bgra)
    {
        source.CopyTo(destination);
        if (!bgra)
            return;
        for (int i = 0; i < destination.Length; i += 4)
            (destination[i], destination[i + 2]) = (destination[i + 2], destination[i]);
    }
}
