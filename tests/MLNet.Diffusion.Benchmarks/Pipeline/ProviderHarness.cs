using System;
using System.Collections.Generic;
using System.ComponentModel;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using MLNet.Diffusion.Shapes;
using static MLNet.Diffusion.Benchmarks.Pipeline.BenchSupport;

namespace MLNet.Diffusion.Benchmarks.Pipeline;

/// <summary>
/// The pipeline overhead on a chosen execution provider and model (issue 8):
/// <c>-- pipeline --provider cuda --plugin PATH --model shapes|sd-synthetic [--fp16]</c>. For batch 1 and 4 it times a
/// whole ML.NET generation against exactly the same ONNX calls made directly (<see cref="RawOnnxPipeline"/>), ABBA
/// interleaved, and writes the overhead ratio (pipeline ÷ raw session calls) into docs/benchmarks.md, one marked block
/// per model, precision and provider under the GPU heading. <c>sd-synthetic</c> is <see cref="SyntheticUnet"/> at
/// Stable Diffusion 1.5's size (built on first use, ~3.4 GB in float32), with the Shapes text encoder and VAE.
/// </summary>
internal static class ProviderHarness
{
    private const string Heading = "## Whole pipeline on other execution providers (GPU)";
    private const string PluginVariable = "MLNET_DIFFUSION_CUDA_PLUGIN";

    private sealed class Options
    {
        public string Provider { get; set; } = "cpu";
        public string? Plugin { get; set; } = Environment.GetEnvironmentVariable(PluginVariable) is { Length: > 0 } p ? p : null;
        public int Device { get; set; }
        public string Model { get; set; } = "shapes";
        public bool Float16 { get; set; }
        public int Size { get; set; } = 512;
        public int Steps { get; set; } = 20;
        public int Reps { get; set; } = 5;
        public int[] Batches { get; set; } = { 1, 4 };
        public int[] UnetChannels { get; set; } = SyntheticUnetOptions.StableDiffusion15Channels.ToArray();
        public int UnetLayers { get; set; } = 2;
        public CudnnConvolutionSearch Cudnn { get; set; } = CudnnConvolutionSearch.Exhaustive;
        public string Models { get; set; } = Path.Combine(Path.GetTempPath(), "mlnet-diffusion-bench-models");
        public string? Output { get; set; }
    }

    /// <summary>Whether the <c>pipeline</c> arguments ask for this harness (a provider or model is named).</summary>
    public static bool Handles(string[] args) => args.Any(a => a is "--provider" or "--model" or "--plugin" or "--fp16");

    public static int Run(string[] args)
    {
        var o = Parse(args);
        string invocation = PipelineHarness.Command + " " + string.Join(" ", args);
        var total = Stopwatch.StartNew();
        string precision = o.Float16 ? "fp16" : "fp32";

        // 1. The model folder.
        var build = Stopwatch.StartNew();
        string folder;
        string modelText;
        try
        {
            (folder, modelText) = o.Model switch
            {
                "shapes" => (ShapesModel.EnsureBuilt(o.Models, new ShapesModelOptions { Variant = o.Float16 ? ShapesVariant.Float16 : ShapesVariant.Standard }),
                    $"Shapes ({precision})"),
                "sd-synthetic" => SdSynthetic(o),
                _ => throw new ArgumentException($"--model must be shapes or sd-synthetic, not '{o.Model}'."),
            };
        }
        catch (NotSupportedException e)
        {
            Console.Error.WriteLine($"The {o.Model} {precision} model cannot be built by this version: {e.Message}");
            return 3;
        }
        build.Stop();

        // 2. Load on the provider, fallback off: a benchmark that silently ran on the CPU would be a wrong number.
        var provider = o.Provider switch
        {
            "cpu" => ExecutionProvider.Cpu,
            "cuda" => ExecutionProvider.Cuda(o.Device, new CudaProviderOptions { PluginLibraryPath = o.Plugin, CudnnConvolutionSearch = o.Cudnn }),
            _ => throw new ArgumentException($"--provider must be cpu or cuda, not '{o.Provider}'."),
        };
        var ml = new MLContext(seed: 1);
        var load = Stopwatch.StartNew();
        StableDiffusionModel loaded;
        try
        {
            loaded = StableDiffusionModel.Load(ml, folder, new StableDiffusionModelOptions { ExecutionProvider = provider, FallbackToCpu = false });
        }
        catch (InvalidOperationException e)
        {
            Console.Error.WriteLine($"The model cannot be loaded on {provider}: {e.Message}");
            return 1;
        }
        using var sd = loaded;
        load.Stop();
        if (sd.Info.ExecutionProvider != provider.ToString())
            throw new InvalidOperationException($"The model loaded on {sd.Info.ExecutionProvider}, not {provider}.");

        var md = new StringBuilder();
        string key = $"{o.Model}-{precision}-{o.Provider}";
        md.AppendLine(Inv, $"### {o.Model}, {(o.Float16 ? "float16" : "float32")} UNet, {sd.Info.ExecutionProvider}");
        md.AppendLine();
        md.AppendLine("```bash");
        md.AppendLine(invocation);
        md.AppendLine("```");
        md.AppendLine();
        md.AppendLine("| | |");
        md.AppendLine("|---|---|");
        md.AppendLine(Inv, $"| date (UTC) | {DateTime.UtcNow:yyyy-MM-dd HH:mm} |");
        md.AppendLine(Inv, $"| machine | {Gpu()}; {Environment.ProcessorCount} logical cores, {RuntimeInformation.OSDescription} |");
        md.AppendLine(Inv, $"| .NET | {RuntimeInformation.FrameworkDescription} |");
        md.AppendLine(Inv, $"| ONNX Runtime | {OrtEnv.Instance().GetVersionString()}, {ProviderText(o)} |");
        md.AppendLine(Inv, $"| model | {modelText}; folder ready in {F(build.Elapsed.TotalSeconds)} s, sessions created in {F(load.Elapsed.TotalSeconds)} s |");
        md.AppendLine(Inv, $"| settings | {o.Size}×{o.Size} ({o.Size / sd.Info.VaeSpatialFactor}² latents), {o.Steps} DDIM steps, guidance 7.5 (UNet batch 2N); {o.Reps} ABBA repetitions after one warm-up, medians |");
        md.AppendLine();
        md.AppendLine("| N | ML.NET ms | raw ms | **ratio** (medians) | median of per-rep ratios | ratio of minima | raw UNet ms/step | raw text encoder ms | raw VAE ms | images/s (ML.NET) | first ML.NET run ms |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|");
        var raw = new List<string>();
        foreach (int n in o.Batches)
            Measure(md, raw, ml, sd, o, n);
        md.AppendLine();
        md.AppendLine("Raw figures:");
        md.AppendLine();
        foreach (string line in raw)
            md.AppendLine(line);
        md.AppendLine();
        md.AppendLine(Inv, $"GPU memory after the run: {GpuMemory()}. Total harness time {F(total.Elapsed.TotalSeconds, 0)} s.");

        string output = o.Output ?? Path.Combine(RepositoryRoot(), "docs", "benchmarks.md");
        Write(output, key, md.ToString());
        Console.WriteLine(md.ToString());
        Console.WriteLine($"Written to {output} (block {key})");
        return 0;
    }

    private static void Measure(StringBuilder md, List<string> raw, MLContext ml, StableDiffusionModel sd, Options o, int n)
    {
        var data = Rows(ml, n);
        var pipeline = Generation(ml, sd, data, n, o.Size, o.Steps);
        using var direct = new RawOnnxPipeline(sd, n, o.Size, o.Steps);

        // Warm-up (on CUDA the first run also pays cuDNN's algorithm search and the arena's growth), and the call
        // counts that make the raw baseline the same calls.
        long te0 = sd.TextEncoder.RunCount, u0 = sd.Unet.RunCount, v0 = sd.VaeDecoder.RunCount;
        double first = Ms(() => Generate(pipeline, data));
        string counts = $"{sd.TextEncoder.RunCount - te0}/{sd.Unet.RunCount - u0}/{sd.VaeDecoder.RunCount - v0}";
        if (counts != $"2/{o.Steps}/1")
            throw new InvalidOperationException($"The ML.NET run made text encoder/UNet/VAE calls {counts}, not 2/{o.Steps}/1.");
        direct.Run();

        var s = new Samples();
        for (int rep = 0; rep < o.Reps; rep++)
        {
            double aMl = 0, aRaw = 0, aTe = 0, aUnet = 0, aVae = 0;
            void MlNet() => aMl += Ms(() => Generate(pipeline, data)) / 2;
            void Raw()
            {
                var r = direct.Run();
                aRaw += r.Total / 2;
                aTe += r.TextEncoder / 2;
                aUnet += r.Unet / 2;
                aVae += r.Vae / 2;
            }
            if (rep % 2 == 0) { MlNet(); Raw(); Raw(); MlNet(); } else { Raw(); MlNet(); MlNet(); Raw(); }
            s.Add("ml", aMl);
            s.Add("raw", aRaw);
            s.Add("te", aTe);
            s.Add("unet", aUnet);
            s.Add("vae", aVae);
            s.Add("ratio", aMl / aRaw);
            Console.WriteLine(string.Create(Inv, $"N={n} rep {rep}: ML.NET {aMl:F1} ms, raw {aRaw:F1} ms, ratio {aMl / aRaw:F3}"));
        }
        double mlMs = s.Median("ml"), rawMs = s.Median("raw");
        md.AppendLine(Inv, $"| {n} | {F(mlMs)} | {F(rawMs)} | **{F(mlMs / rawMs, 3)}** | {F(s.Median("ratio"), 3)} | {F(s["ml"].Min() / s["raw"].Min(), 3)} | "
            + $"{F(s.Median("unet") / o.Steps, 2)} | {F(s.Median("te"), 2)} | {F(s.Median("vae"), 2)} | {F(n / (mlMs / 1000), 2)} | {F(first)} |");
        raw.Add($"- N = {n}: ML.NET ms [{Raw(s["ml"])}]; raw ms [{Raw(s["raw"])}] (UNet loop [{Raw(s["unet"])}]); per-repetition ratios [{Raw(s["ratio"], 3)}]; "
            + $"calls per generation text encoder/UNet/VAE = {counts}.");
    }

    private static (string Folder, string Text) SdSynthetic(Options o)
    {
        var options = new SyntheticUnetOptions { BlockChannels = o.UnetChannels, LayersPerBlock = o.UnetLayers, SampleSize = Math.Max(8, o.Size / 8), Float16 = o.Float16 };
        long parameters = SyntheticUnet.CountParameters(options);
        string id = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join(",", o.UnetChannels) + $"|{o.UnetLayers}|{o.Float16}|{options.SampleSize}")), 0, 6).ToLowerInvariant();
        string folder = Path.Combine(o.Models, "sd-synthetic-" + id);
        string marker = Path.Combine(folder, ".complete");
        if (!File.Exists(marker))
        {
            if (Directory.Exists(folder))
                Directory.Delete(folder, recursive: true);
            Console.WriteLine($"Building the synthetic SD UNet ({parameters:N0} parameters, {(o.Float16 ? "float16" : "float32")}) into {folder} ...");
            SyntheticUnet.BuildModelFolder(folder, options);
            File.WriteAllText(marker, string.Empty);
        }
        long bytes = new FileInfo(Path.Combine(folder, "unet", SyntheticUnet.WeightsFileName)).Length;
        string widths = string.Join(", ", o.UnetChannels);
        return (folder, string.Create(Inv, $"sd-synthetic: SyntheticUnet ({widths}; layers per block {o.UnetLayers}; {parameters:N0} parameters; "
            + $"{(o.Float16 ? "float16" : "float32")}, weights {bytes / 1e9:F2} GB), Shapes text encoder projected to 768, Shapes VAE (float32)"));
    }

    private static string ProviderText(Options o) => o.Provider == "cpu"
        ? "CPU execution provider"
        : $"CUDA execution provider on device {o.Device} ({(o.Plugin is null ? "classic provider of the native package" : "plugin library " + Path.GetFileName(o.Plugin))}; cuDNN search {o.Cudnn}); inputs and outputs in host memory (OrtValues over managed arrays) for both the pipeline and the raw calls";

    private static string Gpu() => NvidiaSmi("name,driver_version,memory.total") is { } gpu ? "GPU " + gpu : "no NVIDIA GPU visible (nvidia-smi absent)";

    private static string GpuMemory() => NvidiaSmi("memory.used") ?? "n/a";

    private static string? NvidiaSmi(string query)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("nvidia-smi", $"--query-gpu={query} --format=csv,noheader")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            });
            if (p is null)
                return null;
            string text = p.StandardOutput.ReadToEnd().Trim();
            p.WaitForExit();
            return p.ExitCode == 0 && text.Length > 0 ? text.Replace('\n', ';') : null;
        }
        catch (Win32Exception)
        {
            return null;
        }
    }

    private static Options Parse(string[] args)
    {
        var o = new Options();
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            int[] Ints() => Next().Split(',').Select(v => int.Parse(v, Inv)).ToArray();
            switch (args[i])
            {
                case "--provider": o.Provider = Next().ToLowerInvariant(); break;
                case "--plugin": o.Plugin = Next(); break;
                case "--device": o.Device = int.Parse(Next(), Inv); break;
                case "--model": o.Model = Next().ToLowerInvariant(); break;
                case "--fp16": o.Float16 = true; break;
                case "--size": o.Size = int.Parse(Next(), Inv); break;
                case "--steps": o.Steps = int.Parse(Next(), Inv); break;
                case "--reps": o.Reps = int.Parse(Next(), Inv); break;
                case "--batches": o.Batches = Ints(); break;
                case "--unet-channels": o.UnetChannels = Ints(); break;
                case "--unet-layers": o.UnetLayers = int.Parse(Next(), Inv); break;
                case "--cudnn": o.Cudnn = Enum.Parse<CudnnConvolutionSearch>(Next(), ignoreCase: true); break;
                case "--models": o.Models = Next(); break;
                case "--out": o.Output = Next(); break;
                default:
                    throw new ArgumentException($"Unknown option '{args[i]}'. Options: --provider cpu|cuda, --plugin PATH (or {PluginVariable}), --device N, "
                        + "--model shapes|sd-synthetic, --fp16, --size PX, --steps N, --reps N, --batches 1,4, --unet-channels 320,640,1280,1280, "
                        + "--unet-layers N, --cudnn exhaustive|heuristic|default, --models DIR, --out FILE.");
            }
        }
        if (o.Provider == "cpu" && o.Plugin is not null && args.Contains("--plugin"))
            throw new ArgumentException("--plugin needs --provider cuda.");
        return o;
    }

    /// <summary>Replaces (or appends under the GPU heading) the block marked with <paramref name="key"/>.</summary>
    private static void Write(string path, string key, string section)
    {
        string begin = $"<!-- gpu-harness:{key}:begin -->", end = $"<!-- gpu-harness:{key}:end -->";
        string block = begin + "\n" + section.TrimEnd() + "\n" + end + "\n";
        string text = File.Exists(path) ? File.ReadAllText(path) : "# Benchmarks\n";
        int b = text.IndexOf(begin, StringComparison.Ordinal), e = text.IndexOf(end, StringComparison.Ordinal);
        if (b >= 0 && e > b)
        {
            text = text.Substring(0, b) + block + text.Substring(e + end.Length).TrimStart('\n');
        }
        else
        {
            if (!text.Contains(Heading, StringComparison.Ordinal))
                text = text.TrimEnd() + "\n\n" + Heading + "\n\n" + Intro + "\n";
            text = text.TrimEnd() + "\n\n" + block;
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, text);
    }

    private const string Intro =
        "Written by `" + PipelineHarness.Command + " --provider cuda --model shapes|sd-synthetic [--fp16]` (tests/gpu/README.md runs it on a GPU "
        + "machine). **ratio** = ML.NET generation time ÷ the same ONNX calls made directly on the same sessions (text encoder on N prompts and on "
        + "the empty prompt, one UNet call per step on the 2N guidance batch, one VAE decoder call); 1.00 means no overhead. sd-synthetic is "
        + "`SyntheticUnet` at Stable Diffusion 1.5's size (859,520,964 parameters, random weights) with the Shapes text encoder (projected to "
        + "768) and the Shapes VAE, whose decoder is one 1×1 convolution: its UNet dominates as a real SD UNet does, but the VAE share is far "
        + "smaller than a real VAE's. One block per model, precision and provider.";
}
