using System;
using System.Globalization;
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
    // The timestep forms of Stable Diffusion exports: float32 (diffusers/optimum), float16 (--fp16), int64 (some converters).
    private static readonly TensorElementType[] s_timestepTypes = { TensorElementType.Float, TensorElementType.Float16, TensorElementType.Int64 };
    private static readonly string[] s_unetInputs = { "sample", "timestep", "encoder_hidden_states" };
    private static readonly string[] s_sdxlUnetInputs = { "text_embeds", "time_ids" };

    private readonly IHost _host;
    private readonly OnnxSessionFactory _sessions;
    private readonly bool _textEncoderThreadsSpin;
    private readonly Lazy<OnnxComponent?> _vaeEncoder;
    private readonly TextEncoderBinding[] _textEncoders = Array.Empty<TextEncoderBinding>();
    private int _disposed;

    private StableDiffusionModel(MLContext mlContext, string directory, StableDiffusionModelOptions options)
    {
        MLContext = mlContext;
        _host = ((IHostEnvironment)mlContext).Register("MLNet.Diffusion");
        DefaultSeed = _host.Rand.Next();

        var provider = options.ExecutionProvider
            ?? (mlContext.GpuDeviceId is int gpu ? ExecutionProvider.Cuda(gpu) : ExecutionProvider.Cpu);
        bool fallback = options.FallbackToCpu ?? mlContext.FallbackToCpu;
        _sessions = new OnnxSessionFactory(provider, fallback, options.IntraOpNumThreads, Warn) { ProfilingFilePrefix = options.ProfilingFilePrefix };
        _textEncoderThreadsSpin = options.TextEncoderThreadsSpin;

        var layout = ModelFolder.Validate(directory);
        Directory = layout.Directory;
        var schedulerConfig = PipelineConfigFixes(Schedulers.SchedulerConfig.Load(Path.Combine(Directory, ModelFolder.SchedulerConfig)));
        // SDXL folders add tokenizer_2/ + text_encoder_2/; the refiner layout has only those (model_index.json declares no text_encoder).
        bool xl = layout.Kind != ModelKind.StableDiffusion, refiner = layout.Kind == ModelKind.StableDiffusionXLRefiner;
        Tokenizer2 = xl ? ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer2)) : null;
        Tokenizer = refiner ? Tokenizer2! : ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer));

        try
        {
            TextEncoder2 = xl ? Open(ModelFolder.TextEncoder2) : null;
            TextEncoder = refiner ? TextEncoder2! : Open(ModelFolder.TextEncoder);
            Unet = Open(ModelFolder.Unet);
            VaeDecoder = Open(ModelFolder.VaeDecoder);
            _vaeEncoder = new Lazy<OnnxComponent?>(() =>
                File.Exists(ModelFolder.ModelPath(Directory, ModelFolder.VaeEncoder)) ? Open(ModelFolder.VaeEncoder) : null,
                LazyThreadSafetyMode.ExecutionAndPublication);
            Info = ReadInfo(schedulerConfig, options, layout, out _textEncoders);
        }
        catch
        {
            TextEncoder?.Dispose();
            if (!ReferenceEquals(TextEncoder2, TextEncoder))
                TextEncoder2?.Dispose();
            Unet?.Dispose();
            VaeDecoder?.Dispose();
            throw;
        }
        using var ch = _host.Start("Load");
        ch.Info(MessageSensitivity.None, $"Loaded {ModelFolder.Describe(Info.Kind)} model '{Directory}' on {Info.ExecutionProvider}: latent channels {Info.LatentChannels}, "
            + $"VAE factor {Info.VaeSpatialFactor}, hidden size {Info.HiddenSize}, scaling factor {Info.VaeScalingFactor}, scheduler {schedulerConfig.ClassName ?? "(none)"}.");
    }

    /// <summary>
    /// Loads a Stable Diffusion ONNX model folder. The folder must hold model_index.json, scheduler/scheduler_config.json,
    /// tokenizer/ (vocab.json, merges.txt), text_encoder/, unet/ and vae_decoder/ models; vae_encoder/ is needed only
    /// for image-to-image. SDXL folders (model_index.json <c>_class_name</c> StableDiffusionXLPipeline or its Img2Img/ORT
    /// forms) add tokenizer_2/ and text_encoder_2/, whose text encoders must output their hidden states
    /// (<c>hidden_states.0 … N</c>) and, for the second, <c>text_embeds</c>; the refiner layout has only the second pair.
    /// The kind found is <see cref="ModelInfo.Kind"/>. Shapes, element types and the VAE factor are read from the models'
    /// metadata and configs. Only load models from trusted sources.
    /// </summary>
    /// <param name="mlContext">The context: its log receives progress and warnings, its seed derives default seeds, and its
    /// <c>GpuDeviceId</c>/<c>FallbackToCpu</c> apply when <paramref name="options"/> leaves them unset.</param>
    /// <param name="modelDirectory">The model folder.</param>
    /// <param name="options">Loading options; defaults when null.</param>
    /// <returns>The loaded model; dispose it when done.</returns>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">A required file is missing (the message lists them).</exception>
    /// <exception cref="InvalidDataException">A file is malformed (the message names it).</exception>
    /// <exception cref="ModelContractException">A model's inputs or outputs do not match the contract (the message names the
    /// file and the input or output), or model_index.json names a pipeline this library does not run (SD3, Flux, …).</exception>
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

    /// <summary>
    /// The CLIP tokenizer of the first text encoder, read from the folder's tokenizer/ (tokenizer_2/ for an SDXL refiner,
    /// whose only text encoder is the second). Prompts are counted and truncated with it.
    /// </summary>
    public ClipTokenizer Tokenizer { get; }

    /// <summary>
    /// The CLIP tokenizer of SDXL's second text encoder, read from tokenizer_2/ (it pads with <c>"!"</c> where the first
    /// pads with <c>&lt;|endoftext|&gt;</c>); null for Stable Diffusion 1.x/2.x.
    /// </summary>
    public ClipTokenizer? Tokenizer2 { get; }

    /// <summary>Whether the folder has a VAE encoder (needed for image-to-image).</summary>
    public bool HasVaeEncoder => VaeEncoderOrNull is not null;

    /// <summary>The first text encoder prompts run through: text_encoder/ (text_encoder_2/ for the SDXL refiner).</summary>
    internal OnnxComponent TextEncoder { get; }

    /// <summary>text_encoder_2/ of an SDXL folder (the same component as <see cref="TextEncoder"/> for the refiner); null otherwise.</summary>
    internal OnnxComponent? TextEncoder2 { get; }

    /// <summary>The text encoders in the order their states are concatenated, with their tokenizers and outputs.</summary>
    internal System.Collections.Generic.IReadOnlyList<TextEncoderBinding> TextEncoders => _textEncoders;

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
        // Spinning after a run only pays when the same session runs again at once: the UNet (step after step) and, by
        // default, the text encoders (EncodePrompt's chunks). The VAE runs once per batch, and its spinning threads took
        // cores from the next batch's UNet steps (StableDiffusionModelOptions.TextEncoderThreadsSpin).
        bool stop = component == ModelFolder.VaeDecoder || component == ModelFolder.VaeEncoder
            || (component == ModelFolder.TextEncoder || component == ModelFolder.TextEncoder2) && !_textEncoderThreadsSpin;
        var session = _sessions.Create(path, stop);
        return new OnnxComponent(component, path, session, runsOnDevice: _sessions.EffectiveProvider is CudaExecutionProvider);
    }

    private ModelInfo ReadInfo(SchedulerConfig schedulerConfig, StableDiffusionModelOptions options, FolderLayout layout, out TextEncoderBinding[] bindings)
    {
        bool xl = layout.Kind != ModelKind.StableDiffusion;
        // Text encoders: input_ids [B, L] int32/int64 → states [B, L, D] (SD: last_hidden_state, + optional pooler_output;
        // SDXL: hidden_states.0 … N of which encode_prompt takes hidden_states[-2], + text_embeds [B, P] from text_encoder_2).
        (OnnxComponent Encoder, ClipTokenizer Tokenizer)[] encoders = layout.Kind switch
        {
            ModelKind.StableDiffusionXL => [(TextEncoder, Tokenizer), (TextEncoder2!, Tokenizer2!)],
            ModelKind.StableDiffusionXLRefiner => [(TextEncoder2!, Tokenizer2!)],
            _ => [(TextEncoder, Tokenizer)],
        };
        int sequenceLength = -1;
        foreach (var (encoder, tokenizer) in encoders)
        {
            encoder.RequireInput("input_ids", s_idTypes, 2);
            int length = OnnxComponent.StaticDim(encoder.Input("input_ids"), 1) ?? tokenizer.ModelMaxLength;
            if (length != tokenizer.ModelMaxLength)
                throw new ModelContractException($"{encoder.Name} input_ids has sequence length {length} but the tokenizer's model_max_length is {tokenizer.ModelMaxLength}.");
            if (sequenceLength >= 0 && length != sequenceLength)
                throw new ModelContractException($"text_encoder takes {sequenceLength} tokens but {encoder.Name} takes {length}; SDXL concatenates their states token by token, so both must take the same length.");
            sequenceLength = length;
        }

        // UNet: sample [B, C, h, w], timestep [B] / [1] / [], encoder_hidden_states [B, L, D] → out_sample [B, C, h, w];
        // SDXL also text_embeds [B, P] and time_ids [B, 6 or 5] (diffusers added_cond_kwargs; optimum's UNet export inputs).
        Unet.RequireInput("sample", s_floatTypes, 4);
        Unet.RequireInput("timestep", s_timestepTypes, 0, 1);
        Unet.RequireInput("encoder_hidden_states", s_floatTypes, 3);
        Unet.RequireOutput(Unet.Outputs.Count == 1 ? FirstKey(Unet.Outputs) : "out_sample", s_floatTypes, 4);
        CheckUnetInputs(layout);
        if (xl)
        {
            Unet.RequireInput("text_embeds", s_floatTypes, 2);
            Unet.RequireInput("time_ids", s_floatTypes, 2);
        }

        // VAE decoder: latent_sample [B, C, h, w] → sample [B, 3, H, W].
        VaeDecoder.RequireInput("latent_sample", s_floatTypes, 4);
        VaeDecoder.RequireOutput(VaeDecoder.Outputs.Count == 1 ? FirstKey(VaeDecoder.Outputs) : "sample", s_floatTypes, 4);

        int? unetHidden = OnnxComponent.StaticDim(Unet.Input("encoder_hidden_states"), 2);
        bindings = new TextEncoderBinding[encoders.Length];
        int hidden = 0;
        int? pooled = null;
        for (int e = 0; e < encoders.Length; e++)
        {
            var (encoder, tokenizer) = encoders[e];
            string states = xl ? PenultimateStates(encoder) : "last_hidden_state";
            encoder.RequireOutput(states, s_floatTypes, 3);
            int width = OnnxComponent.StaticDim(encoder.Output(states), 2)
                ?? (encoders.Length == 1 ? unetHidden : null)
                ?? ProbeWidth(encoder, states, sequenceLength);
            string? pooledOutput = xl
                ? (ReferenceEquals(encoder, TextEncoder2) ? "text_embeds" : null)
                : (encoder.HasOutput("pooler_output") ? "pooler_output" : null);
            int? pooledWidth = null;
            if (pooledOutput is not null)
            {
                encoder.RequireOutput(pooledOutput, s_floatTypes, 2);
                pooledWidth = OnnxComponent.StaticDim(encoder.Output(pooledOutput), 1)
                    ?? (xl ? OnnxComponent.StaticDim(Unet.Input("text_embeds"), 1) : width)
                    ?? ProbeWidth(encoder, pooledOutput, sequenceLength);
                pooled = pooledWidth;
            }
            bindings[e] = new TextEncoderBinding(encoder, tokenizer, states, width, pooledOutput, pooledWidth);
            hidden += width;
        }
        if (unetHidden is int u && u != hidden)
            throw new ModelContractException(encoders.Length == 1
                ? $"{encoders[0].Encoder.Name} produces hidden states of width {hidden} but unet encoder_hidden_states expects {u}."
                : $"text_encoder and text_encoder_2 produce states of widths {bindings[0].HiddenSize} + {bindings[1].HiddenSize} = {hidden} but unet encoder_hidden_states expects {u}.");

        int? timeIdsWidth = null;
        if (xl)
        {
            if (OnnxComponent.StaticDim(Unet.Input("text_embeds"), 1) is int unetPooled && unetPooled != pooled)
                throw new ModelContractException($"text_encoder_2 text_embeds has width {pooled} but unet text_embeds expects {unetPooled}.");
            int? staticWidth = OnnxComponent.StaticDim(Unet.Input("time_ids"), 1);
            timeIdsWidth = staticWidth ?? (layout.RequiresAestheticsScore ? 5 : 6);
            if (timeIdsWidth is not (5 or 6))
                throw new ModelContractException($"unet/model.onnx time_ids has {timeIdsWidth} values per row; SDXL UNets take 6 (original size, crop top-left, target size) or 5 (original size, crop top-left, aesthetic score).");
            if (staticWidth is int w && (w == 5) != layout.RequiresAestheticsScore)
                Warn($"model_index.json sets requires_aesthetics_score {layout.RequiresAestheticsScore.ToString().ToLowerInvariant()} but unet/model.onnx time_ids take {w} values; following the UNet ({(w == 5 ? "aesthetic score" : "target size")}).");
        }

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
            Kind = layout.Kind,
            TimeIdsWidth = timeIdsWidth,
            ForceZerosForEmptyPrompt = layout.ForceZerosForEmptyPrompt,
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

    /// <summary>
    /// Every UNet input must be one the denoising loop feeds: an SD UNet with SDXL's added inputs, an SDXL UNet without
    /// them, or an input of another family (LCM's <c>timestep_cond</c>, ControlNet residuals, …) fails here, named.
    /// </summary>
    private void CheckUnetInputs(FolderLayout layout)
    {
        string Has() => string.Join(", ", Unet.Inputs.Keys);
        bool TextEncoder2Exists() => File.Exists(ModelFolder.ModelPath(Directory, ModelFolder.TextEncoder2));
        string From() => layout.ClassName is null ? string.Empty : $", model_index.json _class_name '{layout.ClassName}'";
        bool xl = layout.Kind != ModelKind.StableDiffusion;
        foreach (string added in s_sdxlUnetInputs)
        {
            if (xl && !Unet.HasInput(added))
                throw new ModelContractException($"unet/model.onnx has no input '{added}', which an SDXL UNet takes (diffusers added_cond_kwargs text_embeds and time_ids; "
                    + $"folder loaded as {ModelFolder.Describe(layout.Kind)}{From()}). It has: {Has()}.");
            if (!xl && Unet.HasInput(added))
                throw new ModelContractException($"unet/model.onnx takes '{added}', an SDXL UNet input, but the folder loads as Stable Diffusion 1.x/2.x ("
                    + (TextEncoder2Exists() ? $"model_index.json _class_name '{layout.ClassName}' names a Stable Diffusion pipeline" : $"no text_encoder_2/{From()}") + "). "
                    + "Use the complete SDXL export (text_encoder_2/, tokenizer_2/, model_index.json of StableDiffusionXLPipeline).");
        }
        foreach (string name in Unet.Inputs.Keys)
        {
            if (Array.IndexOf(s_unetInputs, name) >= 0 || (xl && Array.IndexOf(s_sdxlUnetInputs, name) >= 0))
                continue;
            string hint = name == "timestep_cond" ? " ('timestep_cond' is the guidance-scale embedding of LCM-distilled UNets, unet config time_cond_proj_dim.)" : string.Empty;
            throw new ModelContractException($"unet/model.onnx has an input '{name}' that MLNet.Diffusion cannot feed: it feeds {string.Join(", ", s_unetInputs)}"
                + (xl ? $", {string.Join(", ", s_sdxlUnetInputs)}" : string.Empty) + $" (the UNet has: {Has()}).{hint}");
        }
    }

    /// <summary>
    /// The penultimate layer's states of an SDXL text encoder: of the outputs <c>hidden_states.0 … hidden_states.N</c>
    /// (embeddings, then each layer; optimum's export with output_hidden_states), <c>hidden_states.{N−1}</c> — diffusers'
    /// <c>hidden_states[-2]</c> in StableDiffusionXLPipeline.encode_prompt.
    /// </summary>
    private static string PenultimateStates(OnnxComponent encoder)
    {
        const string prefix = "hidden_states.";
        int last = -1;
        foreach (string name in encoder.Outputs.Keys)
        {
            if (name.StartsWith(prefix, StringComparison.Ordinal)
                && int.TryParse(name.AsSpan(prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int k) && k > last)
                last = k;
        }
        if (last < 1)
            throw new ModelContractException($"{encoder.Name}/model.onnx has no outputs 'hidden_states.0' … 'hidden_states.N' (it has: {string.Join(", ", encoder.Outputs.Keys)}). "
                + "SDXL conditions the UNet on the penultimate layer's hidden states (diffusers encode_prompt: hidden_states[-2]); export the text encoders "
                + "with their hidden states, as optimum-cli export onnx does for SDXL.");
        return prefix + (last - 1).ToString(CultureInfo.InvariantCulture);
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

    /// <summary>Runs a text encoder once on zero ids to learn the last dimension of an output its metadata leaves symbolic.</summary>
    private static int ProbeWidth(OnnxComponent encoder, string output, int sequenceLength)
    {
        using var ids = new TensorBuffer(encoder.Input("input_ids").ElementDataType, new long[] { 1, sequenceLength });
        using var outputs = encoder.Run(null, new[] { "input_ids" }, new[] { ids.Value }, new[] { output });
        return (int)outputs[0].GetTensorTypeAndShape().Shape[^1];
    }

    /// <summary>Releases the ONNX Runtime sessions. Stages that use this model fail with <see cref="ObjectDisposedException"/> afterwards.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        TextEncoder.Dispose();
        if (!ReferenceEquals(TextEncoder2, TextEncoder))
            TextEncoder2?.Dispose();
        Unet.Dispose();
        VaeDecoder.Dispose();
        if (_vaeEncoder.IsValueCreated)
            _vaeEncoder.Value?.Dispose();
    }
}
