using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>
/// mlContext.Model.Save / Load, DiffusionPipeline.LoadModel and the JSON definition for inpainting pipelines: the
/// PrepareInpainting stage kind and DenoiseLatents with a mask, on the inpainting UNet (masked-image latents read) and
/// on an ordinary one (blending with initial latents).
/// </summary>
[TestClass]
public sealed class InpaintingPersistenceTests
{
    private const int Size = 64;

    public sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        [ImageType(Size, Size)]
        public MLImage? Image { get; set; }

        [ImageType(Size, Size)]
        public MLImage? Mask { get; set; }
    }

    private static Row[] Rows() => new[]
    {
        new Row { Prompt = "a green circle", Seed = 3, Image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Center), Size), Mask = InpaintingImages.Box(Size, 16, 48) },
        new Row { Prompt = "a yellow square", Seed = 9, Image = ShapesImages.Render(ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Purple, BackgroundColor.White, ShapePosition.Left), Size), Mask = InpaintingImages.Rectangle(Size, Size, 0, 8, 32, 56) },
    };

    private static readonly string[] s_outputs = { "InitialLatents", "LatentMask", "MaskedImageLatents", "Latents" };

    /// <summary>PrepareInpainting with a seed column and Any downsampling, DenoiseLatents without one (its base seed is saved resolved).</summary>
    private static ITransformer Fit(StableDiffusionModel model, IDataView data)
    {
        var ml = model.MLContext;
        return ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.EncodeImage(model, "InitialLatents", "Image", new EncodeImageOptions { Width = Size, Height = Size, SeedColumnName = "Seed" }))
            .Append(ml.Transforms.PrepareInpainting(model, new PrepareInpaintingOptions
            {
                Width = Size,
                Height = Size,
                SeedColumnName = "Seed",
                MaskDownsampling = MaskDownsampling.Any,
                BatchSize = 2,
            }))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Width = Size,
                Height = Size,
                Steps = 6,
                InitialLatentsColumnName = "InitialLatents",
                Strength = 0.9f,
                MaskColumnName = "LatentMask",
                MaskedImageLatentsColumnName = "MaskedImageLatents",
                BatchSize = 2,
            }))
            .Append(ml.Transforms.DecodeLatents(model, "Output", "Latents"))
            .Fit(data);
    }

    private static PipelineOutputs Read(IDataView view) => PersistenceRoundTrip.Read(view, "Output", s_outputs);

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void AnInpaintingPipelineRoundTripsThroughModelSaveAndLoad(bool inpaintingUnet)
    {
        string folder = inpaintingUnet ? InpaintingTestModel.Folder : ShapesTestModel.Folder;
        using var saved = PersistenceRoundTrip.SaveAndLoad(() => StableDiffusionModel.Load(new MLContext(seed: 1), folder), Rows(), Fit, Read, loadSeed: 42);

        // And back to the batched stages, with their options.
        var definition = DiffusionPipelineDefinition.FromTransformer(saved.Loaded, saved.InputSchema);
        CollectionAssert.AreEqual(
            new[] { DiffusionStageKind.EncodePrompt, DiffusionStageKind.EncodeImage, DiffusionStageKind.PrepareInpainting, DiffusionStageKind.DenoiseLatents, DiffusionStageKind.DecodeLatents },
            definition.Stages.Select(s => s.Kind).ToArray());
        using var sd = DiffusionPipeline.LoadModel(saved.MLContext, saved.Loaded, saved.InputSchema, out var pipeline);
        var stages = pipeline.ToArray();
        var prepare = (InpaintingPreparationTransformer)stages[2];
        Assert.AreEqual(MaskDownsampling.Any, prepare.Options.MaskDownsampling);
        Assert.AreEqual(("Image", "Mask", "LatentMask", "MaskedImageLatents", "Seed"),
            (prepare.Options.ImageColumnName, prepare.Options.MaskColumnName, prepare.Options.LatentMaskColumnName, prepare.Options.MaskedImageLatentsColumnName, prepare.Options.SeedColumnName));
        var denoise = (LatentDenoisingTransformer)stages[3];
        Assert.AreEqual(("LatentMask", "MaskedImageLatents"), (denoise.Options.MaskColumnName, denoise.Options.MaskedImageLatentsColumnName));
        Assert.IsNotNull(denoise.Options.Seed, "the base seed of a stage without a seed column is saved resolved");
        PersistenceRoundTrip.AssertSame(saved.Expected, Read(pipeline.Transform(saved.Input)));
    }

    [TestMethod]
    public void TheJsonDefinitionCarriesTheInpaintingOptions()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), InpaintingTestModel.Folder);
        var data = model.MLContext.Data.LoadFromEnumerable(Rows());
        var fitted = Fit(model, data);
        var expected = Read(fitted.Transform(data));
        var json = DiffusionPipelineDefinition.FromTransformer(fitted).ToJson();
        StringAssert.Contains(json, "\"PrepareInpainting\"");
        StringAssert.Contains(json, "\"MaskDownsampling\": \"Any\"");
        StringAssert.Contains(json, "\"MaskColumnName\": \"LatentMask\"");
        StringAssert.Contains(json, "\"MaskedImageLatentsColumnName\": \"MaskedImageLatents\"");
        using var again = StableDiffusionModel.Load(new MLContext(seed: 5), model.Directory);
        PersistenceRoundTrip.AssertSame(expected, Read(DiffusionPipelineDefinition.FromJson(json).Build(again).Transform(again.MLContext.Data.LoadFromEnumerable(Rows()))));
    }
}
