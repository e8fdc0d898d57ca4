using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.ControlNet;

/// <summary>
/// The Shapes ControlNet variant (<see cref="ShapesVariant.ControlNet"/>) through the library's whole ControlNet path:
/// PrepareControlImage on an <see cref="MLImage"/> silhouette, the folder's own ControlNet graph producing the residuals,
/// the UNet taking them as inputs. The silhouette decides where and which shape is drawn; the prompt decides the colours.
/// </summary>
[TestClass]
public sealed class ShapesControlNetTests
{
    private const int Size = 128;
    private static readonly Lazy<string> s_folder = new(() => Build(ShapesVariant.ControlNet));
    private static readonly Lazy<string> s_sdxlFolder = new(() => Build(ShapesVariant.ControlNet | ShapesVariant.Sdxl));

    internal static string Folder => s_folder.Value;

    internal sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        [Microsoft.ML.Transforms.Image.ImageType(Size, Size)]
        public MLImage? Silhouette { get; set; }
    }

    internal static string Build(ShapesVariant variant)
    {
        string folder = Path.Combine(Path.GetTempPath(), $"mlnet-shapes-tests-cn{(int)variant}-" + Guid.NewGuid().ToString("N")[..8]);
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

    /// <summary>A white-on-black silhouette as an RGBA <see cref="MLImage"/> (what a user's PNG loads as).</summary>
    internal static MLImage Silhouette(ShapeKind shape, ShapePosition position, int size = Size)
    {
        byte[] rgb = ShapesModel.RenderSilhouette(shape, position, size);
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

    internal static IDataView Generate(StableDiffusionModel model, Row[] rows, DenoiseLatentsOptions options)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.PrepareControlImage(model, new PrepareControlImageOptions { ImageColumnName = "Silhouette", Width = options.Width, Height = options.Height })
            .Append(ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt"))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"));
        return pipeline.Fit(data).Transform(data);
    }

    internal static DenoiseLatentsOptions Options(float? scale, int steps = 20) => new()
    {
        Width = Size,
        Height = Size,
        Steps = steps,
        SeedColumnName = "Seed",
        ControlNets = scale is float s ? new[] { new ControlNetUnit { ImageColumnName = "ControlImage", Scale = s } } : null,
    };

    [TestMethod]
    public void TheFolderHasAControlNetInDiffusersNamingWithSd15sResidualLayout()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), Folder);
        Assert.IsTrue(model.Info.HasControlNet);
        Assert.AreEqual(Path.GetFullPath(Path.Combine(Folder, "controlnet", "model.onnx")), model.ControlNet!.Path);
        var residuals = model.Info.ControlNetResiduals;
        // SD 1.x's UNet2DConditionModel layout (4 blocks, layers_per_block 2): 12 down residuals + mid, downscales
        // 1,1,1 | 2,2,2 | 4,4,4 | 8,8,8 and mid 8 (diffusers: conv_in, per block its resnets and downsampler).
        Assert.AreEqual(13, residuals.Count);
        CollectionAssert.AreEqual(new[] { 1, 1, 1, 2, 2, 2, 4, 4, 4, 8, 8, 8, 8 }, residuals.Select(r => r.Downscale).ToArray());
        Assert.IsTrue(residuals.All(r => r.Channels == 2));
        Assert.AreEqual("mid_block_additional_residual", residuals[^1].Name);
    }

    [TestMethod]
    public void TheSilhouetteDecidesShapeAndPlaceAndThePromptTheColours()
    {
        // The prompts name colours only; the silhouettes name the shape and where it is.
        var cases = new[]
        {
            (Prompt: "a red shape on a blue background", Shape: ShapeKind.Square, Position: ShapePosition.Left, Color: ShapeColor.Red, Background: BackgroundColor.Blue),
            (Prompt: "a yellow shape on a white background", Shape: ShapeKind.Circle, Position: ShapePosition.Right, Color: ShapeColor.Yellow, Background: BackgroundColor.White),
            (Prompt: "a green shape on a black background", Shape: ShapeKind.Triangle, Position: ShapePosition.Center, Color: ShapeColor.Green, Background: BackgroundColor.Black),
            // The silhouette outweighs a shape word that disagrees with it (control strength γ against the prompt's λ).
            (Prompt: "a purple circle on a green background", Shape: ShapeKind.Square, Position: ShapePosition.Center, Color: ShapeColor.Purple, Background: BackgroundColor.Green),
        };
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), Folder);
        var rows = cases.Select((c, i) => new Row { Prompt = c.Prompt, Seed = 11 + i, Silhouette = Silhouette(c.Shape, c.Position) }).ToArray();
        var images = Generate(model, rows, Options(1f)).GetColumn<MLImage>("Image").ToArray();
        for (int i = 0; i < cases.Length; i++)
        {
            var c = cases[i];
            var (inside, outside) = ImageChecks.RegionMeans(images[i], c.Shape, c.Position, margin: 3);
            Assert.AreEqual(c.Color, ImageChecks.NearestShapeColor(inside), $"'{c.Prompt}' with a {c.Shape} silhouette on the {c.Position}: shape colour");
            Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(c.Color)) < 40,
                $"'{c.Prompt}': the {c.Shape} is not where the silhouette puts it (inside mean {string.Join(",", inside.Select(v => (int)v))})");
            Assert.IsTrue(ImageChecks.Distance(outside, ShapesDataset.GetRgb(c.Background)) < 40,
                $"'{c.Prompt}': outside the {c.Shape} silhouette the picture is not the {c.Background} background (mean {string.Join(",", outside.Select(v => (int)v))})");
        }
    }

    [TestMethod]
    public void ScaleZeroEqualsNoControlNetAndThePlainShapesModel()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), Folder);
        using var plain = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var rows = new[]
        {
            new Row { Prompt = "a blue triangle on the left on a white background", Seed = 3, Silhouette = Silhouette(ShapeKind.Circle, ShapePosition.Right) },
            new Row { Prompt = "an orange circle", Seed = 4, Silhouette = Silhouette(ShapeKind.Square, ShapePosition.Center) },
        };
        float[][] Latents(StableDiffusionModel m, float? scale) => Generate(m, rows, Options(scale, steps: 8))
            .GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
        var zero = Latents(model, 0f);
        var none = Latents(model, null);
        var reference = Latents(plain, null);
        var one = Latents(model, 1f);
        for (int r = 0; r < rows.Length; r++)
        {
            CollectionAssert.AreEqual(none[r], zero[r], $"row {r}: scale 0 must equal no ControlNet bit for bit");
            // The residual UNet adds a control term that is exactly 0 for zero residuals: the plain UNet's logits.
            Assert.IsTrue(ImageChecks.RelativeL2(zero[r], reference[r]) < 1e-5, $"row {r}: scale 0 vs the plain Shapes model, relative L2 {ImageChecks.RelativeL2(zero[r], reference[r])}");
            Assert.IsTrue(ImageChecks.RelativeL2(one[r], zero[r]) > 0.1, $"row {r}: the silhouette (which disagrees with the prompt) must change the picture");
        }
    }

    [TestMethod]
    public void SdxlTheControlNetTakesTheAddedConditionsAndGivesSdxlsResidualCount()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), s_sdxlFolder.Value);
        Assert.AreEqual(ModelKind.StableDiffusionXL, model.Info.Kind);
        Assert.IsTrue(model.Info.HasControlNet);
        // SDXL's UNet layout (3 blocks, layers_per_block 2): 9 down residuals + mid (diffusers' SDXL ControlNets give 10).
        CollectionAssert.AreEqual(new[] { 1, 1, 1, 2, 2, 2, 4, 4, 4, 4 }, model.Info.ControlNetResiduals.Select(r => r.Downscale).ToArray());

        // The SDXL ControlNet's residuals are gated by time_ids (as its UNet gates the prompt): the silhouette steers the
        // picture only when the stage feeds the ControlNet the rows' text_embeds and time_ids as diffusers'
        // StableDiffusionXLControlNetPipeline does (added_cond_kwargs).
        var cases = new[]
        {
            (Prompt: "a red shape on a blue background", Shape: ShapeKind.Square, Position: ShapePosition.Left, Color: ShapeColor.Red, Background: BackgroundColor.Blue),
            (Prompt: "a yellow shape on a black background", Shape: ShapeKind.Triangle, Position: ShapePosition.Right, Color: ShapeColor.Yellow, Background: BackgroundColor.Black),
        };
        var rows = cases.Select((c, i) => new Row { Prompt = c.Prompt, Seed = 21 + i, Silhouette = Silhouette(c.Shape, c.Position) }).ToArray();
        var images = Generate(model, rows, Options(1f)).GetColumn<MLImage>("Image").ToArray();
        for (int i = 0; i < cases.Length; i++)
        {
            var c = cases[i];
            var (inside, outside) = ImageChecks.RegionMeans(images[i], c.Shape, c.Position, margin: 3);
            Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(c.Color)) < 40,
                $"SDXL '{c.Prompt}': no {c.Color} {c.Shape} where the silhouette puts it (inside mean {string.Join(",", inside.Select(v => (int)v))})");
            Assert.IsTrue(ImageChecks.Distance(outside, ShapesDataset.GetRgb(c.Background)) < 40,
                $"SDXL '{c.Prompt}': outside the silhouette the picture is not the {c.Background} background (mean {string.Join(",", outside.Select(v => (int)v))})");
        }

        // Scale 0 is no ControlNet, bit for bit, and the plain SDXL Shapes model up to float rounding.
        using var plain = StableDiffusionModel.Load(new MLContext(seed: 1), Sdxl.SdxlTestModel.Folder);
        float[][] Latents(StableDiffusionModel m, float? scale) => Generate(m, rows, Options(scale, steps: 8))
            .GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
        var zero = Latents(model, 0f);
        var none = Latents(model, null);
        var reference = Latents(plain, null);
        for (int r = 0; r < rows.Length; r++)
        {
            CollectionAssert.AreEqual(none[r], zero[r], $"SDXL row {r}: scale 0 must equal no ControlNet bit for bit");
            Assert.IsTrue(ImageChecks.RelativeL2(zero[r], reference[r]) < 1e-5, $"SDXL row {r}: scale 0 vs the plain SDXL Shapes model, relative L2 {ImageChecks.RelativeL2(zero[r], reference[r])}");
        }
    }

    [TestMethod]
    public void AnSdControlNetDoesNotFitTheSdxlUnetAndTheErrorNamesBoth()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), s_sdxlFolder.Value);
        string sd = Path.Combine(Folder, "controlnet");
        var error = Assert.ThrowsExactly<ModelContractException>(() => model.LoadControlNet(sd));
        StringAssert.Contains(error.Message, Path.Combine(sd, "model.onnx"));
        StringAssert.Contains(error.Message, Path.Combine(s_sdxlFolder.Value, "unet", "model.onnx"));
        StringAssert.Contains(error.Message, "13 residuals");
    }

    [TestMethod]
    public void ThePluginBuildsOnlyWithSdxlAndInt64Ids()
    {
        var error = Assert.ThrowsExactly<NotSupportedException>(() => ShapesModel.Build(Path.Combine(Path.GetTempPath(), "never-" + Guid.NewGuid().ToString("N")),
            new ShapesModelOptions { Variant = ShapesVariant.ControlNet | ShapesVariant.Inpainting }));
        StringAssert.Contains(error.Message, "Inpainting");
        StringAssert.Contains(error.Message, "ControlNet");
    }
}
