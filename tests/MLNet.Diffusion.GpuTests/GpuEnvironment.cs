using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.GpuTests;

/// <summary>
/// What the GPU tests run on, from the environment: <c>MLNET_DIFFUSION_CUDA_PLUGIN</c> (path of a CUDA plugin
/// execution-provider library, e.g. <c>libonnxruntime_providers_cuda.so</c>; unset uses the classic CUDA provider of
/// the <c>Microsoft.ML.OnnxRuntime.Gpu</c> native package) and <c>MLNET_DIFFUSION_CUDA_DEVICE</c> (default 0).
/// Every test first calls <see cref="RequireCuda"/>: without a working CUDA provider the test fails at once with the
/// library's message (which names the missing library or package), never passes on the CPU.
/// </summary>
[TestClass]
public static class GpuEnvironment
{
    /// <summary>The environment variable naming the CUDA plugin library.</summary>
    public const string PluginVariable = "MLNET_DIFFUSION_CUDA_PLUGIN";

    /// <summary>The environment variable naming the CUDA device ordinal.</summary>
    public const string DeviceVariable = "MLNET_DIFFUSION_CUDA_DEVICE";

    private static readonly Lazy<string> s_shapes = new(() => ShapesModel.EnsureBuilt(ModelCache));
    private static readonly Lazy<string?> s_cudaError = new(ProbeCuda);

    /// <summary>Where the tests build their model folders (reused between runs of one machine).</summary>
    public static string ModelCache { get; } = Path.Combine(Path.GetTempPath(), "mlnet-diffusion-gpu-tests");

    /// <summary>The CUDA device ordinal under test.</summary>
    public static int DeviceId { get; } = int.TryParse(Environment.GetEnvironmentVariable(DeviceVariable), NumberStyles.Integer, CultureInfo.InvariantCulture, out int d) ? d : 0;

    /// <summary>The plugin library path, or null for the classic provider.</summary>
    public static string? PluginPath { get; } = Environment.GetEnvironmentVariable(PluginVariable) is { Length: > 0 } p ? p : null;

    /// <summary>The CUDA provider under test (cuDNN's heuristic search: these tests compare numbers, not speed).</summary>
    public static ExecutionProvider Cuda { get; } = ExecutionProvider.Cuda(DeviceId, new CudaProviderOptions
    {
        PluginLibraryPath = PluginPath,
        CudnnConvolutionSearch = CudnnConvolutionSearch.Heuristic,
    });

    /// <summary>The default Shapes model folder.</summary>
    public static string ShapesFolder => s_shapes.Value;

    /// <summary>Prints what the run uses (the log of a GPU run is read by people who were not there).</summary>
    [AssemblyInitialize]
    public static void Describe(TestContext context)
    {
        _ = context;
        Console.WriteLine($"ONNX Runtime {OrtEnv.Instance().GetVersionString()}; provider under test {Cuda} "
            + $"({(PluginPath is null ? "classic CUDA provider of the native package" : "plugin " + PluginPath)}); "
            + $"LD_LIBRARY_PATH={Environment.GetEnvironmentVariable("LD_LIBRARY_PATH")}");
    }

    /// <summary>Fails the calling test at once, with the cause, unless the CUDA provider loads (probed once per run).</summary>
    public static void RequireCuda()
    {
        if (s_cudaError.Value is { } error)
            Assert.Fail("The CUDA execution provider is not usable here, so this GPU test cannot run: " + error
                + $" (Set {PluginVariable} to the plugin library and put the CUDA/cuDNN libraries on LD_LIBRARY_PATH, or build with "
                + "-p:OnnxRuntimeNativePackage=Microsoft.ML.OnnxRuntime.Gpu; see tests/gpu/README.md.)");
    }

    /// <summary>Loads a model folder on <paramref name="provider"/> with fallback off, optionally profiling every session.</summary>
    public static StableDiffusionModel Load(string folder, ExecutionProvider provider, string? profilePrefix = null) =>
        StableDiffusionModel.Load(new MLContext(seed: 1), folder, new StableDiffusionModelOptions
        {
            ExecutionProvider = provider,
            FallbackToCpu = false,
            ProfilingFilePrefix = profilePrefix,
        });

    /// <summary>The EP devices ONNX Runtime reports (after a plugin registered), as text for logs.</summary>
    public static IReadOnlyList<string> EpDevices()
    {
        var list = new List<string>();
        foreach (var device in OrtEnv.Instance().GetEpDevices())
            list.Add($"{device.EpName} ({device.EpVendor}) on {device.HardwareDevice.Type} vendor {device.HardwareDevice.Vendor} device 0x{device.HardwareDevice.DeviceId:x}");
        return list;
    }

    private static string? ProbeCuda()
    {
        try
        {
            using var model = Load(ShapesFolder, Cuda);
            return model.Info.ExecutionProvider == Cuda.ToString()
                ? null
                : $"the model loaded on {model.Info.ExecutionProvider}, not {Cuda}";
        }
        catch (InvalidOperationException e)
        {
            return e.Message;
        }
        catch (FileNotFoundException e)
        {
            return e.Message;
        }
    }
}
