using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Tests.SafeTensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Lora;

[TestClass]
public sealed class LoraFileTests
{
    private const string ToQ = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q";

    [TestMethod]
    public void ReadsTheKohyaFileAsSeventyTwoUnetModulesOfRankFourAlphaTwo()
    {
        var file = LoraFile.Read(LoraFiles.Shared("tiny_lora_kohya.safetensors"));
        Assert.AreEqual(72, file.Modules.Count);
        Assert.AreEqual(0, file.UnrecognizedKeys.Count);
        foreach (var module in file.Modules)
        {
            Assert.AreEqual(LoraComponent.Unet, module.Component);
            Assert.AreEqual((4, 2f, 0.5f), (module.Rank, module.Alpha, module.AlphaScale), module.SourceKey);
            // The reconstructed path flattens back to the key, and the key is kohya's flattening of it.
            Assert.AreEqual("lora_unet_" + LoraKeyNames.Flatten(module.ModulePath), module.SourceKey);
        }
        var toQ = file.Modules.Single(m => m.ModulePath == ToQ);
        Assert.AreEqual((LoraLayerKind.Linear, 64, 64, 1, 1), (toQ.Kind, toQ.OutFeatures, toQ.InFeatures, toQ.KernelHeight, toQ.KernelWidth));
        var projIn = file.Modules.Single(m => m.ModulePath == "down_blocks.1.attentions.0.proj_in");
        Assert.AreEqual((LoraLayerKind.Conv, 1, 1), (projIn.Kind, projIn.KernelHeight, projIn.KernelWidth));
    }

    [TestMethod]
    public void ReadsTheFloat16LoConFileWithThreeByThreeConvolutions()
    {
        var file = LoraFile.Read(LoraFiles.Shared("tiny_locon_kohya_fp16.safetensors"));
        Assert.AreEqual(117, file.Modules.Count);
        var conv1 = file.Modules.Single(m => m.ModulePath == "down_blocks.0.resnets.0.conv1");
        Assert.AreEqual((LoraLayerKind.Conv, 32, 32, 4, 3, 3, 2f), (conv1.Kind, conv1.OutFeatures, conv1.InFeatures, conv1.Rank, conv1.KernelHeight, conv1.KernelWidth, conv1.Alpha));
        Assert.AreEqual(LoraLayerKind.Linear, file.Modules.Single(m => m.ModulePath == "up_blocks.0.resnets.2.time_emb_proj").Kind);
        Assert.IsTrue(file.Modules.Any(m => m.ModulePath == "up_blocks.0.upsamplers.0.conv" && m.KernelHeight == 3));
    }

    [TestMethod]
    public void ReadsPeftAlphaFromAdapterMetadataAndDefaultsItToTheRank()
    {
        var withMetadata = LoraFile.Read(LoraFiles.Shared("tiny_lora_peft.safetensors"));
        var without = LoraFile.Read(LoraFiles.Shared("tiny_lora_peft_nometa.safetensors"));
        Assert.AreEqual(72, withMetadata.Modules.Count);
        Assert.AreEqual(72, without.Modules.Count);
        Assert.IsTrue(withMetadata.Modules.All(m => m.Alpha == 2f && m.Rank == 4 && m.FlatName is null && m.Component == LoraComponent.Unet));
        // diffusers get_peft_kwargs: no metadata → lora_alpha = r, so the scale is 1 (the file folded 0.5 into lora_B).
        Assert.IsTrue(without.Modules.All(m => m.Alpha == 4f && m.AlphaScale == 1f));
    }

    [TestMethod]
    public void KohyaAndPeftFilesHoldTheSameModulesAndDeltas()
    {
        var kohya = LoraFile.Read(LoraFiles.Shared("tiny_lora_kohya.safetensors")).Modules.ToDictionary(m => m.ModulePath);
        foreach (string name in new[] { "tiny_lora_peft.safetensors", "tiny_lora_peft_nometa.safetensors" })
        {
            var peft = LoraFile.Read(LoraFiles.Shared(name)).Modules;
            CollectionAssert.AreEquivalent(kohya.Keys.ToArray(), peft.Select(m => m.ModulePath).ToArray(), name);
            foreach (var module in peft)
                CollectionAssert.AreEqual(Delta(kohya[module.ModulePath]), Delta(module), $"{name}: {module.ModulePath}");
        }
    }

    [TestMethod]
    public void ReadsOlderDiffusersAndTextEncoderKeyForms()
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        const string attn = "mid_block.attentions.0.transformer_blocks.0.attn1";
        LoraFiles.AddPair(tensors, $"unet.{attn}.processor.to_q_lora.down.weight", $"unet.{attn}.processor.to_q_lora.up.weight", [2, 8], [8, 2], 1);
        LoraFiles.AddPair(tensors, $"unet.{attn}.processor.to_out_lora.down.weight", $"unet.{attn}.processor.to_out_lora.up.weight", [2, 8], [8, 2], 3);
        LoraFiles.AddPair(tensors, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.down.weight",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora.up.weight", [2, 4], [8, 2], 5);
        LoraFiles.AddPair(tensors, "unet.up_blocks.0.resnets.0.conv1.lora.down.weight", "unet.up_blocks.0.resnets.0.conv1.lora.up.weight", [2, 8, 3, 3], [8, 2, 1, 1], 7);
        LoraFiles.AddPair(tensors, "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.down.weight",
            "text_encoder.text_model.encoder.layers.0.self_attn.to_q_lora.up.weight", [2, 8], [8, 2], 9);
        LoraFiles.AddPair(tensors, "text_encoder_2.text_model.encoder.layers.1.mlp.fc1.lora_linear_layer.down.weight",
            "text_encoder_2.text_model.encoder.layers.1.mlp.fc1.lora_linear_layer.up.weight", [2, 8], [16, 2], 11);
        LoraFiles.AddPair(tensors, "lora_te1_text_model_encoder_layers_2_self_attn_k_proj.lora_down.weight",
            "lora_te1_text_model_encoder_layers_2_self_attn_k_proj.lora_up.weight", [2, 8], [8, 2], 13);
        LoraFiles.AddPair(tensors, "lora_te2_text_model_encoder_layers_3_mlp_fc2.lora_down.weight",
            "lora_te2_text_model_encoder_layers_3_mlp_fc2.lora_up.weight", [2, 16], [8, 2], 15);
        tensors[$"unet.{attn}.to_q.alpha"] = SafeTensorsWriter.F32([], 1f); // a network alpha in diffusers naming
        tensors["bundle_emb.cat.string_to_param.*"] = SafeTensorsWriter.F32([1, 8], LoraFiles.Random(17, 8));
        var file = LoraFiles.Read(tensors);

        var modules = file.Modules.ToDictionary(m => (m.Component, m.ModulePath));
        Assert.AreEqual(8, modules.Count, string.Join(", ", modules.Keys));
        Assert.AreEqual(1f, modules[(LoraComponent.Unet, attn + ".to_q")].Alpha);
        Assert.AreEqual(2f, modules[(LoraComponent.Unet, attn + ".to_out.0")].Alpha);
        Assert.IsTrue(modules.ContainsKey((LoraComponent.Unet, "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k")));
        Assert.AreEqual(LoraLayerKind.Conv, modules[(LoraComponent.Unet, "up_blocks.0.resnets.0.conv1")].Kind);
        Assert.IsTrue(modules.ContainsKey((LoraComponent.TextEncoder, "text_model.encoder.layers.0.self_attn.q_proj")));
        Assert.IsTrue(modules.ContainsKey((LoraComponent.TextEncoder2, "text_model.encoder.layers.1.mlp.fc1")));
        Assert.IsTrue(modules.ContainsKey((LoraComponent.TextEncoder, "text_model.encoder.layers.2.self_attn.k_proj")));
        Assert.IsTrue(modules.ContainsKey((LoraComponent.TextEncoder2, "text_model.encoder.layers.3.mlp.fc2")));
        CollectionAssert.AreEqual(new[] { "bundle_emb.cat.string_to_param.*" }, file.UnrecognizedKeys.ToArray());
    }

    [TestMethod]
    public void AppliesPeftAlphaPatternAndRankStabilizedScaling()
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        const string attn = "unet.mid_block.attentions.0.transformer_blocks.0.attn1";
        LoraFiles.AddPair(tensors, attn + ".to_q.lora_A.weight", attn + ".to_q.lora_B.weight", [4, 8], [8, 4], 1);
        LoraFiles.AddPair(tensors, attn + ".to_k.lora_A.weight", attn + ".to_k.lora_B.weight", [4, 8], [8, 4], 3);
        var metadata = new Dictionary<string, string>
        {
            ["lora_adapter_metadata"] = """{"unet.lora_alpha": 8, "unet.r": 4, "unet.alpha_pattern": {"attn1.to_k": 2}, "unet.use_rslora": true}""",
        };
        var modules = LoraFiles.Read(tensors, metadata).Modules.ToDictionary(m => m.ModulePath[^4..]);
        Assert.AreEqual((8f, true), (modules["to_q"].Alpha, modules["to_q"].RankStabilized));
        Assert.AreEqual(2f, modules["to_k"].Alpha);
        Assert.AreEqual(8f / 2f, modules["to_q"].AlphaScale); // rsLoRA: alpha / √r
    }

    [TestMethod]
    [DataRow("lora_unet_mid_block_resnets_0_conv1.dora_scale", "DoRA")]
    [DataRow("unet.mid_block.resnets.0.conv1.lora_magnitude_vector", "DoRA")]
    [DataRow("lora_unet_mid_block_resnets_0_conv1.hada_w1_a", "LoHa")]
    [DataRow("lora_unet_mid_block_resnets_0_conv1.lokr_w1", "LoKr")]
    [DataRow("lora_unet_mid_block_resnets_0_conv1.lora_mid.weight", "Tucker")]
    public void RefusesDoraLohaAndLokrNamingTheType(string key, string type)
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry> { [key] = SafeTensorsWriter.F32([2], 1f, 2f) };
        var error = Assert.ThrowsExactly<NotSupportedException>(() => LoraFiles.Read(tensors, name: "exotic.safetensors"));
        StringAssert.Contains(error.Message, type);
        StringAssert.Contains(error.Message, key);
        StringAssert.Contains(error.Message, "exotic.safetensors");
    }

    [TestMethod]
    public void RefusesDoraDeclaredInAdapterMetadata()
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        LoraFiles.AddPair(tensors, "unet.a.to_q.lora_A.weight", "unet.a.to_q.lora_B.weight", [2, 4], [4, 2], 1);
        var metadata = new Dictionary<string, string> { ["lora_adapter_metadata"] = """{"unet.use_dora": true}""" };
        StringAssert.Contains(Assert.ThrowsExactly<NotSupportedException>(() => LoraFiles.Read(tensors, metadata)).Message, "DoRA");
    }

    [TestMethod]
    public void RefusesModulesWithAMissingOrMisshapedMatrix()
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry> { ["lora_unet_a_to_q.lora_down.weight"] = SafeTensorsWriter.F32([2, 4], new float[8]) };
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => LoraFiles.Read(tensors)).Message, "no up matrix");
        tensors["lora_unet_a_to_q.lora_up.weight"] = SafeTensorsWriter.F32([4, 3], new float[12]);
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => LoraFiles.Read(tensors)).Message, "do not share a rank");
        tensors["lora_unet_a_to_q.lora_up.weight"] = SafeTensorsWriter.F32([4, 2, 3, 3], new float[72]);
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => LoraFiles.Read(tensors)).Message, "lora_unet_a_to_q");
        var metadata = new Dictionary<string, string> { ["lora_adapter_metadata"] = "{not json" };
        var peft = new Dictionary<string, SafeTensorsWriter.Entry>();
        LoraFiles.AddPair(peft, "unet.a.to_q.lora_A.weight", "unet.a.to_q.lora_B.weight", [2, 4], [4, 2], 1);
        StringAssert.Contains(Assert.ThrowsExactly<InvalidDataException>(() => LoraFiles.Read(peft, metadata)).Message, "lora_adapter_metadata");
    }

    /// <summary>(alpha/rank) · up · down, row-major [out, in·kh·kw], by the library's own accumulation.</summary>
    internal static float[] Delta(LoraModule module)
    {
        var delta = new float[module.OutFeatures * module.RowLength];
        LoraMerger.AddDelta(delta, LoraWeightLayout.OutIn, module, module.AlphaScale);
        return delta;
    }
}
