using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion;

/// <summary>
/// A Stable Diffusion model folder (the diffusers ONNX export layout) loaded into ONNX Runtime sessions, shared by the
/// EncodePrompt, DenoiseLatents, DecodeLatents and EncodeImage stages. Load it with <see cref="Load"/>, pass it to the
/// <c>mlContext.Transforms</c> extensions, and dispose it when the pipeline is no longer used: it holds native memory.
/// </summary>
/// <remarks>Only load models from trusted sources: an ONNX file is code that ONNX Runtime executes.</remarks>
public sealed partial class StableDiffusionModel : IDisposable
{
    private readonly IHost _host;
    private readonly OnnxSessionFactory _sessions;
    private readonly bool _textEncoderThreadsSpin;
    // Every session of the folder (text encoders, base UNet, autoencoder, VQ decoders, ControlNets, OnnxStack's residual
    // UNet), the weight-variant sessions and the LoRA set cache, shared (reference-counted) by this model and every model
    // WithLoras derived from it: whichever is disposed last closes them.
    private readonly SharedSessions _shared = null!;
    // This model's LoRA set (pinned in the cache for the model's lifetime); null: the base weights.
    private readonly LoraSessionSet? _loras;
    // The LoRA set cache (also in _shared, which the loading constructor creates only after the model's own set is merged).
    private readonly LoraSessionCache _loraCache = null!;
    // Unconditional (LDM, DDPM) folders have no text encoder and tokenizer; pixel-space (DDPM) folders no autoencoder.
    private readonly OnnxComponent? _textEncoder;
    private readonly ClipTokenizer? _tokenizer;
    private readonly OnnxComponent? _vaeDecoder;
    private readonly Lazy<VqCodebook?> _codebook;
    private readonly Lazy<bool> _vqDecoderQuantizes;
    private readonly TextEncoderBinding[] _textEncoders = Array.Empty<TextEncoderBinding>();
    private int _disposed;

    /// <param name="mlContext">The context.</param>
    /// <param name="directory">The model folder.</param>
    /// <param name="options">Loading options.</param>
    /// <param name="device">The execution provider of one device of a <see cref="MultiDeviceModel"/> (with its threads per
    /// session, and the default seed every device shares); null: the options' provider, threads and a seed drawn from the context.</param>
    private StableDiffusionModel(MLContext mlContext, string directory, StableDiffusionModelOptions options, (ExecutionProvider Provider, int? Threads, int? DefaultSeed)? device = null)
    {
        var times = new LoadTimes();
        LoadTimes = times;
        MLContext = mlContext;
        _host = ((IHostEnvironment)mlContext).Register("MLNet.Diffusion");
        DefaultSeed = device?.DefaultSeed ?? _host.Rand.Next();

        var provider = device?.Provider ?? options.ExecutionProvider
            ?? (mlContext.GpuDeviceId is int gpu ? ExecutionProvider.Cuda(gpu) : ExecutionProvider.Cpu);
        bool fallback = options.FallbackToCpu ?? mlContext.FallbackToCpu;
        _sessions = new OnnxSessionFactory(provider, fallback, device is null ? options.IntraOpNumThreads : device.Value.Threads, Warn)
        {
            ProfilingFilePrefix = options.ProfilingFilePrefix,
            OptimizedModelCache = options.OptimizedModelCacheDirectory is { } cache ? new OptimizedModelCache(cache, LogInfo) : null,
        };
        _textEncoderThreadsSpin = options.TextEncoderThreadsSpin;
        LoraDirectory = options.LoraDirectory is null ? null : Path.GetFullPath(options.LoraDirectory);

        var layout = ModelFolder.Validate(directory);
        Directory = layout.Directory;
        var schedulerConfig = ModelInspector.ReadSchedulerConfig(Directory, Warn, layout.Kind);
        times.Mark("folder and configs");
        // SDXL folders add tokenizer_2/ + text_encoder_2/; the refiner layout has only those (model_index.json declares no text_encoder).
        bool xl = layout.Kind is ModelKind.StableDiffusionXL or ModelKind.StableDiffusionXLRefiner, refiner = layout.Kind == ModelKind.StableDiffusionXLRefiner;
        bool conditional = ModelFolder.IsConditional(layout.Kind);
        // LDMPipeline folders decode with a VQ autoencoder (vqvae_decoder/), unless they carry a KL vae_decoder/ instead.
        bool vq = layout.Kind is ModelKind.LatentDiffusion or ModelKind.SuperResolution && File.Exists(ModelFolder.ModelPath(Directory, ModelFolder.VqvaeDecoder));
        bool pixel = layout.Kind == ModelKind.PixelDiffusion;
        Tokenizer2 = xl ? ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer2)) : null;
        _tokenizer = !conditional ? null : refiner ? Tokenizer2! : ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer));
        times.Mark("tokenizers");
        string encoderComponent = vq ? ModelFolder.VqvaeEncoder : ModelFolder.VaeEncoder;
        var vqDecoderNoQuantize = new Lazy<OnnxComponent?>(() =>
            vq && File.Exists(ModelFolder.ModelPath(Directory, ModelFolder.VqvaeDecoderNoQuantize)) ? Open(ModelFolder.VqvaeDecoderNoQuantize) : null,
            LazyThreadSafetyMode.ExecutionAndPublication);
        // A VQ decoder graph quantises when it holds the nearest-code search (ArgMin over the distances, as the diffusers
        // export of VQModel.decode(h, force_not_quantize=False) does); an export of post_quant_conv + decoder only does not.
        _vqDecoderQuantizes = new Lazy<bool>(() => vq && HasOp(ModelFolder.ModelPath(Directory, ModelFolder.VqvaeDecoder), "ArgMin"), LazyThreadSafetyMode.ExecutionAndPublication);
        _codebook = new Lazy<VqCodebook?>(() => vq ? VqCodebook.Load(Directory, Info!.LatentChannels, Info.CodebookSize) : null, LazyThreadSafetyMode.ExecutionAndPublication);

        Lazy<OnnxComponent>? baseUnet = null;
        LoraSessionCache? loraCache = null;
        try
        {
            TextEncoder2 = xl ? Open(ModelFolder.TextEncoder2) : null;
            if (xl)
                times.Mark(ModelFolder.TextEncoder2 + " session");
            _textEncoder = !conditional ? null : refiner ? TextEncoder2! : Open(ModelFolder.TextEncoder);
            if (conditional && !refiner)
                times.Mark(ModelFolder.TextEncoder + " session");
            // A model loaded with LoRAs that change the UNet opens only the merged UNet: the base one opens when a LoRA
            // set that leaves the UNet unchanged needs it (WithLoras()), so loading costs one UNet copy, not two.
            baseUnet = new Lazy<OnnxComponent>(() => Open(ModelFolder.Unet), LazyThreadSafetyMode.ExecutionAndPublication);
            loraCache = new LoraSessionCache(options.LoraSessionCacheBytes, BuildLoraSessions, Warn);
            _loraCache = loraCache;
            if (options.Loras is { Count: > 0 } loras)
            {
                _loras = loraCache.Acquire(CreateLoraSet(loras));
                ReportUnmatched(_loras);
                times.Mark("LoRA merge and sessions");
            }
            if (_loras?.Unet is null)
            {
                _ = baseUnet.Value;
                times.Mark(ModelFolder.Unet + " session");
            }
            string decoderComponent = vq ? ModelFolder.VqvaeDecoder : ModelFolder.VaeDecoder;
            _vaeDecoder = pixel ? null : Open(decoderComponent);
            if (!pixel)
                times.Mark(decoderComponent + " session");
            var vaeEncoder = new Lazy<OnnxComponent?>(() =>
                !pixel && File.Exists(ModelFolder.ModelPath(Directory, encoderComponent)) ? Open(encoderComponent) : null,
                LazyThreadSafetyMode.ExecutionAndPublication);
            _shared = new SharedSessions(_textEncoder, TextEncoder2, baseUnet, _vaeDecoder, vaeEncoder, vqDecoderNoQuantize, loraCache);
            var components = new ModelComponents(layout, _textEncoder, TextEncoder2, _tokenizer, Tokenizer2, Unet, _vaeDecoder) { VectorQuantized = vq };
            var inspection = ModelInspector.Inspect(components, schedulerConfig, options.VaeScalingFactor, _sessions.EffectiveProvider.ToString(), Warn);
            Info = inspection.Info;
            _shared.TextEncoderBindings = inspection.TextEncoders;
            _textEncoders = BindTextEncoders(inspection.TextEncoders, _loras);
            times.Mark("inspection");
            (_shared.OnnxStackUnet, var folderControlNet) = OpenControlNetGraphs();
            try
            {
                _shared.UnetTakesResiduals = ControlNetGraphs.TakesResiduals(Unet);
                if (ResidualUnet is not null)
                {
                    var probe = folderControlNet is null ? null : new ControlNetProbe(folderControlNet, Info.LatentChannels, Info.VaeSpatialFactor, Info.SequenceLength, Info.HiddenSize);
                    Info.ControlNetResiduals = ControlNetGraphs.ReadResiduals(ResidualUnet,
                        new[] { Path.Combine(Directory, ModelFolder.Unet, "config.json"), Path.Combine(Directory, ModelFolder.ControlNet, "config.json") }, probe);
                }
                if (folderControlNet is not null)
                {
                    ControlNet = CreateControlNet(folderControlNet);
                    _shared.FolderControlNet = ControlNet;
                    Info.HasControlNet = true;
                }
            }
            catch
            {
                folderControlNet?.Dispose();
                throw;
            }
            if (ResidualUnet is not null || ControlNet is not null)
                times.Mark("controlnet");
        }
        catch
        {
            if (_shared is not null)
            {
                if (_loras is not null)
                    _shared.Loras.Release(_loras);
                _shared.Release();
            }
            else
            {
                if (_loras is not null)
                    loraCache!.Release(_loras);
                _textEncoder?.Dispose();
                if (!ReferenceEquals(TextEncoder2, _textEncoder))
                    TextEncoder2?.Dispose();
                loraCache?.Dispose();
                if (baseUnet is { IsValueCreated: true })
                    baseUnet.Value.Dispose();
                _vaeDecoder?.Dispose();
            }
            throw;
        }
        using var ch = _host.Start("Load");
        ch.Info(MessageSensitivity.None, $"Loaded {ModelFolder.Describe(Info.Kind)} model '{Directory}' on {Info.ExecutionProvider}: latent channels {Info.LatentChannels}, "
            + $"VAE factor {Info.VaeSpatialFactor}, hidden size {Info.HiddenSize}, scaling factor {Info.VaeScalingFactor}, scheduler {schedulerConfig.ClassName ?? "(none)"}.");
        ch.Trace(MessageSensitivity.None, $"Load time of '{Directory}': {times}.");
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

    /// <summary>
    /// Loads the folder's sessions for one device of a <see cref="MultiDeviceModel"/>: <paramref name="provider"/> in place
    /// of the options' provider, <paramref name="threads"/> intra-op threads per session, and <paramref name="defaultSeed"/>
    /// (when set) as the seed of rows without their own, so that every device seeds a row alike.
    /// </summary>
    internal static StableDiffusionModel LoadOnDevice(MLContext mlContext, string modelDirectory, StableDiffusionModelOptions options,
        ExecutionProvider provider, int? threads, int? defaultSeed) =>
        new(mlContext, modelDirectory, options, (provider, threads, defaultSeed));

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
    /// <exception cref="InvalidOperationException">The model is unconditional (<see cref="ModelInfo.IsConditional"/> false) and has no tokenizer.</exception>
    public ClipTokenizer Tokenizer => _tokenizer ?? throw NotConditional("tokenizer");

    /// <summary>
    /// The CLIP tokenizer of SDXL's second text encoder, read from tokenizer_2/ (it pads with <c>"!"</c> where the first
    /// pads with <c>&lt;|endoftext|&gt;</c>); null for Stable Diffusion 1.x/2.x.
    /// </summary>
    public ClipTokenizer? Tokenizer2 { get; }

    /// <summary>Whether the folder has a VAE encoder (needed for image-to-image).</summary>
    public bool HasVaeEncoder => VaeEncoderOrNull is not null;

    /// <summary>The first text encoder prompts run through: text_encoder/ (text_encoder_2/ for the SDXL refiner).</summary>
    internal OnnxComponent TextEncoder => _textEncoder ?? throw NotConditional("text encoder");

    /// <summary>text_encoder_2/ of an SDXL folder (the same component as <see cref="TextEncoder"/> for the refiner); null otherwise.</summary>
    internal OnnxComponent? TextEncoder2 { get; }

    /// <summary>The text encoders in the order their states are concatenated, with their tokenizers and outputs.</summary>
    internal System.Collections.Generic.IReadOnlyList<TextEncoderBinding> TextEncoders => _textEncoders;

    /// <summary>The UNet denoising runs: merged with this model's LoRA set when it changes the UNet, else the base one.</summary>
    internal OnnxComponent Unet => _loras?.Unet ?? _shared.BaseUnet.Value;

    /// <summary>The autoencoder's decoder: vae_decoder/, or vqvae_decoder/ for a VQ autoencoder (which quantises inside its graph).</summary>
    internal OnnxComponent VaeDecoder => _vaeDecoder ?? throw new InvalidOperationException(
        $"The model '{Directory}' is a pixel-space diffusion model ({ModelFolder.Describe(Info.Kind)}): it has no autoencoder, and its denoised tensor is the image.");

    /// <summary>VQ autoencoders: vqvae_decoder_no_quantize/ (diffusers <c>VQModel.decode(h, force_not_quantize=True)</c>), or null when the folder has none.</summary>
    internal OnnxComponent? VqDecoderNoQuantize { get { ThrowIfDisposed(); return _shared.VqDecoderNoQuantize.Value; } }

    /// <summary>VQ autoencoders: the codebook read from vqvae_decoder/codebook.npy, or null when the folder has none (or is not VQ).</summary>
    internal VqCodebook? Codebook { get { ThrowIfDisposed(); return _codebook.Value; } }

    /// <summary>VQ autoencoders: whether vqvae_decoder/model.onnx quantises inside its graph (it holds an ArgMin node).</summary>
    internal bool VqDecoderQuantizes { get { ThrowIfDisposed(); return _vqDecoderQuantizes.Value; } }

    private static bool HasOp(string modelPath, string opType)
    {
        foreach (var node in OnnxModelReader.Open(modelPath).Nodes)
        {
            if (node.OpType == opType)
                return true;
        }
        return false;
    }

    private InvalidOperationException NotConditional(string what) => new(
        $"The model '{Directory}' is unconditional ({ModelFolder.Describe(Info.Kind)}): its UNet takes no text, and the folder has no {what}. "
        + "Run DenoiseLatents without an embeddings column (DenoiseLatents(model, outputColumnName, options)) and no EncodePrompt stage.");

    /// <summary>
    /// The UNet that takes ControlNet residuals: <see cref="Unet"/> when it does (diffusers' naming), else OnnxStack's
    /// <c>controlnet/model.onnx</c> UNet; null when the folder has none. With LoRAs that change the UNet, the merged one
    /// (OnnxStack's separate residual UNet is not merged).
    /// </summary>
    internal OnnxComponent? ResidualUnet => _shared.UnetTakesResiduals ? Unet : _shared.OnnxStackUnet;

    /// <summary>
    /// The folder's own ControlNet (diffusers' naming: <c>controlnet/model.onnx</c> taking <c>controlnet_cond</c>), checked
    /// against the UNet at load; null when the folder has none. Others load with <see cref="LoadControlNet"/>.
    /// </summary>
    public ControlNetModel? ControlNet { get; }

    /// <summary>
    /// Loads a ControlNet given as a <c>.onnx</c> file or a folder holding <c>model.onnx</c> (OnnxStack ships them as
    /// separate models; several make a multi-ControlNet run), and checks that its residuals fit the UNet's residual inputs
    /// (names, count, channels, text width). Loaded once per path and released with the model (and the models
    /// <see cref="WithLoras(LoraReference[])"/> derived from it, which share it).
    /// </summary>
    /// <param name="path">The ControlNet's <c>.onnx</c> file or folder.</param>
    /// <returns>The ControlNet, owned by this model.</returns>
    /// <exception cref="FileNotFoundException">There is no such file (or no model.onnx in the folder).</exception>
    /// <exception cref="ModelContractException">The graph is not a ControlNet, the model has no UNet with residual inputs, or
    /// the ControlNet's residuals do not fit the UNet's (the message names both files).</exception>
    public ControlNetModel LoadControlNet(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        ThrowIfDisposed();
        string full = Path.GetFullPath(path);
        string file = System.IO.Directory.Exists(full) ? Path.Combine(full, "model.onnx") : full;
        if (!File.Exists(file))
            throw new FileNotFoundException($"ControlNet '{path}' not found: expected a .onnx file or a folder holding model.onnx ('{file}').", file);
        if (ControlNet is not null && string.Equals(ControlNet.Path, file, StringComparison.Ordinal))
            return ControlNet;
        lock (_shared.Variants)
        {
            ThrowIfDisposed();
            if (_shared.ControlNets.TryGetValue(file, out var cached))
                return cached;
            var component = OpenFile(ModelFolder.ControlNet, file);
            try
            {
                var controlNet = CreateControlNet(component);
                _shared.ControlNets.Add(file, controlNet);
                return controlNet;
            }
            catch
            {
                component.Dispose();
                throw;
            }
        }
    }

    /// <summary>
    /// The folder's <c>controlnet/model.onnx</c>, told apart by its inputs: a ControlNet (it takes <c>controlnet_cond</c>,
    /// diffusers' naming), or a UNet with residual inputs (OnnxStack's naming).
    /// </summary>
    private (OnnxComponent? OnnxStackUnet, OnnxComponent? ControlNet) OpenControlNetGraphs()
    {
        if (!File.Exists(ModelFolder.ModelPath(Directory, ModelFolder.ControlNet)))
            return (null, null);
        var graph = Open(ModelFolder.ControlNet);
        if (ControlNetGraphs.IsControlNet(graph))
            return (null, graph);
        if (ControlNetGraphs.TakesResiduals(graph) && graph.HasInput("sample") && graph.HasInput("encoder_hidden_states"))
        {
            if (ModelInspector.UnetOutputName(graph) is var output && !graph.HasOutput(output))
            {
                graph.Dispose();
                throw new ModelContractException($"'{graph.Path}' (a UNet with ControlNet residual inputs) has no output '{output}'.");
            }
            return (graph, null);
        }
        string inputs = string.Join(", ", graph.Inputs.Keys);
        graph.Dispose();
        throw new ModelContractException($"'{ModelFolder.ModelPath(Directory, ModelFolder.ControlNet)}' is neither a ControlNet (input 'controlnet_cond') nor a UNet with "
            + $"ControlNet residual inputs ('down_block_0_additional_residual' …); it has: {inputs}.");
    }

    private ControlNetModel CreateControlNet(OnnxComponent component)
    {
        var unet = ResidualUnet ?? Unet;
        string[] outputs = ControlNetGraphs.CheckFits(component, unet, Info.ControlNetResiduals, Info.LatentChannels, Info.HiddenSize, Info.PooledSize, Info.TimeIdsWidth);
        if (!ControlNetGraphs.IsResolved(Info.ControlNetResiduals))
        {
            // No config stated the residuals' sizes: the first ControlNet tells them (one run at a 16×16 latent).
            Info.ControlNetResiduals = ControlNetGraphs.Resolve(unet, Info.ControlNetResiduals, outputs,
                new ControlNetProbe(component, Info.LatentChannels, Info.VaeSpatialFactor, Info.SequenceLength, Info.HiddenSize));
        }
        string config = Path.Combine(Path.GetDirectoryName(component.Path)!, "config.json");
        bool globalPool = false;
        if (File.Exists(config))
        {
            using var doc = ModelFolder.ReadJson(config);
            globalPool = doc.RootElement.TryGetProperty("global_pool_conditions", out var g) && g.ValueKind == System.Text.Json.JsonValueKind.True;
        }
        if (globalPool)
            throw new ModelContractException($"ControlNet '{component.Path}' sets global_pool_conditions (its residuals are pooled to 1×1, shuffle-style); "
                + "MLNet.Diffusion binds residuals of the UNet's skip-connection sizes and does not run such ControlNets.");
        return new ControlNetModel(component, outputs, Info.ControlNetResiduals, globalPool);
    }


    internal OnnxComponent? VaeEncoderOrNull { get { ThrowIfDisposed(); return _shared.VaeEncoder.Value; } }

    /// <summary>Where the load spent its time, phase by phase (the vae_encoder session opens lazily, on first use, and is not counted).</summary>
    internal LoadTimes LoadTimes { get; }

    /// <summary>The seed used for rows without their own seed, derived from the MLContext's random source.</summary>
    internal int DefaultSeed { get; }

    internal IHost Host => _host;

    internal bool IsDisposed => Volatile.Read(ref _disposed) != 0;

    internal void ThrowIfDisposed()
    {
        if (IsDisposed)
            throw new ObjectDisposedException(nameof(StableDiffusionModel), $"The Stable Diffusion model '{Directory}' was disposed; load it again to use it.");
    }

    private void Warn(string message)
    {
        using var ch = _host.Start("MLNet.Diffusion");
        ch.Warning(MessageSensitivity.None, message);
    }

    private void LogInfo(string message)
    {
        using var ch = _host.Start("MLNet.Diffusion");
        ch.Info(MessageSensitivity.None, message);
    }

    private OnnxComponent Open(string component) => OpenSession(component, null);

    private OnnxComponent OpenFile(string name, string path)
    {
        var session = _sessions.Create(path, false, null, out var lease);
        return new OnnxComponent(name, path, session, runsOnDevice: _sessions.EffectiveProvider is CudaExecutionProvider, null, lease);
    }

    private OnnxComponent OpenSession(string component, WeightVariant? variant, byte[]? modelBytes = null, string? rewriteId = null)
    {
        string path = ModelFolder.ModelPath(Directory, component);
        // Spinning after a run only pays when the same session runs again at once: the UNet (step after step) and, by
        // default, the text encoders (EncodePrompt's chunks). The VAE runs once per batch, and its spinning threads took
        // cores from the next batch's UNet steps (StableDiffusionModelOptions.TextEncoderThreadsSpin).
        bool stop = component is ModelFolder.VaeDecoder or ModelFolder.VaeEncoder or ModelFolder.VqvaeDecoder or ModelFolder.VqvaeEncoder or ModelFolder.VqvaeDecoderNoQuantize
            || (component == ModelFolder.TextEncoder || component == ModelFolder.TextEncoder2) && !_textEncoderThreadsSpin;
        var session = _sessions.Create(path, stop, variant, out var lease, modelBytes);
        return new OnnxComponent(component, path, session, runsOnDevice: _sessions.EffectiveProvider is CudaExecutionProvider, variant?.Id ?? rewriteId, lease);
    }

    /// <summary>
    /// The session of <paramref name="component"/> (<c>unet</c>, <c>text_encoder</c>, …) with <paramref name="variant"/>'s
    /// initializers in place of the file's (LoRA, textual inversion), or the loaded one when <paramref name="variant"/> is
    /// null. Sessions are cached per (component, <see cref="WeightVariant.Id"/>), so the base UNet and the UNet with a
    /// LoRA run side by side; the model disposes them. A cached session keeps its variant's memory alive, so the caller
    /// may dispose the variant once it has opened the session.
    /// </summary>
    /// <exception cref="ArgumentException">The component is not one of the folder's, or the variant replaces an initializer
    /// the model does not have or with another shape or type (the message names the file and the initializer).</exception>
    internal OnnxComponent Open(string component, WeightVariant? variant)
    {
        ThrowIfDisposed();
        if (variant is null)
        {
            return component switch
            {
                ModelFolder.Unet => _shared.BaseUnet.Value,
                ModelFolder.VaeDecoder when Info.Autoencoder == AutoencoderKind.KL => VaeDecoder,
                ModelFolder.VqvaeDecoder when Info.Autoencoder == AutoencoderKind.VQ => VaeDecoder,
                ModelFolder.VqvaeDecoderNoQuantize when VqDecoderNoQuantize is not null => VqDecoderNoQuantize,
                ModelFolder.VqvaeEncoder when Info.Autoencoder == AutoencoderKind.VQ => VaeEncoderOrNull ?? throw new ArgumentException($"Model folder '{Directory}' has no vqvae_encoder/.", nameof(component)),
                ModelFolder.VaeEncoder => VaeEncoderOrNull ?? throw new ArgumentException($"Model folder '{Directory}' has no vae_encoder/.", nameof(component)),
                ModelFolder.TextEncoder when Info.IsConditional && Info.Kind != ModelKind.StableDiffusionXLRefiner => TextEncoder,
                ModelFolder.TextEncoder2 when TextEncoder2 is not null => TextEncoder2,
                _ => throw new ArgumentException($"Model folder '{Directory}' has no component '{component}'.", nameof(component)),
            };
        }
        lock (_shared.Variants)
        {
            ThrowIfDisposed();
            if (_shared.Variants.TryGetValue((component, variant.Id), out var cached))
                return cached;
            if (!File.Exists(ModelFolder.ModelPath(Directory, component)))
                throw new ArgumentException($"Model folder '{Directory}' has no component '{component}'.", nameof(component));
            CheckVariant(component, variant);
            var opened = OpenSession(component, variant);
            _shared.Variants.Add((component, variant.Id), opened);
            return opened;
        }
    }

    /// <summary>
    /// ONNX Runtime takes an added initializer of another shape or an unknown name without complaint or with an error
    /// that names neither the variant nor the tensor; the graph (small with external data) says what each one must be.
    /// </summary>
    private void CheckVariant(string component, WeightVariant variant)
    {
        var reader = OnnxModelReader.Open(ModelFolder.ModelPath(Directory, component));
        foreach (var (name, dims, type) in variant.Describe())
        {
            if (!reader.TryGetInitializer(name, out var original))
                throw new ArgumentException($"Weight variant '{variant.Id}' replaces '{name}', which is not an initializer of '{reader.ModelPath}'.", nameof(variant));
            if (original.ElementType != type || !System.Linq.Enumerable.SequenceEqual(original.Dims, dims))
                throw new ArgumentException($"Weight variant '{variant.Id}' replaces '{name}' of '{reader.ModelPath}' with {type} [{string.Join(",", dims)}]; "
                    + $"the model's is {original.ElementType} [{string.Join(",", original.Dims)}].", nameof(variant));
        }
    }

    internal string UnetOutputName => ModelInspector.UnetOutputName(Unet);

    internal string VaeDecoderOutputName => ModelInspector.VaeDecoderOutputName(VaeDecoder);

    /// <summary>
    /// Releases the ONNX Runtime sessions. Stages that use this model fail with <see cref="ObjectDisposedException"/>
    /// afterwards. A model and the models <see cref="WithLoras(LoraReference[])"/> derived from it (or it from) share their unchanged
    /// sessions: each may be disposed in any order, and the shared sessions close when the last of them is disposed.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        if (_loras is not null)
            _shared.Loras.Release(_loras);
        _shared.Release();
    }

    /// <summary>The sessions a model and its <see cref="WithLoras(LoraReference[])"/> relatives share, closed with the last reference.</summary>
    private sealed class SharedSessions
    {
        private int _references = 1;

        public SharedSessions(OnnxComponent? textEncoder, OnnxComponent? textEncoder2, Lazy<OnnxComponent> unet, OnnxComponent? vaeDecoder,
            Lazy<OnnxComponent?> vaeEncoder, Lazy<OnnxComponent?> vqDecoderNoQuantize, LoraSessionCache loras)
        {
            TextEncoder = textEncoder;
            TextEncoder2 = textEncoder2;
            BaseUnet = unet;
            VaeDecoder = vaeDecoder;
            VaeEncoder = vaeEncoder;
            VqDecoderNoQuantize = vqDecoderNoQuantize;
            Loras = loras;
        }

        /// <summary>The first text encoder; null for unconditional models.</summary>
        public OnnxComponent? TextEncoder { get; }

        public OnnxComponent? TextEncoder2 { get; }

        public Lazy<OnnxComponent> BaseUnet { get; }

        /// <summary>The autoencoder's decoder (KL or VQ); null for pixel-space models.</summary>
        public OnnxComponent? VaeDecoder { get; }

        public Lazy<OnnxComponent?> VaeEncoder { get; }

        public Lazy<OnnxComponent?> VqDecoderNoQuantize { get; }

        public LoraSessionCache Loras { get; }

        /// <summary>OnnxStack's UNet with residual inputs (<c>controlnet/model.onnx</c>); set once, by the loading constructor.</summary>
        public OnnxComponent? OnnxStackUnet { get; set; }

        /// <summary>Whether the folder's UNet takes ControlNet residuals; set once, by the loading constructor.</summary>
        public bool UnetTakesResiduals { get; set; }

        /// <summary>The folder's own ControlNet; set once, by the loading constructor.</summary>
        public ControlNetModel? FolderControlNet { get; set; }

        /// <summary>The text encoder bindings of the base weights (set once, by the loading model's inspection).</summary>
        public TextEncoderBinding[] TextEncoderBindings { get; set; } = Array.Empty<TextEncoderBinding>();

        /// <summary>Sessions with replaced weights (textual inversion, …), one per (component, WeightVariant.Id); also the lock for it and <see cref="ControlNets"/>.</summary>
        public Dictionary<(string Component, string VariantId), OnnxComponent> Variants { get; } = new();

        /// <summary>ControlNets given as files or folders (LoadControlNet), by full path of their model.onnx; guarded by <see cref="Variants"/>.</summary>
        public Dictionary<string, ControlNetModel> ControlNets { get; } = new(StringComparer.Ordinal);

        public void AddReference()
        {
            if (Interlocked.Increment(ref _references) <= 1)
                throw new ObjectDisposedException(nameof(StableDiffusionModel), "The model's sessions were closed.");
        }

        public void Release()
        {
            if (Interlocked.Decrement(ref _references) != 0)
                return;
            Loras.Dispose();
            TextEncoder?.Dispose();
            if (!ReferenceEquals(TextEncoder2, TextEncoder))
                TextEncoder2?.Dispose();
            if (BaseUnet.IsValueCreated)
                BaseUnet.Value.Dispose();
            OnnxStackUnet?.Dispose();
            FolderControlNet?.Component.Dispose();
            VaeDecoder?.Dispose();
            if (VaeEncoder.IsValueCreated)
                VaeEncoder.Value?.Dispose();
            if (VqDecoderNoQuantize.IsValueCreated)
                VqDecoderNoQuantize.Value?.Dispose();
            lock (Variants)
            {
                foreach (var component in Variants.Values)
                    component.Dispose();
                Variants.Clear();
                foreach (var controlNet in ControlNets.Values)
                    controlNet.Component.Dispose();
                ControlNets.Clear();
            }
        }
    }
}
