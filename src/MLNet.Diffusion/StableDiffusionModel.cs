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
    // The sessions without LoRA, the weight-variant sessions and the LoRA set cache, shared (reference-counted) by this
    // model and every model WithLoras derived from it: whichever is disposed last closes them.
    private readonly SharedSessions _shared = null!;
    // This model's LoRA set (pinned in the cache for the model's lifetime); null: the base weights.
    private readonly LoraSessionSet? _loras;
    // The LoRA set cache (also in _shared, which the loading constructor creates only after the model's own set is merged).
    private readonly LoraSessionCache _loraCache = null!;
    private readonly TextEncoderBinding[] _textEncoders = Array.Empty<TextEncoderBinding>();
    private int _disposed;

    private StableDiffusionModel(MLContext mlContext, string directory, StableDiffusionModelOptions options)
    {
        var times = new LoadTimes();
        LoadTimes = times;
        MLContext = mlContext;
        _host = ((IHostEnvironment)mlContext).Register("MLNet.Diffusion");
        DefaultSeed = _host.Rand.Next();

        var provider = options.ExecutionProvider
            ?? (mlContext.GpuDeviceId is int gpu ? ExecutionProvider.Cuda(gpu) : ExecutionProvider.Cpu);
        bool fallback = options.FallbackToCpu ?? mlContext.FallbackToCpu;
        _sessions = new OnnxSessionFactory(provider, fallback, options.IntraOpNumThreads, Warn) { ProfilingFilePrefix = options.ProfilingFilePrefix };
        _textEncoderThreadsSpin = options.TextEncoderThreadsSpin;
        LoraDirectory = options.LoraDirectory is null ? null : Path.GetFullPath(options.LoraDirectory);

        var layout = ModelFolder.Validate(directory);
        Directory = layout.Directory;
        var schedulerConfig = ModelInspector.ReadSchedulerConfig(Directory, Warn);
        times.Mark("folder and configs");
        // SDXL folders add tokenizer_2/ + text_encoder_2/; the refiner layout has only those (model_index.json declares no text_encoder).
        bool xl = layout.Kind != ModelKind.StableDiffusion, refiner = layout.Kind == ModelKind.StableDiffusionXLRefiner;
        Tokenizer2 = xl ? ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer2)) : null;
        Tokenizer = refiner ? Tokenizer2! : ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer));
        times.Mark("tokenizers");

        Lazy<OnnxComponent>? baseUnet = null;
        LoraSessionCache? loraCache = null;
        try
        {
            TextEncoder2 = xl ? Open(ModelFolder.TextEncoder2) : null;
            if (xl)
                times.Mark(ModelFolder.TextEncoder2 + " session");
            TextEncoder = refiner ? TextEncoder2! : Open(ModelFolder.TextEncoder);
            if (!refiner)
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
            VaeDecoder = Open(ModelFolder.VaeDecoder);
            times.Mark(ModelFolder.VaeDecoder + " session");
            var vaeEncoder = new Lazy<OnnxComponent?>(() =>
                File.Exists(ModelFolder.ModelPath(Directory, ModelFolder.VaeEncoder)) ? Open(ModelFolder.VaeEncoder) : null,
                LazyThreadSafetyMode.ExecutionAndPublication);
            _shared = new SharedSessions(TextEncoder, TextEncoder2, baseUnet, VaeDecoder, vaeEncoder, loraCache);
            var components = new ModelComponents(layout, TextEncoder, TextEncoder2, Tokenizer, Tokenizer2, Unet, VaeDecoder);
            var inspection = ModelInspector.Inspect(components, schedulerConfig, options.VaeScalingFactor, _sessions.EffectiveProvider.ToString(), Warn);
            Info = inspection.Info;
            _shared.TextEncoderBindings = inspection.TextEncoders;
            _textEncoders = BindTextEncoders(inspection.TextEncoders, _loras);
            times.Mark("inspection");
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
                TextEncoder?.Dispose();
                if (!ReferenceEquals(TextEncoder2, TextEncoder))
                    TextEncoder2?.Dispose();
                loraCache?.Dispose();
                if (baseUnet is { IsValueCreated: true })
                    baseUnet.Value.Dispose();
                VaeDecoder?.Dispose();
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

    /// <summary>The UNet denoising runs: merged with this model's LoRA set when it changes the UNet, else the base one.</summary>
    internal OnnxComponent Unet => _loras?.Unet ?? _shared.BaseUnet.Value;

    internal OnnxComponent VaeDecoder { get; }

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

    private OnnxComponent Open(string component) => OpenSession(component, null);

    private OnnxComponent OpenSession(string component, WeightVariant? variant)
    {
        string path = ModelFolder.ModelPath(Directory, component);
        // Spinning after a run only pays when the same session runs again at once: the UNet (step after step) and, by
        // default, the text encoders (EncodePrompt's chunks). The VAE runs once per batch, and its spinning threads took
        // cores from the next batch's UNet steps (StableDiffusionModelOptions.TextEncoderThreadsSpin).
        bool stop = component == ModelFolder.VaeDecoder || component == ModelFolder.VaeEncoder
            || (component == ModelFolder.TextEncoder || component == ModelFolder.TextEncoder2) && !_textEncoderThreadsSpin;
        var session = _sessions.Create(path, stop, variant, out var lease);
        return new OnnxComponent(component, path, session, runsOnDevice: _sessions.EffectiveProvider is CudaExecutionProvider, variant?.Id, lease);
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
                ModelFolder.VaeDecoder => VaeDecoder,
                ModelFolder.VaeEncoder => VaeEncoderOrNull ?? throw new ArgumentException($"Model folder '{Directory}' has no vae_encoder/.", nameof(component)),
                ModelFolder.TextEncoder when Info.Kind != ModelKind.StableDiffusionXLRefiner => TextEncoder,
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

        public SharedSessions(OnnxComponent textEncoder, OnnxComponent? textEncoder2, Lazy<OnnxComponent> unet, OnnxComponent vaeDecoder,
            Lazy<OnnxComponent?> vaeEncoder, LoraSessionCache loras)
        {
            TextEncoder = textEncoder;
            TextEncoder2 = textEncoder2;
            BaseUnet = unet;
            VaeDecoder = vaeDecoder;
            VaeEncoder = vaeEncoder;
            Loras = loras;
        }

        public OnnxComponent TextEncoder { get; }

        public OnnxComponent? TextEncoder2 { get; }

        public Lazy<OnnxComponent> BaseUnet { get; }

        public OnnxComponent VaeDecoder { get; }

        public Lazy<OnnxComponent?> VaeEncoder { get; }

        public LoraSessionCache Loras { get; }

        /// <summary>The text encoder bindings of the base weights (set once, by the loading model's inspection).</summary>
        public TextEncoderBinding[] TextEncoderBindings { get; set; } = Array.Empty<TextEncoderBinding>();

        /// <summary>Sessions with replaced weights (textual inversion, …), one per (component, WeightVariant.Id); also the lock for it.</summary>
        public Dictionary<(string Component, string VariantId), OnnxComponent> Variants { get; } = new();

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
            TextEncoder.Dispose();
            if (!ReferenceEquals(TextEncoder2, TextEncoder))
                TextEncoder2?.Dispose();
            if (BaseUnet.IsValueCreated)
                BaseUnet.Value.Dispose();
            VaeDecoder.Dispose();
            if (VaeEncoder.IsValueCreated)
                VaeEncoder.Value?.Dispose();
            lock (Variants)
            {
                foreach (var component in Variants.Values)
                    component.Dispose();
                Variants.Clear();
            }
        }
    }
}
