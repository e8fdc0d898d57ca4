using System;
using System.Collections.Generic;
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
    private readonly IHost _host;
    private readonly OnnxSessionFactory _sessions;
    private readonly bool _textEncoderThreadsSpin;
    private readonly Lazy<OnnxComponent?> _vaeEncoder;
    private readonly TextEncoderBinding[] _textEncoders = Array.Empty<TextEncoderBinding>();
    // Sessions with replaced weights (LoRA, textual inversion), one per (component, WeightVariant.Id).
    private readonly Dictionary<(string Component, string VariantId), OnnxComponent> _variants = new();
    private readonly object _variantsLock = new();
    // ControlNets given as files or folders (LoadControlNet), by full path of their model.onnx; guarded by _variantsLock.
    private readonly Dictionary<string, ControlNetModel> _controlNets = new(StringComparer.Ordinal);
    private readonly OnnxComponent? _onnxStackUnet;
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

        var layout = ModelFolder.Validate(directory);
        Directory = layout.Directory;
        var schedulerConfig = ModelInspector.ReadSchedulerConfig(Directory, Warn);
        times.Mark("folder and configs");
        // SDXL folders add tokenizer_2/ + text_encoder_2/; the refiner layout has only those (model_index.json declares no text_encoder).
        bool xl = layout.Kind != ModelKind.StableDiffusion, refiner = layout.Kind == ModelKind.StableDiffusionXLRefiner;
        Tokenizer2 = xl ? ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer2)) : null;
        Tokenizer = refiner ? Tokenizer2! : ClipTokenizer.FromFolder(Path.Combine(Directory, ModelFolder.Tokenizer));
        times.Mark("tokenizers");

        try
        {
            TextEncoder2 = xl ? Open(ModelFolder.TextEncoder2) : null;
            if (xl)
                times.Mark(ModelFolder.TextEncoder2 + " session");
            TextEncoder = refiner ? TextEncoder2! : Open(ModelFolder.TextEncoder);
            if (!refiner)
                times.Mark(ModelFolder.TextEncoder + " session");
            Unet = Open(ModelFolder.Unet);
            times.Mark(ModelFolder.Unet + " session");
            VaeDecoder = Open(ModelFolder.VaeDecoder);
            times.Mark(ModelFolder.VaeDecoder + " session");
            _vaeEncoder = new Lazy<OnnxComponent?>(() =>
                File.Exists(ModelFolder.ModelPath(Directory, ModelFolder.VaeEncoder)) ? Open(ModelFolder.VaeEncoder) : null,
                LazyThreadSafetyMode.ExecutionAndPublication);
            var components = new ModelComponents(layout, TextEncoder, TextEncoder2, Tokenizer, Tokenizer2, Unet, VaeDecoder);
            var inspection = ModelInspector.Inspect(components, schedulerConfig, options.VaeScalingFactor, _sessions.EffectiveProvider.ToString(), Warn);
            Info = inspection.Info;
            _textEncoders = inspection.TextEncoders;
            times.Mark("inspection");
            (_onnxStackUnet, var folderControlNet) = OpenControlNetGraphs();
            try
            {
                ResidualUnet = ControlNetGraphs.TakesResiduals(Unet) ? Unet : _onnxStackUnet;
                if (ResidualUnet is not null)
                {
                    var probe = folderControlNet is null ? null : new ControlNetProbe(folderControlNet, Info.LatentChannels, Info.VaeSpatialFactor, Info.SequenceLength, Info.HiddenSize);
                    Info.ControlNetResiduals = ControlNetGraphs.ReadResiduals(ResidualUnet,
                        new[] { Path.Combine(Directory, ModelFolder.Unet, "config.json"), Path.Combine(Directory, ModelFolder.ControlNet, "config.json") }, probe);
                }
                if (folderControlNet is not null)
                {
                    ControlNet = CreateControlNet(folderControlNet);
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
            TextEncoder?.Dispose();
            if (!ReferenceEquals(TextEncoder2, TextEncoder))
                TextEncoder2?.Dispose();
            Unet?.Dispose();
            _onnxStackUnet?.Dispose();
            VaeDecoder?.Dispose();
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

    internal OnnxComponent Unet { get; }

    /// <summary>
    /// The UNet that takes ControlNet residuals: <see cref="Unet"/> when it does (diffusers' naming), else OnnxStack's
    /// <c>controlnet/model.onnx</c> UNet; null when the folder has none.
    /// </summary>
    internal OnnxComponent? ResidualUnet { get; }

    /// <summary>
    /// The folder's own ControlNet (diffusers' naming: <c>controlnet/model.onnx</c> taking <c>controlnet_cond</c>), checked
    /// against the UNet at load; null when the folder has none. Others load with <see cref="LoadControlNet"/>.
    /// </summary>
    public ControlNetModel? ControlNet { get; }

    /// <summary>
    /// Loads a ControlNet given as a <c>.onnx</c> file or a folder holding <c>model.onnx</c> (OnnxStack ships them as
    /// separate models; several make a multi-ControlNet run), and checks that its residuals fit the UNet's residual inputs
    /// (names, count, channels, text width). Loaded once per path and released with the model.
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
        lock (_variantsLock)
        {
            ThrowIfDisposed();
            if (_controlNets.TryGetValue(file, out var cached))
                return cached;
            var component = OpenFile(ModelFolder.ControlNet, file);
            try
            {
                var controlNet = CreateControlNet(component);
                _controlNets.Add(file, controlNet);
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
        string[] outputs = ControlNetGraphs.CheckFits(component, unet, Info.ControlNetResiduals, Info.LatentChannels, Info.HiddenSize);
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

    internal OnnxComponent VaeDecoder { get; }

    internal OnnxComponent? VaeEncoderOrNull { get { ThrowIfDisposed(); return _vaeEncoder.Value; } }

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

    private OnnxComponent OpenFile(string name, string path)
    {
        var session = _sessions.Create(path, false, null, out var lease);
        return new OnnxComponent(name, path, session, runsOnDevice: _sessions.EffectiveProvider is CudaExecutionProvider, null, lease);
    }

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
                ModelFolder.Unet => Unet,
                ModelFolder.VaeDecoder => VaeDecoder,
                ModelFolder.VaeEncoder => VaeEncoderOrNull ?? throw new ArgumentException($"Model folder '{Directory}' has no vae_encoder/.", nameof(component)),
                ModelFolder.TextEncoder when Info.Kind != ModelKind.StableDiffusionXLRefiner => TextEncoder,
                ModelFolder.TextEncoder2 when TextEncoder2 is not null => TextEncoder2,
                _ => throw new ArgumentException($"Model folder '{Directory}' has no component '{component}'.", nameof(component)),
            };
        }
        lock (_variantsLock)
        {
            ThrowIfDisposed();
            if (_variants.TryGetValue((component, variant.Id), out var cached))
                return cached;
            if (!File.Exists(ModelFolder.ModelPath(Directory, component)))
                throw new ArgumentException($"Model folder '{Directory}' has no component '{component}'.", nameof(component));
            CheckVariant(component, variant);
            var opened = OpenSession(component, variant);
            _variants.Add((component, variant.Id), opened);
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

    /// <summary>Releases the ONNX Runtime sessions. Stages that use this model fail with <see cref="ObjectDisposedException"/> afterwards.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        TextEncoder.Dispose();
        if (!ReferenceEquals(TextEncoder2, TextEncoder))
            TextEncoder2?.Dispose();
        Unet.Dispose();
        _onnxStackUnet?.Dispose();
        ControlNet?.Component.Dispose();
        VaeDecoder.Dispose();
        if (_vaeEncoder.IsValueCreated)
            _vaeEncoder.Value?.Dispose();
        lock (_variantsLock)
        {
            foreach (var component in _variants.Values)
                component.Dispose();
            _variants.Clear();
            foreach (var controlNet in _controlNets.Values)
                controlNet.Component.Dispose();
            _controlNets.Clear();
        }
    }
}
