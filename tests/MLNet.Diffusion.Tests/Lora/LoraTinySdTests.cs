using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Tests.TestSupport;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Lora;

/// <summary>
/// The shared tiny-sd UNet export (torch.onnx, opset 14) and the LoRA files of ../shared/models/tiny-sd-lora, whose
/// README tabulates where each targeted weight sits in unet/model.onnx.
/// </summary>
[TestClass]
public sealed class LoraTinySdTests
{
    private static readonly Lazy<(LoraGraph Graph, Func<LoraGraphInitializer, float[]> Read, LoraTargetIndex Index)> s_unet = new(() =>
    {
        var (graph, read) = LoraFiles.LoadGraph(Path.Combine(SharedModels.RequireTinySd(), "unet", "model.onnx"));
        return (graph, read, LoraTargetIndex.Build(graph));
    });

    private static LoraMergeTarget Unet()
    {
        SharedModels.RequireTinySd();
        var (_, read, index) = s_unet.Value;
        return new LoraMergeTarget(LoraComponent.Unet, index, read);
    }

    private static LoraMergeResult Merge(string file, float scale = 1f) =>
        LoraMerger.Merge([Unet()], [new LoraApplication(LoraFile.Read(LoraFiles.Shared(file)), scale)]);

    [TestMethod]
    // Rows of the tiny-sd-lora README table "Where the weights are in ../tiny-sd/unet/model.onnx".
    [DataRow("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", "MatMul", "onnx::MatMul_", new long[] { 64, 64 }, true)]
    [DataRow("mid_block.attentions.0.transformer_blocks.0.attn2.to_k", "MatMul", "onnx::MatMul_", new long[] { 32, 64 }, true)]
    [DataRow("up_blocks.0.attentions.2.transformer_blocks.0.ff.net.0.proj", "MatMul", "onnx::MatMul_", new long[] { 64, 512 }, true)]
    [DataRow("down_blocks.0.resnets.0.time_emb_proj", "Gemm", "down_blocks.0.resnets.0.time_emb_proj.weight", new long[] { 32, 128 }, false)]
    [DataRow("down_blocks.0.resnets.0.conv1", "Conv", "down_blocks.0.resnets.0.conv1.weight", new long[] { 32, 32, 3, 3 }, false)]
    [DataRow("up_blocks.0.attentions.2.proj_out", "Conv", "up_blocks.0.attentions.2.proj_out.weight", new long[] { 64, 64, 1, 1 }, false)]
    [DataRow("up_blocks.1.resnets.2.conv_shortcut", "Conv", "up_blocks.1.resnets.2.conv_shortcut.weight", new long[] { 32, 64, 1, 1 }, false)]
    [DataRow("up_blocks.0.upsamplers.0.conv", "Conv", "up_blocks.0.upsamplers.0.conv.weight", new long[] { 64, 64, 3, 3 }, false)]
    public void IndexesEachTargetWeightAsTheReadmeTabulatesIt(string module, string op, string initializer, long[] dims, bool transposed)
    {
        Unet();
        var target = s_unet.Value.Index.Targets[module];
        Assert.AreEqual(op, target.OpType);
        StringAssert.StartsWith(target.Initializer.Name, initializer);
        CollectionAssert.AreEqual(dims, target.Initializer.Dims);
        Assert.AreEqual(transposed ? LoraWeightLayout.InOut : LoraWeightLayout.OutIn, target.Layout);
        Assert.AreEqual(1, s_unet.Value.Index.ConsumersOf(target.Initializer.Name).Count);
        Assert.AreEqual(0, s_unet.Value.Index.PackedAttentionNodes.Count, "the UNet's attention projections are separate weights");
    }

    [TestMethod]
    public void KohyaAndBothPeftFilesMergeToTheSameWeights()
    {
        var kohya = Merge("tiny_lora_kohya.safetensors");
        Assert.AreEqual(72, kohya.Weights.Count);
        Assert.AreEqual(0, kohya.Unmatched.Count);
        var byName = kohya.Weights.ToDictionary(w => w.Initializer.Name);
        foreach (string name in new[] { "tiny_lora_peft.safetensors", "tiny_lora_peft_nometa.safetensors" })
        {
            var peft = Merge(name);
            Assert.AreEqual(0, peft.Unmatched.Count, name);
            CollectionAssert.AreEquivalent(byName.Keys.ToArray(), peft.Weights.Select(w => w.Initializer.Name).ToArray(), name);
            foreach (var weight in peft.Weights)
                CollectionAssert.AreEqual(byName[weight.Initializer.Name].Values, weight.Values, $"{name}: {weight.Initializer.Name}");
        }
    }

    [TestMethod]
    public void MergedTransposedWeightEqualsTheFormula()
    {
        const string module = "mid_block.attentions.0.transformer_blocks.0.ff.net.2";
        var lora = LoraFile.Read(LoraFiles.Shared("tiny_lora_kohya.safetensors")).Modules.Single(m => m.ModulePath == module);
        var result = Merge("tiny_lora_kohya.safetensors", 0.75f);
        var target = s_unet.Value.Index.Targets[module];
        float[] original = s_unet.Value.Read(target.Initializer);
        float[] merged = result.Weights.Single(w => w.Initializer.Name == target.Initializer.Name).Values;
        // ff.net.2 is Linear(256 → 64): the initializer is Wᵀ [256, 64]; W' = W + 0.75·(2/4)·up[64,4]·down[4,256].
        for (int i = 0; i < 256; i++)
        {
            for (int o = 0; o < 64; o++)
            {
                double delta = 0;
                for (int r = 0; r < 4; r++)
                    delta += (double)lora.Up[o * 4 + r] * lora.Down[r * 256 + i];
                Assert.AreEqual(original[i * 64 + o] + 0.75 * 0.5 * delta, merged[i * 64 + o], 1e-5, $"[{i}, {o}]");
            }
        }
    }

    [TestMethod]
    public void ReportsEveryModuleOfTheUnmatchedFile()
    {
        var result = Merge("tiny_lora_unmatched.safetensors");
        Assert.AreEqual(0, result.Weights.Count);
        Assert.AreEqual(6, result.Unmatched.Count);
        var file = LoraFile.Read(LoraFiles.Shared("tiny_lora_unmatched.safetensors"));
        CollectionAssert.AreEquivalent(file.Modules.Select(m => m.SourceKey).ToArray(), result.Unmatched.Select(u => u.Key).ToArray());
        Assert.IsTrue(result.Unmatched.All(u => u.Reason.Contains("unet has no weight", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void Float16LoConChangesConvolutionsTimeEmbeddingGemmsAndSamplers()
    {
        var result = Merge("tiny_locon_kohya_fp16.safetensors");
        Assert.AreEqual(0, result.Unmatched.Count);
        Assert.AreEqual(117, result.Weights.Count);
        var index = s_unet.Value.Index;
        var ops = result.Weights.Select(w => index.Targets.Values.First(t => t.Initializer.Name == w.Initializer.Name)).ToList();
        var modules = LoraFile.Read(LoraFiles.Shared("tiny_locon_kohya_fp16.safetensors")).Modules;
        int threeByThree = modules.Count(m => m.KernelHeight == 3), timeEmbeddings = modules.Count(m => m.ModulePath.EndsWith(".time_emb_proj", StringComparison.Ordinal));
        Assert.IsTrue(threeByThree > 0 && timeEmbeddings > 0);
        Assert.AreEqual(threeByThree, ops.Count(t => t.OpType == "Conv" && t.Initializer.Dims[2] == 3), "3×3 convolutions (conv1, conv2, samplers)");
        Assert.AreEqual(timeEmbeddings, ops.Count(t => t.OpType == "Gemm"), "time_emb_proj of every resnet");
        Assert.IsTrue(ops.Any(t => t.ModulePath == "down_blocks.0.downsamplers.0.conv"));
        Assert.IsTrue(ops.Any(t => t.ModulePath == "up_blocks.0.upsamplers.0.conv"));
        foreach (var weight in result.Weights)
        {
            float[] original = s_unet.Value.Read(weight.Initializer);
            Assert.IsFalse(original.AsSpan().SequenceEqual(weight.Values), weight.Initializer.Name);
        }
    }

    [TestMethod]
    public void ScaleZeroLeavesTheUnetUnchanged()
    {
        var result = Merge("tiny_locon_kohya_fp16.safetensors", 0f);
        Assert.AreEqual(0, result.Weights.Count);
        Assert.AreEqual(0, result.Unmatched.Count);
    }

    [TestMethod]
    public void RefusesTextEncoderAttentionLorasOnThePackedOpenClipEncoder()
    {
        // This export's text encoder is OpenCLIP-style: nn.MultiheadAttention's packed in_proj_weight ([32, 96] as Wᵀ)
        // holds Q, K and V, so a q_proj LoRA has no weight of its own.
        var (graph, read) = LoraFiles.LoadGraph(Path.Combine(SharedModels.RequireTinySd(), "text_encoder", "model.onnx"));
        var index = LoraTargetIndex.Build(graph);
        Assert.AreEqual(5, index.PackedAttentionNodes.Count, string.Join(", ", index.PackedAttentionNodes));
        var tensors = new Dictionary<string, SafeTensors.SafeTensorsWriter.Entry>();
        LoraFiles.AddPair(tensors, "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", [4, 32], [32, 4], 1);
        var error = Assert.ThrowsExactly<NotSupportedException>(() => LoraMerger.Merge(
            [new LoraMergeTarget(LoraComponent.TextEncoder, index, read)], [new LoraApplication(LoraFiles.Read(tensors), 1f)]));
        StringAssert.Contains(error.Message, "text_model.encoder.layers.0.self_attn.q_proj");
        StringAssert.Contains(error.Message, "/transformer/resblocks/resblocks.0/attn/MatMul");
    }
}
