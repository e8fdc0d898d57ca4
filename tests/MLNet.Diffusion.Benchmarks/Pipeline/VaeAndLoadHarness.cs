using System;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.ML;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Benchmarks.Pipeline;

/// <summary>
/// Issue 21's two measurements, each configuration in a fresh child process (so that peaks and first-load costs are its
/// own): <c>-- pipeline-vae-load [--only vae,load] [--sd-synthetic] [--models DIR] [--repeats N] [--processes N] [--folder NAME=DIR]…</c>.
/// (a) VAE decodes of 1024² and 2048² latents on the Shapes model, tiled (256-pixel tiles, the Shapes VAE's
/// sample_size) and whole: time of the second decode and the process's peak working set (VmHWM) minus its resident set
/// just before the first decode. (b) Model loads: today's path (no optimised-model cache), the first load with an empty
/// cache (optimises and saves) and a load with the cache filled, for Shapes and, with <c>--sd-synthetic</c>, the
/// SD 1.5-sized <see cref="SyntheticUnet"/> folder, and any <c>--folder</c>: each as the first load of a fresh process,
/// the first load after ONNX Runtime was started on another model, and the steady state (the median of loads 2–N in one
/// process), each the median over N processes (default 3). Prints a markdown section.
/// </summary>
internal static class VaeAndLoadHarness
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;


    public static int Run(string[] args)
    {
        bool vae = true, load = true, sd = false;
        int repeatCount = 5, processCount = 3;
        var extra = new System.Collections.Generic.List<(string Name, string Folder)>();
        string models = Path.Combine(Path.GetTempPath(), "mlnet-diffusion-bench-models");
        for (int i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--only":
                    string[] only = args[++i].Split(',');
                    vae = only.Contains("vae");
                    load = only.Contains("load");
                    break;
                case "--sd-synthetic": sd = true; break;
                case "--models": models = args[++i]; break;
                case "--repeats": repeatCount = int.Parse(args[++i], Inv); break;
                case "--processes": processCount = int.Parse(args[++i], Inv); break;
                case "--folder":
                    string[] named = args[++i].Split('=', 2);
                    extra.Add((named[0], named[1]));
                    break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'. Options: --only vae,load, --sd-synthetic, --models DIR, --repeats N, --processes N, --folder NAME=DIR.");
            }
        }
        var md = new StringBuilder();
        string shapes = ShapesModel.EnsureBuilt(models);
        if (vae)
        {
            md.AppendLine("| decode | tiling | time (ms) | peak working set − before decode (MiB) | peak working set (MiB) |");
            md.AppendLine("| -- | -- | --: | --: | --: |");
            foreach (int size in new[] { 1024, 2048 })
            {
                foreach (string mode in new[] { "Off", "On" })
                {
                    string line = Child("vae-child", shapes, size.ToString(Inv), mode).FirstOrDefault(l => l.StartsWith("VAE ", StringComparison.Ordinal)) ?? "VAE ? ? ? (child failed)";
                    string[] p = line.Split(' ');
                    md.AppendLine($"| {size}×{size} | {(mode == "On" ? "256-pixel tiles" : "whole")} | {p[1]} | {p[2]} | {p[3]} |");
                }
            }
            md.AppendLine();
        }
        if (load)
        {
            md.AppendLine($"| model | load | first load in a fresh process (ms, median of {processCount}) | first load after ONNX Runtime's start (ms, median of {processCount}) | steady state (ms, median of loads 2–{repeatCount} of {processCount} processes) | phases (fresh process; after ONNX Runtime's start; steady state) |");
            md.AppendLine("| -- | -- | --: | --: | --: | -- |");
            var folders = new System.Collections.Generic.List<(string Name, string Folder)> { ("Shapes", shapes) };
            if (sd)
            {
                string folder = Path.Combine(models, "sd-synthetic-load");
                if (!File.Exists(Path.Combine(folder, ".complete")))
                {
                    if (Directory.Exists(folder))
                        Directory.Delete(folder, recursive: true);
                    Console.WriteLine($"Building the SD 1.5-sized synthetic UNet into {folder} ...");
                    SyntheticUnet.BuildModelFolder(folder, new SyntheticUnetOptions());
                    File.WriteAllText(Path.Combine(folder, ".complete"), string.Empty);
                }
                folders.Add(("SD 1.5-sized synthetic UNet", folder));
            }
            folders.AddRange(extra);
            foreach (var (name, folder) in folders)
            {
                string cache = Path.Combine(Path.GetTempPath(), "mlnet-bench-optcache-" + Guid.NewGuid().ToString("N")[..8]);
                string cache2 = cache + "-b";
                try
                {
                    // Per row, two processes: one loading REPEATS times (the first load pays the process's one-time costs,
                    // the later ones are the load path's own), one starting ONNX Runtime on another model first and
                    // loading once. The cold rows load once into an empty cache each (a second load would be warm).
                    var rows = new[]
                    {
                        ("today (no cache)", "none", repeatCount, "none"),
                        ("cache cold (optimise + save)", cache, 1, cache2),
                        ("cache warm", cache, repeatCount, cache),
                    };
                    foreach (var (label, dir, repeats, warmDir) in rows)
                    {
                        // Each column is the median over PROCESSES child processes (the machine is shared: single runs
                        // swing by ±50 %); a cold row's processes each start from an empty cache.
                        var fresh = new System.Collections.Generic.List<(double Ms, string Phases)>();
                        var afterStart = new System.Collections.Generic.List<(double Ms, string Phases)>();
                        var steadyLoads = new System.Collections.Generic.List<(double Ms, string Phases)>();
                        bool failed = false;
                        for (int p = 0; p < processCount && !failed; p++)
                        {
                            if (repeats == 1)
                            {
                                foreach (string c in new[] { cache, cache2 })
                                {
                                    if (Directory.Exists(c))
                                        Directory.Delete(c, recursive: true);
                                }
                            }
                            var loads = ParseLoads(Child("load-child", folder, dir, repeats.ToString(Inv), "fresh"));
                            var started = ParseLoads(Child("load-child", folder, warmDir, "1", "ort-first"));
                            failed = loads.Length != repeats || started.Length != 1;
                            if (failed)
                                break;
                            fresh.Add(loads[0]);
                            afterStart.Add(started[0]);
                            steadyLoads.AddRange(loads.Skip(1));
                        }
                        if (failed)
                        {
                            md.AppendLine($"| {name} | {label} | ? | ? | ? | child failed |");
                            continue;
                        }
                        var f = Median(fresh);
                        var a = Median(afterStart);
                        string steady = steadyLoads.Count == 0 ? "–" : Median(steadyLoads).Ms.ToString("F0", Inv);
                        string phases = f.Phases + "; " + a.Phases + (steadyLoads.Count == 0 ? string.Empty : "; " + Median(steadyLoads).Phases);
                        md.AppendLine($"| {name} | {label} | {f.Ms.ToString("F0", Inv)} | {a.Ms.ToString("F0", Inv)} | {steady} | {phases} |");
                    }
                }
                finally
                {
                    foreach (string c in new[] { cache, cache2 })
                    {
                        if (Directory.Exists(c))
                            Directory.Delete(c, recursive: true);
                    }
                }
            }
        }
        Console.WriteLine();
        Console.WriteLine(md.ToString());
        return 0;
    }

    private static string[] Child(params string[] args)
    {
        var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
            psi.ArgumentList.Add(typeof(VaeAndLoadHarness).Assembly.Location);
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        using var child = Process.Start(psi)!;
        string text = child.StandardOutput.ReadToEnd();
        child.WaitForExit();
        Console.Write(text);
        return text.Split('\n');
    }

    /// <summary>Child: one decode configuration; prints "VAE ms peakDeltaMiB peakMiB".</summary>
    public static int VaeChild(string[] args)
    {
        string folder = args[0];
        int size = int.Parse(args[1], Inv);
        var tiling = Enum.Parse<VaeTiling>(args[2]);
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder, new StableDiffusionModelOptions { OptimizedModelCacheDirectory = null });
        int side = size / model.Info.VaeSpatialFactor;
        float[] latents = new float[model.Info.LatentChannels * side * side];
        new GaussianNoise(1).NextGaussian(latents);
        using var decoder = new LatentDecoder(model, tiling, tiling == VaeTiling.On ? 256 : null);
        using var self = Process.GetCurrentProcess();
        self.Refresh();
        long before = self.WorkingSet64;
        decoder.Decode(latents, 1, side, side);
        var sw = Stopwatch.StartNew();
        decoder.Decode(latents, 1, side, side);
        sw.Stop();
        self.Refresh();
        long peak = self.PeakWorkingSet64;
        Console.WriteLine(string.Create(Inv, $"VAE {sw.Elapsed.TotalMilliseconds:F0} {(peak - before) / 1048576.0:F0} {peak / 1048576.0:F0}"));
        return 0;
    }

    private static (double Ms, string Phases) Median(System.Collections.Generic.List<(double Ms, string Phases)> loads)
    {
        var sorted = loads.OrderBy(l => l.Ms).ToArray();
        return sorted[sorted.Length / 2];
    }

    private static (double Ms, string Phases)[] ParseLoads(string[] lines) => lines
        .Where(l => l.StartsWith("LOAD ", StringComparison.Ordinal))
        .Select(l => (double.Parse(l.Split(' ')[2], Inv), l[(l.IndexOf(": ", StringComparison.Ordinal) + 2)..].TrimEnd('\r')))
        .ToArray();

    /// <summary>
    /// Child: REPEATS loads of the folder one after the other in this process (the first pays ONNX Runtime's start, the
    /// JIT and the static tables; the later ones are the load path's own cost); prints "LOAD i totalMs phases" per load.
    /// With "ort-first", a session of another model (the folder's vae_encoder, which a load does not open) is created
    /// and disposed first, so that ONNX Runtime's start is paid before the timed loads.
    /// </summary>
    public static int LoadChild(string[] args)
    {
        string? cache = args[1] == "none" ? null : args[1];
        int repeats = args.Length > 2 ? int.Parse(args[2], Inv) : 1;
        if (args.Length > 3 && args[3] == "ort-first")
        {
            var start = Stopwatch.StartNew();
            using (new Microsoft.ML.OnnxRuntime.InferenceSession(Path.Combine(args[0], "vae_encoder", "model.onnx")))
                Console.WriteLine(string.Create(Inv, $"ONNX Runtime start + vae_encoder session: {start.Elapsed.TotalMilliseconds:F0} ms"));
        }
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            using var model = StableDiffusionModel.Load(new MLContext(seed: 1), args[0], new StableDiffusionModelOptions { OptimizedModelCacheDirectory = cache });
            sw.Stop();
            Console.WriteLine(string.Create(Inv, $"LOAD {i + 1} {sw.Elapsed.TotalMilliseconds:F0} {model.LoadTimes}"));
        }
        return 0;
    }
}
