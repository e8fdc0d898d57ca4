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

    internal static IDataView Generate(StableDiffusionModel model, IEnumerable<Row> rows, DenoiseOptions options)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"));
        return pipeline.Fit(data).Transform(data);
    }

    internal static float[][] Latents(StableDiffusionModel model, DenoiseOptions options, params Row[] rows) =>
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
        var options = new DenoiseOptions { Width = 128, Height = 128, Steps = 20, SeedColumnName = "Seed" };
        var images = Generate(model, rows, options).GetColumn<MLImage>("Image").ToArray();
        for (int i = 0; i < items.Length; i++)
        {
            var (inside, outside) = ImageChecks.RegionMeans(images[i], items[i].Shape, items[i].Position, margin: 6);
            Assert.AreEqual(items[i].Color, ImageChecks.NearestShapeColor(inside), $"'{items[i].Prompt}': shape colour");
            Assert.AreEqual(items[i].Background, ImageChecks.NearestBackground(outside), $"'{items[i].Prompt}': background");
            Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(items[i].Color)) < 40, $"'{items[i].Prompt}': the {items[i].Shape} is not where the prompt puts it");
        }
    }
}
