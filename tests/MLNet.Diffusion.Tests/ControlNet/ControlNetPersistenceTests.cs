using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.ControlNet;

/// <summary>A fitted pipeline with ControlNets saves (contract DenoiseLatents.v3) and loads, and gives identical images.</summary>
[TestClass]
public sealed class ControlNetPersistenceTests
{
    [TestMethod]
    public void APipelineWithTwoControlNetsSavesAndLoadsWithIdenticalImages()
    {
        string dir = ControlNetTests.RequireFolder();
        var rows = ControlNetTests.Rows(31, 32);
        rows[0].Scale = 0.3f;
        rows[1].Scale = 1.2f;
        var options = ControlNetTests.Options(
            new ControlNetUnit { ImageColumnName = "Control", ScaleColumnName = "Scale", GuidanceEnd = 0.75f },
            // The folder's ControlNet given by path: saved as its absolute path.
            new ControlNetUnit { ModelPath = Path.Combine(dir, "controlnet"), ImageColumnName = "Control2", Scale = 0.6f, GuidanceStart = 0.25f });
        using var saved = PersistenceRoundTrip.SaveAndLoad(
            () => StableDiffusionModel.Load(new MLContext(seed: 1), dir),
            rows,
            (model, data) => model.MLContext.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
                .Append(model.MLContext.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
                .Append(model.MLContext.Transforms.DecodeLatents(model, "Image", "Latents"))
                .Fit(data),
            view => PersistenceRoundTrip.Read(view, "Image", "Latents"),
            loadSeed: 5);

        // The definition JSON carries the units.
        var definition = DiffusionPipelineDefinition.FromTransformer(saved.Loaded, saved.InputSchema);
        var denoise = definition.Stages.OfType<DenoiseLatentsStageDefinition>().Single();
        Assert.AreEqual(2, denoise.ControlNets!.Count);
        Assert.AreEqual("Scale", denoise.ControlNets[0].ScaleColumnName);
        Assert.AreEqual(Path.GetFullPath(Path.Combine(dir, "controlnet", "model.onnx")), denoise.ControlNets[1].ModelPath);
        var again = DiffusionPipelineDefinition.FromJson(definition.ToJson()).Stages.OfType<DenoiseLatentsStageDefinition>().Single();
        CollectionAssert.AreEqual(denoise.ControlNets.ToArray(), again.ControlNets!.ToArray());
    }

    private sealed class ImageRow
    {
        public string Prompt { get; set; } = "a shape";

        public int Seed { get; set; }

        [Microsoft.ML.Transforms.Image.ImageType(ControlNetTests.Size, ControlNetTests.Size)]
        public MLImage? Photo { get; set; }
    }

    [TestMethod]
    public void APipelineWithPrepareControlImageSavesAndLoadsWithIdenticalImages()
    {
        string dir = ControlNetTests.RequireFolder();
        var rows = new[]
        {
            new ImageRow { Seed = 1, Photo = MLImage.CreateFromFile(Path.Combine(dir, "control_images", "circle.png")) },
            new ImageRow { Seed = 2, Photo = MLImage.CreateFromFile(Path.Combine(dir, "control_images", "square.png")) },
        };
        using var saved = PersistenceRoundTrip.SaveAndLoad(
            () => StableDiffusionModel.Load(new MLContext(seed: 1), dir),
            rows,
            (model, data) => model.MLContext.Transforms.PrepareControlImage(model, new PrepareControlImageOptions
                    { ImageColumnName = "Photo", Width = ControlNetTests.Size, Height = ControlNetTests.Size, Preprocessor = ControlImagePreprocessor.Canny, CannyL2Gradient = true })
                .Append(model.MLContext.Transforms.EncodePrompt(model, "Embeddings", "Prompt"))
                .Append(model.MLContext.Transforms.DenoiseLatents(model, "Latents", "Embeddings", ControlNetTests.Options(new ControlNetUnit { ImageColumnName = "ControlImage" })))
                .Append(model.MLContext.Transforms.DecodeLatents(model, "Image", "Latents"))
                .Fit(data),
            view => PersistenceRoundTrip.Read(view, "Image", "Latents", "ControlImage"),
            loadSeed: 6);
        var definition = DiffusionPipelineDefinition.FromJson(DiffusionPipelineDefinition.FromTransformer(saved.Loaded, saved.InputSchema).ToJson());
        var prepare = definition.Stages.OfType<PrepareControlImageStageDefinition>().Single();
        Assert.AreEqual(ControlImagePreprocessor.Canny, prepare.Preprocessor);
        Assert.IsTrue(prepare.CannyL2Gradient);
    }
}
