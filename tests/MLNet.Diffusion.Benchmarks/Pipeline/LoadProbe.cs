using System;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Benchmarks.Pipeline;

/// <summary>
/// Issue 21 point 4, where a load's time goes: <c>-- load-probe FOLDER [CACHE|none] [REPEATS]</c> first starts ONNX
/// Runtime on a model the load does not open (vae_encoder/, so the environment, the native library and the binding's
/// JIT are paid), then times the load's pieces and the whole <see cref="StableDiffusionModel.Load"/> REPEATS times in
/// this process: the first round pays the library's JIT and static tables, the later rounds are per-load costs.
/// </summary>
internal static class LoadProbe
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static int Run(string[] args)
    {
        string folder = Path.GetFullPath(args[0]);
        string? cache = args.Length > 1 && args[1] != "none" ? args[1] : null;
        int repeats = args.Length > 2 ? int.Parse(args[2], Inv) : 3;
        var sw = Stopwatch.StartNew();
        using (var warmUp = new InferenceSession(Path.Combine(folder, "vae_encoder", "model.onnx")))
            Console.WriteLine(string.Create(Inv, $"ONNX Runtime start + vae_encoder session: {sw.Elapsed.TotalMilliseconds:F0} ms"));
        for (int round = 1; round <= repeats; round++)
        {
            sw.Restart();
            var layout = ModelFolder.Validate(folder);
            double validate = Lap(sw);
            ModelInspector.ReadSchedulerConfig(folder, _ => { }, layout.Kind);
            double scheduler = Lap(sw);
            string tokenizerFolder = Path.Combine(folder, ModelFolder.Tokenizer);
            byte[] vocabBytes = File.ReadAllBytes(Path.Combine(tokenizerFolder, "vocab.json"));
            byte[] mergeBytes = File.ReadAllBytes(Path.Combine(tokenizerFolder, "merges.txt"));
            double read = Lap(sw);
            var vocab = ClipTokenizerFiles.ReadVocabulary(new MemoryStream(vocabBytes), "vocab.json");
            double parseVocab = Lap(sw);
            ClipTokenizerFiles.ReadMerges(new MemoryStream(mergeBytes), "merges.txt", vocab);
            double parseMerges = Lap(sw);
            ClipTokenizer.FromFolder(tokenizerFolder);
            double tokenizer = Lap(sw);
            using (var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder, new StableDiffusionModelOptions { OptimizedModelCacheDirectory = cache }))
            {
                double load = Lap(sw);
                Console.WriteLine(string.Create(Inv,
                    $"round {round}: ModelFolder.Validate {validate:F1} ms, scheduler config {scheduler:F1} ms, tokenizer files read {read:F1} ms, "
                    + $"vocab parse {parseVocab:F1} ms, merges parse {parseMerges:F1} ms, ClipTokenizer.FromFolder {tokenizer:F1} ms; Load {load:F0} ms ({model.LoadTimes})"));
            }
        }
        return 0;
    }

    /// <summary>
    /// <c>-- session-probe ORIGINAL CACHED</c>: session creation of a model file at ORT_ENABLE_ALL against its cached
    /// optimised graph at ORT_DISABLE_ALL (as the optimised-model cache loads it), three times each, alternating.
    /// </summary>
    public static int Sessions(string[] args)
    {
        using (new InferenceSession(args[0])) { }
        for (int round = 0; round < 3; round++)
        {
            foreach (var (label, path, level) in new[] { ("original, ORT_ENABLE_ALL", args[0], GraphOptimizationLevel.ORT_ENABLE_ALL), ("cached, ORT_DISABLE_ALL", args[1], GraphOptimizationLevel.ORT_DISABLE_ALL), ("cached, ORT_ENABLE_BASIC", args[1], GraphOptimizationLevel.ORT_ENABLE_BASIC) })
            {
                var sw = Stopwatch.StartNew();
                using var options = new SessionOptions { GraphOptimizationLevel = level };
                using (new InferenceSession(path, options)) { }
                Console.WriteLine(string.Create(Inv, $"{label}: {sw.Elapsed.TotalMilliseconds:F0} ms"));
            }
        }
        return 0;
    }

    private static double Lap(Stopwatch sw)
    {
        double ms = sw.Elapsed.TotalMilliseconds;
        sw.Restart();
        return ms;
    }
}
