using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.ImageToImage;

/// <summary>
/// mlContext.Model.Save / Load, DiffusionPipeline.LoadModel and the JSON definition for a pipeline holding the
/// image-to-image stages: EncodeImage (sampling from latent_parameters, so its seeds matter), DenoiseLatents with initial
/// latents and a strength, and AddDiffusionNoise with timestep and seed columns and the noise output.
/// </summary>
[TestClass]
public sealed class ImageToImagePersistenceTests
{
    private const int Size = 64;

    public sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        public int T { get; set; }

        [ImageType(Size, Size)]
        public MLImage? Image { get; set; }
    }

    private static Row[] Rows() => new[]
    {
        new Row { Prompt = "a blue circle", Seed = 3, T = 100, Image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.White, ShapePosition.Center), Size) },
        new Row { Prompt = "a green square", Seed = 9, T = 700, Image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Yellow, BackgroundColor.Black, ShapePosition.Left), Size) },
    };

    private static readonly string[] s_outputs = { "InitialLatents", "Latents", "Noisy", "Noise" };

    /// <summary>EncodeImage without a seed column (its base seed is saved resolved), the others with one.</summary>
    private static ITransformer Fit(StableDiffusionModel model, IDataView data)
    {
        var ml = model.MLContext;
        return ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.EncodeImage(model, "InitialLatents", "Image", new EncodeImageOptions { Width = Size, Height = Size, BatchSize = 2 }))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Width = Size,
                Height = Size,
                Steps = 6,
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

    private static PipelineOutputs Read(IDataView view) => PersistenceRoundTrip.Read(view, "Output", s_outputs);

    [TestMethod]
    public void AnImageToImagePipelineRoundTripsThroughModelSaveAndLoad()
    {
        using var saved = PersistenceRoundTrip.SaveAndLoad(() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesVariantModels.LatentParameters), Rows(), Fit, Read, loadSeed: 42);

        // And back to the batched stages, with their options.
        var definition = DiffusionPipelineDefinition.FromTransformer(saved.Loaded, saved.InputSchema);
        CollectionAssert.AreEqual(
            new[] { DiffusionStageKind.EncodePrompt, DiffusionStageKind.EncodeImage, DiffusionStageKind.DenoiseLatents, DiffusionStageKind.DecodeLatents, DiffusionStageKind.AddDiffusionNoise },
            definition.Stages.Select(s => s.Kind).ToArray());
        using var sd = DiffusionPipeline.LoadModel(saved.MLContext, saved.Loaded, saved.InputSchema, out var pipeline);
        var stages = pipeline.ToArray();
        var encode = (ImageEncodingTransformer)stages[1];
        Assert.IsNotNull(encode.Options.Seed, "the base seed of a stage without a seed column is saved resolved");
        var denoise = (LatentDenoisingTransformer)stages[2];
        Assert.AreEqual(0.7f, denoise.Options.Strength);
        Assert.AreEqual("InitialLatents", denoise.Options.InitialLatentsColumnName);
        var noise = (DiffusionNoisingTransformer)stages[4];
        Assert.AreEqual("T", noise.Options.TimestepColumnName);
        Assert.AreEqual("Noise", noise.Options.NoiseOutputColumnName);
        PersistenceRoundTrip.AssertSame(saved.Expected, Read(pipeline.Transform(saved.Input)));
    }

    [TestMethod]
    public void TheJsonDefinitionCarriesTheImageToImageOptions()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesVariantModels.LatentParameters);
        var data = model.MLContext.Data.LoadFromEnumerable(Rows());
        var fitted = Fit(model, data);
        var expected = Read(fitted.Transform(data));
        var json = DiffusionPipelineDefinition.FromTransformer(fitted).ToJson();
        StringAssert.Contains(json, "\"EncodeImage\"");
        StringAssert.Contains(json, "\"Strength\": 0.7");
        StringAssert.Contains(json, "\"InitialLatentsColumnName\": \"InitialLatents\"");
        StringAssert.Contains(json, "\"TimestepColumnName\": \"T\"");
        using var again = StableDiffusionModel.Load(new MLContext(seed: 5), model.Directory);
        PersistenceRoundTrip.AssertSame(expected, Read(DiffusionPipelineDefinition.FromJson(json).Build(again).Transform(again.MLContext.Data.LoadFromEnumerable(Rows()))));
    }

    public sealed class ImageOnly
    {
        [ImageType(Size, Size)]
        public MLImage? Image { get; set; }
    }

    [TestMethod]
    public void SavingEncodeImageWithoutAnyOtherColumnExplainsWhy()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesVariantModels.LatentParameters);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new ImageOnly { Image = Rows()[0].Image } });
        var fitted = ml.Transforms.EncodeImage(model, "Latents", "Image", new EncodeImageOptions { Width = Size, Height = Size }).Fit(data);
        string zip = PersistenceRoundTrip.TempFile("image-only.zip");
        try
        {
            var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Model.Save(fitted, data.Schema, zip));
            StringAssert.Contains(e.Message, "EncodeImage");
            StringAssert.Contains(e.Message, "docs/persistence.md");
        }
        finally
        {
            File.Delete(zip);
        }
    }
}
