using System;
using System.Collections.Generic;
using System.IO;
using Microsoft.ML.OnnxRuntime;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// Creates <see cref="InferenceSession"/>s for the chosen <see cref="ExecutionProvider"/>, with the fallback rule:
/// a CUDA provider that cannot be loaded is an error naming the cause and the fix, unless the user allowed CPU fallback.
/// </summary>
internal sealed class OnnxSessionFactory
{
    private static readonly object s_pluginLock = new();
    private static readonly Dictionary<string, string> s_registeredPlugins = new(StringComparer.Ordinal);

    private readonly ExecutionProvider _provider;
    private readonly bool _fallbackToCpu;
    private readonly int? _intraOpThreads;
    private readonly Action<string> _warn;

    public OnnxSessionFactory(ExecutionProvider provider, bool fallbackToCpu, int? intraOpThreads, Action<string> warn)
    {
        _provider = provider;
        _fallbackToCpu = fallbackToCpu;
        _intraOpThreads = intraOpThreads;
        _warn = warn;
    }

    /// <summary>When set, sessions record an ONNX Runtime profile to <c>{prefix}_{component}_{timestamp}.json</c> (a test hook).</summary>
    public string? ProfilingFilePrefix { get; init; }

    /// <summary>
    /// Where optimised graphs are kept between loads (<see cref="Onnx.OptimizedModelCache"/>); null optimises every load
    /// (<see cref="StableDiffusionModelOptions.OptimizedModelCacheDirectory"/>).
    /// </summary>
    public OptimizedModelCache? OptimizedModelCache { get; init; }

    /// <summary>The provider sessions actually run on (CPU after a fallback).</summary>
    public ExecutionProvider EffectiveProvider { get; private set; } = ExecutionProvider.Cpu;

    /// <summary>Creates the session of one model file.</summary>
    /// <param name="modelPath">The ONNX file.</param>
    /// <param name="stopSpinningAfterRun">
    /// Whether the session's intra-op threads stop spinning as soon as a run returns (<c>session.force_spinning_stop</c>)
    /// instead of spinning on for a while (ONNX Runtime's default, which makes the next run of the same session start
    /// faster). Each session has its own threads: the spinning threads of one model compete with the next model's run
    /// for the cores (docs/benchmarks.md, "What the profile showed").
    /// </param>
    public InferenceSession Create(string modelPath, bool stopSpinningAfterRun = false)
    {
        var session = Create(modelPath, stopSpinningAfterRun, null, out var lease);
        lease?.Dispose();
        return session;
    }

    /// <summary>
    /// Creates the session of one model file with some initializers replaced by <paramref name="variant"/>'s values
    /// (<see cref="SessionOptions.AddInitializer"/>; null: the file's own weights).
    /// </summary>
    /// <param name="modelPath">The ONNX file.</param>
    /// <param name="stopSpinningAfterRun">As in <see cref="Create(string, bool)"/>.</param>
    /// <param name="variant">The replaced initializers, or null.</param>
    /// <param name="weightLease">
    /// Keeps <paramref name="variant"/>'s native memory alive: ONNX Runtime uses added initializers in place, so the
    /// caller disposes the lease after the session (<see cref="OnnxComponent"/> does). Null without a variant.
    /// </param>
    /// <param name="modelBytes">
    /// A rewritten copy of <paramref name="modelPath"/>'s graph to load instead of the file (textual inversion's taller
    /// token-embedding table), or null; its external data is read from <paramref name="modelPath"/>'s folder, and it never
    /// uses the optimised-graph cache.
    /// </param>
    public InferenceSession Create(string modelPath, bool stopSpinningAfterRun, WeightVariant? variant, out IDisposable? weightLease, byte[]? modelBytes = null)
    {
        if (_provider is CudaExecutionProvider cuda)
        {
            try
            {
                var session = CreateCore(modelPath, cuda, stopSpinningAfterRun, variant, out weightLease, modelBytes);
                EffectiveProvider = cuda;
                return session;
            }
            catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException or InvalidOperationException)
            {
                string message = DescribeCudaFailure(cuda, e);
                if (!_fallbackToCpu)
                    throw new InvalidOperationException(message, e);
                _warn($"{message} Falling back to the CPU because FallbackToCpu is set.");
            }
        }
        EffectiveProvider = ExecutionProvider.Cpu;
        return CreateCore(modelPath, null, stopSpinningAfterRun, variant, out weightLease, modelBytes);
    }

    private InferenceSession CreateCore(string modelPath, CudaExecutionProvider? cuda, bool stopSpinningAfterRun, WeightVariant? variant, out IDisposable? weightLease, byte[]? modelBytes)
    {
        // Weight variants replace initializers by name, and the optimised graph has folded and renamed them: never cached.
        // Nor are rewritten graphs, which the cache's key (the file) does not describe.
        string provider = cuda?.ToString() ?? "CPU";
        var entry = variant is null && modelBytes is null ? OptimizedModelCache?.Find(modelPath, provider, Level) : null;
        if (entry?.CachedModel is { } cached)
        {
            try
            {
                return CreateSession(cached, modelPath, cuda, stopSpinningAfterRun, null, entry, out weightLease, null);
            }
            catch (ModelLoadException e)
            {
                entry.Invalidate(e);
                entry = OptimizedModelCache!.Find(modelPath, provider, Level);
            }
        }
        try
        {
            var session = CreateSession(modelPath, modelPath, cuda, stopSpinningAfterRun, variant, entry, out weightLease, modelBytes);
            entry?.Commit();
            return session;
        }
        catch
        {
            entry?.Abandon();
            throw;
        }
    }

    /// <summary>The optimisation level of every session (the cached graphs were optimised at it).</summary>
    private const GraphOptimizationLevel Level = GraphOptimizationLevel.ORT_ENABLE_ALL;

    private InferenceSession CreateSession(string modelPath, string sourcePath, CudaExecutionProvider? cuda, bool stopSpinningAfterRun, WeightVariant? variant,
        OptimizedModelCache.Entry? entry, out IDisposable? weightLease, byte[]? modelBytes)
    {
        weightLease = null;
        var options = new SessionOptions
        {
            // Base sessions run at the factory's level (the optimised-model cache's graphs were optimised at it). Replaced
            // initializers need ORT_ENABLE_EXTENDED: at ORT_ENABLE_ALL, ONNX Runtime (1.31, CPU) folds Conv weights before
            // AddInitializer's values apply, so a LoRA's convolution changes are silently lost (measured on the tiny-sd
            // export, shared/models/tiny-sd-lora/README.md "Known ONNX Runtime behaviour"). Variants never use the cache.
            GraphOptimizationLevel = variant is null ? Level : GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        IDisposable? lease = null;
        try
        {
            if (_intraOpThreads is { } n)
                options.IntraOpNumThreads = n;
            if (stopSpinningAfterRun)
                options.AddSessionConfigEntry("session.force_spinning_stop", "1");
            if (ProfilingFilePrefix is { } prefix)
            {
                options.EnableProfiling = true;
                options.ProfileOutputPathPrefix = prefix + "_" + Path.GetFileName(Path.GetDirectoryName(sourcePath));
            }
            entry?.Configure(options);
            if (cuda is not null)
                AppendCuda(options, cuda);
            lease = variant?.Acquire(options);
            // A graph loaded from bytes has no file to resolve external-data locations against: the source's folder is.
            if (modelBytes is not null)
                options.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", Path.GetDirectoryName(Path.GetFullPath(sourcePath))!);
            InferenceSession session;
            try
            {
                session = modelBytes is null ? new InferenceSession(modelPath, options) : new InferenceSession(modelBytes, options);
            }
            catch (OnnxRuntimeException e) when (cuda is null || !LooksLikeProviderFailure(e))
            {
                string weights = variant is null ? string.Empty : $" with weight variant '{variant.Id}' ({variant.Count} replaced initializers)";
                throw new ModelLoadException($"ONNX Runtime could not load '{modelPath}'{weights}: {e.Message}", e);
            }
            weightLease = lease;
            lease = null;
            return session;
        }
        finally
        {
            lease?.Dispose();
            options.Dispose();
        }
    }

    private static bool LooksLikeProviderFailure(OnnxRuntimeException e) =>
        e.Message.Contains("CUDA", StringComparison.OrdinalIgnoreCase) || e.Message.Contains("cudnn", StringComparison.OrdinalIgnoreCase)
        || e.Message.Contains("provider", StringComparison.OrdinalIgnoreCase);

    private static void AppendCuda(SessionOptions options, CudaExecutionProvider cuda)
    {
        var settings = cuda.Options.ToDictionary(cuda.DeviceId);
        if (cuda.Options.PluginLibraryPath is { } path)
        {
            var env = OrtEnv.Instance();
            RegisterPlugin(env, path);
            var devices = new List<OrtEpDevice>();
            foreach (var device in env.GetEpDevices())
            {
                if (device.EpName == "CUDAExecutionProvider" && MatchesDevice(device, cuda.DeviceId))
                    devices.Add(device);
            }
            if (devices.Count == 0)
                throw new InvalidOperationException($"The plugin library '{path}' registered, but ONNX Runtime reports no CUDA device {cuda.DeviceId} for it.");
            settings.Remove("device_id");
            options.AppendExecutionProvider(env, devices, settings);
            return;
        }
        // The classic provider has its own entry point: the generic AppendExecutionProvider("CUDA", …) answers
        // "Unknown provider name 'CUDA'" in every build (ONNX Runtime routes only DML, QNN, OpenVINO, … through it).
        using var cudaOptions = new OrtCUDAProviderOptions();
        cudaOptions.UpdateOptions(settings);
        options.AppendExecutionProvider_CUDA(cudaOptions);
    }

    private static bool MatchesDevice(OrtEpDevice device, int deviceId)
    {
        // The plugin reports one OrtEpDevice per GPU in enumeration order; its "device_id" metadata names the ordinal when present.
        var metadata = device.EpMetadata.Entries;
        if (metadata.TryGetValue("device_id", out var id))
            return id == deviceId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return deviceId == 0;
    }

    private static void RegisterPlugin(OrtEnv env, string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"The CUDA plugin execution-provider library '{path}' does not exist.", path);
        string full = Path.GetFullPath(path);
        lock (s_pluginLock)
        {
            if (s_registeredPlugins.ContainsKey(full))
                return;
            string name = "mlnet_diffusion_cuda_" + s_registeredPlugins.Count;
            env.RegisterExecutionProviderLibrary(name, full);
            s_registeredPlugins[full] = name;
        }
    }

    private static string DescribeCudaFailure(CudaExecutionProvider cuda, Exception e)
    {
        string cause = e.Message;
        if (cuda.Options.PluginLibraryPath is { } path)
            return $"The CUDA execution provider ({cuda}) could not be loaded from the plugin library '{path}': {cause} "
                + "Check that the library was built for this ONNX Runtime's plugin API and that its CUDA and cuDNN libraries "
                + "(CUDA 12/13 and cuDNN 9, matching the library's build) are on the loader path (LD_LIBRARY_PATH or PATH).";
        return $"The CUDA execution provider ({cuda}) is not available: {cause} "
            + "The application references the CPU build of ONNX Runtime. Reference the GPU native package instead "
            + "(build with -p:OnnxRuntimeNativePackage=Microsoft.ML.OnnxRuntime.Gpu, see docs/gpu.md), install the CUDA and "
            + "cuDNN versions that package requires (CUDA 12.x and cuDNN 9.x for ONNX Runtime 1.2x/1.3x), or set "
            + "CudaProviderOptions.PluginLibraryPath to a CUDA plugin execution-provider library. "
            + "Set FallbackToCpu to run on the CPU instead.";
    }
}

/// <summary>An ONNX file that ONNX Runtime rejected (not a provider problem).</summary>
internal sealed class ModelLoadException : IOException
{
    public ModelLoadException(string message, Exception inner)
        : base(message, inner)
    {
    }
}
