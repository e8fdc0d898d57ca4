using System;
using System.IO;
using System.Linq;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.SafeTensors;
using MLNet.Diffusion.Tests.TestSupport;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Lora;

/// <summary>
/// The merge against PyTorch: Lora/Fixtures/lora_deltas_torch.safetensors holds 0.8 · (alpha/rank) · up · down for
/// five modules of the shared kohya LoRA and float16 LoCon files, computed by Lora/Fixtures/make_lora_deltas.py
/// (PyTorch 1.13, kohya sd-scripts' merge expressions, each checked there against the unmerged LoRA forward pass).
/// </summary>
[TestClass]
public sealed class LoraReferenceTests
{
    [TestMethod]
    [DataRow("tiny_lora_kohya.safetensors", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q")]
    [DataRow("tiny_lora_kohya.safetensors", "mid_block.attentions.0.proj_in")]
    [DataRow("tiny_locon_kohya_fp16.safetensors", "down_blocks.0.resnets.0.conv1")]
    [DataRow("tiny_locon_kohya_fp16.safetensors", "down_blocks.0.resnets.0.time_emb_proj")]
    [DataRow("tiny_locon_kohya_fp16.safetensors", "down_blocks.0.downsamplers.0.conv")]
    public void MergedWeightMinusOriginalEqualsThePyTorchDelta(string file, string module)
    {
        string unet = Path.Combine(SharedModels.RequireTinySd(), "unet", "model.onnx");
        var (graph, read) = LoraFiles.LoadGraph(unet);
        var index = LoraTargetIndex.Build(graph);
        var result = LoraMerger.Merge([new LoraMergeTarget(LoraComponent.Unet, index, read)], [new LoraApplication(LoraFile.Read(LoraFiles.Shared(file)), 0.8f)]);
        var target = index.Targets[module];
        float[] original = read(target.Initializer);
        float[] merged = result.Weights.Single(w => w.Initializer.Name == target.Initializer.Name).Values;

        using var fixture = SafeTensorsFile.Open(Path.Combine(AppContext.BaseDirectory, "Lora", "Fixtures", "lora_deltas_torch.safetensors"));
        Assert.AreEqual("0.8", fixture.Metadata["multiplier"]);
        var info = fixture.Tensors[file + "/" + module];
        float[] expected = fixture.ReadFloat32(info.Name);
        int rows = (int)info.Shape[0], length = expected.Length / rows;
        for (int o = 0; o < rows; o++)
        {
            for (int k = 0; k < length; k++)
            {
                // The MatMul initializer is Wᵀ [in, out]; the fixture is in PyTorch's [out, in] layout.
                int at = target.Layout == LoraWeightLayout.InOut ? k * rows + o : o * length + k;
                Assert.AreEqual(expected[o * length + k], merged[at] - original[at], 2e-6, $"{module} [{o}, {k}]");
            }
        }
    }
}
