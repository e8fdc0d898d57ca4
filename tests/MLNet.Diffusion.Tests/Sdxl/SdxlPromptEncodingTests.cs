using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Sdxl;

/// <summary>
/// EncodePrompt on SDXL folders, checked against the text encoders run directly on ids from the test's own BPE
/// (<see cref="ClipBpeReference"/>): diffusers' StableDiffusionXLPipeline.encode_prompt takes each encoder's
/// <c>hidden_states[-2]</c>, concatenates them on the feature axis, uses text_encoder_2's <c>text_embeds</c> as the pooled
/// vector, and zeroes both for "no negative prompt" when <c>force_zeros_for_empty_prompt</c> is set
/// (<c>zero_out_negative_prompt = negative_prompt is None and force_zeros_for_empty_prompt</c>) while encoding an explicit
/// empty negative prompt (<c>negative_prompt or ""</c>).
/// </summary>
[TestClass]
public sealed class SdxlPromptEncodingTests
{
    private const int L = 77;
    private const int D1 = 32;  // the Shapes SDXL text_encoder's width (768 in SDXL)
    private const int D2 = 40;  // text_encoder_2's width (1280 in SDXL)
    private const int P = 24;   // text_embeds' width (1280 in SDXL)

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string Negative { get; set; } = string.Empty;
    }

    private static (float[] States, float[] Pooled) Encode(StableDiffusionModel model, Row row, EncodePromptOptions? options = null)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { row });
        options ??= new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative" };
        var result = ml.Transforms.EncodePrompt(model, options).Fit(data).Transform(data);
        var states = result.GetColumn<VBuffer<float>>(options.OutputColumnName).Single().DenseValues().ToArray();
        var pooled = result.GetColumn<VBuffer<float>>(EncodePromptOptions.DefaultPooledColumnName).Single().DenseValues().ToArray();
        return (states, pooled);
    }

    /// <summary>Ids of a prompt as CLIPTokenizer makes them: tokenizer/ pads with &lt;|endoftext|&gt;, tokenizer_2/ with "!".</summary>
    private static int[] Ids(string folder, string tokenizer, string prompt)
    {
        var bpe = ClipBpeReference.FromFolder(Path.Combine(folder, tokenizer));
        int[] ids = bpe.Encode(prompt);
        if (tokenizer == "tokenizer_2")
        {
            int end = Array.IndexOf(ids, bpe.EndId);
            for (int i = end + 1; i < ids.Length; i++)
                ids[i] = bpe.Vocab["!"];
        }
        return ids;
    }

    private static Dictionary<string, (float[] Data, long[] Shape)> RunEncoder(string folder, string component, int[] ids)
    {
        using var session = new InferenceSession(Path.Combine(folder, component, "model.onnx"));
        return ShapesTestModel.Run(session, ("input_ids", ids, new long[] { 1, L }));
    }

    /// <summary>The expected conditional states [77, D1 + D2]: each token's text_encoder then text_encoder_2 penultimate states.</summary>
    private static float[] ExpectedStates(string prompt)
    {
        string folder = SdxlTestModel.Folder;
        var first = RunEncoder(folder, "text_encoder", Ids(folder, "tokenizer", prompt))["hidden_states.1"].Data;
        var second = RunEncoder(folder, "text_encoder_2", Ids(folder, "tokenizer_2", prompt))["hidden_states.1"].Data;
        var expected = new float[L * (D1 + D2)];
        for (int t = 0; t < L; t++)
        {
            Array.Copy(first, t * D1, expected, t * (D1 + D2), D1);
            Array.Copy(second, t * D2, expected, t * (D1 + D2) + D1, D2);
        }
        return expected;
    }

    [TestMethod]
    public void TheEmbeddingsAreBothEncodersPenultimateStatesSideBySide()
    {
        using var model = SdxlTestModel.Load();
        const string prompt = "a red circle on the left on a blue background"; // no punctuation: the reference BPE skips it
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = prompt } });
        var result = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "Negative").Fit(data).Transform(data);
        CollectionAssert.AreEqual(new[] { 2, L, D1 + D2 }, ((VectorDataViewType)result.Schema["Embeddings"].Type).Dimensions.ToArray());
        CollectionAssert.AreEqual(new[] { 2, P }, ((VectorDataViewType)result.Schema[EncodePromptOptions.DefaultPooledColumnName].Type).Dimensions.ToArray(),
            "SDXL gets the pooled column without asking for it");

        var (states, _) = Encode(model, new Row { Prompt = prompt });
        CollectionAssert.AreEqual(ExpectedStates(prompt), states.Skip(L * (D1 + D2)).ToArray());
    }

    [TestMethod]
    public void AnEmptyNegativePromptGivesZerosAndThePooledVectorIsTextEmbeds()
    {
        using var model = SdxlTestModel.Load();
        Assert.IsTrue(model.Info.ForceZerosForEmptyPrompt);
        const string prompt = "a yellow square on a green background";
        var (states, pooled) = Encode(model, new Row { Prompt = prompt });
        // diffusers: zero_out_negative_prompt → negative_prompt_embeds = zeros_like(prompt_embeds), negative_pooled = zeros_like(pooled).
        Assert.IsTrue(states.Take(L * (D1 + D2)).All(v => v == 0f), "unconditional states must be zeros");
        Assert.IsTrue(pooled.Take(P).All(v => v == 0f), "unconditional pooled vector must be zeros");
        var textEmbeds = RunEncoder(SdxlTestModel.Folder, "text_encoder_2", Ids(SdxlTestModel.Folder, "tokenizer_2", prompt))["text_embeds"].Data;
        CollectionAssert.AreEqual(textEmbeds, pooled.Skip(P).ToArray());
        Assert.IsTrue(textEmbeds.Any(v => v != 0f), "the prompt names a background, which text_embeds carries");
    }

    [TestMethod]
    public void ANegativePromptIsEncodedAsAPromptIs()
    {
        using var model = SdxlTestModel.Load();
        var (states, pooled) = Encode(model, new Row { Prompt = "a circle", Negative = "a red square on a black background" });
        var (asPrompt, asPromptPooled) = Encode(model, new Row { Prompt = "a red square on a black background" });
        CollectionAssert.AreEqual(asPrompt.Skip(L * (D1 + D2)).ToArray(), states.Take(L * (D1 + D2)).ToArray());
        CollectionAssert.AreEqual(asPromptPooled.Skip(P).ToArray(), pooled.Take(P).ToArray());
    }

    [TestMethod]
    public void Tokenizer2PadsWithTheExclamationMark()
    {
        using var model = SdxlTestModel.Load();
        Assert.IsNotNull(model.Tokenizer2);
        Assert.AreEqual(model.Tokenizer2.GetTokenId("!"), model.Tokenizer2.PadTokenId, "SDXL's tokenizer_2 pads with '!'");
        Assert.AreEqual(model.Tokenizer.EndTokenId, model.Tokenizer.PadTokenId, "tokenizer pads with <|endoftext|>");
        // text_encoder_2 marks every <|endoftext|> at its dimension 39: once per sequence with tokenizer_2's ids, 70 times
        // if the first tokenizer's ids (padded with <|endoftext|>) were fed to it.
        var (states, _) = Encode(model, new Row { Prompt = "a blue triangle" });
        float marks = 0;
        for (int t = 0; t < L; t++)
            marks += states[L * (D1 + D2) + t * (D1 + D2) + D1 + MLNet.Diffusion.Shapes.Building.ShapesSdxlGraphs.EndMarker2];
        Assert.AreEqual(1f, marks);
    }

    [TestMethod]
    public void TheRefinerEncodesAnEmptyNegativePromptWithItsOnlyEncoder()
    {
        using var model = SdxlTestModel.LoadRefiner();
        Assert.AreEqual(ModelKind.StableDiffusionXLRefiner, model.Info.Kind);
        Assert.IsFalse(model.Info.ForceZerosForEmptyPrompt, "the refiner folder sets force_zeros_for_empty_prompt false");
        Assert.AreSame(model.Tokenizer2, model.Tokenizer);
        var (states, pooled) = Encode(model, new Row { Prompt = "a red circle on a blue background" });
        Assert.AreEqual(2 * L * D2, states.Length);
        var empty = RunEncoder(SdxlTestModel.RefinerFolder, "text_encoder_2", Ids(SdxlTestModel.RefinerFolder, "tokenizer_2", string.Empty));
        CollectionAssert.AreEqual(empty["hidden_states.1"].Data, states.Take(L * D2).ToArray(), "the empty negative prompt is encoded, not zeroed");
        CollectionAssert.AreEqual(empty["text_embeds"].Data, pooled.Take(P).ToArray());
        var cond = RunEncoder(SdxlTestModel.RefinerFolder, "text_encoder_2", Ids(SdxlTestModel.RefinerFolder, "tokenizer_2", "a red circle on a blue background"));
        CollectionAssert.AreEqual(cond["hidden_states.1"].Data, states.Skip(L * D2).ToArray());
    }

    [TestMethod]
    public void LongPromptWindowsRunThroughBothEncodersAndTheUNet()
    {
        using var model = SdxlTestModel.Load();
        // About 110 tokens: the attribute words come last, beyond the first 75-token window.
        string prompt = string.Join(' ', Enumerable.Repeat("a picture of a", 27)) + " red circle";
        var options = new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative" };
        var (truncated, truncatedPooled) = Encode(model, new Row { Prompt = prompt }, options);
        var longOptions = new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative", LongPrompt = true };
        var (windows, pooled) = Encode(model, new Row { Prompt = prompt }, longOptions);
        int state = L * (D1 + D2);
        Assert.AreEqual(2 * 2 * state, windows.Length, "two windows for the prompt and (zeroed) for the empty negative");
        Assert.IsTrue(windows.Take(2 * state).All(v => v == 0f), "force_zeros_for_empty_prompt zeroes every negative window");
        CollectionAssert.AreEqual(truncated.Skip(state).ToArray(), windows.Skip(2 * state).Take(state).ToArray(), "the first window is the truncated encoding");
        CollectionAssert.AreEqual(truncatedPooled, pooled, "the pooled vector is the first window's");

        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = prompt } });
        var image = ml.Transforms.EncodePrompt(model, longOptions)
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 10, Seed = 3 }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data).Transform(data).GetColumn<MLImage>("Image").Single();
        // The colour word is in the second window: kept, the circle is red (text_encoder_2's states carry colour).
        double best = double.MaxValue;
        foreach (var position in Enum.GetValues<ShapePosition>())
        {
            var (inside, _) = ImageChecks.RegionMeans(image, ShapeKind.Circle, position, margin: 3);
            best = Math.Min(best, ImageChecks.Distance(inside, ShapesDataset.GetRgb(ShapeColor.Red)));
        }
        Assert.IsTrue(best < 40, $"no red circle (nearest distance {best:F0})");
    }
    private sealed class PromptOnly
    {
        public string Prompt { get; set; } = string.Empty;
    }

    /// <summary>The expected states [77, D₁ + D₂] of a text on an SDXL folder: both encoders' penultimate states side by side.</summary>
    private static float[] ExpectedStates(string folder, string prompt, string penultimate, int d1, int d2)
    {
        var first = RunEncoder(folder, "text_encoder", Ids(folder, "tokenizer", prompt))[penultimate].Data;
        var second = RunEncoder(folder, "text_encoder_2", Ids(folder, "tokenizer_2", prompt))[penultimate].Data;
        var expected = new float[L * (d1 + d2)];
        for (int t = 0; t < L; t++)
        {
            Array.Copy(first, t * d1, expected, t * (d1 + d2), d1);
            Array.Copy(second, t * d2, expected, t * (d1 + d2) + d1, d2);
        }
        return expected;
    }

    private static (float[] States, float[] Pooled)[] EncodeRows<T>(StableDiffusionModel model, EncodePromptOptions options, params T[] rows)
        where T : class
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var result = ml.Transforms.EncodePrompt(model, options).Fit(data).Transform(data);
        var states = result.GetColumn<VBuffer<float>>(options.OutputColumnName).Select(v => v.DenseValues().ToArray()).ToArray();
        var pooled = result.GetColumn<VBuffer<float>>(EncodePromptOptions.DefaultPooledColumnName).Select(v => v.DenseValues().ToArray()).ToArray();
        return states.Zip(pooled).ToArray();
    }

    /// <summary>
    /// On a folder with <c>force_zeros_for_empty_prompt</c>: no negative-prompt column, or an empty value in it, is
    /// diffusers' <c>negative_prompt=None</c> (zeros); with <see cref="EncodePromptOptions.EncodeEmptyNegativePrompt"/> the
    /// empty value is <c>negative_prompt=""</c>, encoded by both encoders as any prompt is.
    /// </summary>
    private static void CheckNoneAndEmptyNegative(StableDiffusionModel model, string folder, string penultimate, int d1, int d2, int p, bool requirePooled)
    {
        Assert.IsTrue(model.Info.ForceZerosForEmptyPrompt);
        int state = L * (d1 + d2);
        const string prompt = "a red circle on a blue background";
        var emptyStates = ExpectedStates(folder, string.Empty, penultimate, d1, d2);
        var emptyPooled = RunEncoder(folder, "text_encoder_2", Ids(folder, "tokenizer_2", string.Empty))["text_embeds"].Data;
        // The Shapes encoders carry only attributes and end markers: there the empty prompt's states are not zeros (the
        // markers) though its text_embeds are; tiny-sdxl's random CLIP towers give neither zeros.
        Assert.IsTrue(emptyStates.Any(v => v != 0f), "the empty prompt's states are not zeros");
        Assert.AreEqual(requirePooled, emptyPooled.Any(v => v != 0f), "the empty prompt's text_embeds");

        var column = new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative" };
        var noColumn = new EncodePromptOptions { InputColumnName = "Prompt" };
        foreach (var (name, options, explicitEmpty) in new[]
        {
            ("an empty value", column, false),
            ("no negative column", noColumn, false),
            ("an empty value, EncodeEmptyNegativePrompt", new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative", EncodeEmptyNegativePrompt = true }, true),
            ("no negative column, EncodeEmptyNegativePrompt", new EncodePromptOptions { InputColumnName = "Prompt", EncodeEmptyNegativePrompt = true }, true),
        })
        {
            var (states, pooled) = options.NegativePromptColumnName is null
                ? EncodeRows(model, options, new PromptOnly { Prompt = prompt })[0]
                : EncodeRows(model, options, new Row { Prompt = prompt, Negative = string.Empty })[0];
            if (explicitEmpty)
            {
                CollectionAssert.AreEqual(emptyStates, states.Take(state).ToArray(), name);
                CollectionAssert.AreEqual(emptyPooled, pooled.Take(p).ToArray(), name);
            }
            else
            {
                Assert.IsTrue(states.Take(state).All(v => v == 0f), name + ": zeros");
                Assert.IsTrue(pooled.Take(p).All(v => v == 0f), name + ": zeros");
            }
            CollectionAssert.AreEqual(ExpectedStates(folder, prompt, penultimate, d1, d2), states.Skip(state).ToArray(), name + ": the prompt");
        }
    }

    [TestMethod]
    public void NoNegativePromptGivesZerosAndAnExplicitEmptyOneIsEncoded()
    {
        using var model = SdxlTestModel.Load();
        CheckNoneAndEmptyNegative(model, SdxlTestModel.Folder, "hidden_states.1", D1, D2, P, requirePooled: false);
    }

    [TestMethod]
    public void TinySdxlTellsNoNegativePromptFromTheEmptyOne()
    {
        // The real-architecture export of ../shared/models/tiny-sdxl: CLIP towers of 5 layers (penultimate = hidden_states.4),
        // widths 32 and 48, text_embeds 40.
        string folder = SharedModels.Require("tiny-sdxl");
        using var model = StableDiffusionModel.Load(new MLContext(1), folder);
        CheckNoneAndEmptyNegative(model, folder, "hidden_states.4", 32, 48, 40, requirePooled: true);
    }

    [TestMethod]
    public void ABatchMixesNegativesAndEachRowIsItsOwnEncoding()
    {
        using var model = SdxlTestModel.Load();
        int state = L * (D1 + D2);
        var rows = new[]
        {
            new Row { Prompt = "a red circle", Negative = string.Empty },
            new Row { Prompt = "a red circle", Negative = "a green square" },
            new Row { Prompt = string.Empty, Negative = "a red circle" },
            new Row { Prompt = "a green square", Negative = string.Empty },
        };
        foreach (bool explicitEmpty in new[] { false, true })
        {
            EncodePromptOptions Options(int batchSize) => new() { InputColumnName = "Prompt", NegativePromptColumnName = "Negative", EncodeEmptyNegativePrompt = explicitEmpty, BatchSize = batchSize };
            var batch = EncodeRows(model, Options(4), rows);
            for (int r = 0; r < rows.Length; r++)
            {
                var alone = EncodeRows(model, Options(1), rows[r])[0];
                CollectionAssert.AreEqual(alone.States, batch[r].States, $"row {r}, explicit empty {explicitEmpty}");
                CollectionAssert.AreEqual(alone.Pooled, batch[r].Pooled, $"row {r}, explicit empty {explicitEmpty}");
                bool zeros = rows[r].Negative.Length == 0 && !explicitEmpty;
                Assert.AreEqual(zeros, batch[r].States.Take(state).All(v => v == 0f), $"row {r}, explicit empty {explicitEmpty}");
            }
            CollectionAssert.AreEqual(batch[0].States.Skip(state).ToArray(), batch[2].States.Take(state).ToArray(), "a text is the same as prompt or negative");
        }
    }

    [TestMethod]
    public void LongPromptWindowsEncodeAnExplicitEmptyNegative()
    {
        using var model = SdxlTestModel.Load();
        string prompt = string.Join(' ', Enumerable.Repeat("a picture of a", 27)) + " red circle";
        int state = L * (D1 + D2);
        var (windows, pooled) = Encode(model, new Row { Prompt = prompt },
            new EncodePromptOptions { InputColumnName = "Prompt", NegativePromptColumnName = "Negative", LongPrompt = true, EncodeEmptyNegativePrompt = true });
        Assert.AreEqual(2 * 2 * state, windows.Length);
        CollectionAssert.AreEqual(ExpectedStates(SdxlTestModel.Folder, string.Empty, "hidden_states.1", D1, D2), windows.Take(state).ToArray(), "the first negative window is the encoded empty prompt");
        Assert.IsTrue(windows.Skip(state).Take(state).Any(v => v != 0f), "the second negative window is encoded padding, not zeros");
        CollectionAssert.AreEqual(RunEncoder(SdxlTestModel.Folder, "text_encoder_2", Ids(SdxlTestModel.Folder, "tokenizer_2", string.Empty))["text_embeds"].Data, pooled.Take(P).ToArray());
    }
}
