using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Tests.SafeTensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Lora;

/// <summary>The merge on a small hand-built graph: MatMul with Wᵀ, Gemm transB=1 and 0, Conv 1×1 and 3×3, a float16 weight behind a Cast.</summary>
[TestClass]
public sealed class LoraMergerTests
{
    private const int In = 3, Out = 2, Rank = 2;

    // module path → (initializer, dims, layout, element type); the graph below reads each weight the way exports do.
    private static readonly (string Module, string Initializer, long[] Dims, bool Transposed, LoraWeightType Type)[] s_weights =
    [
        ("blk.lin_t", "onnx::MatMul_1", [In, Out], true, LoraWeightType.Float32),
        ("blk.lin_g", "blk.lin_g.weight", [Out, In], false, LoraWeightType.Float32),
        ("blk.lin_g0", "blk.lin_g0.weight", [In, Out], true, LoraWeightType.Float32),
        ("blk.conv1", "blk.conv1.weight", [Out, In, 1, 1], false, LoraWeightType.Float32),
        ("blk.conv3", "blk.conv3.weight", [Out, In, 3, 3], false, LoraWeightType.Float32),
        ("blk.lin_h", "onnx::MatMul_7", [In, Out], true, LoraWeightType.Float16),
    ];

    private static LoraGraph Graph(params LoraGraphNode[] extra)
    {
        var transB1 = new Dictionary<string, long> { ["transB"] = 1 };
        var nodes = new List<LoraGraphNode>
        {
            LoraGraph.Node("/blk/lin_t/MatMul", "MatMul", ["x", "onnx::MatMul_1"], ["y1"]),
            LoraGraph.Node("/blk/lin_g/Gemm", "Gemm", ["x", "blk.lin_g.weight", "bias"], ["y2"], transB1),
            LoraGraph.Node("/blk/lin_g0/Gemm", "Gemm", ["x", "blk.lin_g0.weight"], ["y3"]),
            LoraGraph.Node("/blk/conv1/Conv", "Conv", ["img", "blk.conv1.weight"], ["y4"]),
            LoraGraph.Node("/blk/conv3/Conv", "Conv", ["img", "blk.conv3.weight"], ["y5"]),
            LoraGraph.Node("/blk/lin_h/Cast", "Cast", ["onnx::MatMul_7"], ["w16"], new Dictionary<string, long> { ["to"] = 1 }),
            LoraGraph.Node("/blk/lin_h/MatMul", "MatMul", ["x", "w16"], ["y6"]),
            LoraGraph.Node("/blk/norm/Mul", "Mul", ["y1", "onnx::Mul_9"], ["y7"]),
        };
        nodes.AddRange(extra);
        var initializers = s_weights.Select(w => new LoraGraphInitializer(w.Initializer, w.Dims, w.Type)).ToList();
        initializers.Add(new LoraGraphInitializer("onnx::Mul_9", [Out], LoraWeightType.Float32));
        return new LoraGraph("synthetic.onnx", nodes, initializers);
    }

    private static float[] Original(LoraGraphInitializer initializer)
    {
        float[] values = LoraFiles.Random(initializer.Name.Length * 31, (int)initializer.ElementCount);
        if (initializer.DataType == LoraWeightType.Float16)
        {
            for (int i = 0; i < values.Length; i++)
                values[i] = (float)(Half)values[i];
        }
        return values;
    }

    private static LoraMergeTarget Target(LoraGraph graph) => new(LoraComponent.Unet, LoraTargetIndex.Build(graph), Original);

    /// <summary>A PEFT file with one module per weight (rank 2, kernel from the weight), alpha from metadata.</summary>
    private static LoraFile PeftFile(int seed, float alpha)
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        foreach (var (module, _, dims, _, _) in s_weights)
        {
            bool conv = dims.Length == 4;
            LoraFiles.AddPair(tensors, $"unet.{module}.lora_A.weight", $"unet.{module}.lora_B.weight",
                conv ? [Rank, In, dims[2], dims[3]] : [Rank, In], conv ? [Out, Rank, 1, 1] : [Out, Rank], seed += 2);
        }
        var metadata = new Dictionary<string, string> { ["lora_adapter_metadata"] = $$"""{"unet.lora_alpha": {{alpha}}, "unet.r": {{Rank}}}""" };
        return LoraFiles.Read(tensors, metadata, $"synthetic_{seed}.safetensors");
    }

    /// <summary>W + Σ scale·(alpha/r)·up·down in double, transposed where the weight is stored transposed.</summary>
    private static double[] Expected(string module, params (LoraFile File, float Scale)[] loras)
    {
        var weight = s_weights.Single(w => w.Module == module);
        var init = new LoraGraphInitializer(weight.Initializer, weight.Dims, weight.Type);
        double[] result = Original(init).Select(v => (double)v).ToArray();
        foreach (var (file, scale) in loras)
        {
            var m = file.Modules.Single(x => x.ModulePath == module);
            int k = m.RowLength;
            for (int o = 0; o < m.OutFeatures; o++)
            {
                for (int j = 0; j < k; j++)
                {
                    double sum = 0;
                    for (int r = 0; r < m.Rank; r++)
                        sum += (double)m.Up[o * m.Rank + r] * m.Down[r * k + j];
                    result[weight.Transposed ? j * m.OutFeatures + o : o * k + j] += scale * (double)m.Alpha / m.Rank * sum;
                }
            }
        }
        return result;
    }

    private static void AssertClose(double[] expected, float[] actual, double tolerance, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(expected[i], actual[i], tolerance, $"{what}[{i}]");
    }

    [TestMethod]
    public void MergesMatMulGemmAndConvolutionWeightsByTheFormula()
    {
        var lora = PeftFile(seed: 100, alpha: 1f);
        var result = LoraMerger.Merge([Target(Graph())], [new LoraApplication(lora, 0.8f)]);
        Assert.AreEqual(0, result.Unmatched.Count);
        Assert.AreEqual(s_weights.Length, result.Weights.Count);
        foreach (var (module, initializer, _, _, type) in s_weights)
        {
            var patched = result.Weights.Single(w => w.Initializer.Name == initializer);
            AssertClose(Expected(module, (lora, 0.8f)), patched.Values, 1e-6, module);
            if (type == LoraWeightType.Float16)
            {
                // Cast back to float16 by rounding the float32 merge to nearest even.
                var expected = patched.Values.Select(v => (Half)v).ToArray();
                CollectionAssert.AreEqual(MemoryMarshal.AsBytes(expected.AsSpan()).ToArray(), patched.ToRawData());
            }
            else
            {
                CollectionAssert.AreEqual(MemoryMarshal.AsBytes(patched.Values.AsSpan()).ToArray(), patched.ToRawData());
            }
        }
    }

    [TestMethod]
    public void AddsTheDeltasOfSeveralLorasEachWithItsScale()
    {
        var first = PeftFile(seed: 200, alpha: 2f);
        var second = PeftFile(seed: 300, alpha: 1f);
        var result = LoraMerger.Merge([Target(Graph())], [new LoraApplication(first, 0.7f), new LoraApplication(second, -1.3f)]);
        foreach (var (module, initializer, _, _, _) in s_weights)
        {
            var patched = result.Weights.Single(w => w.Initializer.Name == initializer);
            AssertClose(Expected(module, (first, 0.7f), (second, -1.3f)), patched.Values, 1e-5, module);
            Assert.AreEqual(2, patched.Modules.Count);
        }
    }

    [TestMethod]
    public void ScaleZeroChangesNothing()
    {
        var result = LoraMerger.Merge([Target(Graph())], [new LoraApplication(PeftFile(seed: 400, alpha: 4f), 0f)]);
        Assert.AreEqual(0, result.Weights.Count);
        Assert.AreEqual(0, result.Unmatched.Count);
    }

    [TestMethod]
    public void ResolvesKohyaNamesThroughTheGraphsFlattenedModulePaths()
    {
        // "lora_unet_blk_lin_t" cannot be rebuilt as blk.lin_t without a vocabulary; the graph's paths flattened match it.
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        LoraFiles.AddPair(tensors, "lora_unet_blk_lin_t.lora_down.weight", "lora_unet_blk_lin_t.lora_up.weight", [Rank, In], [Out, Rank], 500);
        tensors["lora_unet_blk_lin_t.alpha"] = SafeTensorsWriter.F32([], 1f);
        var kohya = LoraFiles.Read(tensors);
        Assert.AreEqual("blk.lin.t", kohya.Modules[0].ModulePath);
        var result = LoraMerger.Merge([Target(Graph())], [new LoraApplication(kohya, 1f)]);
        Assert.AreEqual("onnx::MatMul_1", result.Weights.Single().Initializer.Name);
    }

    [TestMethod]
    public void ReportsModulesWithNoWeightAndComponentsTheModelLacks()
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        LoraFiles.AddPair(tensors, "unet.blk.lin_missing.lora_A.weight", "unet.blk.lin_missing.lora_B.weight", [Rank, In], [Out, Rank], 600);
        LoraFiles.AddPair(tensors, "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight",
            "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight", [Rank, In], [Out, Rank], 700);
        tensors["some_embedding"] = SafeTensorsWriter.F32([2], 1f, 2f);
        var result = LoraMerger.Merge([Target(Graph())], [new LoraApplication(LoraFiles.Read(tensors, name: "partial.safetensors"), 1f)]);
        Assert.AreEqual(0, result.Weights.Count);
        var reasons = result.Unmatched.ToDictionary(u => u.Key, u => u.Reason);
        Assert.AreEqual(3, reasons.Count);
        StringAssert.Contains(reasons["some_embedding"], "not a LoRA key");
        StringAssert.Contains(reasons["unet.blk.lin_missing"], "no weight for module 'blk.lin_missing'");
        StringAssert.Contains(reasons["text_encoder.text_model.encoder.layers.0.self_attn.q_proj"], "no text_encoder");
        Assert.IsTrue(result.Unmatched.All(u => u.File.EndsWith("partial.safetensors", StringComparison.Ordinal)));
    }

    [TestMethod]
    public void RefusesAnInitializerSharedWithAnotherModule()
    {
        // The exporter deduplicated blk.lin_t's weight into a second module's MatMul.
        var graph = Graph(LoraGraph.Node("/other/proj/MatMul", "MatMul", ["x", "onnx::MatMul_1"], ["y8"]));
        var error = Assert.ThrowsExactly<InvalidOperationException>(() =>
            LoraMerger.Merge([Target(graph)], [new LoraApplication(PeftFile(seed: 800, alpha: 1f), 1f)]));
        StringAssert.Contains(error.Message, "onnx::MatMul_1");
        StringAssert.Contains(error.Message, "other.proj");
    }

    [TestMethod]
    public void PatchesANamedWeightWhoseNodeNameCarriesNoScope()
    {
        // The Shapes builder (SyntheticUnet) names weights <path>.weight but nodes Conv_45: the node reading the weight is
        // the module's own, not another module sharing it (found by the LoRA cost benchmark).
        var graph = Graph();
        graph = new LoraGraph(graph.Name, graph.Nodes.Select(n => n.Name == "/blk/conv1/Conv" ? n with { Name = "Conv_45" } : n).ToList(), graph.Initializers);
        var lora = PeftFile(seed: 950, alpha: 1f);
        var result = LoraMerger.Merge([Target(graph)], [new LoraApplication(lora, 1f)]);
        AssertClose(Expected("blk.conv1", (lora, 1f)), result.Weights.Single(w => w.Initializer.Name == "blk.conv1.weight").Values, 1e-6, "blk.conv1");
    }

    [TestMethod]
    public void PatchesAWeightItsOwnModuleReadsTwice()
    {
        // The same Linear called twice traces to two MatMuls of one module reading one initializer: the LoRA changes both calls.
        var graph = Graph(LoraGraph.Node("/blk/lin_t/MatMul_1", "MatMul", ["x2", "onnx::MatMul_1"], ["y9"]));
        var lora = PeftFile(seed: 900, alpha: 1f);
        var result = LoraMerger.Merge([Target(graph)], [new LoraApplication(lora, 1f)]);
        AssertClose(Expected("blk.lin_t", (lora, 1f)), result.Weights.Single(w => w.Initializer.Name == "onnx::MatMul_1").Values, 1e-6, "blk.lin_t");
    }

    [TestMethod]
    public void RefusesAttentionLorasOnAGraphWithPackedQkv()
    {
        var initializers = new List<LoraGraphInitializer> { new("onnx::MatMul_qkv", [8, 24], LoraWeightType.Float32) };
        var graph = new LoraGraph("optimized.onnx",
            [LoraGraph.Node("/mid_block/attentions.0/transformer_blocks.0/attn1/Attention", "Attention", ["x", "onnx::MatMul_qkv"], ["y"], domain: "com.microsoft")],
            initializers);
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        LoraFiles.AddPair(tensors, "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight",
            "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight", [2, 8], [8, 2], 1000);
        var error = Assert.ThrowsExactly<NotSupportedException>(() =>
            LoraMerger.Merge([new LoraMergeTarget(LoraComponent.Unet, LoraTargetIndex.Build(graph), Original)], [new LoraApplication(LoraFiles.Read(tensors), 1f)]));
        StringAssert.Contains(error.Message, "packed Q/K/V");
        StringAssert.Contains(error.Message, "to_q");
    }

    [TestMethod]
    public void RefusesALoraShapedForAnotherModel()
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>();
        LoraFiles.AddPair(tensors, "unet.blk.lin_g.lora_A.weight", "unet.blk.lin_g.lora_B.weight", [Rank, In + 1], [Out, Rank], 1100);
        var error = Assert.ThrowsExactly<InvalidDataException>(() =>
            LoraMerger.Merge([Target(Graph())], [new LoraApplication(LoraFiles.Read(tensors), 1f)]));
        StringAssert.Contains(error.Message, "blk.lin_g.weight");
        StringAssert.Contains(error.Message, "[2, 4]");
    }

    [TestMethod]
    public void RefusesAMergeFloat16CannotHold()
    {
        var tensors = new Dictionary<string, SafeTensorsWriter.Entry>
        {
            ["unet.blk.lin_h.lora_A.weight"] = SafeTensorsWriter.F32([1, In], 60000f, 60000f, 60000f),
            ["unet.blk.lin_h.lora_B.weight"] = SafeTensorsWriter.F32([Out, 1], 10f, 10f),
        };
        var error = Assert.ThrowsExactly<InvalidDataException>(() =>
            LoraMerger.Merge([Target(Graph())], [new LoraApplication(LoraFiles.Read(tensors), 1f)]));
        StringAssert.Contains(error.Message, "onnx::MatMul_7");
        StringAssert.Contains(error.Message, "Float16");
    }
}
