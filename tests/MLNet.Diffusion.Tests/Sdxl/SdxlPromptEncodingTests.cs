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
/// vector, and zeroes both for an empty negative prompt when <c>force_zeros_for_empty_prompt</c> is set.
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
}
