using System;
using System.Collections.Generic;

namespace MLNet.Diffusion;

/// <summary>
/// Where ONNX Runtime runs the models: <see cref="Cpu"/>, or CUDA through <see cref="Cuda(int, CudaProviderOptions?)"/>.
/// The CUDA provider comes either from the official GPU native package (<c>Microsoft.ML.OnnxRuntime.Gpu</c>, the classic
/// CUDA provider) or from a plugin execution-provider library at a path (ONNX Runtime ≥ 1.22,
/// <see cref="CudaProviderOptions.PluginLibraryPath"/>). See docs/gpu.md.
/// </summary>
public abstract class ExecutionProvider
{
    private protected ExecutionProvider()
    {
    }

    /// <summary>The CPU execution provider (always available).</summary>
    public static ExecutionProvider Cpu { get; } = new CpuExecutionProvider();

    /// <summary>The CUDA execution provider on GPU <paramref name="deviceId"/>.</summary>
    /// <param name="deviceId">The CUDA device ordinal (0 for the first GPU).</param>
    /// <param name="options">CUDA provider settings; defaults when null.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="deviceId"/> is negative.</exception>
    public static ExecutionProvider Cuda(int deviceId = 0, CudaProviderOptions? options = null)
    {
        if (deviceId < 0)
            throw new ArgumentOutOfRangeException(nameof(deviceId), deviceId, "The CUDA device id must be 0 or greater.");
        return new CudaExecutionProvider(deviceId, options ?? new CudaProviderOptions());
    }

    /// <summary>A short description for logs and errors, e.g. <c>CUDA:0</c>.</summary>
    public abstract override string ToString();
}

/// <summary>The CPU execution provider.</summary>
public sealed class CpuExecutionProvider : ExecutionProvider
{
    internal CpuExecutionProvider()
    {
    }

    /// <inheritdoc/>
    public override string ToString() => "CPU";
}

/// <summary>The CUDA execution provider on one GPU.</summary>
public sealed class CudaExecutionProvider : ExecutionProvider
{
    internal CudaExecutionProvider(int deviceId, CudaProviderOptions options)
    {
        DeviceId = deviceId;
        Options = options;
    }

    /// <summary>The CUDA device ordinal.</summary>
    public int DeviceId { get; }

    /// <summary>The CUDA provider settings.</summary>
    public CudaProviderOptions Options { get; }

    /// <inheritdoc/>
    public override string ToString() => $"CUDA:{DeviceId}";
}

/// <summary>Settings of the CUDA execution provider (ONNX Runtime's CUDA provider options).</summary>
public sealed class CudaProviderOptions
{
    /// <summary>How the device memory arena grows (<c>arena_extend_strategy</c>).</summary>
    public CudaArenaExtendStrategy ArenaExtendStrategy { get; init; } = CudaArenaExtendStrategy.NextPowerOfTwo;

    /// <summary>How cuDNN picks convolution algorithms (<c>cudnn_conv_algo_search</c>).</summary>
    public CudnnConvolutionSearch CudnnConvolutionSearch { get; init; } = CudnnConvolutionSearch.Exhaustive;

    /// <summary>Upper bound of the device memory arena in bytes (<c>gpu_mem_limit</c>); null for no limit.</summary>
    public long? GpuMemoryLimit { get; init; }

    /// <summary>
    /// Path of a plugin execution-provider library exporting <c>CreateEpFactories</c> (for example
    /// <c>libonnxruntime_providers_cuda.so</c> of a CUDA build), registered with
    /// <c>OrtEnv.RegisterExecutionProviderLibrary</c>. Null uses the classic CUDA provider of the GPU native package.
    /// </summary>
    public string? PluginLibraryPath { get; init; }

    /// <summary>Additional provider options passed through verbatim (key → value).</summary>
    public IReadOnlyDictionary<string, string>? AdditionalOptions { get; init; }

    internal Dictionary<string, string> ToDictionary(int deviceId)
    {
        var d = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["device_id"] = deviceId.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["arena_extend_strategy"] = ArenaExtendStrategy == CudaArenaExtendStrategy.NextPowerOfTwo ? "kNextPowerOfTwo" : "kSameAsRequested",
            ["cudnn_conv_algo_search"] = CudnnConvolutionSearch switch
            {
                CudnnConvolutionSearch.Exhaustive => "EXHAUSTIVE",
                CudnnConvolutionSearch.Heuristic => "HEURISTIC",
                _ => "DEFAULT",
            },
        };
        if (GpuMemoryLimit is { } limit)
            d["gpu_mem_limit"] = limit.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (AdditionalOptions is not null)
            foreach (var kv in AdditionalOptions)
                d[kv.Key] = kv.Value;
        return d;
    }
}

/// <summary>How ONNX Runtime's CUDA memory arena grows.</summary>
public enum CudaArenaExtendStrategy
{
    /// <summary>Double the arena (<c>kNextPowerOfTwo</c>), fewer allocations.</summary>
    NextPowerOfTwo,

    /// <summary>Grow by what is requested (<c>kSameAsRequested</c>), less memory.</summary>
    SameAsRequested,
}

/// <summary>How cuDNN chooses convolution algorithms.</summary>
public enum CudnnConvolutionSearch
{
    /// <summary>Benchmark every algorithm once per shape (<c>EXHAUSTIVE</c>): slow first run, fastest steady state.</summary>
    Exhaustive,

    /// <summary>cuDNN's heuristics (<c>HEURISTIC</c>).</summary>
    Heuristic,

    /// <summary>The default algorithm (<c>DEFAULT</c>).</summary>
    Default,
}
