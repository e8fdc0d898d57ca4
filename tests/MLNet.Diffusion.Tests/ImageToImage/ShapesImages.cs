using System;
using System.IO;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.ImageToImage;

/// <summary>Shapes model variants built once per test run (deleted at process exit).</summary>
internal static class ShapesVariantModels
{
    private static readonly Lazy<string> s_latentParameters = new(() => Build(ShapesVariant.LatentParameters));

    /// <summary>A folder whose vae_encoder outputs latent_parameters (mean ‖ log-variance).</summary>
    public static string LatentParameters => s_latentParameters.Value;

    private static string Build(ShapesVariant variant)
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-shapes-variant-" + Guid.NewGuid().ToString("N")[..8]);
        ShapesModel.Build(dir, new ShapesModelOptions { Variant = variant });
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return dir;
    }
}

/// <summary>Shapes items as <see cref="MLImage"/>s, and rows that carry them (ML.NET types an image member by its declared size).</summary>
internal static class ShapesImages
{
    public static MLImage Render(ShapesItem item, int size)
    {
        byte[] rgb = ShapesDataset.RenderRgb(item, size);
        var rgba = new byte[size * size * 4];
        for (int p = 0; p < size * size; p++)
        {
            rgba[4 * p] = rgb[3 * p];
            rgba[4 * p + 1] = rgb[3 * p + 1];
            rgba[4 * p + 2] = rgb[3 * p + 2];
            rgba[4 * p + 3] = 255;
        }
        return MLImage.CreateFromPixels(size, size, MLPixelFormat.Rgba32, rgba);
    }

    /// <summary>Mean absolute difference of the RGB values of two images of the same size, in 0–255 units.</summary>
    public static double MeanAbsoluteDifference(MLImage a, MLImage b)
    {
        if (a.Width != b.Width || a.Height != b.Height)
            throw new ArgumentException($"Sizes differ: {a.Width}×{a.Height} and {b.Width}×{b.Height}.");
        var pa = a.Pixels;
        var pb = b.Pixels;
        bool ba = a.PixelFormat == MLPixelFormat.Bgra32, bb = b.PixelFormat == MLPixelFormat.Bgra32;
        double sum = 0;
        int n = a.Width * a.Height;
        for (int i = 0; i < n; i++)
        {
            sum += Math.Abs(pa[4 * i + (ba ? 2 : 0)] - pb[4 * i + (bb ? 2 : 0)]);
            sum += Math.Abs(pa[4 * i + 1] - pb[4 * i + 1]);
            sum += Math.Abs(pa[4 * i + (ba ? 0 : 2)] - pb[4 * i + (bb ? 0 : 2)]);
        }
        return sum / (3.0 * n);
    }
}

/// <summary>A prompt, a seed and a 64×64 image.</summary>
public sealed class ImageRow64
{
    public string Prompt { get; set; } = string.Empty;

    public int Seed { get; set; }

    [ImageType(64, 64)]
    public MLImage? Image { get; set; }
}

/// <summary>A prompt, a seed and a 128×128 image.</summary>
public sealed class ImageRow128
{
    public string Prompt { get; set; } = string.Empty;

    public int Seed { get; set; }

    [ImageType(128, 128)]
    public MLImage? Image { get; set; }
}

/// <summary>A prompt, a seed and a 256×256 image (the Shapes model's native size).</summary>
public sealed class ImageRow256
{
    public string Prompt { get; set; } = string.Empty;

    public int Seed { get; set; }

    [ImageType(256, 256)]
    public MLImage? Image { get; set; }
}
