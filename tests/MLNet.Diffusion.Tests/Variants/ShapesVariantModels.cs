using System;
using System.Collections.Concurrent;
using System.IO;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Variants;

/// <summary>
/// Shapes model folders of each export variant at 128×128 (a quarter of the default build time), built once per test
/// run on first use into one temporary folder that is deleted at process exit.
/// </summary>
internal static class ShapesVariantModels
{
    /// <summary>Native image size of the variant folders.</summary>
    public const int ImageSize = 128;

    private static readonly Lazy<string> s_root = new(CreateRoot);
    private static readonly ConcurrentDictionary<ShapesVariant, Lazy<string>> s_folders = new();

    /// <summary>The folder of <paramref name="variant"/> (built on first use; thread-safe).</summary>
    public static string Folder(ShapesVariant variant) =>
        s_folders.GetOrAdd(variant, v => new Lazy<string>(() => Build(v))).Value;

    private static string Build(ShapesVariant variant)
    {
        string folder = Path.Combine(s_root.Value, ((int)variant).ToString(System.Globalization.CultureInfo.InvariantCulture));
        ShapesModel.Build(folder, new ShapesModelOptions { ImageSize = ImageSize, Variant = variant });
        return folder;
    }

    private static string CreateRoot()
    {
        string root = Path.Combine(Path.GetTempPath(), "mlnet-shapes-tests-variants-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return root;
    }
}
