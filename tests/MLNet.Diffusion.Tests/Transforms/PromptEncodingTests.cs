using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Transforms;

/// <summary>The EncodePrompt stage: id dtypes from metadata, pooled output, long-prompt windows.</summary>
[TestClass]
public sealed class PromptEncodingTests
{
    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string Negative { get; set; } = string.Empty;
    }

    private static float[][] Embeddings(StableDiffusionModel model, EncodePromptOptions options, params Row[] rows)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        return ml.Transforms.EncodePrompt(model, options).Fit(data).Transform(data)
            .GetColumn<VBuffer<float>>(options.OutputColumnName).Select(v => v.DenseValues().ToArray()).ToArray();
    }

    [TestMethod]
    public void Int64InputIdsGiveTheSameStatesAsInt32()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-shapes-int64-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            ShapesModel.Build(dir, new ShapesModelOptions { Variant = ShapesVariant.Int64InputIds });
            using var int64 = StableDiffusionModel.Load(new MLContext(1), dir);
            Assert.AreEqual(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Int64, int64.TextEncoder.Input("input_ids").ElementDataType);
            using var int32 = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
            var options = new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative" };
            var rows = new[] { new Row { Prompt = "a red circle on a blue background", Negative = "green" } };
            CollectionAssert.AreEqual(Embeddings(int32, options, rows)[0], Embeddings(int64, options, rows)[0]);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void PooledOutputIsTheTextEncodersPooledState()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a yellow triangle", Negative = "red" } });
        var result = ml.Transforms.EncodePrompt(model, new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative", PooledOutputColumnName = "Pooled" })
            .Fit(data).Transform(data);
        var type = (VectorDataViewType)result.Schema["Pooled"].Type;
        CollectionAssert.AreEqual(new[] { 2, 32 }, type.Dimensions.ToArray());
        var states = result.GetColumn<VBuffer<float>>("Embeddings").Single().DenseValues().ToArray();
        var pooled = result.GetColumn<VBuffer<float>>("Pooled").Single().DenseValues().ToArray();
        // The Shapes text encoder's pooler_output is the sum of last_hidden_state over the sequence.
        for (int half = 0; half < 2; half++)
            for (int d = 0; d < 32; d++)
            {
                float sum = 0;
                for (int t = 0; t < 77; t++)
                    sum += states[half * 77 * 32 + t * 32 + d];
                Assert.AreEqual(sum, pooled[half * 32 + d], 1e-4, $"half {half}, dim {d}");
            }
        Assert.AreNotEqual(0f, pooled.Skip(32).Sum(), "the prompt's pooled state is not empty");
    }

    [TestMethod]
    public void LongPromptsUseWindowsThatTheUNetConsumes()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        // About 110 tokens: the attribute words come last, beyond the first 75-token window.
        string prompt = string.Join(' ', Enumerable.Repeat("a picture of a", 27)) + " red circle";
        Assert.IsTrue(model.Tokenizer.EncodeToIds(prompt).Count > 75);
        var rows = new[] { new Row { Prompt = prompt } };

        var truncated = Embeddings(model, new EncodePromptOptions { InputColumnName = "Prompt" }, rows)[0];
        var windows = Embeddings(model, new EncodePromptOptions { InputColumnName = "Prompt", LongPrompt = true }, rows)[0];
        int state = 77 * 32;
        Assert.AreEqual(2 * 2 * state, windows.Length, "two windows for the prompt and (padded) for the empty negative");
        // The first window is exactly the truncated encoding; the second carries the words the truncation dropped.
        CollectionAssert.AreEqual(truncated.Skip(state).ToArray(), windows.Skip(2 * state).Take(state).ToArray());
        Assert.AreNotEqual(0f, windows.Skip(3 * state).Select(Math.Abs).Sum());

        var data = ml.Data.LoadFromEnumerable(rows);
        var latents = ml.Transforms.EncodePrompt(model, new EncodePromptOptions { InputColumnName = "Prompt", LongPrompt = true })
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 10, Seed = 3 }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data).Transform(data);
        var image = latents.GetColumn<MLImage>("Image").Single();
        // With the words beyond 75 tokens kept, the shape is red (truncated, the prompt has no colour at all).
        var (inside, _) = TestSupport.ImageChecks.RegionMeans(image, ShapeKind.Circle, NearestPosition(image), margin: 3);
        Assert.AreEqual(ShapeColor.Red, TestSupport.ImageChecks.NearestShapeColor(inside));
    }

    private static ShapePosition NearestPosition(MLImage image)
    {
        // The prompt leaves the position open: pick the position whose circle region is most red.
        ShapePosition best = ShapePosition.Center;
        double bestScore = double.MinValue;
        foreach (var p in Enum.GetValues<ShapePosition>())
        {
            var (inside, outside) = TestSupport.ImageChecks.RegionMeans(image, ShapeKind.Circle, p, margin: 3);
            double score = inside[0] - inside[2] - (outside[0] - outside[2]);
            if (score > bestScore)
                (best, bestScore) = (p, score);
        }
        return best;
    }
}
