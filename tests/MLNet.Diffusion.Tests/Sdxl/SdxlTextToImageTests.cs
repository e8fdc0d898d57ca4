using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Sdxl;

/// <summary>
/// Text-to-image on the SDXL-shaped Shapes folders through the ordinary three stages. The folder splits the prompt over
/// SDXL's conditioning paths (text_encoder: shape and position; text_encoder_2: colour; text_embeds: background; time_ids
/// gate the prompt), so a picture with every prompted attribute shows that each path is wired as diffusers wires it.
/// </summary>
[TestClass]
public sealed class SdxlTextToImageTests
{
    internal sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    internal static IDataView Generate(StableDiffusionModel model, IEnumerable<Row> rows, DenoiseLatentsOptions options)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"));
        return pipeline.Fit(data).Transform(data);
    }

    internal static float[][] Latents(StableDiffusionModel model, DenoiseLatentsOptions options, params Row[] rows) =>
        Generate(model, rows, options).GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();

    [TestMethod]
    public void TheSdxlFolderDrawsEveryPromptedAttribute()
    {
        // Shape and position come from text_encoder, the shape colour from text_encoder_2, the background from text_embeds.
        var items = new[]
        {
            ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Left),
            ShapesDataset.GetItem(ShapeKind.Triangle, ShapeColor.Yellow, BackgroundColor.White, ShapePosition.Center),
            ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Green, BackgroundColor.Black, ShapePosition.Right),
            ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Purple, BackgroundColor.Gray, ShapePosition.Center),
        };
        using var model = SdxlTestModel.Load();
        var rows = items.Select((it, i) => new Row { Prompt = it.Prompt, Seed = 40 + i }).ToArray();
        var options = new DenoiseLatentsOptions { Width = 128, Height = 128, Steps = 20, SeedColumnName = "Seed" };
        var images = Generate(model, rows, options).GetColumn<MLImage>("Image").ToArray();
        for (int i = 0; i < items.Length; i++)
        {
            var (inside, outside) = ImageChecks.RegionMeans(images[i], items[i].Shape, items[i].Position, margin: 6);
            Assert.AreEqual(items[i].Color, ImageChecks.NearestShapeColor(inside), $"'{items[i].Prompt}': shape colour");
            Assert.AreEqual(items[i].Background, ImageChecks.NearestBackground(outside), $"'{items[i].Prompt}': background");
            Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(items[i].Color)) < 40, $"'{items[i].Prompt}': the {items[i].Shape} is not where the prompt puts it");
        }
    }

    [TestMethod]
    public void TheSdxlFolderDrawsWhatTheSdFolderDrawsForTheSamePromptAndSeed()
    {
        // The Shapes SDXL UNet's prompt term equals the SD Shapes UNet's when each path carries its part of the prompt,
        // and force_zeros_for_empty_prompt's zeros equal the SD text encoder's (attribute-free) empty prompt; the VAE
        // folds SDXL's scaling factor in. So correctly wired stages give the SD model's latents, up to float rounding.
        var options = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 8, SeedColumnName = "Seed" };
        var rows = new[]
        {
            new Row { Prompt = "a green triangle on the right on a white background", Seed = 5 },
            new Row { Prompt = "an orange square", NegativePrompt = "black", Seed = 6 },
        };
        using var sdxl = SdxlTestModel.Load();
        using var sd = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var expected = Latents(sd, options, rows);
        var actual = Latents(sdxl, options, rows);
        for (int r = 0; r < rows.Length; r++)
        {
            double max = 0;
            for (int i = 0; i < expected[r].Length; i++)
                max = Math.Max(max, Math.Abs(expected[r][i] - actual[r][i]));
            Assert.IsTrue(max < 1e-3, $"row {r}: SDXL latents differ from SD's by up to {max}");
        }
    }

    [TestMethod]
    public void TimeIdsOfAnotherSizeOrACropTurnThePromptOff()
    {
        // The Shapes SDXL UNet counts the prompt only for time_ids (8h, 8w, 0, 0, 8h, 8w) of the sample it denoises; with
        // any other micro-conditioning its conditional prediction is the unconditional one, so the run equals the empty
        // prompt's exactly. This proves the options reach the UNet's time_ids, each value in diffusers' place.
        using var model = SdxlTestModel.Load();
        var prompt = new Row { Prompt = "a red circle on a blue background", Seed = 9 };
        var empty = new Row { Prompt = string.Empty, Seed = 9 };
        var right = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, SeedColumnName = "Seed" };
        var unconditional = Latents(model, right, empty)[0];
        Assert.IsFalse(Latents(model, right, prompt)[0].SequenceEqual(unconditional), "with the default time ids the prompt must count");
        var wrong = new (string Name, DenoiseLatentsOptions Options)[]
        {
            ("OriginalHeight", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, SeedColumnName = "Seed", OriginalHeight = 1024 }),
            ("OriginalWidth", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, SeedColumnName = "Seed", OriginalWidth = 32 }),
            ("CropTop", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, SeedColumnName = "Seed", CropTop = 8 }),
            ("CropLeft", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, SeedColumnName = "Seed", CropLeft = 8 }),
            ("TargetHeight", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, SeedColumnName = "Seed", TargetHeight = 128 }),
            ("TargetWidth", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, SeedColumnName = "Seed", TargetWidth = 128 }),
        };
        foreach (var (name, options) in wrong)
            CollectionAssert.AreEqual(unconditional, Latents(model, options, prompt)[0], $"{name}: time ids of another picture must turn the prompt off");
        // Explicit values equal to the defaults change nothing.
        var explicitIds = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, SeedColumnName = "Seed", OriginalWidth = 64, OriginalHeight = 64, CropTop = 0, CropLeft = 0, TargetWidth = 64, TargetHeight = 64 };
        CollectionAssert.AreEqual(Latents(model, right, prompt)[0], Latents(model, explicitIds, prompt)[0]);
    }

    [TestMethod]
    public void ANonSquareImageGetsHeightThenWidthInItsTimeIds()
    {
        // diffusers: original_size = target_size = (height, width). Written as (width, height) the Shapes UNet's gate
        // would close for a non-square picture and the prompt would be ignored.
        using var model = SdxlTestModel.Load();
        var options = new DenoiseLatentsOptions { Width = 64, Height = 128, Steps = 12, SeedColumnName = "Seed" };
        var rows = new[] { new Row { Prompt = "a yellow circle in the center on a blue background", Seed = 21 } };
        var image = Generate(model, rows, options).GetColumn<MLImage>("Image").Single();
        Assert.AreEqual((64, 128), (image.Width, image.Height));
        var centre = Pixel(image, 32, 64);
        var corner = Pixel(image, 2, 2);
        Assert.AreEqual(ShapeColor.Yellow, ImageChecks.NearestShapeColor(centre), $"centre {centre[0]:F0},{centre[1]:F0},{centre[2]:F0}");
        Assert.AreEqual(BackgroundColor.Blue, ImageChecks.NearestBackground(corner), $"corner {corner[0]:F0},{corner[1]:F0},{corner[2]:F0}");
    }

    [TestMethod]
    public void TheRefinerDrawsThePromptOnlyWithTheAestheticScoreItWasTrainedOn()
    {
        // The refiner's 5 time ids end with the aesthetic score (diffusers requires_aesthetics_score: 6.0 for the prompt's
        // rows, 2.5 for the unconditional ones); the Shapes refiner counts the prompt only at 6.
        using var model = SdxlTestModel.LoadRefiner();
        Assert.AreEqual(5, model.Info.TimeIdsWidth);
        var item = ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Orange, BackgroundColor.Green, ShapePosition.Left);
        var options = new DenoiseLatentsOptions { Width = 128, Height = 128, Steps = 20, SeedColumnName = "Seed" };
        var image = Generate(model, new[] { new Row { Prompt = item.Prompt, Seed = 2 } }, options).GetColumn<MLImage>("Image").Single();
        var (inside, outside) = ImageChecks.RegionMeans(image, item.Shape, item.Position, margin: 6);
        Assert.AreEqual(item.Color, ImageChecks.NearestShapeColor(inside));
        Assert.AreEqual(item.Background, ImageChecks.NearestBackground(outside));
        Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(item.Color)) < 40, "the square is not on the left");

        var small = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, Seed = 4 };
        var unconditional = Latents(model, small, new Row { Prompt = string.Empty })[0];
        var lowScore = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, Seed = 4, AestheticScore = 2.5f };
        CollectionAssert.AreEqual(unconditional, Latents(model, lowScore, new Row { Prompt = item.Prompt })[0], "aesthetic score 2.5 must turn the prompt off");
        Assert.IsFalse(Latents(model, small, new Row { Prompt = item.Prompt })[0].SequenceEqual(unconditional));
    }

    private static double[] Pixel(MLImage image, int x, int y)
    {
        var pixels = image.Pixels;
        int p = 4 * (y * image.Width + x);
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        return new double[] { pixels[p + (bgra ? 2 : 0)], pixels[p + 1], pixels[p + (bgra ? 0 : 2)] };
    }
}
