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
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseOptions
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

    /// <summary>Every output of every row, read by one cursor (a loaded model's cursor must ask for an output of each saved stage).</summary>
    private static (List<float[]> Vectors, List<byte[]> Pixels) Read(IDataView view)
    {
        var vectors = new List<float[]>();
        var pixels = new List<byte[]>();
        var columns = s_outputs.Select(c => view.Schema[c]).Append(view.Schema["Output"]).ToArray();
        using var cursor = view.GetRowCursor(columns);
        var getters = s_outputs.Select(c => cursor.GetGetter<VBuffer<float>>(view.Schema[c])).ToArray();
        var image = cursor.GetGetter<MLImage>(view.Schema["Output"]);
        while (cursor.MoveNext())
        {
            foreach (var getter in getters)
            {
                VBuffer<float> v = default;
                getter(ref v);
                vectors.Add(v.DenseValues().ToArray());
            }
            MLImage img = null!;
            image(ref img);
            pixels.Add(img.Pixels.ToArray());
        }
        return (vectors, pixels);
    }

    private static void AssertSame((List<float[]> Vectors, List<byte[]> Pixels) expected, (List<float[]> Vectors, List<byte[]> Pixels) actual)
    {
        Assert.AreEqual(expected.Vectors.Count, actual.Vectors.Count);
        for (int i = 0; i < expected.Vectors.Count; i++)
            CollectionAssert.AreEqual(expected.Vectors[i], actual.Vectors[i], $"row {i / s_outputs.Length}, {s_outputs[i % s_outputs.Length]}");
        for (int i = 0; i < expected.Pixels.Count; i++)
            CollectionAssert.AreEqual(expected.Pixels[i], actual.Pixels[i], $"image of row {i}");
    }

    [TestMethod]
    [DataRow(true)]
    [DataRow(false)]
    public void AnInpaintingPipelineRoundTripsThroughModelSaveAndLoad(bool inpaintingUnet)
    {
        string zip = Path.Combine(Path.GetTempPath(), $"mlnet-diffusion-{Guid.NewGuid():N}-inpaint.zip");
        string folder = inpaintingUnet ? InpaintingTestModel.Folder : ShapesTestModel.Folder;
        try
        {
            (List<float[]>, List<byte[]>) expected;
            using (var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder))
            {
                var data = model.MLContext.Data.LoadFromEnumerable(Rows());
                var fitted = Fit(model, data);
                expected = Read(fitted.Transform(data));
                model.MLContext.Model.Save(fitted, data.Schema, zip);
            }

            // A fresh context with another seed: the same values, row at a time through ML.NET's own transforms.
            var ml = new MLContext(seed: 42);
            var loaded = ml.Model.Load(zip, out var inputSchema);
            var rows = ml.Data.LoadFromEnumerable(Rows());
            AssertSame(expected, Read(loaded.Transform(rows)));

            // And back to the batched stages, with their options.
            var definition = DiffusionPipelineDefinition.FromTransformer(loaded, inputSchema);
            CollectionAssert.AreEqual(
                new[] { DiffusionStageKind.EncodePrompt, DiffusionStageKind.EncodeImage, DiffusionStageKind.PrepareInpainting, DiffusionStageKind.DenoiseLatents, DiffusionStageKind.DecodeLatents },
                definition.Stages.Select(s => s.Kind).ToArray());
            using var sd = DiffusionPipeline.LoadModel(ml, loaded, inputSchema, out var pipeline);
            var stages = pipeline.ToArray();
            var prepare = (InpaintingPreparationTransformer)stages[2];
            Assert.AreEqual(MaskDownsampling.Any, prepare.Options.MaskDownsampling);
            Assert.AreEqual(("Image", "Mask", "LatentMask", "MaskedImageLatents", "Seed"),
                (prepare.Options.ImageColumnName, prepare.Options.MaskColumnName, prepare.Options.LatentMaskColumnName, prepare.Options.MaskedImageLatentsColumnName, prepare.Options.SeedColumnName));
            var denoise = (LatentDenoisingTransformer)stages[3];
            Assert.AreEqual(("LatentMask", "MaskedImageLatents"), (denoise.Options.MaskColumnName, denoise.Options.MaskedImageLatentsColumnName));
            Assert.IsNotNull(denoise.Options.Seed, "the base seed of a stage without a seed column is saved resolved");
            AssertSame(expected, Read(pipeline.Transform(rows)));
        }
        finally
        {
            File.Delete(zip);
        }
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
        AssertSame(expected, Read(DiffusionPipelineDefinition.FromJson(json).Build(again).Transform(again.MLContext.Data.LoadFromEnumerable(Rows()))));
    }
}
