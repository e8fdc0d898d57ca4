using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Pipeline;

/// <summary>
/// The same pipeline that runs the Shapes model runs unchanged on a real-architecture export (CLIP text transformer,
/// UNet2DConditionModel with external weights, AutoencoderKL) with random weights: the images are noise, so the test
/// checks shapes, finite values and determinism per seed.
/// </summary>
[TestClass]
public sealed class TinySdPipelineTests
{
    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    [TestMethod]
    public void LoadsMetadataFromTheExport()
    {
        string dir = SharedModels.RequireTinySd();
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), dir);
        Assert.AreEqual(4, model.Info.LatentChannels);
        Assert.AreEqual(32, model.Info.HiddenSize);
        Assert.AreEqual(77, model.Info.SequenceLength);
        Assert.AreEqual(32, model.Info.PooledSize);
        // The tiny VAE has fewer down blocks than SD's: its factor is read by probing the decoder, not assumed to be 8.
        Assert.AreNotEqual(8, model.Info.VaeSpatialFactor);
        Assert.IsTrue(model.Info.VaeSpatialFactor is 2 or 4, $"factor {model.Info.VaeSpatialFactor}");
        Assert.AreEqual("CPU", model.Info.ExecutionProvider);
    }

    [TestMethod]
    public void GeneratesFiniteDeterministicImages()
    {
        string dir = SharedModels.RequireTinySd();
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, dir);
        int f = model.Info.VaeSpatialFactor;
        var rows = new[]
        {
            new Row { Prompt = "a photo of a cat", Seed = 7 },
            new Row { Prompt = "a photo of a cat", Seed = 7 },
            new Row { Prompt = "a photo of a cat", Seed = 8 },
        };
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Steps = 3, Width = 8 * f, Height = 16 * f, SeedColumnName = "Seed", BatchSize = 2 }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }));
        var result = pipeline.Fit(data).Transform(data);

        var latentType = (VectorDataViewType)result.Schema["Latents"].Type;
        CollectionAssert.AreEqual(new[] { 4, 16, 8 }, latentType.Dimensions.ToArray());
        var pixels = result.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToArray();
        var images = result.GetColumn<MLImage>("Image").ToArray();
        Assert.AreEqual(3, images.Length);
        foreach (var image in images)
        {
            Assert.AreEqual(8 * f, image.Width);
            Assert.AreEqual(16 * f, image.Height);
        }
        foreach (var p in pixels)
        {
            Assert.AreEqual(3 * 16 * f * 8 * f, p.Length);
            Assert.IsTrue(p.All(float.IsFinite));
        }
        CollectionAssert.AreEqual(pixels[0], pixels[1], "same prompt and seed must give identical pixels");
        CollectionAssert.AreNotEqual(pixels[0], pixels[2], "different seeds must give different images");
        CollectionAssert.AreEqual(images[0].Pixels.ToArray(), images[1].Pixels.ToArray());
    }
}
