using System;
using System.Globalization;
using System.Linq;
using System.Threading;
using System.IO;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;
using System.Security.Cryptography;
using System.Text;
using Microsoft.ML.OnnxRuntime;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// A folder of ONNX Runtime's optimised models (<see cref="SessionOptions.OptimizedModelFilePath"/>, ONNX Runtime's
/// "offline mode"): the first load of a model file with given settings saves the graph ONNX Runtime optimised, later
/// loads read that graph with optimisations off instead of optimising again.
/// </summary>
/// <remarks>
/// <para>
/// One entry per (model file's full path, provider, optimisation level, ONNX Runtime version, CPU instruction sets): a
/// graph optimised at <see cref="GraphOptimizationLevel.ORT_ENABLE_ALL"/> holds provider- and hardware-specific nodes
/// (CPU layout transforms for the AVX2/AVX-512 kernels, CUDA fusions), so ONNX Runtime's docs ask that the offline model
/// be used with the same providers on compatible hardware; it is loaded with <see cref="GraphOptimizationLevel.ORT_DISABLE_ALL"/>
/// so that the layout transforms do not run a second time over their own output.
/// </para>
/// <para>
/// An entry is valid while its stamp matches: the size and modification time of every file in the model's folder
/// (model.onnx and its external data) and the SHA-256 of model.onnx (whole for files up to 16 MiB, else its first and
/// last MiB). Any change rebuilds it. Initializers are saved to <c>model.onnx.data</c> beside the optimised graph
/// (<c>session.optimized_model_external_initializers_file_name</c>), so models over protobuf's 2 GB limit and models
/// with external data are cached too. Sessions with replaced initializers (LoRA, <see cref="WeightVariant"/>) never use
/// the cache: optimisation folds and renames initializers, so the optimised graph no longer has the names they replace.
/// </para>
/// </remarks>
internal sealed class OptimizedModelCache
{
    private const string ModelFile = "model.onnx";
    private const string DataFile = "model.onnx.data";
    private const string StampFile = "stamp.txt";
    private const long WholeHashLimit = 16L << 20;
    private const int PartHashBytes = 1 << 20;

    private readonly Action<string> _log;
    private int _pruned;

    /// <param name="directory">The cache folder (created when needed).</param>
    /// <param name="log">Receives a line for each rebuilt, dropped or unusable entry.</param>
    public OptimizedModelCache(string directory, Action<string> log)
    {
        Directory = Path.GetFullPath(directory);
        _log = log;
    }

    /// <summary>The cache folder.</summary>
    public string Directory { get; }

    /// <summary>
    /// The default folder: <c>MLNet.Diffusion/optimized-models</c> under the user's local application data
    /// (<c>~/.local/share</c> on Linux, <c>%LOCALAPPDATA%</c> on Windows), beside the Shapes model cache.
    /// </summary>
    public static string DefaultDirectory
    {
        get
        {
            string local = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData);
            string root = string.IsNullOrEmpty(local) ? Path.GetTempPath() : local;
            return Path.Combine(root, "MLNet.Diffusion", "optimized-models");
        }
    }

    /// <summary>
    /// The entry of <paramref name="modelPath"/> under these settings: a valid cached graph to load, or a staging folder to
    /// save the optimised graph into (then <see cref="Entry.Commit"/>), or null when the model cannot be cached (logged).
    /// </summary>
    public Entry? Find(string modelPath, string provider, GraphOptimizationLevel level)
    {
        string full = Path.GetFullPath(modelPath);
        try
        {
            if (Interlocked.Exchange(ref _pruned, 1) == 0)
                Prune();
            string settings = string.Join("\n", "path=" + full, "provider=" + provider, "level=" + level,
                "ort=" + OrtEnv.Instance().GetVersionString(), "hardware=" + Hardware());
            string folder = Path.Combine(Directory, Hash(Encoding.UTF8.GetBytes(settings))[..32]);
            string stamp = settings + "\n" + Stamp(full);
            string cached = Path.Combine(folder, ModelFile);
            string stampPath = Path.Combine(folder, StampFile);
            if (File.Exists(stampPath) && File.Exists(cached))
            {
                if (File.ReadAllText(stampPath) == stamp)
                    return new Entry(this, folder, stamp, cached, null);
                _log($"The optimised model cached for '{full}' is stale (the model files changed); rebuilding it.");
                Drop(folder);
            }
            string staging = folder + ".tmp-" + Guid.NewGuid().ToString("N")[..12];
            System.IO.Directory.CreateDirectory(staging);
            return new Entry(this, folder, stamp, null, staging);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log($"Not caching the optimised model of '{full}': {e.Message}");
            return null;
        }
    }

    /// <summary>A cache entry: either a cached graph (<see cref="CachedModel"/>) or a staging folder to save one into.</summary>
    internal sealed class Entry
    {
        private readonly OptimizedModelCache _cache;
        private readonly string _folder;
        private readonly string _stamp;
        private readonly string? _staging;

        internal Entry(OptimizedModelCache cache, string folder, string stamp, string? cachedModel, string? staging)
        {
            _cache = cache;
            _folder = folder;
            _stamp = stamp;
            CachedModel = cachedModel;
            _staging = staging;
        }

        /// <summary>The cached optimised graph to load with optimisations off, or null on a miss.</summary>
        public string? CachedModel { get; }

        /// <summary>On a miss, sets <paramref name="options"/> to save the optimised graph (and its initializers) into the staging folder.</summary>
        public void Configure(SessionOptions options)
        {
            if (_staging is null)
            {
                options.GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL;
                return;
            }
            options.OptimizedModelFilePath = Path.Combine(_staging, ModelFile);
            options.AddSessionConfigEntry("session.optimized_model_external_initializers_file_name", DataFile);
            options.AddSessionConfigEntry("session.optimized_model_external_initializers_min_size_in_bytes", "1024");
        }

        /// <summary>After the session that saved the graph was created: moves the staging folder into place.</summary>
        public void Commit()
        {
            if (_staging is null)
                return;
            try
            {
                if (!File.Exists(Path.Combine(_staging, ModelFile)))
                {
                    _cache._log($"ONNX Runtime saved no optimised model for the cache entry '{_folder}'; the next load optimises again.");
                    Abandon();
                    return;
                }
                File.WriteAllText(Path.Combine(_staging, StampFile), _stamp);
                // Another process may have committed the same entry meanwhile: its copy is as good as ours.
                if (System.IO.Directory.Exists(_folder))
                    Drop(_staging);
                else
                    System.IO.Directory.Move(_staging, _folder);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                _cache._log($"Could not store the optimised model in '{_folder}': {e.Message}");
                Abandon();
            }
        }

        /// <summary>Removes the staging folder (a failed load).</summary>
        public void Abandon()
        {
            if (_staging is not null)
                Drop(_staging);
        }

        /// <summary>Removes a cached entry that ONNX Runtime could not load, so the next load rebuilds it.</summary>
        public void Invalidate(Exception reason)
        {
            _cache._log($"The cached optimised model '{CachedModel}' could not be loaded ({reason.Message}); rebuilding it.");
            Drop(_folder);
        }
    }

    /// <summary>
    /// Once per cache object: drops the entries of model files that no longer exist (models built in temporary folders)
    /// and staging folders a crashed process left more than a day ago.
    /// </summary>
    private void Prune()
    {
        if (!System.IO.Directory.Exists(Directory))
            return;
        foreach (string folder in System.IO.Directory.GetDirectories(Directory))
        {
            if (folder.Contains(".tmp-", StringComparison.Ordinal))
            {
                if (System.IO.Directory.GetLastWriteTimeUtc(folder) < DateTime.UtcNow.AddDays(-1))
                    Drop(folder);
                continue;
            }
            string stampPath = Path.Combine(folder, StampFile);
            string? first = File.Exists(stampPath) ? File.ReadLines(stampPath).FirstOrDefault() : null;
            if (first is null || !first.StartsWith("path=", StringComparison.Ordinal) || !File.Exists(first["path=".Length..]))
                Drop(folder);
        }
    }

    private static void Drop(string folder)
    {
        try
        {
            if (System.IO.Directory.Exists(folder))
                System.IO.Directory.Delete(folder, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A folder another process still reads; its stamp stays stale and the next load tries again.
        }
    }

    /// <summary>Size and modification time of every file in the model's folder, and the hash of the model file.</summary>
    private static string Stamp(string modelPath)
    {
        var sb = new StringBuilder();
        var files = System.IO.Directory.GetFiles(Path.GetDirectoryName(modelPath)!);
        Array.Sort(files, StringComparer.Ordinal);
        foreach (string file in files)
        {
            var info = new FileInfo(file);
            sb.Append(CultureInfo.InvariantCulture, $"file={info.Name};{info.Length};{info.LastWriteTimeUtc.Ticks}\n");
        }
        sb.Append("sha256=").Append(HashModel(modelPath));
        return sb.ToString();
    }

    private static string HashModel(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        if (stream.Length <= WholeHashLimit)
            return Convert.ToHexString(SHA256.HashData(stream));
        byte[] parts = new byte[2 * PartHashBytes];
        stream.ReadExactly(parts, 0, PartHashBytes);
        stream.Seek(-PartHashBytes, SeekOrigin.End);
        stream.ReadExactly(parts, PartHashBytes, PartHashBytes);
        return "parts:" + Hash(parts);
    }

    private static string Hash(byte[] bytes) => Convert.ToHexString(SHA256.HashData(bytes));

    /// <summary>The processor architecture and the vector instruction sets ONNX Runtime's CPU kernels pick layouts for.</summary>
    private static string Hardware() => string.Create(CultureInfo.InvariantCulture,
        $"{RuntimeInformation.ProcessArchitecture};avx2={Avx2.IsSupported};avx512f={Avx512F.IsSupported};avx512vbmi={Avx512Vbmi.IsSupported}");
}
