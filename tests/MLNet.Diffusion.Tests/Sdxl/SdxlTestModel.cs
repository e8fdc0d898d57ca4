using System;
using System.IO;
using Microsoft.ML;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Sdxl;

/// <summary>
/// The SDXL-shaped Shapes folders (<see cref="ShapesVariant.Sdxl"/> and <see cref="ShapesVariant.SdxlRefiner"/>, default
/// options otherwise), each built once per test run into a temporary folder deleted at process exit, and helpers to copy
/// them for tests that break a file.
/// </summary>
internal static class SdxlTestModel
{
    private static readonly Lazy<string> s_base = new(() => Build(ShapesVariant.Sdxl));
    private static readonly Lazy<string> s_refiner = new(() => Build(ShapesVariant.SdxlRefiner));

    /// <summary>The SDXL base-shaped folder.</summary>
    public static string Folder => s_base.Value;

    /// <summary>The SDXL refiner-shaped folder.</summary>
    public static string RefinerFolder => s_refiner.Value;

    public static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(seed: 1), Folder);

    public static StableDiffusionModel LoadRefiner() => StableDiffusionModel.Load(new MLContext(seed: 1), RefinerFolder);

    /// <summary>A copy of <paramref name="source"/> in a new temporary folder (the caller deletes it).</summary>
    public static string Copy(string source)
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-sdxl-copy-" + Guid.NewGuid().ToString("N")[..8]);
        foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(dir, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        return dir;
    }

    private static string Build(ShapesVariant variant)
    {
        string folder = Path.Combine(Path.GetTempPath(), $"mlnet-shapes-tests-{variant.ToString().ToLowerInvariant()}-" + Guid.NewGuid().ToString("N")[..8]);
        ShapesModel.Build(folder, new ShapesModelOptions { Variant = variant });
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return folder;
    }
}
