using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Prompting;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// The EncodePrompt stage with <see cref="PromptSyntax.A1111"/> and <see cref="PromptSyntax.Compel"/> on
/// <c>tiny-sd</c> with <c>tiny-sd-lnbias</c>'s text encoder (a non-zero final LayerNorm bias, so that A1111's "Original"
/// emphasis divides by a real mean). Every expected value is computed here, independently of the library: ids from the
/// test's own BPE (<see cref="ClipBpeReference"/>), states from the text encoder run directly with ONNX Runtime, and the
/// published formulas — A1111 <c>modules/sd_emphasis.py</c> (<c>EmphasisOriginal</c>, <c>EmphasisOriginalNoNorm</c>) and
/// <c>sd_hijack_clip.py</c> (chunks, <c>BREAK</c>), <c>CFGDenoiser.pad_cond_uncond</c>; compel
/// <c>embeddings_provider.py</c> (<c>build_weighted_embedding_tensor</c>, <c>get_embeddings_for_weighted_prompt_fragments</c>,
/// <c>apply_embedding_weights</c>) and <c>compel.py</c> (<c>.blend</c>, <c>.and</c>).
/// </summary>
[TestClass]
public sealed class WeightedPromptEncodingTests
{
    private const int L = 77;
    private const int D = 32;
    private static readonly Lazy<string> s_folder = new(MakeLnBiasFolder);

    /// <summary>tiny-sd copied to a temporary folder with tiny-sd-lnbias's text encoder (its README's recipe).</summary>
    private static string MakeLnBiasFolder()
    {
        string tinySd = SharedModels.RequireTinySd();
        string lnBias = Path.Combine(SharedModels.Require("tiny-sd-lnbias", Path.Combine("text_encoder", "model.onnx")), "text_encoder", "model.onnx");
        string folder = Path.Combine(Path.GetTempPath(), "mlnet-diffusion-tiny-sd-lnbias-" + Environment.ProcessId);
        foreach (string file in Directory.GetFiles(tinySd, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(folder, Path.GetRelativePath(tinySd, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target, overwrite: true);
        }
        File.Copy(lnBias, Path.Combine(folder, "text_encoder", "model.onnx"), overwrite: true);
        return folder;
    }

    private static string Folder
    {
        get
        {
            SharedModels.RequireTinySd();
            return s_folder.Value;
        }
    }

    private static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(1), Folder);

    /// <summary>The BPE ids of one piece of text, without start and end tokens.</summary>
    private static int[] Content(string text)
    {
        var bpe = ClipBpeReference.FromFolder(Path.Combine(Folder, "tokenizer"));
        var ids = bpe.Encode(text);
        int end = Array.IndexOf(ids, bpe.EndId, 1);
        return ids.Skip(1).Take(end - 1).ToArray();
    }

    /// <summary>[BOS] + content + [EOS], padded with EOS to 77 (SD 1.x pads with EOS).</summary>
    private static int[] Frame(IEnumerable<int> content)
    {
        var bpe = ClipBpeReference.FromFolder(Path.Combine(Folder, "tokenizer"));
        var ids = new List<int> { bpe.StartId };
        ids.AddRange(content);
        while (ids.Count < L)
            ids.Add(bpe.EndId);
        return ids.ToArray();
    }

    /// <summary>The text encoder's last_hidden_state [77, 32] for one row of ids, run directly.</summary>
    private static float[] RunEncoder(int[] ids)
    {
        using var session = new InferenceSession(Path.Combine(Folder, "text_encoder", "model.onnx"));
        return ShapesTestModel.Run(session, ("input_ids", ids, new long[] { 1, L }))["last_hidden_state"].Data;
    }

    private static float[][] Encode(StableDiffusionModel model, EncodePromptOptions options, params (string Prompt, string Negative)[] rows)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows.Select(r => new Row { Prompt = r.Prompt, Negative = r.Negative }).ToArray());
        return ml.Transforms.EncodePrompt(model, options).Fit(data).Transform(data)
            .GetColumn<VBuffer<float>>(options.OutputColumnName).Select(v => v.DenseValues().ToArray()).ToArray();
    }

    private static EncodePromptOptions Options(PromptSyntax syntax, PromptEmphasis emphasis = PromptEmphasis.Original) => new()
    {
        InputColumnName = "Prompt",
        NegativePromptColumnName = "Negative",
        EncodeEmptyNegativePrompt = true,
        PromptSyntax = syntax,
        Emphasis = emphasis,
    };

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string Negative { get; set; } = string.Empty;
    }

    private static void AssertClose(float[] expected, float[] actual, double tolerance, string message)
    {
        Assert.AreEqual(expected.Length, actual.Length, message + ": length");
        for (int i = 0; i < expected.Length; i++)
        {
            if (Math.Abs(expected[i] - actual[i]) > tolerance * Math.Max(1.0, Math.Abs(expected[i])))
                Assert.Fail($"{message}: value {i} (token {i / D}) is {actual[i]}, expected {expected[i]}");
        }
    }

    // "a (red:1.5) circle [blue] square" → A1111 parse_prompt_attention: [a ,1] [red,1.5] [ circle ,1] [blue,1/1.1] [ square,1].
    private static (int[] Ids, float[] Multipliers) WeightedChunk()
    {
        var content = new List<int>();
        var multipliers = new List<float> { 1f };
        foreach (var (text, weight) in new[] { ("a", 1.0), ("red", 1.5), ("circle", 1.0), ("blue", 1.0 / 1.1), ("square", 1.0) })
        {
            var ids = Content(text);
            content.AddRange(ids);
            multipliers.AddRange(Enumerable.Repeat((float)weight, ids.Length));
        }
        while (multipliers.Count < L)
            multipliers.Add(1f);
        return (Frame(content), multipliers.ToArray());
    }

    [TestMethod]
    public void A1111OriginalEmphasisWeightsTokensAndRestoresTheChunkMean()
    {
        using var model = Load();
        var (ids, multipliers) = WeightedChunk();
        float[] z = RunEncoder(ids);
        // EmphasisOriginal.after_transformers: original_mean = z.mean(); z *= multipliers; z *= original_mean / z.mean().
        double originalMean = z.Average(v => (double)v);
        Assert.IsTrue(Math.Abs(originalMean) > 0.1, $"tiny-sd-lnbias's chunk mean is {originalMean}, not rounding noise");
        var weighted = new float[z.Length];
        for (int i = 0; i < z.Length; i++)
            weighted[i] = z[i] * multipliers[i / D];
        double newMean = weighted.Average(v => (double)v);
        var expected = weighted.Select(v => (float)(v * (originalMean / newMean))).ToArray();

        var embeddings = Encode(model, Options(PromptSyntax.A1111), ("a (red:1.5) circle [blue] square", ""))[0];
        Assert.AreEqual(2 * L * D, embeddings.Length);
        AssertClose(expected, embeddings.Skip(L * D).ToArray(), 1e-6, "weighted states");
        // The empty negative prompt is A1111's one empty chunk: [BOS] + [EOS] × 76, weights 1, left as encoded.
        CollectionAssert.AreEqual(RunEncoder(Frame(Array.Empty<int>())), embeddings.Take(L * D).ToArray(), "empty negative prompt");
        // The weighted token's row really moved: 1.5 × the rescale factor relative to the unweighted states.
        int red = 2;
        Assert.AreEqual(1.5 * originalMean / newMean, embeddings[(L * D) + (red * D)] / z[red * D], 1e-5);
    }

    [TestMethod]
    public void A1111NoNormMultipliesOnlyAndIgnoreParsesWithoutWeighting()
    {
        using var model = Load();
        var (ids, multipliers) = WeightedChunk();
        float[] z = RunEncoder(ids);
        var expected = z.Select((v, i) => v * multipliers[i / D]).ToArray();
        var noNorm = Encode(model, Options(PromptSyntax.A1111, PromptEmphasis.NoNorm), ("a (red:1.5) circle [blue] square", ""))[0];
        CollectionAssert.AreEqual(expected, noNorm.Skip(L * D).ToArray(), "EmphasisOriginalNoNorm: z * multipliers");
        var ignore = Encode(model, Options(PromptSyntax.A1111, PromptEmphasis.Ignore), ("a (red:1.5) circle [blue] square", ""))[0];
        CollectionAssert.AreEqual(z, ignore.Skip(L * D).ToArray(), "Ignore: the syntax is removed, the weights are not applied");
    }

    [TestMethod]
    public void A1111BreakMakesChunksAndTheNegativePromptIsPaddedWithTheEmptyChunk()
    {
        using var model = Load();
        var embeddings = Encode(model, Options(PromptSyntax.A1111), ("a red circle BREAK a blue square", "a green square"))[0];
        Assert.AreEqual(2 * 2 * L * D, embeddings.Length, "[2, 2·77, D]: two chunks each side");
        int per = L * D;
        // Each chunk is encoded on its own ([BOS] + chunk + [EOS] + padding); weights 1 leave Original's states unchanged.
        var first = RunEncoder(Frame(Content("a").Concat(Content("red")).Concat(Content("circle"))));
        var second = RunEncoder(Frame(Content("a").Concat(Content("blue")).Concat(Content("square"))));
        var negative = RunEncoder(Frame(Content("a").Concat(Content("green")).Concat(Content("square"))));
        var empty = RunEncoder(Frame(Array.Empty<int>()));
        CollectionAssert.AreEqual(negative, embeddings.Take(per).ToArray(), "negative chunk");
        CollectionAssert.AreEqual(empty, embeddings.Skip(per).Take(per).ToArray(), "pad_cond_uncond: the empty prompt's chunk");
        CollectionAssert.AreEqual(first, embeddings.Skip(2 * per).Take(per).ToArray(), "prompt chunk 1");
        CollectionAssert.AreEqual(second, embeddings.Skip(3 * per).Take(per).ToArray(), "prompt chunk 2");
    }

    [TestMethod]
    public void A1111PromptEditingAndAndAreRefusedNamingTheRow()
    {
        using var model = Load();
        using var encoder = new PromptEncoder(model,
            new PromptEncodingSettings(BatchSize: 2, LongPrompt: false, MaxWindows: 8, Pooled: false, PromptSyntax.A1111, PromptEmphasis.Original, MaxChunks: 8),
            PipelineLog.None);
        foreach (string prompt in new[] { "[red:blue:0.5] circle", "a red circle AND a blue square", "a circle :0.5", "[red|blue] circle" })
        {
            var ex = Assert.ThrowsExactly<NotSupportedException>(
                () => encoder.Encode(new[] { prompt }, new string?[] { null }, new long[] { 7 }, new float[]?[1], new float[]?[1]), prompt);
            StringAssert.StartsWith(ex.Message, "Row 7: the prompt uses AND");
        }
        var tooLong = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => new PromptEncoder(model,
                new PromptEncodingSettings(1, false, 1, false, PromptSyntax.A1111, PromptEmphasis.Original, MaxChunks: 1), PipelineLog.None)
            .Encode(new[] { "a BREAK b" }, new string?[] { null }, new long[] { 3 }, new float[]?[1], new float[]?[1]));
        StringAssert.Contains(tooLong.Message, "Row 3: the prompt needs 2 chunks");
    }

    [TestMethod]
    public void PlainSyntaxStaysTheDefaultAndReadsBracketsAsText()
    {
        Assert.AreEqual(PromptSyntax.Plain, new EncodePromptOptions().PromptSyntax);
        Assert.AreEqual(PromptEmphasis.Original, new EncodePromptOptions().Emphasis);
        using var model = Load();
        var plain = Encode(model, new EncodePromptOptions { InputColumnName = "Prompt" }, ("a (red:1.5) circle", ""))[0];
        var a1111 = Encode(model, Options(PromptSyntax.A1111), ("a (red:1.5) circle", ""))[0];
        CollectionAssert.AreNotEqual(plain.Skip(L * D).ToArray(), a1111.Skip(L * D).ToArray());
        var ex = Assert.ThrowsExactly<ArgumentException>(() => model.MLContext.Transforms.EncodePrompt(model,
            new EncodePromptOptions { LongPrompt = true, PromptSyntax = PromptSyntax.A1111 }));
        StringAssert.Contains(ex.Message, "LongPrompt applies to plain prompts");
    }

    /// <summary>compel's <c>build_weighted_embedding_tensor</c>: <c>empty_z + (z − empty_z) · w</c> for every token.</summary>
    private static float[] CompelWeighted(float[] z, float[] empty, Func<int, float> weightOfToken)
    {
        var result = new float[z.Length];
        for (int i = 0; i < z.Length; i++)
            result[i] = empty[i] + ((z[i] - empty[i]) * weightOfToken(i / D));
        return result;
    }

    [TestMethod]
    public void CompelUpWeightingScalesTheDistanceFromTheEmptyPrompt()
    {
        using var model = Load();
        var empty = RunEncoder(Frame(Array.Empty<int>()));
        var z = RunEncoder(Frame(Content("a").Concat(Content("red")).Concat(Content("circle"))));
        // "red++" = attention_plus_base ** 2 = 1.1² on the "red" token (position 2).
        float w = (float)Math.Pow(1.1, 2);
        var expected = CompelWeighted(z, empty, t => t == 2 ? w : 1f);
        var embeddings = Encode(model, Options(PromptSyntax.Compel), ("a red++ circle", ""))[0];
        AssertClose(expected, embeddings.Skip(L * D).ToArray(), 1e-6, "a red++ circle");
        AssertClose(empty, embeddings.Take(L * D).ToArray(), 0, "empty negative prompt");
        Assert.IsTrue(Math.Abs(expected[(2 * D) + 5] - z[(2 * D) + 5]) > 1e-4, "the weight moved the red token's states");
    }

    [TestMethod]
    public void CompelDownWeightingLerpsTowardsThePromptWithoutThePhrase()
    {
        using var model = Load();
        var empty = RunEncoder(Frame(Array.Empty<int>()));
        float w = (float)Math.Pow(0.9, 2);
        var with = CompelWeighted(RunEncoder(Frame(Content("a").Concat(Content("red")).Concat(Content("circle")))), empty, t => t == 2 ? w : 1f);
        var without = CompelWeighted(RunEncoder(Frame(Content("a").Concat(Content("circle")))), empty, _ => 1f);
        // get_embeddings_for_weighted_prompt_fragments: weights [1, tan((1 − w)·π/2)], normalized, summed.
        double lerp = Math.Tan((1 - Math.Pow(0.9, 2)) * Math.PI / 2);
        var expected = with.Select((v, i) => (float)((v * 1.0 / (1 + lerp)) + (without[i] * lerp / (1 + lerp)))).ToArray();
        var embeddings = Encode(model, Options(PromptSyntax.Compel), ("a red-- circle", ""))[0];
        AssertClose(expected, embeddings.Skip(L * D).ToArray(), 1e-5, "a red-- circle");
    }

    [TestMethod]
    public void CompelBlendSumsAndAndConcatenatesOnTheTokenAxis()
    {
        using var model = Load();
        var empty = RunEncoder(Frame(Array.Empty<int>()));
        var red = RunEncoder(Frame(Content("a").Concat(Content("red")).Concat(Content("circle"))));
        var blue = RunEncoder(Frame(Content("a").Concat(Content("blue")).Concat(Content("square"))));
        var rows = Encode(model, Options(PromptSyntax.Compel),
            ("(\"a red circle\", \"a blue square\").blend(0.7, 0.3)", ""),
            ("(\"a red circle\", \"a blue square\").and()", ""));
        // _get_conditioning_for_blend → apply_embedding_weights(normalize=True): 0.7·A + 0.3·B (A, B through the empty-prompt formula).
        var a = CompelWeighted(red, empty, _ => 1f);
        var b = CompelWeighted(blue, empty, _ => 1f);
        AssertClose(a.Select((v, i) => (0.7f * v) + (0.3f * b[i])).ToArray(), rows[0].Skip(L * D).ToArray(), 1e-5, "blend");
        // build_conditioning_tensor_for_conjunction: torch.cat(parts, dim=1); the negative is padded with the empty prompt.
        Assert.AreEqual(2 * 2 * L * D, rows[1].Length);
        AssertClose(empty.Concat(empty).ToArray(), rows[1].Take(2 * L * D).ToArray(), 0, "padded negative");
        AssertClose(a.Concat(b).ToArray(), rows[1].Skip(2 * L * D).ToArray(), 0, "and");
    }

    [TestMethod]
    public void A1111OnSdxlWeightsEachEncodersStatesAndTakesTheFirstChunksPooledVector()
    {
        using var model = MLNet.Diffusion.Tests.Sdxl.SdxlTestModel.Load();
        const int D1 = 32, D2 = 40, Dx = D1 + D2, P = 24;
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a (red:1.5) circle" }, new Row { Prompt = "a red circle" } });
        float[][] Column(EncodePromptOptions o, string name) => ml.Transforms.EncodePrompt(model, o).Fit(data).Transform(data)
            .GetColumn<VBuffer<float>>(name).Select(v => v.DenseValues().ToArray()).ToArray();
        var plain = new EncodePromptOptions { InputColumnName = "Prompt" };
        var a1111 = new EncodePromptOptions { InputColumnName = "Prompt", PromptSyntax = PromptSyntax.A1111 };
        var z = Column(plain, "Embeddings")[1].Skip(L * Dx).ToArray();
        var plainPooled = Column(plain, EncodePromptOptions.DefaultPooledColumnName)[1];
        var states = Column(a1111, "Embeddings");
        var pooled = Column(a1111, EncodePromptOptions.DefaultPooledColumnName);
        // Unweighted text: same as plain (weights 1; tokenizer_2's "!" padding after EOS, A1111's process_tokens).
        CollectionAssert.AreEqual(z, states[1].Skip(L * Dx).ToArray(), "unweighted");
        // Pooled: the first chunk's, before emphasis; no negative prompt on this force_zeros folder: zeros.
        CollectionAssert.AreEqual(plainPooled, pooled[0]);
        Assert.IsTrue(states[0].Take(L * Dx).All(v => v == 0f), "no negative prompt is zeros");
        // EmphasisOriginal per embedder: each encoder's [77, D_e] block has its own means.
        var expected = (float[])z.Clone();
        int red = 2;
        foreach (var (offset, width) in new[] { (0, D1), (D1, D2) })
        {
            double before = 0, after = 0;
            for (int t = 0; t < L; t++)
            {
                for (int j = 0; j < width; j++)
                {
                    float v = z[(t * Dx) + offset + j];
                    before += v;
                    after += t == red ? v * 1.5f : v;
                }
            }
            double ratio = (before / (L * width)) / (after / (L * width));
            for (int t = 0; t < L; t++)
            {
                for (int j = 0; j < width; j++)
                {
                    int i = (t * Dx) + offset + j;
                    expected[i] = (float)((t == red ? z[i] * 1.5f : z[i]) * ratio);
                }
            }
        }
        AssertClose(expected, states[0].Skip(L * Dx).ToArray(), 1e-5, "SDXL Original emphasis");
        Assert.AreEqual(2 * P, pooled[0].Length);
    }

    [TestMethod]
    public void OriginalEmphasisOnAZeroMeanEncoderIsAClearErrorAndNoNormWorks()
    {
        // The Shapes text encoder is a table of attribute embeddings whose chunk mean is exactly 0: Original's
        // mean ÷ mean is 0/0 (NaN in A1111 as well).
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ex = Assert.ThrowsExactly<InvalidOperationException>(() => new PromptEncoder(model,
                new PromptEncodingSettings(1, false, 8, false, PromptSyntax.A1111, PromptEmphasis.Original, MaxChunks: 8), PipelineLog.None)
            .Encode(new[] { "a (red:1.3) circle" }, new string?[] { null }, new long[] { 4 }, new float[]?[1], new float[]?[1]));
        StringAssert.StartsWith(ex.Message, "Row 4: A1111's Original emphasis made chunk 1 of the ");
        var embeddings = new float[]?[1];
        new PromptEncoder(model, new PromptEncodingSettings(1, false, 8, false, PromptSyntax.A1111, PromptEmphasis.NoNorm, MaxChunks: 8), PipelineLog.None)
            .Encode(new[] { "a (red:1.3) circle" }, new string?[] { null }, new long[] { 4 }, embeddings, new float[]?[1]);
        Assert.IsTrue(embeddings[0]!.All(float.IsFinite));
    }
}
