using System;
using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// Conversions between the VAE's planar tensors (CHW, RGB in [−1, 1]) and <see cref="MLImage"/> (RGBA32). ML.NET's
/// ConvertToImage is not used for VAE output: with scale/offset and no alpha it writes alpha 0 and does not clamp.
/// </summary>
public static class ImageTensor
{
    /// <summary>
    /// Creates an RGBA image from a planar [3, height, width] tensor in [−1, 1], alpha 255, with diffusers' float32 arithmetic
    /// (<c>VaeImageProcessor.postprocess</c>): (x·0.5 + 0.5) clamped to [0, 1], times 255, rounded half to even (NumPy's
    /// <c>round</c>); NaN gives 0. Equal latents decode to the same bytes as diffusers'.
    /// </summary>
    /// <param name="chw">The planar tensor, 3·height·width values.</param>
    /// <param name="width">Image width.</param>
    /// <param name="height">Image height.</param>
    /// <returns>A new image; the caller owns it.</returns>
    public static MLImage ToImage(ReadOnlySpan<float> chw, int width, int height)
    {
        // MLImage copies the pixels into its own bitmap, so the RGBA bytes are a pooled scratch (a 512×512 image's
        // 1 MiB would otherwise be a large-object-heap allocation per image).
        int bytes = checked(width * height * 4);
        byte[] rgba = ArrayPool<byte>.Shared.Rent(bytes);
        try
        {
            ToRgba(chw, width, height, rgba.AsSpan(0, bytes));
            return MLImage.CreateFromPixels(width, height, MLPixelFormat.Rgba32, rgba.AsSpan(0, bytes));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rgba);
        }
    }

    /// <summary>Writes RGBA bytes for a planar [3, height, width] tensor in [−1, 1].</summary>
    /// <param name="chw">The planar tensor.</param>
    /// <param name="width">Image width.</param>
    /// <param name="height">Image height.</param>
    /// <param name="rgba">Receives width·height·4 bytes.</param>
    public static void ToRgba(ReadOnlySpan<float> chw, int width, int height, Span<byte> rgba)
    {
        int plane = width * height;
        if (chw.Length != 3 * plane)
            throw new ArgumentException($"Expected 3×{height}×{width} = {3 * plane} values, got {chw.Length}.", nameof(chw));
        if (rgba.Length != 4 * plane)
            throw new ArgumentException($"Expected {4 * plane} bytes, got {rgba.Length}.", nameof(rgba));
        var r = chw.Slice(0, plane);
        var g = chw.Slice(plane, plane);
        var b = chw.Slice(2 * plane, plane);
        // One RGBA pixel is one little-endian uint: R | G << 8 | B << 16 | 255 << 24. Vectorised over Vector<float>.Count
        // pixels with the scalar ToByte's exact arithmetic (each operation rounded on its own: no fused multiply-add).
        var pixels = MemoryMarshal.Cast<byte, uint>(rgba);
        int i = 0;
        if (Vector.IsHardwareAccelerated && BitConverter.IsLittleEndian)
        {
            int n = Vector<float>.Count;
            var alpha = new Vector<uint>(0xFF000000u);
            for (; i <= plane - n; i += n)
            {
                var v = ToBytes(new Vector<float>(r.Slice(i, n)))
                    | Vector.ShiftLeft(ToBytes(new Vector<float>(g.Slice(i, n))), 8)
                    | Vector.ShiftLeft(ToBytes(new Vector<float>(b.Slice(i, n))), 16)
                    | alpha;
                v.CopyTo(pixels.Slice(i, n));
            }
        }
        for (; i < plane; i++)
        {
            rgba[4 * i] = ToByte(r[i]);
            rgba[4 * i + 1] = ToByte(g[i]);
            rgba[4 * i + 2] = ToByte(b[i]);
            rgba[4 * i + 3] = 255;
        }
    }

    /// <summary>The vector form of <see cref="ToByte"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector<uint> ToBytes(Vector<float> v)
    {
        var x = v * new Vector<float>(0.5f);
        x += new Vector<float>(0.5f);
        x = Vector.ConditionalSelect(Vector.GreaterThan(x, Vector<float>.Zero), x, Vector<float>.Zero); // NaN compares false → 0
        x = Vector.Min(x, Vector<float>.One) * new Vector<float>(255f);
        // Round half to even: for 0 ≤ x < 2²³, adding and subtracting 2²³ rounds x to an integer in the default rounding
        // mode (to nearest, ties to even); the integer-valued result then converts exactly.
        x = x + new Vector<float>(RoundingShift) - new Vector<float>(RoundingShift);
        return Vector.AsVectorUInt32(Vector.ConvertToInt32(x));
    }

    private const float RoundingShift = 8388608f; // 2²³

    /// <summary>
    /// Writes a planar [3, height, width] tensor in [−1, 1] from an image (the VAE encoder's input convention:
    /// x / 127.5 − 1). The image must be exactly <paramref name="width"/>×<paramref name="height"/>.
    /// </summary>
    /// <param name="image">The image (RGBA32 or BGRA32).</param>
    /// <param name="width">Expected width.</param>
    /// <param name="height">Expected height.</param>
    /// <param name="chw">Receives 3·height·width values.</param>
    public static void FromImage(MLImage image, int width, int height, Span<float> chw)
    {
        ArgumentNullException.ThrowIfNull(image);
        if (image.Width != width || image.Height != height)
            throw new ArgumentException($"Image is {image.Width}×{image.Height}; expected {width}×{height}.", nameof(image));
        ReadPlanes(image, chw);
    }

    /// <summary>
    /// Writes an image of any size as a planar [3, image.Height, image.Width] tensor in [−1, 1] (alpha is ignored, as
    /// PIL's <c>convert("RGB")</c> drops it).
    /// </summary>
    internal static void ReadPlanes(MLImage image, Span<float> chw)
    {
        int plane = image.Width * image.Height;
        if (chw.Length != 3 * plane)
            throw new ArgumentException($"Expected {3 * plane} values, got {chw.Length}.", nameof(chw));
        var pixels = image.Pixels;
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        if (!bgra && image.PixelFormat != MLPixelFormat.Rgba32)
            throw new ArgumentException($"Image pixel format {image.PixelFormat} is not supported; expected RGBA32 or BGRA32.", nameof(image));
        if (pixels.Length != 4 * plane)
            throw new ArgumentException($"Image has {pixels.Length} bytes of pixels; expected {4 * plane} for {image.Width}×{image.Height} RGBA32.", nameof(image));
        int ri = bgra ? 2 : 0, bi = bgra ? 0 : 2;
        for (int i = 0; i < plane; i++)
        {
            chw[i] = pixels[4 * i + ri] / 127.5f - 1f;
            chw[plane + i] = pixels[4 * i + 1] / 127.5f - 1f;
            chw[2 * plane + i] = pixels[4 * i + bi] / 127.5f - 1f;
        }
    }

    /// <summary>
    /// diffusers' <c>denormalize</c> then <c>numpy_to_pil</c> on one float32 value: (v·0.5 + 0.5).clamp(0, 1), ·255,
    /// <c>round()</c> (half to even); NaN → 0.
    /// </summary>
    private static byte ToByte(float v)
    {
        float x = v * 0.5f;
        x += 0.5f;
        if (!(x > 0f))
            return 0;
        x = MathF.Min(x, 1f) * 255f;
        return (byte)MathF.Round(x, MidpointRounding.ToEven);
    }
}
