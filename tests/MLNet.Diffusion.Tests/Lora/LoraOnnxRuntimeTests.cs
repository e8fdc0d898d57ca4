using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.OnnxRuntime;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Tests.TestSupport;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Lora;

/// <summary>
/// The merged weights handed to ONNX Runtime in place of the originals (<c>SessionOptions.AddInitializer</c>), the
/// route the wiring takes: each kind of patched weight (MatMul Wᵀ, Gemm W, Conv W) must change the tiny-sd UNet's
/// output. Sessions use ORT_ENABLE_EXTENDED: at ORT_ENABLE_ALL ONNX Runtime 1.31 ignores Conv weight overrides
/// (measured, tiny-sd-lora README "Known ONNX Runtime behaviour").
/// </summary>
[TestClass]
public sealed class LoraOnnxRuntimeTests
{
    private static float[] RunUnet(string model, IReadOnlyList<LoraPatchedWeight> patches)
    {
        using var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_EXTENDED };
        var values = new List<OrtValue>();
        try
        {
            foreach (var patch in patches)
            {
                var value = OrtValue.CreateTensorValueFromMemory(patch.Values, patch.Initializer.Dims);
                values.Add(value);
                options.AddInitializer(patch.Initializer.Name, value);
            }
            using var session = new InferenceSession(model, options);
            float[] sample = LoraFiles.Random(1, 4 * 8 * 8), context = LoraFiles.Random(2, 77 * 32);
            using var sampleValue = OrtValue.CreateTensorValueFromMemory(sample, [1, 4, 8, 8]);
            using var timestep = OrtValue.CreateTensorValueFromMemory(new[] { 500f }, [1]);
            using var contextValue = OrtValue.CreateTensorValueFromMemory(context, [1, 77, 32]);
            using var run = new RunOptions();
            using var outputs = session.Run(run, ["sample", "timestep", "encoder_hidden_states"], [sampleValue, timestep, contextValue], ["out_sample"]);
            return outputs[0].GetTensorDataAsSpan<float>().ToArray();
        }
        finally
        {
            foreach (var value in values)
                value.Dispose();
        }
    }

    [TestMethod]
    public void EveryKindOfPatchedWeightChangesTheUnetOutput()
    {
        string model = Path.Combine(SharedModels.RequireTinySd(), "unet", "model.onnx");
        var (graph, read) = LoraFiles.LoadGraph(model);
        var index = LoraTargetIndex.Build(graph);
        var result = LoraMerger.Merge([new LoraMergeTarget(LoraComponent.Unet, index, read)],
            [new LoraApplication(LoraFile.Read(LoraFiles.Shared("tiny_locon_kohya_fp16.safetensors")), 1f)]);
        var ops = result.Weights.ToLookup(w => index.Targets.Values.First(t => t.Initializer.Name == w.Initializer.Name).OpType);
        float[] baseline = RunUnet(model, []);
        CollectionAssert.AreEqual(baseline, RunUnet(model, []), "the UNet is deterministic");
        foreach (string op in new[] { "MatMul", "Gemm", "Conv" })
        {
            var patches = ops[op].ToList();
            Assert.IsTrue(patches.Count > 0, op);
            float[] patched = RunUnet(model, patches);
            double change = 0;
            for (int i = 0; i < baseline.Length; i++)
                change = Math.Max(change, Math.Abs(patched[i] - baseline[i]));
            Assert.IsTrue(change > 1e-4, $"patching the {patches.Count} {op} weights changed the output by at most {change}");
        }
    }
}
