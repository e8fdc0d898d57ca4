using System;
using System.IO;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Onnx.Protobuf;
using MLNet.Diffusion.Shapes.Onnx;
using MLNet.Diffusion.Tests.Shapes;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Tests.Sdxl;

/// <summary>
/// Folder-kind detection from model_index.json and the files, what ModelInfo says about SDXL folders, and a clear error
/// at Load for every folder this library cannot run, naming the file, input or pipeline class.
/// </summary>
[TestClass]
public sealed class SdxlLoadingTests
{
    [TestMethod]
    public void AnSdxlFolderLoadsWithBothEncodersAndItsAddedConditioning()
    {
        using var model = SdxlTestModel.Load();
        var info = model.Info;
        Assert.AreEqual(ModelKind.StableDiffusionXL, info.Kind);
        Assert.AreEqual(32 + 40, info.HiddenSize, "text_encoder's and text_encoder_2's widths side by side");
        Assert.AreEqual(24, info.PooledSize, "text_encoder_2's text_embeds");
        Assert.AreEqual(6, info.TimeIdsWidth, "original size, crop top-left, target size");
        Assert.AreEqual(77, info.SequenceLength);
        Assert.IsTrue(info.ForceZerosForEmptyPrompt);
        Assert.AreEqual(0.13025f, info.VaeScalingFactor, "read from vae_decoder/config.json (SDXL's VAE)");
        Assert.AreEqual(2, model.TextEncoders.Count);
        Assert.AreEqual("hidden_states.1", model.TextEncoders[0].StatesOutput, "the penultimate of hidden_states.0 … 2");
        Assert.AreEqual("hidden_states.1", model.TextEncoders[1].StatesOutput);
        Assert.AreEqual("text_embeds", model.TextEncoders[1].PooledOutput);
        Assert.IsNull(model.TextEncoders[0].PooledOutput, "text_encoder's pooler_output is not SDXL's pooled vector");
        Assert.IsTrue(model.HasVaeEncoder);
    }

    [TestMethod]
    public void TheRefinerLayoutLoadsWithItsOnlyEncoder()
    {
        using var model = SdxlTestModel.LoadRefiner();
        Assert.AreEqual(ModelKind.StableDiffusionXLRefiner, model.Info.Kind);
        Assert.AreEqual(40, model.Info.HiddenSize);
        Assert.AreEqual(5, model.Info.TimeIdsWidth, "original size, crop top-left, aesthetic score");
        Assert.AreEqual(1, model.TextEncoders.Count);
        Assert.AreSame(model.TextEncoder2, model.TextEncoder);
    }

    [TestMethod]
    public void AStableDiffusionFolderStaysStableDiffusion()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        Assert.AreEqual(ModelKind.StableDiffusion, model.Info.Kind);
        Assert.IsNull(model.Info.TimeIdsWidth);
        Assert.IsFalse(model.Info.ForceZerosForEmptyPrompt);
        Assert.IsNull(model.Tokenizer2);
        Assert.AreEqual("last_hidden_state", model.TextEncoders[0].StatesOutput);
    }

    [TestMethod]
    public void TransformerPipelinesAreRefusedNamingTheirClass()
    {
        foreach (string className in new[] { "StableDiffusion3Pipeline", "FluxPipeline" })
        {
            string dir = Path.Combine(Path.GetTempPath(), "mlnet-sdxl-dit-" + Guid.NewGuid().ToString("N")[..8]);
            try
            {
                // The layout of an SD3/Flux export: transformer/ instead of unet/, more text encoders.
                foreach (string sub in new[] { "transformer", "text_encoder", "text_encoder_2", "vae_decoder", "scheduler" })
                    Directory.CreateDirectory(Path.Combine(dir, sub));
                File.WriteAllText(Path.Combine(dir, "transformer", "model.onnx"), "not read");
                File.WriteAllText(Path.Combine(dir, "model_index.json"), $"{{\"_class_name\": \"{className}\", \"transformer\": [\"diffusers\", \"SD3Transformer2DModel\"]}}");
                var e = Assert.ThrowsExactly<ModelContractException>(() => StableDiffusionModel.Load(new MLContext(), dir), className);
                StringAssert.Contains(e.Message, $"'{className}'");
                StringAssert.Contains(e.Message, "unet/model.onnx");
                StringAssert.Contains(e.Message, "transformer/");
            }
            finally
            {
                Directory.Delete(dir, true);
            }
        }
    }

    [TestMethod]
    public void AnSdxlFolderWithoutItsSecondEncoderNamesTheMissingFiles()
    {
        string dir = SdxlTestModel.Copy(SdxlTestModel.Folder);
        try
        {
            File.Delete(Path.Combine(dir, "text_encoder_2", "model.onnx"));
            File.Delete(Path.Combine(dir, "tokenizer_2", "merges.txt"));
            var e = Assert.ThrowsExactly<FileNotFoundException>(() => StableDiffusionModel.Load(new MLContext(), dir));
            StringAssert.Contains(e.Message, "text_encoder_2/model.onnx");
            StringAssert.Contains(e.Message, "tokenizer_2/merges.txt");
            StringAssert.Contains(e.Message, "'StableDiffusionXLPipeline'");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void TextEncodersWithoutHiddenStatesOrTextEmbedsAreNamed()
    {
        // text_encoder: the SD Shapes encoder has only last_hidden_state and pooler_output.
        Expect(dir => File.Copy(Path.Combine(ShapesTestModel.Folder, "text_encoder", "model.onnx"), Path.Combine(dir, "text_encoder", "model.onnx"), true),
            "text_encoder/model.onnx", "hidden_states");
        // text_encoder_2: the first SDXL encoder has hidden states but pooler_output where text_embeds should be.
        Expect(dir => File.Copy(Path.Combine(dir, "text_encoder", "model.onnx"), Path.Combine(dir, "text_encoder_2", "model.onnx"), true),
            "text_encoder_2/model.onnx", "'text_embeds'");
    }

    [TestMethod]
    public void AUNetOfTheOtherFamilyIsNamed()
    {
        // An SD UNet in an SDXL folder: no text_embeds / time_ids.
        Expect(dir => File.Copy(Path.Combine(ShapesTestModel.Folder, "unet", "model.onnx"), Path.Combine(dir, "unet", "model.onnx"), true),
            "unet/model.onnx", "'text_embeds'");
        // An SDXL UNet in an SD folder.
        string sd = SdxlTestModel.Copy(ShapesTestModel.Folder);
        try
        {
            File.Copy(Path.Combine(SdxlTestModel.Folder, "unet", "model.onnx"), Path.Combine(sd, "unet", "model.onnx"), true);
            var e = Assert.ThrowsExactly<ModelContractException>(() => StableDiffusionModel.Load(new MLContext(), sd));
            StringAssert.Contains(e.Message, "'text_embeds'");
            StringAssert.Contains(e.Message, "text_encoder_2/");
        }
        finally
        {
            Directory.Delete(sd, true);
        }
    }

    [TestMethod]
    public void AUNetInputThatCannotBeFedIsNamed()
    {
        // An LCM-distilled UNet takes timestep_cond (the guidance-scale embedding); nothing in the pipeline makes it.
        Expect(dir => File.WriteAllBytes(Path.Combine(dir, "unet", "model.onnx"), UnetWithExtraInput("timestep_cond")), "'timestep_cond'", "time_cond_proj_dim");
    }

    [TestMethod]
    public void AMalformedPipelineFlagIsNamed()
    {
        Expect(dir => File.WriteAllText(Path.Combine(dir, "model_index.json"),
                "{\"_class_name\": \"StableDiffusionXLPipeline\", \"force_zeros_for_empty_prompt\": \"yes\"}"),
            "force_zeros_for_empty_prompt", "model_index.json", typeof(InvalidDataException));
    }

    /// <summary>Breaks a copy of the SDXL folder and expects Load to fail with a message holding every fragment.</summary>
    private static void Expect(Action<string> breakFolder, string fragment, string fragment2, Type? exception = null)
    {
        string dir = SdxlTestModel.Copy(SdxlTestModel.Folder);
        try
        {
            breakFolder(dir);
            Exception? caught = null;
            try
            {
                StableDiffusionModel.Load(new MLContext(), dir).Dispose();
            }
            catch (Exception e)
            {
                caught = e;
            }
            Assert.IsNotNull(caught, $"Load did not fail ({fragment})");
            Assert.AreEqual(exception ?? typeof(ModelContractException), caught.GetType(), caught.ToString());
            StringAssert.Contains(caught.Message.Replace('\\', '/'), fragment);
            StringAssert.Contains(caught.Message.Replace('\\', '/'), fragment2);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>An SDXL-shaped UNet signature plus one more input; the output is the sample (never run).</summary>
    private static byte[] UnetWithExtraInput(string extra)
    {
        var g = new OnnxGraphBuilder("unet_with_extra_input");
        g.Input("sample", DataType.Float, "batch", 4L, "height", "width");
        g.Input("timestep", DataType.Float, "batch");
        g.Input("encoder_hidden_states", DataType.Float, "batch", "sequence", 72L);
        g.Input("text_embeds", DataType.Float, "batch", 24L);
        g.Input("time_ids", DataType.Float, "batch", 6L);
        g.Input(extra, DataType.Float, "batch", 256L);
        g.Node("Identity", ["sample"], "out_sample");
        g.Output("out_sample", DataType.Float, "batch", 4L, "height", "width");
        return g.ToModelBytes("test UNet");
    }
}
