using System;
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
/// The stages on SDXL models as ML.NET stages: conformance, batching, option and column errors; and that the Shapes SDXL
/// oracle tells a correctly wired conditioning from the wiring mistakes it is built to catch.
/// </summary>
[TestClass]
public sealed class SdxlStageTests
{
    private const int L = 77;
    private const int D = 72;
    private const int P = 24;

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string Negative { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private sealed class ConditioningRow
    {
        public float[] Embeddings { get; set; } = Array.Empty<float>();

        public float[] Pooled { get; set; } = Array.Empty<float>();
    }

    private static readonly DenoiseLatentsOptions s_small = new() { Width = 64, Height = 64, Steps = 4, SeedColumnName = "Seed", BatchSize = 2 };

    private static Row[] Rows(int n) => Enumerable.Range(0, n)
        .Select(i => new Row { Prompt = i % 2 == 0 ? "a red circle" : "a blue square on a white background", Negative = i == 1 ? "yellow" : "", Seed = i })
        .ToArray();

    [TestMethod]
    public void EveryStageConformsOnAnSdxlModel()
    {
        foreach (var model in new[] { SdxlTestModel.Load(), SdxlTestModel.LoadRefiner() })
        {
            using (model)
            {
                var ml = model.MLContext;
                var data = ml.Data.LoadFromEnumerable(Rows(3));
                var encode = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "Negative");
                EstimatorConformance.Check(encode, data, "Embeddings", EncodePromptOptions.DefaultPooledColumnName);
                var encoded = encode.Fit(data).Transform(data);
                var denoise = ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", s_small);
                EstimatorConformance.Check(denoise, encoded, "Latents");
                var denoised = denoise.Fit(encoded).Transform(encoded);
                var decode = ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" });
                EstimatorConformance.Check(decode, denoised, "Image", "Pixels");
            }
        }
    }

    [TestMethod]
    public void EachRowGetsItsOwnResultWhateverTheBatchBoundaries()
    {
        // The pooled vectors and time ids are written per batch in the [unconditional; conditional] order of the embeddings.
        using var model = SdxlTestModel.Load();
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Rows(5));
        float[][] Latents(int batch) => ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "Negative")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 4, SeedColumnName = "Seed", BatchSize = batch }))
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
        var one = Latents(1);
        var three = Latents(3);
        for (int r = 0; r < 5; r++)
            CollectionAssert.AreEqual(one[r], three[r], $"row {r}");
        CollectionAssert.AreNotEqual(one[0], one[1]);
    }

    [TestMethod]
    public void OptionsOfTheOtherFamilyAreRejectedNamingTheOption()
    {
        using var sdxl = SdxlTestModel.Load();
        using var refiner = SdxlTestModel.LoadRefiner();
        using var sd = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        void Expect(StableDiffusionModel model, string name, DenoiseLatentsOptions options)
        {
            var e = Assert.ThrowsExactly<ArgumentException>(() => model.MLContext.Transforms.DenoiseLatents(model, "L", "E", options), name);
            Assert.AreEqual(name, e.ParamName);
        }
        Expect(sd, "PooledEmbeddingsColumnName", new DenoiseLatentsOptions { PooledEmbeddingsColumnName = "Pooled" });
        Expect(sd, "TargetWidth", new DenoiseLatentsOptions { TargetWidth = 512 });
        Expect(sd, "AestheticScore", new DenoiseLatentsOptions { AestheticScore = 6f });
        Expect(sdxl, "AestheticScore", new DenoiseLatentsOptions { AestheticScore = 6f });
        Expect(sdxl, "NegativeAestheticScore", new DenoiseLatentsOptions { NegativeAestheticScore = 2.5f });
        Expect(refiner, "TargetHeight", new DenoiseLatentsOptions { TargetHeight = 512 });
        var range = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => sdxl.MLContext.Transforms.DenoiseLatents(sdxl, "L", "E", new DenoiseLatentsOptions { CropTop = -8 }));
        Assert.AreEqual("CropTop", range.ParamName);
        var score = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => refiner.MLContext.Transforms.DenoiseLatents(refiner, "L", "E", new DenoiseLatentsOptions { AestheticScore = float.NaN }));
        Assert.AreEqual("AestheticScore", score.ParamName);
    }

    [TestMethod]
    public void AMissingOrWrongSizedPooledColumnIsNamedAtFit()
    {
        using var model = SdxlTestModel.Load();
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Rows(1));
        // EncodePrompt wrote its pooled vector elsewhere: DenoiseLatents looks for the default name.
        var elsewhere = ml.Transforms.EncodePrompt(model, new EncodePromptOptions { InputColumnName = "Prompt", PooledOutputColumnName = "Pooled" })
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", s_small));
        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => elsewhere.Fit(data));
        StringAssert.Contains(missing.Message, $"'{EncodePromptOptions.DefaultPooledColumnName}'");
        StringAssert.Contains(missing.Message, "text_embeds");
        // Told where it is, it runs.
        var told = ml.Transforms.EncodePrompt(model, new EncodePromptOptions { InputColumnName = "Prompt", PooledOutputColumnName = "Pooled" })
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 2, PooledEmbeddingsColumnName = "Pooled" }));
        Assert.AreEqual(4 * 8 * 8, told.Fit(data).Transform(data).GetColumn<VBuffer<float>>("Latents").Single().Length);

        var def = SchemaDefinition.Create(typeof(ConditioningRow));
        def[nameof(ConditioningRow.Embeddings)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, 2, L, D);
        def[nameof(ConditioningRow.Pooled)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, 2, 32);
        var wrong = ml.Data.LoadFromEnumerable(new[] { new ConditioningRow { Embeddings = new float[2 * L * D], Pooled = new float[64] } }, def);
        var size = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() =>
            ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { PooledEmbeddingsColumnName = "Pooled" }).Fit(wrong));
        StringAssert.Contains(size.Message, "'Pooled'");
        StringAssert.Contains(size.Message, "[2, 24]");
    }

    [TestMethod]
    public void TheShapesSdxlOracleCatchesWrongLayersAndAWrongConcatenation()
    {
        // Conditioning built by hand from the ONNX encoders, then denoised: the correct wiring reproduces EncodePrompt's
        // picture; the last layer's states, or the encoders' features in the other order, draw another picture.
        using var model = SdxlTestModel.Load();
        var item = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Left);
        const string prompt = "a red circle on the left on a blue background";
        var first = Run("text_encoder", ShapesTestModel.Tokenizer.Encode(prompt));
        int[] ids2 = ShapesTestModel.Tokenizer.Encode(prompt);
        for (int i = Array.IndexOf(ids2, ShapesTestModel.Tokenizer.EndId) + 1; i < L; i++)
            ids2[i] = ShapesTestModel.Tokenizer.Vocab["!"];
        var second = Run("text_encoder_2", ids2);
        var pooled = new float[2 * P];
        second["text_embeds"].Data.CopyTo(pooled, P);

        bool Draws(string firstStates, string secondStates, bool swap)
        {
            var embeddings = new float[2 * L * D];
            for (int t = 0; t < L; t++)
            {
                var a = first[firstStates].Data.AsSpan(t * 32, 32);
                var b = second[secondStates].Data.AsSpan(t * 40, 40);
                var dst = embeddings.AsSpan(L * D + t * D, D);
                if (swap)
                {
                    b.CopyTo(dst);
                    a.CopyTo(dst.Slice(40));
                }
                else
                {
                    a.CopyTo(dst);
                    b.CopyTo(dst.Slice(32));
                }
            }
            var image = Denoise(model, embeddings, pooled);
            var (inside, outside) = ImageChecks.RegionMeans(image, item.Shape, item.Position, margin: 6);
            return ImageChecks.Distance(inside, ShapesDataset.GetRgb(item.Color)) < 40 && ImageChecks.NearestBackground(outside) == item.Background;
        }

        Assert.IsTrue(Draws("hidden_states.1", "hidden_states.1", swap: false), "the penultimate states side by side draw the prompt");
        Assert.IsFalse(Draws("last_hidden_state", "last_hidden_state", swap: false), "last_hidden_state must not draw the prompt");
        Assert.IsFalse(Draws("hidden_states.0", "hidden_states.0", swap: false), "the embedding layer must not draw the prompt");
        Assert.IsFalse(Draws("hidden_states.1", "last_hidden_state", swap: false), "text_encoder_2's last layer must not draw the prompt");
        Assert.IsFalse(Draws("last_hidden_state", "hidden_states.1", swap: false), "text_encoder's last layer must not draw the prompt");
        Assert.IsFalse(Draws("hidden_states.1", "hidden_states.1", swap: true), "text_encoder_2's features first must not draw the prompt");
    }

    private static System.Collections.Generic.Dictionary<string, (float[] Data, long[] Shape)> Run(string component, int[] ids)
    {
        using var session = new InferenceSession(Path.Combine(SdxlTestModel.Folder, component, "model.onnx"));
        return ShapesTestModel.Run(session, ("input_ids", ids, new long[] { 1, L }));
    }

    private static MLImage Denoise(StableDiffusionModel model, float[] embeddings, float[] pooled)
    {
        var ml = model.MLContext;
        var def = SchemaDefinition.Create(typeof(ConditioningRow));
        def[nameof(ConditioningRow.Embeddings)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, 2, L, D);
        def[nameof(ConditioningRow.Pooled)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, 2, P);
        var data = ml.Data.LoadFromEnumerable(new[] { new ConditioningRow { Embeddings = embeddings, Pooled = pooled } }, def);
        return ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 128, Height = 128, Steps = 20, Seed = 7, PooledEmbeddingsColumnName = "Pooled" })
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data).Transform(data).GetColumn<MLImage>("Image").Single();
    }
}
