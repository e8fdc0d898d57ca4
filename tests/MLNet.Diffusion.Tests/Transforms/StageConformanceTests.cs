using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Tests.Transforms;

/// <summary>Schema conformance, laziness and ML.NET integration of the three stages, on the Shapes model at 64×64.</summary>
[TestClass]
public sealed class StageConformanceTests
{
    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string Negative { get; set; } = string.Empty;

        public int Seed { get; set; }

        public float Extra { get; set; }
    }

    private sealed class Output
    {
        public string Prompt { get; set; } = string.Empty;

        public float[] Latents { get; set; } = Array.Empty<float>();
    }

    private static readonly DenoiseLatentsOptions s_small = new() { Width = 64, Height = 64, Steps = 4, SeedColumnName = "Seed", BatchSize = 2 };

    private static Row[] Rows(int n) => Enumerable.Range(0, n)
        .Select(i => new Row { Prompt = i % 2 == 0 ? "a red circle" : "a blue square on a white background", Negative = i == 1 ? "yellow" : "", Seed = i, Extra = i * 1.5f })
        .ToArray();

    [TestMethod]
    public void EveryStageConforms()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Rows(3));
        var encode = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "Negative");
        EstimatorConformance.Check(encode, data, "Embeddings");
        var encoded = encode.Fit(data).Transform(data);
        var denoise = ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", s_small);
        EstimatorConformance.Check(denoise, encoded, "Latents");
        var denoised = denoise.Fit(encoded).Transform(encoded);
        var decode = ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" });
        EstimatorConformance.Check(decode, denoised, "Image", "Pixels");
    }

    [TestMethod]
    public void TheWholeChainReportsItsSchemaBeforeFitting()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Rows(1));
        var chain = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", s_small))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Append(ml.Transforms.ResizeImages("Thumb", 16, 16, "Image"));
        var shape = chain.GetOutputSchema(MLNet.Diffusion.Transforms.SchemaShapes.FromSchema(ml, data.Schema));
        Assert.IsNotNull(ColumnChecks.Find(shape, "Thumb"));
        var result = chain.Fit(data).Transform(data);
        var thumb = result.GetColumn<MLImage>("Thumb").Single();
        Assert.AreEqual(16, thumb.Width);
    }

    [TestMethod]
    public void TransformIsLazyAndACursorWithoutTheOutputRunsNoModel()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Rows(4));
        var transformer = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", s_small))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data);
        long text = model.TextEncoder.RunCount, unet = model.Unet.RunCount, vae = model.VaeDecoder.RunCount;

        var result = transformer.Transform(data);
        Assert.AreEqual(text, model.TextEncoder.RunCount, "Transform ran the text encoder");
        Assert.AreEqual(unet, model.Unet.RunCount, "Transform ran the UNet");

        // Only pass-through columns: no model runs at all.
        var prompts = result.GetColumn<string>("Prompt").ToArray();
        Assert.AreEqual(4, prompts.Length);
        Assert.AreEqual((text, unet, vae), (model.TextEncoder.RunCount, model.Unet.RunCount, model.VaeDecoder.RunCount));

        // Embeddings only: the text encoder runs, the UNet and the VAE do not.
        _ = result.GetColumn<VBuffer<float>>("Embeddings").ToArray();
        Assert.IsTrue(model.TextEncoder.RunCount > text);
        Assert.AreEqual(unet, model.Unet.RunCount);
        Assert.AreEqual(vae, model.VaeDecoder.RunCount);

        // Latents: 4 rows in batches of 2, 4 steps each → 2 × 4 UNet calls; still no VAE.
        _ = result.GetColumn<VBuffer<float>>("Latents").ToArray();
        Assert.AreEqual(unet + 8, model.Unet.RunCount);
        Assert.AreEqual(vae, model.VaeDecoder.RunCount);
    }

    [TestMethod]
    public void PreviewCreateEnumerablePredictionEngineAndCursorSetsWork()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var rows = Rows(3);
        var data = ml.Data.LoadFromEnumerable(rows);
        var transformer = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", s_small))
            .Fit(data);
        var result = transformer.Transform(data);

        var preview = result.Preview(maxRows: 2);
        Assert.AreEqual(2, preview.RowView.Length);

        var enumerable = ml.Data.CreateEnumerable<Output>(result, reuseRowObject: false).ToArray();
        Assert.AreEqual(3, enumerable.Length);
        Assert.AreEqual(4 * 8 * 8, enumerable[0].Latents.Length);

        var engine = ml.Model.CreatePredictionEngine<Row, Output>(transformer);
        var single = engine.Predict(rows[2]);
        CollectionAssert.AreEqual(enumerable[2].Latents, single.Latents, "the prediction engine gives the row's own result");

        var cursors = result.GetRowCursorSet(result.Schema.Where(c => c.Name == "Latents"), 2);
        int count = 0;
        foreach (var cursor in cursors)
        {
            using (cursor)
                while (cursor.MoveNext())
                    count++;
        }
        Assert.AreEqual(3, count);
    }

    [TestMethod]
    public void EachRowGetsItsOwnResultWhateverTheBatchBoundaries()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Rows(5));
        float[][] Latents(int batch) => ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "Negative")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 4, SeedColumnName = "Seed", BatchSize = batch }))
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
        var one = Latents(1);
        var three = Latents(3);
        for (int r = 0; r < 5; r++)
            CollectionAssert.AreEqual(one[r], three[r], $"row {r}");
        CollectionAssert.AreNotEqual(one[0], one[2], "rows with different seeds differ");

        // Pass-through values stay aligned with their rows across batch boundaries.
        var result = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 2, SeedColumnName = "Seed", BatchSize = 3 }))
            .Fit(data).Transform(data);
        using var c = result.GetRowCursor(result.Schema);
        var extra = c.GetGetter<float>(result.Schema["Extra"]);
        var seed = c.GetGetter<int>(result.Schema["Seed"]);
        var latents = c.GetGetter<VBuffer<float>>(result.Schema["Latents"]);
        int i = 0;
        while (c.MoveNext())
        {
            float e = 0;
            int s = 0;
            VBuffer<float> l = default;
            latents(ref l);
            extra(ref e);
            seed(ref s);
            Assert.AreEqual(i * 1.5f, e);
            Assert.AreEqual(i, s);
            Assert.AreEqual(i, c.Position);
            i++;
        }
        Assert.AreEqual(5, i);
    }
}
