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
    /// Whether the text encoders' ONNX Runtime threads keep spinning for a while after a run returns (ONNX Runtime's
    /// default; true by default). Every model has its own threads: spinning makes back-to-back text encoder calls
    /// (EncodePrompt over many rows) faster, while in a whole generation the spinning threads compete with the UNet's
    /// first steps for the cores. False stops them as each run returns (ONNX Runtime's <c>session.force_spinning_stop</c>).
    /// Measured on 2 cores with a small model (docs/benchmarks.md): false made 4-image generations about 10 % faster and
    /// EncodePrompt alone about 20 % slower. The VAE's threads always stop when its run returns (it runs once per batch;
    /// spinning after it slowed the next batch's UNet steps by 10–17 % there).
    /// </summary>
    public bool TextEncoderThreadsSpin { get; init; } = true;

    /// <summary>
    /// The VAE scaling factor; null reads <c>scaling_factor</c> from <c>vae_decoder/config.json</c> (or <c>vae/config.json</c>),
    /// else uses 0.18215 (Stable Diffusion 1.x/2.x).
    /// </summary>
    public float? VaeScalingFactor { get; init; }

    /// <summary>
    /// The folder where ONNX Runtime's optimised graphs are kept between loads (ONNX Runtime's offline mode): the first
    /// load of a model file optimises it and saves the result, later loads of the unchanged files skip the optimisation.
    /// Entries are per model file, execution provider, ONNX Runtime version and CPU, and are rebuilt when the model's files
    /// change. Default: <c>MLNet.Diffusion/optimized-models</c> in the user's local application data folder
    /// (<c>~/.local/share</c> on Linux); null turns the cache off. Sessions with LoRA or other replaced weights never use it.
    /// </summary>
    public string? OptimizedModelCacheDirectory { get; init; } = Onnx.OptimizedModelCache.DefaultDirectory;

    /// <summary>
    /// When set, every session records an ONNX Runtime profile (one JSON file per component, named from this prefix):
    /// the GPU tests read which execution provider ran each node. Internal: a diagnostics hook, not a product option.
    /// </summary>
    internal string? ProfilingFilePrefix { get; init; }

    /// <summary>
    /// LoRA files merged into the UNet and text encoder weights when the model loads (each with its scale); null or
    /// empty loads the base weights. <see cref="StableDiffusionModel.WithLoras(LoraReference[])"/> derives models with
    /// other sets that share the unchanged sessions. Keys that match no weight are logged and listed in
    /// <see cref="StableDiffusionModel.UnmatchedLoraKeys"/>.
    /// </summary>
    public System.Collections.Generic.IReadOnlyList<LoraReference>? Loras { get; init; }

    /// <summary>
    /// The folder that A1111-style <c>&lt;lora:name:scale&gt;</c> tags in prompts are looked up in (<c>name.safetensors</c>,
    /// subfolders included). Null (the default): prompts with LoRA tags are refused. Rows whose tags name different LoRAs
    /// run in groups, each with its own merged sessions.
    /// </summary>
    public string? LoraDirectory { get; init; }

    /// <summary>
    /// The most bytes the sessions of LoRA sets may hold (each changed component's session counts its whole weights, e.g.
    /// about 3.4 GB for an SD 1.5 float32 UNet): when a new set goes over it, the least recently used set that no model or
    /// running batch uses is closed. Sets in use are never closed, so the budget is exceeded by them if need be.
    /// 4 GiB by default.
    /// </summary>
    public long LoraSessionCacheBytes { get; init; } = 4L << 30;
}
