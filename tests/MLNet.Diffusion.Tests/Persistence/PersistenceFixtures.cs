using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Tests.Inpainting;
using MLNet.Diffusion.Tests.Sdxl;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Persistence;

/// <summary>
/// The pipelines behind the committed persistence fixtures (Persistence/Fixtures/README.md): each one's model folder,
/// input rows, fitted stages and output columns. <see cref="PersistenceFixtureGenerator"/> saves them with the code of the
/// day; <see cref="PersistenceFixtureTests"/> loads the saved files with today's code and compares the outputs.
/// Never change a scenario's pipeline or rows without regenerating its files: the files pin what an old version saved.
/// </summary>
internal static class PersistenceFixtures
{
    private const int Size = 64;

    /// <summary>Every scenario; together they cover each kind of stage and most of the version-1 contract names.</summary>
    public static readonly FixtureScenario[] All =
    {
        new("text-to-image", () => ShapesTestModel.Folder, ml => ml.Data.LoadFromEnumerable(PromptRows()), (m, d) => TextToImage(m, d, seedColumn: true), "Image", "Embeddings", "Latents"),
        new("text-to-image-unseeded", () => ShapesTestModel.Folder, ml => ml.Data.LoadFromEnumerable(PromptRows()), (m, d) => TextToImage(m, d, seedColumn: false), "Image", "Embeddings", "Latents"),
        new("image-to-image", () => ShapesVariantModels.LatentParameters, ml => ml.Data.LoadFromEnumerable(ImageRows()), ImageToImage, "Output", "InitialLatents", "Latents", "Noisy", "Noise"),
        new("inpainting", () => InpaintingTestModel.Folder, ml => ml.Data.LoadFromEnumerable(InpaintRows()), Inpainting, "Output", "InitialLatents", "LatentMask", "MaskedImageLatents", "Latents"),
        new("sdxl", () => SdxlTestModel.Folder, ml => ml.Data.LoadFromEnumerable(SdxlPromptRows()), (m, d) => TextToImage(m, d, seedColumn: true), "Image", "Embeddings", "Latents"),
        new("sdxl-image-to-image", () => SdxlTestModel.Folder, ml => ml.Data.LoadFromEnumerable(SdxlImageRows()), SdxlImageToImage, "Image", "Latents"),
    };

    /// <summary>The folder of the committed files, next to this source file (the tests run from the source tree).</summary>
    public static string Directory([CallerFilePath] string source = "") => Path.Combine(Path.GetDirectoryName(source)!, "Fixtures");

    public sealed class PromptRow
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    public sealed class ImageRow
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        public int T { get; set; }

        [ImageType(Size, Size)]
        public MLImage? Image { get; set; }
    }

    public sealed class InpaintRow
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        [ImageType(Size, Size)]
        public MLImage? Image { get; set; }

        [ImageType(Size, Size)]
        public MLImage? Mask { get; set; }
    }

    public sealed class SdxlImageRow
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        /// <summary>Initial latents [4, 8, 8] for 64×64 pixels.</summary>
        [VectorType(4, 8, 8)]
        public float[] Init { get; set; } = Array.Empty<float>();
    }

    private static PromptRow[] PromptRows() => new PromptRow[]
    {
        new() { Prompt = "a red circle on a blue background", NegativePrompt = "", Seed = 3 },
        new() { Prompt = "a yellow triangle", NegativePrompt = "green", Seed = 11 },
    };

    /// <summary>
    /// SDXL rows have non-empty negative prompts: how SDXL treats an empty one (zeros or encoded) is a behaviour that may
    /// change (issue 13), and these files pin persistence, not that rule.
    /// </summary>
    private static PromptRow[] SdxlPromptRows() => new PromptRow[]
    {
        new() { Prompt = "a red circle on a blue background", NegativePrompt = "blurry", Seed = 3 },
        new() { Prompt = "a yellow triangle", NegativePrompt = "green", Seed = 11 },
    };

    private static ImageRow[] ImageRows() => new[]
    {
        new ImageRow { Prompt = "a blue circle", Seed = 3, T = 100, Image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.White, ShapePosition.Center), Size) },
        new ImageRow { Prompt = "a green square", Seed = 9, T = 700, Image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Yellow, BackgroundColor.Black, ShapePosition.Left), Size) },
    };

    private static InpaintRow[] InpaintRows() => new[]
    {
        new InpaintRow { Prompt = "a green circle", Seed = 3, Image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Center), Size), Mask = InpaintingImages.Box(Size, 16, 48) },
        new InpaintRow { Prompt = "a yellow square", Seed = 9, Image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Purple, BackgroundColor.White, ShapePosition.Left), Size), Mask = InpaintingImages.Rectangle(Size, Size, 0, 8, 32, 56) },
    };

    private static SdxlImageRow[] SdxlImageRows()
    {
        // Fixed values, not a generator's: the rows must be the same in every version of the library.
        var init = new float[4 * 8 * 8];
        for (int i = 0; i < init.Length; i++)
            init[i] = MathF.Sin(0.37f * i) * 0.8f;
        return new SdxlImageRow[]
        {
            new() { Prompt = "a red circle on a blue background", NegativePrompt = "blurry", Seed = 3, Init = init },
            new() { Prompt = "a yellow triangle", NegativePrompt = "green", Seed = 11, Init = Array.ConvertAll(init, v => -v) },
        };
    }

    /// <summary>EncodePrompt (with negatives) → DenoiseLatents (4 DDIM steps) → DecodeLatents.</summary>
    private static ITransformer TextToImage(StableDiffusionModel model, IDataView data, bool seedColumn) =>
        model.MLContext.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(model.MLContext.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Steps = 4,
                Width = Size,
                Height = Size,
                GuidanceScale = 4f,
                SeedColumnName = seedColumn ? "Seed" : null,
                BatchSize = 2,
            }))
            .Append(model.MLContext.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data);

    /// <summary>EncodeImage without a seed column, DenoiseLatents from initial latents (euler-a), AddDiffusionNoise with seed, timestep and noise columns.</summary>
    private static ITransformer ImageToImage(StableDiffusionModel model, IDataView data)
    {
        var ml = model.MLContext;
        return ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.EncodeImage(model, "InitialLatents", "Image", new EncodeImageOptions { Width = Size, Height = Size, BatchSize = 2 }))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Width = Size,
                Height = Size,
                Steps = 4,
                Scheduler = "euler-a",
                SeedColumnName = "Seed",
                InitialLatentsColumnName = "InitialLatents",
                Strength = 0.7f,
                BatchSize = 2,
            }))
            .Append(ml.Transforms.DecodeLatents(model, "Output", "Latents"))
            .Append(ml.Transforms.AddDiffusionNoise(model, "Noisy", "InitialLatents", new AddDiffusionNoiseOptions { TimestepColumnName = "T", SeedColumnName = "Seed", NoiseOutputColumnName = "Noise" }))
            .Fit(data);
    }

    /// <summary>EncodeImage and PrepareInpainting with a seed column, DenoiseLatents with a mask and masked-image latents and without a seed column.</summary>
    private static ITransformer Inpainting(StableDiffusionModel model, IDataView data)
    {
        var ml = model.MLContext;
        return ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.EncodeImage(model, "InitialLatents", "Image", new EncodeImageOptions { Width = Size, Height = Size, SeedColumnName = "Seed" }))
            .Append(ml.Transforms.PrepareInpainting(model, new PrepareInpaintingOptions
            {
                Width = Size,
                Height = Size,
                SeedColumnName = "Seed",
                MaskDownsampling = MLNet.Diffusion.Imaging.MaskDownsampling.Any,
                BatchSize = 2,
            }))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Width = Size,
                Height = Size,
                Steps = 4,
                InitialLatentsColumnName = "InitialLatents",
                Strength = 0.9f,
                MaskColumnName = "LatentMask",
                MaskedImageLatentsColumnName = "MaskedImageLatents",
                BatchSize = 2,
            }))
            .Append(ml.Transforms.DecodeLatents(model, "Output", "Latents"))
            .Fit(data);
    }

    /// <summary>SDXL image-to-image without a seed column and with time-ids options.</summary>
    private static ITransformer SdxlImageToImage(StableDiffusionModel model, IDataView data) =>
        model.MLContext.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(model.MLContext.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Steps = 4,
                Width = Size,
                Height = Size,
                InitialLatentsColumnName = "Init",
                Strength = 0.5f,
                OriginalWidth = 1024,
                OriginalHeight = 768,
                CropTop = 16,
                BatchSize = 2,
            }))
            .Append(model.MLContext.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data);
}

/// <summary>One saved pipeline of the fixtures.</summary>
/// <param name="Name">The files' base name.</param>
/// <param name="Folder">Builds (once per test run) and returns the model folder.</param>
/// <param name="Input">The input rows in a context.</param>
/// <param name="Fit">Builds and fits the pipeline.</param>
/// <param name="ImageColumn">The decoded image column.</param>
/// <param name="VectorColumns">The float-vector outputs that are compared.</param>
internal sealed record FixtureScenario(string Name, Func<string> Folder, Func<MLContext, IDataView> Input, Func<StableDiffusionModel, IDataView, ITransformer> Fit,
    string ImageColumn, params string[] VectorColumns)
{
    /// <summary>The ML.NET zip saved with <c>mlContext.Model.Save</c>.</summary>
    public string ZipPath => Path.Combine(PersistenceFixtures.Directory(), Name + ".zip");

    /// <summary>The <see cref="DiffusionPipelineDefinition"/> JSON.</summary>
    public string DefinitionPath => Path.Combine(PersistenceFixtures.Directory(), Name + ".json");

    /// <summary>The outputs the pipeline gave when it was saved.</summary>
    public string ExpectedPath => Path.Combine(PersistenceFixtures.Directory(), Name + ".expected.json");

    /// <summary>The outputs read from <paramref name="view"/> (one cursor over all of them), as digests.</summary>
    public ExpectedOutputs Read(IDataView view) => ExpectedOutputs.From(PersistenceRoundTrip.Read(view, ImageColumn, VectorColumns));

    public override string ToString() => Name;
}

/// <summary>
/// A pipeline's outputs as SHA-256 digests of their exact bytes (little-endian floats, RGBA/BGRA pixel bytes), with
/// each vector's length and first values to make a failure readable. Equal digests mean bit-identical outputs.
/// </summary>
internal sealed record ExpectedOutputs(string[] Columns, ExpectedRow[] Rows)
{
    private static readonly JsonSerializerOptions s_json = new() { WriteIndented = true };

    public static ExpectedOutputs From(PipelineOutputs outputs) => new(outputs.VectorColumns, outputs.Rows.Select(r => new ExpectedRow(
        r.Vectors.Select(v => new ExpectedVector(v.Length, Digest(MemoryMarshal.AsBytes(v.AsSpan())), v.Take(4).ToArray())).ToArray(),
        r.Width, r.Height, Digest(r.Pixels))).ToArray());

    public static ExpectedOutputs Load(string path) => JsonSerializer.Deserialize<ExpectedOutputs>(File.ReadAllText(path), s_json)
        ?? throw new InvalidDataException($"{path} holds no expected outputs.");

    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, s_json) + "\n");

    /// <summary>A line per difference from <paramref name="actual"/>; empty when bit-identical.</summary>
    public IReadOnlyList<string> Differences(ExpectedOutputs actual)
    {
        var d = new List<string>();
        if (!Columns.SequenceEqual(actual.Columns))
            d.Add($"columns {string.Join(",", Columns)} vs {string.Join(",", actual.Columns)}");
        if (Rows.Length != actual.Rows.Length)
            d.Add($"{Rows.Length} rows vs {actual.Rows.Length}");
        for (int r = 0; r < Math.Min(Rows.Length, actual.Rows.Length); r++)
        {
            for (int c = 0; c < Math.Min(Columns.Length, actual.Columns.Length); c++)
            {
                var (e, a) = (Rows[r].Vectors[c], actual.Rows[r].Vectors[c]);
                if (e.Length != a.Length || e.Sha256 != a.Sha256)
                    d.Add($"row {r}, {Columns[c]}: {e.Length} values [{string.Join(", ", e.Head)}, …] expected, {a.Length} values [{string.Join(", ", a.Head)}, …] read");
            }
            var (x, y) = (Rows[r], actual.Rows[r]);
            if ((x.Width, x.Height, x.PixelsSha256) != (y.Width, y.Height, y.PixelsSha256))
                d.Add($"row {r}, image: {x.Width}×{x.Height} {x.PixelsSha256[..12]} expected, {y.Width}×{y.Height} {y.PixelsSha256[..12]} read");
        }
        return d;
    }

    private static string Digest(ReadOnlySpan<byte> bytes) => Convert.ToHexString(SHA256.HashData(bytes));
}

/// <summary>One row of <see cref="ExpectedOutputs"/>.</summary>
internal sealed record ExpectedRow(ExpectedVector[] Vectors, int Width, int Height, string PixelsSha256);

/// <summary>One vector of <see cref="ExpectedOutputs"/>.</summary>
internal sealed record ExpectedVector(int Length, string Sha256, float[] Head);
