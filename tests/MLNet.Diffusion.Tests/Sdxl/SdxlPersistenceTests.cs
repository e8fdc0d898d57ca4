using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Sdxl;

/// <summary>SDXL pipelines saved to ML.NET's format and as a JSON definition: the pooled column and the time-ids options survive.</summary>
[TestClass]
public sealed class SdxlPersistenceTests
{
    public sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private static readonly Row[] s_rows =
    {
        new() { Prompt = "a red circle on a blue background", Seed = 3 },
        new() { Prompt = "a yellow triangle", NegativePrompt = "green", Seed = 11 },
    };

    private static ITransformer Fit(StableDiffusionModel model, IDataView data, bool seedColumn, DenoiseLatentsOptions? options = null) =>
        model.MLContext.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(model.MLContext.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options ?? new DenoiseLatentsOptions
            {
                Steps = 4,
                Width = 64,
                Height = 64,
                SeedColumnName = seedColumn ? "Seed" : null,
                BatchSize = 2,
            }))
            .Append(model.MLContext.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data);

    /// <summary>Each row's latents and pixels, read with one cursor (a loaded model's surrogate stages run when their output is read).</summary>
    private static PipelineOutputs Read(IDataView view) => PersistenceRoundTrip.Read(view, "Image", "Latents");

    [TestMethod]
    public void ASavedSdxlPipelineLoadsInAFreshContextAndGivesIdenticalImages()
    {
        foreach (bool seedColumn in new[] { true, false })
        {
            // SaveAndLoad compares the loaded model's outputs with the fitted pipeline's.
            using var saved = PersistenceRoundTrip.SaveAndLoad(SdxlTestModel.Load, s_rows, (model, data) => Fit(model, data, seedColumn), Read, loadSeed: 99);
        }
    }

    [TestMethod]
    public void TheJsonDefinitionKeepsThePooledColumnAndTheTimeIdsOptions()
    {
        using var model = SdxlTestModel.Load();
        var data = model.MLContext.Data.LoadFromEnumerable(s_rows);
        var options = new DenoiseLatentsOptions { Steps = 3, Width = 64, Height = 64, SeedColumnName = "Seed", OriginalWidth = 1024, OriginalHeight = 768, CropTop = 16 };
        var fitted = Fit(model, data, seedColumn: true, options);
        var expected = Read(fitted.Transform(data));
        string json = DiffusionPipelineDefinition.FromTransformer(fitted).ToJson();
        StringAssert.Contains(json, $"\"{EncodePromptOptions.DefaultPooledColumnName}\"");
        StringAssert.Contains(json, "\"OriginalWidth\": 1024");
        StringAssert.Contains(json, "\"CropTop\": 16");
        var rebuilt = DiffusionPipelineDefinition.FromJson(json).Build(model);
        var denoise = rebuilt.OfType<LatentDenoisingTransformer>().Single();
        Assert.AreEqual(768, denoise.Options.OriginalHeight);
        PersistenceRoundTrip.AssertSame(expected, Read(rebuilt.Transform(data)));
    }

    public sealed class ImageRow
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }

        /// <summary>Initial latents [4, 8, 8] for 64×64 pixels.</summary>
        [VectorType(4, 8, 8)]
        public float[] Init { get; set; } = Array.Empty<float>();
    }

    /// <summary>SDXL image-to-image: both the pooled column and the initial latents survive a save/load (its own contracts).</summary>
    [TestMethod]
    public void ASavedSdxlImageToImagePipelineGivesIdenticalImages()
    {
        var init = new float[4 * 8 * 8];
        new GaussianNoise(5).NextGaussian(init);
        ImageRow[] rows =
        {
            new() { Prompt = "a red circle on a blue background", Seed = 3, Init = init },
            new() { Prompt = "a yellow triangle", Seed = 11, Init = Array.ConvertAll(init, v => -v) },
        };
        foreach (bool seedColumn in new[] { true, false })
        {
            var options = new DenoiseLatentsOptions
            {
                Steps = 4,
                Width = 64,
                Height = 64,
                SeedColumnName = seedColumn ? "Seed" : null,
                InitialLatentsColumnName = "Init",
                Strength = 0.5f,
                BatchSize = 2,
            };
            using var saved = PersistenceRoundTrip.SaveAndLoad(SdxlTestModel.Load, rows, (model, data) => Fit(model, data, seedColumn, options), Read, loadSeed: 99);
        }
    }
}
