using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Sdxl;

/// <summary>The SDXL-shaped Shapes folders as files: the optimum SDXL export layout and signatures, and the VAE scaling factor folded in.</summary>
[TestClass]
public sealed class ShapesSdxlFolderTests
{
    [TestMethod]
    public void TheFoldersHaveTheSdxlLayout()
    {
        foreach (string f in new[] { "tokenizer/vocab.json", "text_encoder/model.onnx", "tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "text_encoder_2/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx", "vae_encoder/model.onnx" })
            Assert.IsTrue(File.Exists(Path.Combine(SdxlTestModel.Folder, f)), $"base: missing {f}");
        Assert.IsFalse(Directory.Exists(Path.Combine(SdxlTestModel.RefinerFolder, "text_encoder")), "the refiner has no text_encoder/");
        Assert.IsFalse(Directory.Exists(Path.Combine(SdxlTestModel.RefinerFolder, "tokenizer")), "the refiner has no tokenizer/");
        using var index = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(SdxlTestModel.Folder, "model_index.json")));
        Assert.AreEqual("StableDiffusionXLPipeline", index.RootElement.GetProperty("_class_name").GetString());
        using var refinerIndex = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(SdxlTestModel.RefinerFolder, "model_index.json")));
        Assert.AreEqual("StableDiffusionXLImg2ImgPipeline", refinerIndex.RootElement.GetProperty("_class_name").GetString());
        Assert.IsTrue(refinerIndex.RootElement.GetProperty("requires_aesthetics_score").GetBoolean());
        Assert.AreEqual(System.Text.Json.JsonValueKind.Null, refinerIndex.RootElement.GetProperty("text_encoder")[0].ValueKind);
        Assert.AreEqual(0.13025f, ShapesTestModel.ReadScalingFactor(Path.Combine(SdxlTestModel.Folder, "vae_decoder", "config.json")));
    }

    [TestMethod]
    public void TheGraphsHaveOptimumsSdxlSignatures()
    {
        // optimum exporters/onnx/model_configs.py: CLIPTextOnnxConfig (last_hidden_state, pooler_output, hidden_states.i),
        // CLIPTextWithProjectionOnnxConfig (text_embeds, last_hidden_state, hidden_states.i), UNetOnnxConfig with
        // addition_embed_type "text_time" (sample, timestep, encoder_hidden_states, text_embeds, time_ids → out_sample).
        using (var te = Open(SdxlTestModel.Folder, "text_encoder"))
            CollectionAssert.AreEqual(new[] { "last_hidden_state", "pooler_output", "hidden_states.0", "hidden_states.1", "hidden_states.2" }, te.OutputNames.ToArray());
        using (var te2 = Open(SdxlTestModel.Folder, "text_encoder_2"))
        {
            CollectionAssert.AreEqual(new[] { "text_embeds", "last_hidden_state", "hidden_states.0", "hidden_states.1", "hidden_states.2" }, te2.OutputNames.ToArray());
            CollectionAssert.AreEqual(new[] { -1, 24 }, te2.OutputMetadata["text_embeds"].Dimensions);
        }
        foreach (var (folder, hidden, ids) in new[] { (SdxlTestModel.Folder, 72, 6), (SdxlTestModel.RefinerFolder, 40, 5) })
        {
            using var unet = Open(folder, "unet");
            CollectionAssert.AreEqual(new[] { "sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids" }, unet.InputNames.ToArray());
            CollectionAssert.AreEqual(new[] { -1, -1, hidden }, unet.InputMetadata["encoder_hidden_states"].Dimensions);
            CollectionAssert.AreEqual(new[] { -1, 24 }, unet.InputMetadata["text_embeds"].Dimensions);
            CollectionAssert.AreEqual(new[] { -1, ids }, unet.InputMetadata["time_ids"].Dimensions);
        }
    }

    [TestMethod]
    public void TheVaeFoldsSdxlsScalingFactorSoLatentsAndPicturesAreTheSdModels()
    {
        // The library scales encoder outputs by the config's 0.13025 and divides decoder inputs by it; the SDXL folder's
        // VAE graphs fold the ratio to the data's own factor in, so its scaled latents equal the SD folder's.
        var item = ShapesDataset.GetItem(ShapeKind.Triangle, ShapeColor.Blue, BackgroundColor.White, ShapePosition.Right);
        float[] pixels = ShapesTestModel.RenderTensor(item);
        using var encoder = Open(SdxlTestModel.Folder, "vae_encoder");
        var z = ShapesTestModel.Run(encoder, ("sample", pixels, new long[] { 1, 3, 256, 256 }))["latent_sample"].Data;
        var expected = ShapesTestModel.ItemLatents.AsSpan(item.Index * ShapesTestModel.LatentLength, ShapesTestModel.LatentLength).ToArray();
        for (int i = 0; i < z.Length; i++)
            Assert.AreEqual(expected[i], z[i] * 0.13025f, 1e-3 * (1 + Math.Abs(expected[i])), $"latent {i}");

        using var decoder = Open(SdxlTestModel.Folder, "vae_decoder");
        var image = ShapesTestModel.Run(decoder, ("latent_sample", expected.Select(v => v / 0.13025f).ToArray(), new long[] { 1, 4, 32, 32 }))["sample"].Data;
        float sdScale = ShapesTestModel.ScalingFactor;
        var sdImage = ShapesTestModel.Run(ShapesTestModel.VaeDecoder, ("latent_sample", expected.Select(v => v / sdScale).ToArray(), new long[] { 1, 4, 32, 32 }))["sample"].Data;
        for (int i = 0; i < image.Length; i++)
            Assert.AreEqual(sdImage[i], image[i], 1e-3, $"pixel value {i}");
    }

    [TestMethod]
    public void Int64InputIdsCombineWithSdxl()
    {
        // Building with Sdxl | Int64InputIds gives both text encoders int64 input_ids (as some exporters write them) and
        // the same states; checked on the graphs the builder writes, without building another folder.
        new ShapesModelOptions { Variant = ShapesVariant.Sdxl | ShapesVariant.Int64InputIds }.Validate();
        var vocab = MLNet.Diffusion.Shapes.Building.ShapesTokenizerFiles.Create();
        int[] ids = ShapesTestModel.Tokenizer.Encode("a purple square in the middle on a gray background");
        long[] ids64 = ids.Select(i => (long)i).ToArray();
        foreach (var (component, graph) in new[]
        {
            ("text_encoder", MLNet.Diffusion.Shapes.Building.ShapesSdxlGraphs.TextEncoder(vocab, int64Ids: true)),
            ("text_encoder_2", MLNet.Diffusion.Shapes.Building.ShapesSdxlGraphs.TextEncoder2(vocab, int64Ids: true)),
        })
        {
            using var int64 = new InferenceSession(graph);
            Assert.AreEqual(TensorElementType.Int64, int64.InputMetadata["input_ids"].ElementDataType);
            using var int32 = Open(SdxlTestModel.Folder, component);
            var expected = ShapesTestModel.Run(int32, ("input_ids", ids, new long[] { 1, 77 }));
            var actual = ShapesTestModel.Run(int64, ("input_ids", ids64, new long[] { 1, 77 }));
            foreach (var output in expected.Keys)
                CollectionAssert.AreEqual(expected[output].Data, actual[output].Data, $"{component} {output}");
        }
    }

    [TestMethod]
    public void VariantsNotBuiltWithSdxlAreRefusedNamingThem()
    {
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ShapesModel.Build(Path.Combine(Path.GetTempPath(), "never-built"),
            new ShapesModelOptions { Variant = ShapesVariant.Sdxl | ShapesVariant.Inpainting }));
        StringAssert.Contains(e.Message, "Inpainting");
    }

    private static InferenceSession Open(string folder, string component) => new(Path.Combine(folder, component, "model.onnx"));
}
