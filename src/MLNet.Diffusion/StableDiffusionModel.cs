using System;
using System.IO;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion;

/// <summary>
/// A Stable Diffusion model folder (the diffusers ONNX export layout) loaded into ONNX Runtime sessions, shared by the
/// EncodePrompt, DenoiseLatents, DecodeLatents and EncodeImage stages. Load it with <see cref="Load"/>, pass it to the
/// <c>mlContext.Transforms</c> extensions, and dispose it when the pipeline is no longer used: it holds native memory.
/// </summary>
/// <remarks>Only load models from trusted sources: an ONNX file is code that ONNX Runtime executes.</remarks>
public sealed class StableDiffusionModel : IDisposable
{
    private static readonly TensorElementType[] s_floatTypes = { TensorElementType.Float, TensorElementType.Float16 };
    private static readonly TensorElementType[] s_idTypes = { TensorElementType.Int32, TensorElementType.Int64 };
    private static readonly TensorElementType[] s_timestepTypes = { TensorElementType.Float, TensorElementType.Float16, TensorElementType.Int64, TensorElementType.Int32, TensorElementType.Double };

    private readonly IHost _host;
    private readonly OnnxSessionFactory _sessions;
    private readonly Lazy<OnnxComponent?> _vaeEncoder;
    private int _disposed;

    private StableDiffusionModel(MLContext mlContext, string directory, StableDiffusionModelOptions options)
    {
        MLContext = mlContext;
        _host = ((IHostEnvironment)mlContext).Register("MLNet.Diffusion");
        DefaultSeed = _host.Rand.Next();

        var provider = options.ExecutionProvider
            ?? (mlContext.GpuDeviceId is int gpu ? ExecutionProvider.Cuda(gpu) : ExecutionProvider.Cpu);
        bool fallback = options.FallbackToCpu ?? mlContext.FallbackToCpu;
        _sessions = new OnnxSessionFactory(provider, fallback, options.IntraOpNumThreads, Warn);

        Directory = ModelFolder.Validate(directory);
        var schedulerConfig = PipelineConfigFixes(Schedulers.SchedulerConfig.Load(Path.Combine(Directory, ModelFolder.SchedulerConfig)));
        Tokenizer = ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer));

        try
        {
            TextEncoder = Open(ModelFolder.TextEncoder);
            Unet = Open(ModelFolder.Unet);
            VaeDecoder = Open(ModelFolder.VaeDecoder);
            _vaeEncoder = new Lazy<OnnxComponent?>(() =>
                File.Exists(ModelFolder.ModelPath(Directory, ModelFolder.VaeEncoder)) ? Open(ModelFolder.VaeEncoder) : null,
                LazyThreadSafetyMode.ExecutionAndPublication);
            Info = ReadInfo(schedulerConfig, options);
        }
        catch
        {
            TextEncoder?.Dispose();
            Unet?.Dispose();
            VaeDecoder?.Dispose();
            throw;
        }
        using var ch = _host.Start("Load");
        ch.Info(MessageSensitivity.None, $"Loaded Stable Diffusion model '{Directory}' on {Info.ExecutionProvider}: latent channels {Info.LatentChannels}, "
            + $"VAE factor {Info.VaeSpatialFactor}, hidden size {Info.HiddenSize}, scaling factor {Info.VaeScalingFactor}, scheduler {schedulerConfig.ClassName ?? "(none)"}.");
    }

    /// <summary>
    /// Loads a Stable Diffusion ONNX model folder. The folder must hold model_index.json, scheduler/scheduler_config.json,
    /// tokenizer/ (vocab.json, merges.txt), text_encoder/, unet/ and vae_decoder/ models; vae_encoder/ is needed only
    /// for image-to-image. Shapes, element types and the VAE factor are read from the models' metadata and configs.
    /// Only load models from trusted sources.
    /// </summary>
    /// <param name="mlContext">The context: its log receives progress and warnings, its seed derives default seeds, and its
    /// <c>GpuDeviceId</c>/<c>FallbackToCpu</c> apply when <paramref name="options"/> leaves them unset.</param>
    /// <param name="modelDirectory">The model folder.</param>
    /// <param name="options">Loading options; defaults when null.</param>
    /// <returns>The loaded model; dispose it when done.</returns>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">A required file is missing (the message lists them).</exception>
    /// <exception cref="InvalidDataException">A file is malformed (the message names it).</exception>
    /// <exception cref="ModelContractException">A model's inputs or outputs do not match the contract.</exception>
    /// <exception cref="InvalidOperationException">The requested execution provider cannot be loaded and fallback is off.</exception>
    public static StableDiffusionModel Load(MLContext mlContext, string modelDirectory, StableDiffusionModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDirectory);
        return new StableDiffusionModel(mlContext, modelDirectory, options ?? new StableDiffusionModelOptions());
    }

    /// <summary>The context the model was loaded with.</summary>
    public MLContext MLContext { get; }

    /// <summary>The model folder's full path.</summary>
    public string Directory { get; }

    /// <summary>What the folder says about the model (latent channels, VAE factor, hidden size, …).</summary>
    public ModelInfo Info { get; }

    /// <summary>The CLIP tokenizer read from the folder's tokenizer/.</summary>
    public ClipTokenizer Tokenizer { get; }

    /// <summary>Whether the folder has a VAE encoder (needed for image-to-image).</summary>
    public bool HasVaeEncoder => VaeEncoderOrNull is not null;

    internal OnnxComponent TextEncoder { get; }

    internal OnnxComponent Unet { get; }

    internal OnnxComponent VaeDecoder { get; }

    internal OnnxComponent? VaeEncoderOrNull { get { ThrowIfDisposed(); return _vaeEncoder.Value; } }

    /// <summary>The seed used for rows without their own seed, derived from the MLContext's random source.</summary>
    internal int DefaultSeed { get; }

    internal IHost Host => _host;

    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    internal void ThrowIfDisposed()
    {
        if (IsDisposed)
            throw new ObjectDisposedException(nameof(StableDiffusionModel), $"The Stable Diffusion model '{Directory}' was disposed; load it again to use it.");
    }

    /// <summary>
    /// diffusers' StableDiffusionPipeline corrects two outdated scheduler settings of early SD 1.x folders with a
    /// deprecation warning: <c>steps_offset</c> != 1 becomes 1 and <c>clip_sample</c> true becomes false
    /// (pipeline_stable_diffusion.py, __init__). The same folder must give the same timesteps here.
    /// </summary>
    private SchedulerConfig PipelineConfigFixes(SchedulerConfig config)
    {
        if (config.StepsOffset != 1 && config.TimestepSpacing == "leading" && config.ClassName is not ("LCMScheduler" or null))
        {
            Warn($"scheduler_config.json has steps_offset {config.StepsOffset}; using 1 as diffusers' Stable Diffusion pipeline does.");
            config = config with { StepsOffset = 1 };
        }
        if (config.ClipSample)
            Warn("scheduler_config.json sets clip_sample true; using false as diffusers' Stable Diffusion pipeline does.");
        // Also when the key is absent: the class default (true for DDIM/DDPM) is what the pipeline turns off.
        return config with { ClipSample = false };
    }

    private void Warn(string message)
    {
        using var ch = _host.Start("MLNet.Diffusion");
        ch.Warning(MessageSensitivity.None, message);
    }

    private OnnxComponent Open(string component)
    {
        string path = ModelFolder.ModelPath(Directory, component);
        return new OnnxComponent(component, path, _sessions.Create(path));
    }

    private ModelInfo ReadInfo(SchedulerConfig schedulerConfig, StableDiffusionModelOptions options)
    {
        // Text encoder: input_ids [B, L] int32/int64 → last_hidden_state [B, L, D] (+ pooler_output [B, D]).
        TextEncoder.RequireInput("input_ids", s_idTypes, 2);
        TextEncoder.RequireOutput("last_hidden_state", s_floatTypes, 3);
        int sequenceLength = OnnxComponent.StaticDim(TextEncoder.Input("input_ids"), 1) ?? Tokenizer.ModelMaxLength;
        if (sequenceLength != Tokenizer.ModelMaxLength)
            throw new ModelContractException($"text_encoder input_ids has sequence length {sequenceLength} but the tokenizer's model_max_length is {Tokenizer.ModelMaxLength}.");

        // UNet: sample [B, C, h, w], timestep [B] / [1] / [], encoder_hidden_states [B, L, D] → out_sample [B, C, h, w].
        Unet.RequireInput("sample", s_floatTypes, 4);
        Unet.RequireInput("timestep", s_timestepTypes, 0, 1);
        Unet.RequireInput("encoder_hidden_states", s_floatTypes, 3);
        Unet.RequireOutput(Unet.Outputs.Count == 1 ? FirstKey(Unet.Outputs) : "out_sample", s_floatTypes, 4);

        // VAE decoder: latent_sample [B, C, h, w] → sample [B, 3, H, W].
        VaeDecoder.RequireInput("latent_sample", s_floatTypes, 4);
        VaeDecoder.RequireOutput(VaeDecoder.Outputs.Count == 1 ? FirstKey(VaeDecoder.Outputs) : "sample", s_floatTypes, 4);

        int hidden = OnnxComponent.StaticDim(TextEncoder.Output("last_hidden_state"), 2)
            ?? OnnxComponent.StaticDim(Unet.Input("encoder_hidden_states"), 2)
            ?? ProbeHiddenSize(sequenceLength);
        if (OnnxComponent.StaticDim(Unet.Input("encoder_hidden_states"), 2) is int unetHidden && unetHidden != hidden)
            throw new ModelContractException($"text_encoder produces hidden states of width {hidden} but unet encoder_hidden_states expects {unetHidden}.");
        int? pooled = TextEncoder.HasOutput("pooler_output") ? OnnxComponent.StaticDim(TextEncoder.Output("pooler_output"), 1) ?? hidden : null;

        string vaeConfig = FindVaeConfig();
        // The UNet's output (not its input: an inpainting UNet takes 2C + 1 channels) and the VAE state C.
        int latentChannels = OnnxComponent.StaticDim(Unet.Output(UnetOutputName), 1)
            ?? OnnxComponent.StaticDim(VaeDecoder.Input("latent_sample"), 1)
            ?? (int?)ModelFolder.ReadNumber(vaeConfig, "latent_channels")
            ?? OnnxComponent.StaticDim(Unet.Input("sample"), 1)
            ?? throw new ModelContractException("The number of latent channels is not stated by unet/model.onnx, vae_decoder/model.onnx or a VAE config.json.");
        int unetInputChannels = ReadUnetInputChannels(latentChannels);
        int factor = ModelFolder.ReadArrayLength(vaeConfig, "block_out_channels") is int blocks and > 0
            ? 1 << (blocks - 1)
            : ProbeVaeFactor(latentChannels);
        float scaling = options.VaeScalingFactor ?? (float?)ModelFolder.ReadNumber(vaeConfig, "scaling_factor") ?? 0.18215f;
        if (!(scaling > 0) || float.IsInfinity(scaling))
            throw new InvalidDataException($"The VAE scaling factor must be a positive number, not {scaling}.");
        return new ModelInfo(Directory, latentChannels, factor, hidden, sequenceLength, pooled, scaling, schedulerConfig, _sessions.EffectiveProvider.ToString())
        {
            UnetInputChannels = unetInputChannels,
        };
    }

    /// <summary>
    /// The UNet's <c>sample</c> channels: C for text-to-image, 2C + 1 for an inpainting UNet (latents, mask, masked-image
    /// latents; diffusers StableDiffusionInpaintPipeline). From the model's metadata, else <c>unet/config.json</c>'s
    /// <c>in_channels</c>, else C.
    /// </summary>
    private int ReadUnetInputChannels(int latentChannels)
    {
        int channels = OnnxComponent.StaticDim(Unet.Input("sample"), 1)
            ?? (int?)ModelFolder.ReadNumber(Path.Combine(Directory, ModelFolder.Unet, "config.json"), "in_channels")
            ?? latentChannels;
        if (channels != latentChannels && channels != 2 * latentChannels + 1)
            throw new ModelContractException($"unet/model.onnx input 'sample' has {channels} channels; expected {latentChannels} (the latent channels) or {2 * latentChannels + 1} (an inpainting UNet: latents, mask, masked-image latents).");
        return channels;
    }

    internal string UnetOutputName => Unet.Outputs.Count == 1 ? FirstKey(Unet.Outputs) : "out_sample";

    internal string VaeDecoderOutputName => VaeDecoder.Outputs.Count == 1 ? FirstKey(VaeDecoder.Outputs) : "sample";

    private static string FirstKey(System.Collections.Generic.IReadOnlyDictionary<string, NodeMetadata> d)
    {
        foreach (var kv in d)
            return kv.Key;
        throw new ModelContractException("A model has no outputs.");
    }

    private string FindVaeConfig()
    {
        foreach (string candidate in new[] { "vae_decoder/config.json", "vae/config.json" })
        {
            string p = Path.Combine(Directory, candidate);
            if (File.Exists(p))
                return p;
        }
        return Path.Combine(Directory, "vae_decoder/config.json");
    }

    /// <summary>Runs the VAE decoder once on an 8×8 zero latent to learn its spatial factor when no config states it.</summary>
    private int ProbeVaeFactor(int channels)
    {
        var type = VaeDecoder.Input("latent_sample").ElementDataType;
        using var input = new TensorBuffer(type, new long[] { 1, channels, 8, 8 });
        using var outputs = VaeDecoder.Run(null, new[] { "latent_sample" }, new[] { input.Value }, new[] { VaeDecoderOutputName });
        var shape = outputs[0].GetTensorTypeAndShape().Shape;
        if (shape.Length != 4 || shape[2] % 8 != 0 || shape[2] < 8)
            throw new ModelContractException($"vae_decoder returned shape [{string.Join(",", shape)}] for an 8×8 latent; expected [1, 3, 8·f, 8·f].");
        return (int)(shape[2] / 8);
    }

    private int ProbeHiddenSize(int sequenceLength)
    {
        using var ids = new TensorBuffer(TextEncoder.Input("input_ids").ElementDataType, new long[] { 1, sequenceLength });
        using var outputs = TextEncoder.Run(null, new[] { "input_ids" }, new[] { ids.Value }, new[] { "last_hidden_state" });
        return (int)outputs[0].GetTensorTypeAndShape().Shape[2];
    }

    /// <summary>Releases the ONNX Runtime sessions. Stages that use this model fail with <see cref="ObjectDisposedException"/> afterwards.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        TextEncoder.Dispose();
        Unet.Dispose();
        VaeDecoder.Dispose();
        if (_vaeEncoder.IsValueCreated)
            _vaeEncoder.Value?.Dispose();
    }
}
