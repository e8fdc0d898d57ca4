namespace MLNet.Diffusion;

/// <summary>Options for <see cref="StableDiffusionModel.Load(Microsoft.ML.MLContext, string, StableDiffusionModelOptions?)"/>.</summary>
public sealed class StableDiffusionModelOptions
{
    /// <summary>
    /// Where the models run. Null uses the <see cref="Microsoft.ML.MLContext"/>'s <c>GpuDeviceId</c> (CUDA on that device when
    /// set, else the CPU).
    /// </summary>
    public ExecutionProvider? ExecutionProvider { get; init; }

    /// <summary>
    /// Whether a CUDA provider that cannot be loaded falls back to the CPU (with a warning in the MLContext log) instead of
    /// failing. Null uses the <see cref="Microsoft.ML.MLContext"/>'s <c>FallbackToCpu</c>; off by default.
    /// </summary>
    public bool? FallbackToCpu { get; init; }

    /// <summary>Threads ONNX Runtime uses inside one operator; null lets ONNX Runtime choose (all cores).</summary>
    public int? IntraOpNumThreads { get; init; }

    /// <summary>
    /// The VAE scaling factor; null reads <c>scaling_factor</c> from <c>vae_decoder/config.json</c> (or <c>vae/config.json</c>),
    /// else uses 0.18215 (Stable Diffusion 1.x/2.x).
    /// </summary>
    public float? VaeScalingFactor { get; init; }

    /// <summary>
    /// When set, every session records an ONNX Runtime profile (one JSON file per component, named from this prefix):
    /// the GPU tests read which execution provider ran each node. Internal: a diagnostics hook, not a product option.
    /// </summary>
    internal string? ProfilingFilePrefix { get; init; }
}
