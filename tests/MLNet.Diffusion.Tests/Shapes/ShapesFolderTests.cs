using System;
using System.IO;
using System.Linq;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Shapes;

[TestClass]
public sealed class ShapesFolderTests
{
    private static readonly string[] s_files =
    [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "text_encoder/model.onnx",
        "unet/model.onnx",
        "unet/config.json",
        "vae_encoder/model.onnx",
        "vae_encoder/config.json",
        "vae_decoder/model.onnx",
        "vae_decoder/config.json",
    ];

    [TestMethod]
    public void Folder_HasEveryFile()
    {
        foreach (string f in s_files)
            Assert.IsTrue(File.Exists(Path.Combine(ShapesTestModel.Folder, f)), $"missing {f}");
    }

    [TestMethod]
    public void TextEncoder_HasStandardSignature()
    {
        var s = ShapesTestModel.TextEncoder;
        AssertNode(s.InputMetadata, "input_ids", TensorElementType.Int32, -1, 77);
        AssertNode(s.OutputMetadata, "last_hidden_state", TensorElementType.Float, -1, 77, 32);
        AssertNode(s.OutputMetadata, "pooler_output", TensorElementType.Float, -1, 32);
        Assert.AreEqual("batch", s.InputMetadata["input_ids"].SymbolicDimensions[0]);
    }

    [TestMethod]
    public void Unet_HasStandardSignature()
    {
        var s = ShapesTestModel.Unet;
        CollectionAssert.AreEqual(new[] { "sample", "timestep", "encoder_hidden_states" }, s.InputNames.ToArray());
        AssertNode(s.InputMetadata, "sample", TensorElementType.Float, -1, 4, -1, -1);
        AssertNode(s.InputMetadata, "timestep", TensorElementType.Float, -1);
        AssertNode(s.InputMetadata, "encoder_hidden_states", TensorElementType.Float, -1, 77, 32);
        AssertNode(s.OutputMetadata, "out_sample", TensorElementType.Float, -1, 4, -1, -1);
        CollectionAssert.AreEqual(new[] { "batch", "", "height", "width" }, s.InputMetadata["sample"].SymbolicDimensions);
    }

    [TestMethod]
    public void Vae_HasStandardSignatures()
    {
        AssertNode(ShapesTestModel.VaeEncoder.InputMetadata, "sample", TensorElementType.Float, -1, 3, -1, -1);
        AssertNode(ShapesTestModel.VaeEncoder.OutputMetadata, "latent_sample", TensorElementType.Float, -1, 4, -1, -1);
        AssertNode(ShapesTestModel.VaeDecoder.InputMetadata, "latent_sample", TensorElementType.Float, -1, 4, -1, -1);
        AssertNode(ShapesTestModel.VaeDecoder.OutputMetadata, "sample", TensorElementType.Float, -1, 3, -1, -1);
    }

    [TestMethod]
    public void Configs_AgreeWithTheModel()
    {
        string folder = ShapesTestModel.Folder;
        float encoderScale = ShapesTestModel.ReadScalingFactor(Path.Combine(folder, "vae_encoder", "config.json"));
        float decoderScale = ShapesTestModel.ReadScalingFactor(Path.Combine(folder, "vae_decoder", "config.json"));
        Assert.AreEqual(encoderScale, decoderScale);
        Assert.IsTrue(decoderScale is > 0.05f and < 1f, $"scaling_factor {decoderScale}");
        Console.WriteLine($"scaling_factor = {decoderScale}");

        // Scaled item latents have unit standard deviation: that is what scaling_factor means.
        var z = ShapesTestModel.ItemLatents;
        double mean = z.Average(v => (double)v);
        double std = Math.Sqrt(z.Average(v => ((double)v - mean) * (v - mean)));
        Assert.AreEqual(1.0, std, 1e-3);

        using (var vae = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "vae_decoder", "config.json"))))
        {
            Assert.AreEqual(4, vae.RootElement.GetProperty("latent_channels").GetInt32());
            Assert.AreEqual(4, vae.RootElement.GetProperty("block_out_channels").GetArrayLength());
            Assert.AreEqual(256, vae.RootElement.GetProperty("sample_size").GetInt32());
        }

        var config = SchedulerConfig.Load(Path.Combine(folder, "scheduler", "scheduler_config.json"));
        Assert.AreEqual("DDIMScheduler", config.ClassName);
        Assert.AreEqual("scaled_linear", config.BetaSchedule);
        Assert.AreEqual(0.00085, config.BetaStart);
        Assert.AreEqual(0.012, config.BetaEnd);
        Assert.AreEqual(1, config.StepsOffset);
        Assert.IsFalse(config.SetAlphaToOne);
        Assert.AreEqual("leading", config.TimestepSpacing);
        Assert.IsInstanceOfType<DdimScheduler>(SchedulerFactory.CreateDefault(config));

        using var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "model_index.json")));
        Assert.AreEqual("OnnxStableDiffusionPipeline", index.RootElement.GetProperty("_class_name").GetString());
        Assert.AreEqual("DDIMScheduler", index.RootElement.GetProperty("scheduler")[1].GetString());
        Assert.AreEqual("CLIPTokenizer", index.RootElement.GetProperty("tokenizer")[1].GetString());

        using var tok = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, "tokenizer", "tokenizer_config.json")));
        Assert.AreEqual(77, tok.RootElement.GetProperty("model_max_length").GetInt32());
        Assert.AreEqual("<|endoftext|>", tok.RootElement.GetProperty("pad_token").GetString());
    }

    private static void AssertNode(System.Collections.Generic.IReadOnlyDictionary<string, NodeMetadata> metadata, string name, TensorElementType type, params int[] dims)
    {
        Assert.IsTrue(metadata.ContainsKey(name), $"no '{name}' among {string.Join(", ", metadata.Keys)}");
        var m = metadata[name];
        Assert.AreEqual(type, m.ElementDataType, name);
        CollectionAssert.AreEqual(dims, m.Dimensions, $"{name}: [{string.Join(",", m.Dimensions)}]");
    }
}
