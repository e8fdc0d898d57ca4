using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Onnx;

/// <summary>
/// The execution-provider options (issue 8, point 1) on a CPU-only machine: what reaches ONNX Runtime's CUDA provider,
/// and how the MLContext's GPU settings are honoured.
/// </summary>
[TestClass]
public sealed class ExecutionProviderTests
{
    /// <summary>
    /// The keys and values of ONNX Runtime's CUDA execution provider options as its documentation names them
    /// (onnxruntime.ai, "CUDA Execution Provider", Configuration Options: device_id, gpu_mem_limit,
    /// arena_extend_strategy kNextPowerOfTwo | kSameAsRequested, cudnn_conv_algo_search EXHAUSTIVE | HEURISTIC | DEFAULT).
    /// </summary>
    [TestMethod]
    public void CudaOptionsBecomeTheProvidersDocumentedKeys()
    {
        var defaults = new CudaProviderOptions().ToDictionary(0);
        CollectionAssert.AreEquivalent(
            new Dictionary<string, string> { ["device_id"] = "0", ["arena_extend_strategy"] = "kNextPowerOfTwo", ["cudnn_conv_algo_search"] = "EXHAUSTIVE" },
            defaults);

        var set = new CudaProviderOptions
        {
            ArenaExtendStrategy = CudaArenaExtendStrategy.SameAsRequested,
            CudnnConvolutionSearch = CudnnConvolutionSearch.Heuristic,
            GpuMemoryLimit = 8L << 30,
            AdditionalOptions = new Dictionary<string, string> { ["use_tf32"] = "0", ["cudnn_conv_algo_search"] = "DEFAULT" },
        }.ToDictionary(3);
        Assert.AreEqual("3", set["device_id"]);
        Assert.AreEqual("kSameAsRequested", set["arena_extend_strategy"]);
        Assert.AreEqual("8589934592", set["gpu_mem_limit"]);
        Assert.AreEqual("0", set["use_tf32"]);
        Assert.AreEqual("DEFAULT", set["cudnn_conv_algo_search"], "additional options are applied last and win");
    }

    [TestMethod]
    public void TheProviderNamesItsDevice()
    {
        Assert.AreEqual("CPU", ExecutionProvider.Cpu.ToString());
        var cuda = (CudaExecutionProvider)ExecutionProvider.Cuda(1);
        Assert.AreEqual(1, cuda.DeviceId);
        Assert.AreEqual("CUDA:1", cuda.ToString());
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ExecutionProvider.Cuda(-1));
        Assert.AreEqual("deviceId", e.ParamName);
    }

    /// <summary>MLContext.GpuDeviceId selects CUDA when the options leave the provider unset: without fallback that is an error here.</summary>
    [TestMethod]
    public void TheMLContextsGpuDeviceIdIsHonoured()
    {
        var e = Assert.ThrowsExactly<InvalidOperationException>(() =>
            StableDiffusionModel.Load(new MLContext(1) { GpuDeviceId = 0 }, ShapesTestModel.Folder));
        StringAssert.Contains(e.Message, "CUDA:0");

        // The options' own settings take precedence over the MLContext's.
        using var cpu = StableDiffusionModel.Load(new MLContext(1) { GpuDeviceId = 0 }, ShapesTestModel.Folder,
            new StableDiffusionModelOptions { ExecutionProvider = ExecutionProvider.Cpu });
        Assert.AreEqual("CPU", cpu.Info.ExecutionProvider);
        Assert.ThrowsExactly<InvalidOperationException>(() => StableDiffusionModel.Load(new MLContext(1) { FallbackToCpu = true }, ShapesTestModel.Folder,
            new StableDiffusionModelOptions { ExecutionProvider = ExecutionProvider.Cuda(0), FallbackToCpu = false }));
    }
}
