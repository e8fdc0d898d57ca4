using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>A prompt, a seed, a 128×128 image and its mask (white = repaint).</summary>
public sealed class InpaintRow128
{
    public string Prompt { get; set; } = string.Empty;

    public int Seed { get; set; }

    [ImageType(128, 128)]
    public MLImage? Image { get; set; }

    [ImageType(128, 128)]
    public MLImage? Mask { get; set; }
}

/// <summary>Masks and images for the inpainting tests.</summary>
internal static class InpaintingImages
{
    /// <summary>A size×size RGBA mask, white inside the square [lo, hi)² and black elsewhere.</summary>
    public static MLImage Box(int size, int lo, int hi) => Rectangle(size, size, lo, lo, hi, hi);

    /// <summary>A width×height RGBA mask, white inside [x0, x1) × [y0, y1).</summary>
    public static MLImage Rectangle(int width, int height, int x0, int y0, int x1, int y1)
    {
        var p = new byte[width * height * 4];
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++)
            {
                byte v = x >= x0 && x < x1 && y >= y0 && y < y1 ? (byte)255 : (byte)0;
                int i = 4 * (y * width + x);
                (p[i], p[i + 1], p[i + 2], p[i + 3]) = (v, v, v, 255);
            }
        return MLImage.CreateFromPixels(width, height, MLPixelFormat.Rgba32, p);
    }

    /// <summary>"A red circle in the center on a blue background" at 128 px with the box [32, 96)² masked: the box holds any centred shape (the triangle spans about 33…95).</summary>
    public static InpaintRow128 RedCircleRow(string prompt, int seed) => new()
    {
        Prompt = prompt,
        Seed = seed,
        Image = ShapesImages.Render(RedCircle, 128),
        Mask = Box(128, 32, 96),
    };

    public static ShapesItem RedCircle => ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Center);
}

/// <summary>A prompt, a seed, a 256×256 image (the Shapes model's native size) and its mask (white = repaint).</summary>
public sealed class InpaintRow256
{
    public string Prompt { get; set; } = string.Empty;

    public int Seed { get; set; }

    [ImageType(256, 256)]
    public MLImage? Image { get; set; }

    [ImageType(256, 256)]
    public MLImage? Mask { get; set; }
}
