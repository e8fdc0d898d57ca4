using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Transforms;

/// <summary>The EncodePrompt stage: id dtypes from metadata, pooled output, long-prompt windows; its recipe (Pipeline/PromptEncoder) on plain inputs.</summary>
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
    private sealed class RecordingLog : IPipelineLog
    {
        public List<string> Warnings { get; } = new();

        public bool TraceEnabled => false;

        public void Trace(string message) => throw new AssertFailedException("no trace expected");

        public void Info(string message) => throw new AssertFailedException("no info expected");

        public void Warning(string message) => Warnings.Add(message);
    }

    [TestMethod]
    public void TheRecipeTakesPlainInputsWarnsPerRowAndReusesTheCallersArrays()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        Assert.IsFalse(model.Info.ForceZerosForEmptyPrompt);
        var log = new RecordingLog();
        using var encoder = new PromptEncoder(model, new PromptEncodingSettings(BatchSize: 2, LongPrompt: false, MaxWindows: 8, Pooled: true), log);
        string longPrompt = string.Join(' ', Enumerable.Repeat("a picture of a", 27)) + " red circle";
        var prompts = new[] { "a red circle", "a blue square", longPrompt, "a red circle" };
        var negatives = new string?[] { null, string.Empty, longPrompt, "a blue square" };
        var rows = new long[] { 10, 11, 12, 13 };
        var embeddings = new float[]?[4];
        var pooled = new float[]?[4];
        encoder.Encode(prompts, negatives, rows, embeddings, pooled);

        // One warning per distinct truncated text, naming the first row and side that use it.
        Assert.AreEqual(1, log.Warnings.Count);
        StringAssert.StartsWith(log.Warnings[0], "Row 12: the prompt has ");
        // Each row equals the stage's encoding of it; on SD 1.x "no negative prompt" and "" are both the encoded empty prompt.
        int per = 77 * 32;
        var stage = Embeddings(model, new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative" },
            prompts.Select((p, i) => new Row { Prompt = p, Negative = negatives[i] ?? string.Empty }).ToArray());
        for (int r = 0; r < 4; r++)
            CollectionAssert.AreEqual(stage[r], embeddings[r], $"row {r}");
        CollectionAssert.AreEqual(embeddings[0]!.Take(per).ToArray(), embeddings[1]!.Take(per).ToArray());
        CollectionAssert.AreEqual(embeddings[1]!.Skip(per).ToArray(), embeddings[3]!.Take(per).ToArray(), "a text is the same as prompt or negative");

        // The next batches write into the same arrays, and allocate little beyond what ONNX Runtime's calls do.
        var kept = embeddings.ToArray();
        var expected = embeddings.Select(e => e!.ToArray()).ToArray();
        encoder.Encode(prompts, negatives, rows, embeddings, pooled);
        long before = GC.GetAllocatedBytesForCurrentThread();
        encoder.Encode(prompts, negatives, rows, embeddings, pooled);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        for (int r = 0; r < 4; r++)
        {
            Assert.AreSame(kept[r], embeddings[r], $"row {r}");
            CollectionAssert.AreEqual(expected[r], embeddings[r], $"row {r}");
        }
        // About 6.5 KB here, from the tokenizer and ONNX Runtime's calls; one new states array per row would be 78 KB.
        Assert.IsTrue(allocated < 16 * 1024, $"a batch of 4 rows allocated {allocated} B (its states alone are {4 * 2 * per * 4} B)");
    }
}
