using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using MLNet.Diffusion.Shapes;
using static MLNet.Diffusion.Benchmarks.Pipeline.BenchSupport;

namespace MLNet.Diffusion.Benchmarks.Pipeline;

/// <summary>
/// The whole-pipeline harness (issue 7): <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- pipeline</c>.
/// Plain stopwatch measurements on the Shapes model, each comparison interleaved within one run (medians reported),
/// written as Markdown into docs/benchmarks.md between the pipeline markers.
/// </summary>
internal static class PipelineHarness
{
    public const string Command = "dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- pipeline";
    private const string Begin = "<!-- pipeline-harness:begin -->";
    private const string End = "<!-- pipeline-harness:end -->";

    private sealed class Options
    {
        public int Reps { get; set; } = 8;
        public int Size { get; set; } = 512;
        public int Steps { get; set; } = 20;
        public int EncodeRows { get; set; } = 256;
        public int ScalingRows { get; set; } = 8;
        public int MemoryImages { get; set; } = 200;
        public int MemorySize { get; set; } = 128;
        public string? Output { get; set; }
        public HashSet<string> Sections { get; } = new(StringComparer.OrdinalIgnoreCase) { "overhead", "profile", "encode", "scaling", "steps", "memory" };
        public string Invocation { get; set; } = Command;
    }

    public static int Run(string[] args)
    {
        var o = new Options();
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            switch (args[i])
            {
                case "--reps": o.Reps = int.Parse(Next(), Inv); break;
                case "--size": o.Size = int.Parse(Next(), Inv); break;
                case "--steps": o.Steps = int.Parse(Next(), Inv); break;
                case "--encode-rows": o.EncodeRows = int.Parse(Next(), Inv); break;
                case "--memory-images": o.MemoryImages = int.Parse(Next(), Inv); break;
                case "--memory-size": o.MemorySize = int.Parse(Next(), Inv); break;
                case "--out": o.Output = Next(); break;
                case "--only":
                    o.Sections.Clear();
                    foreach (string s in Next().Split(','))
                        o.Sections.Add(s.Trim());
                    break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'. Options: --reps N, --size PX, --steps N, --encode-rows N, --memory-images N, --memory-size PX, --only overhead,profile,encode,scaling,steps,memory, --out FILE.");
            }
        }
        if (args.Length > 0)
            o.Invocation = Command + " " + string.Join(" ", args);
        string output = o.Output ?? Path.Combine(RepositoryRoot(), "docs", "benchmarks.md");

        var total = Stopwatch.StartNew();
        string modelDir = ShapesModel.EnsureBuilt();
        var ml = new MLContext(seed: 1);
        using var sd = StableDiffusionModel.Load(ml, modelDir);
        var md = new StringBuilder();
        Header(md, o, sd, modelDir);

        if (o.Sections.Contains("overhead"))
            Overhead(md, ml, sd, o);
        if (o.Sections.Contains("profile"))
            StageProfile.Section(md, ml, sd, o.Size, o.Steps, o.Reps);
        if (o.Sections.Contains("encode"))
            EncodeVsOnnxTransformer(md, ml, sd, o);
        if (o.Sections.Contains("scaling"))
            BatchScaling(md, ml, sd, o);
        if (o.Sections.Contains("steps"))
            Steps(md, ml, sd, o);
        if (o.Sections.Contains("memory"))
            WorkingSet(md, o);

        md.AppendLine(CultureInfo.InvariantCulture, $"Total harness time: {total.Elapsed.TotalSeconds:F0} s.");
        Write(output, md.ToString());
        Console.WriteLine(md.ToString());
        Console.WriteLine($"Written to {output}");
        return 0;
    }

    private static void Header(StringBuilder md, Options o, StableDiffusionModel sd, string modelDir)
    {
        string cpu = "unknown CPU";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException)
        {
        }
        md.AppendLine("## Whole pipeline (Shapes model, CPU)");
        md.AppendLine();
        md.AppendLine("```bash");
        md.AppendLine(o.Invocation);
        md.AppendLine("```");
        md.AppendLine();
        md.AppendLine("| | |");
        md.AppendLine("|---|---|");
        md.AppendLine(Inv, $"| date (UTC) | {DateTime.UtcNow:yyyy-MM-dd HH:mm} |");
        md.AppendLine(Inv, $"| machine | {Environment.ProcessorCount} logical cores visible ({cpu}), {RuntimeInformation.OSDescription} {RuntimeInformation.OSArchitecture} |");
        md.AppendLine(Inv, $"| .NET | {RuntimeInformation.FrameworkDescription}, Server GC {System.Runtime.GCSettings.IsServerGC}, tiered PGO default |");
        md.AppendLine(Inv, $"| ONNX Runtime | {OrtEnv.Instance().GetVersionString()} (CPU execution provider, default intra-op threads; VAE threads stop spinning after a run, text encoder and UNet keep ONNX Runtime's spinning) |");
        md.AppendLine(Inv, $"| model | Shapes ({Path.GetFileName(modelDir)}): text encoder D = {sd.Info.HiddenSize}, {sd.Info.LatentChannels} latent channels, VAE factor {sd.Info.VaeSpatialFactor}, scheduler {sd.Info.SchedulerConfig.ClassName} |");
        md.AppendLine(Inv, $"| settings | {o.Size}×{o.Size}, {o.Steps} steps, guidance 7.5 (2N UNet batch); {o.Reps} interleaved repetitions per comparison after one warm-up (overhead and profile: ABBA order within each repetition), medians |");
        md.AppendLine();
    }

    // ---------------------------------------------------------------------------------------------------------------
    private sealed class LastStep : IProgress<DenoiseProgress>
    {
        public double UnetLoopMs { get; private set; }

        public void Report(DenoiseProgress value)
        {
            if (value.Step == value.TotalSteps)
                UnetLoopMs = value.Elapsed.TotalMilliseconds;
        }
    }

    private static void Overhead(StringBuilder md, MLContext ml, StableDiffusionModel sd, Options o)
    {
        md.AppendLine("### Overhead: ML.NET stages vs the same ONNX calls made directly");
        md.AppendLine();
        md.AppendLine("ML.NET = a cursor reading the `Image` column of EncodePrompt → DenoiseLatents → DecodeLatents over N rows "
            + "(every stage at BatchSize N, seeds from a column, each MLImage disposed). Raw = exactly the ONNX calls that run makes "
            + "(checked with the components' run counters): text encoder on the N prompts and on the empty prompt, "
            + $"{o.Steps}× UNet on the 2N guidance batch, VAE decoder on N latents, as `InferenceSession.Run` with OrtValues on prepared inputs, "
            + "same sessions. Shares are of the ML.NET time: each ONNX component's raw median time; *other* is the rest "
            + "(tokenizing, scheduler, guidance combine, finite checks, copies, image conversion, cursor). "
            + "*UNet loop in ML.NET* is the denoiser's own elapsed time at its last step (UNet calls plus scheduler and guidance).");
        md.AppendLine();
        md.AppendLine("| N | ML.NET ms | raw ms | ratio of medians | median of per-rep ratios | ratio of minima | text encoder | UNet loop | VAE | other | UNet loop in ML.NET ms | target ≤ 1.05 |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|");
        var raw = new List<string>();
        var jitLines = new List<string>();
        foreach (int n in new[] { 1, 4 })
        {
            var data = Rows(ml, n);
            var progress = new LastStep();
            var pipeline = Generation(ml, sd, data, n, o.Size, o.Steps, progress);
            using var direct = new RawOnnxPipeline(sd, n, o.Size, o.Steps);

            // Warm-up, and the call counts that make the comparison exact.
            long te0 = sd.TextEncoder.RunCount, u0 = sd.Unet.RunCount, v0 = sd.VaeDecoder.RunCount;
            Generate(pipeline, data);
            string counts = $"{sd.TextEncoder.RunCount - te0}/{sd.Unet.RunCount - u0}/{sd.VaeDecoder.RunCount - v0}";
            if (counts != $"2/{o.Steps}/1")
                throw new InvalidOperationException($"The ML.NET run made text encoder/UNet/VAE calls {counts}, not 2/{o.Steps}/1: the raw baseline would not be the same calls.");
            direct.Run();
            string jit = WarmJit(ml, sd, data, n, o, pipeline, direct);
            long jitBefore = System.Runtime.JitInfo.GetCompiledMethodCount();

            var s = new Samples();
            for (int rep = 0; rep < o.Reps; rep++)
            {
                // ABBA within each repetition (ML.NET, raw, raw, ML.NET; mirrored on odd repetitions), each figure the mean
                // of its two runs: cancels the order effect (the first run after a switch is slower here) and linear drift.
                double aMl = 0, aMlUnet = 0, aRaw = 0, aTe = 0, aUnet = 0, aVae = 0;
                void MlNet()
                {
                    aMl += Ms(() => Generate(pipeline, data)) / 2;

                    aMlUnet += progress.UnetLoopMs / 2;
                }
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
                s.Add("mlunet", aMlUnet);
                s.Add("raw", aRaw);
                s.Add("te", aTe);
                s.Add("unet", aUnet);
                s.Add("vae", aVae);
                s.Add("ratio", aMl / aRaw);
                Console.WriteLine(string.Create(Inv, $"overhead N={n} rep {rep}: ML.NET {s["ml"][^1]:F1} ms, raw {s["raw"][^1]:F1} ms, GCs {GC.CollectionCount(0)}/{GC.CollectionCount(1)}/{GC.CollectionCount(2)}"));
            }
            jitLines.Add($"N = {n}: {jit}; {System.Runtime.JitInfo.GetCompiledMethodCount() - jitBefore} methods compiled during the measured repetitions");
            double mlMs = s.Median("ml"), rawMs = s.Median("raw");
            double te = s.Median("te"), unet = s.Median("unet"), vae = s.Median("vae");
            double ratio = mlMs / rawMs;
            string Pct(double v) => F(100 * v / mlMs) + " %";
            md.AppendLine(Inv, $"| {n} | {F(mlMs)} | {F(rawMs)} | **{F(ratio, 3)}** | {F(s.Median("ratio"), 3)} | {F(s["ml"].Min() / s["raw"].Min(), 3)} | {Pct(te)} | {Pct(unet)} | {Pct(vae)} | {Pct(mlMs - te - unet - vae)} | {F(s.Median("mlunet"))} | {(ratio <= 1.05 ? "met" : "missed")} |");
            raw.Add($"- N = {n}: ML.NET ms [{Raw(s["ml"])}]; raw ms [{Raw(s["raw"])}] (text encoder [{Raw(s["te"], 2)}], UNet loop [{Raw(s["unet"])}], VAE [{Raw(s["vae"], 2)}]); "
                + $"per-repetition ratios [{Raw(s["ratio"], 3)}] (median {F(s.Median("ratio"), 3)}); UNet loop in ML.NET [{Raw(s["mlunet"])}]; calls per generation text encoder/UNet/VAE = {counts}.");
        }
        md.AppendLine();
        md.AppendLine("JIT warm-up before the repetitions (a long-running process's steady state): " + string.Join("; ", jitLines) + ".");
        md.AppendLine();
        md.AppendLine("Raw figures:");
        md.AppendLine();
        foreach (string line in raw)
            md.AppendLine(line);
        md.AppendLine();
    }

    /// <summary>
    /// Brings the ML.NET side to its steady-state code before timing: the stages' per-generation methods run once per
    /// generation, so after a few warm-up generations they are still tier-0 code that tiered compilation recompiles
    /// (on a background thread: on 2 cores it takes CPU from ONNX Runtime's threads) in the middle of the repetitions.
    /// The same stages at 128×128 run 80 generations (call counts are per method, not per size), then 512×512
    /// generations (ML.NET and raw) repeat until one compiles no method, at most 10.
    /// </summary>
    private static string WarmJit(MLContext ml, StableDiffusionModel sd, IDataView data, int n, Options o, ITransformer pipeline, RawOnnxPipeline direct)
    {
        long start = System.Runtime.JitInfo.GetCompiledMethodCount();
        var small = Generation(ml, sd, data, n, 128, o.Steps);
        for (int i = 0; i < 80; i++)
            Generate(small, data);
        int rounds = 0;
        long last = -1;
        while (rounds < 10 && last != 0)
        {
            System.Threading.Thread.Sleep(200); // the tiering delay (100 ms without new tier-0 code) and background compiles
            long c0 = System.Runtime.JitInfo.GetCompiledMethodCount();
            Generate(pipeline, data);
            direct.Run();
            last = System.Runtime.JitInfo.GetCompiledMethodCount() - c0;
            rounds++;
        }
        return $"80 generations at 128×128 and {rounds} at {o.Size}×{o.Size} compiled {System.Runtime.JitInfo.GetCompiledMethodCount() - start} methods"
            + (last == 0 ? ", the last none" : $", the last still {last}");
    }

    // ---------------------------------------------------------------------------------------------------------------
    private sealed class IdsRow
    {
        [VectorType(77)]
        [ColumnName("input_ids")]
        public int[] Ids { get; set; } = Array.Empty<int>();
    }

    private static void EncodeVsOnnxTransformer(StringBuilder md, MLContext ml, StableDiffusionModel sd, Options o)
    {
        int rows = o.EncodeRows, l = sd.Info.SequenceLength;
        var prompts = Prompts();
        var texts = Enumerable.Range(0, rows).Select(i => new PromptRow { Prompt = prompts[i % prompts.Length] }).ToArray();
        var ids = texts.Select(t =>
        {
            var a = new int[l];
            sd.Tokenizer.EncodeToFixedLength(t.Prompt, a);
            return new IdsRow { Ids = a };
        }).ToArray();
        var textData = ml.Data.LoadFromEnumerable(texts);
        var idData = ml.Data.LoadFromEnumerable(ids);
        string modelFile = sd.TextEncoder.Path;

        var encode8 = ml.Transforms.EncodePrompt(sd, new EncodePromptOptions { OutputColumnName = "Embeddings", InputColumnName = "Prompt", BatchSize = 8 }).Fit(textData);
        var encode1 = ml.Transforms.EncodePrompt(sd, new EncodePromptOptions { OutputColumnName = "Embeddings", InputColumnName = "Prompt", BatchSize = 1 }).Fit(textData);
        var onnx = ml.Transforms.ApplyOnnxModel(new[] { "last_hidden_state" }, new[] { "input_ids" }, modelFile,
            shapeDictionary: new Dictionary<string, int[]> { ["input_ids"] = new[] { 1, l } }, gpuDeviceId: null, fallbackToCpu: false).Fit(idData);

        double ReadAll(ITransformer t, IDataView data, string column) => Ms(() =>
        {
            var view = t.Transform(data);
            var c = view.Schema[column];
            using var cursor = view.GetRowCursor(new[] { c });
            var getter = cursor.GetGetter<VBuffer<float>>(c);
            VBuffer<float> value = default;
            int n = 0;
            while (cursor.MoveNext())
            {
                getter(ref value);
                n++;
            }
            if (n != rows || value.Length == 0)
                throw new InvalidOperationException($"Read {n} rows of {value.Length} values.");
        });

        var runs = new (string Name, Func<double> Run)[]
        {
            ("EncodePrompt BatchSize 8 (default)", () => ReadAll(encode8, textData, "Embeddings")),
            ("EncodePrompt BatchSize 1", () => ReadAll(encode1, textData, "Embeddings")),
            ("ApplyOnnxModel (OnnxTransformer)", () => ReadAll(onnx, idData, "last_hidden_state")),
        };
        foreach (var r in runs)
            r.Run(); // warm-up
        var s = new Samples();
        for (int rep = 0; rep < o.Reps; rep++)
            for (int k = 0; k < runs.Length; k++)
            {
                var r = runs[(k + rep) % runs.Length];
                s.Add(r.Name, r.Run());
            }
        double baseline = rows * 1000 / s.Median(runs[2].Name);
        md.AppendLine("### EncodePrompt vs ApplyOnnxModel on the same text encoder");
        md.AppendLine();
        md.AppendLine($"{rows} rows of distinct prompts; EncodePrompt reads the text (tokenizes, encodes prompt and empty prompt, outputs [2, 77, D]); "
            + "ApplyOnnxModel reads the same prompts' token ids (tokenized beforehand) into the same text_encoder/model.onnx and outputs last_hidden_state [77, D]. "
            + "A cursor reads every row's output column. Rows per second = rows ÷ median time.");
        md.AppendLine();
        md.AppendLine("| stage | median ms | rows/s | vs ApplyOnnxModel | raw ms |");
        md.AppendLine("|---|---|---|---|---|");
        foreach (var r in runs)
        {
            double rps = rows * 1000 / s.Median(r.Name);
            md.AppendLine(Inv, $"| {r.Name} | {F(s.Median(r.Name))} | {F(rps, 0)} | {F(rps / baseline, 2)}× | {Raw(s[r.Name])} |");
        }
        md.AppendLine();
        md.AppendLine(Inv, $"Target ≥ 2× (EncodePrompt at its default batch size): {(rows * 1000 / s.Median(runs[0].Name) / baseline >= 2 ? "met" : "missed")}.");
        md.AppendLine();
    }

    // ---------------------------------------------------------------------------------------------------------------
    private static void BatchScaling(StringBuilder md, MLContext ml, StableDiffusionModel sd, Options o)
    {
        int rows = o.ScalingRows;
        var data = Rows(ml, rows);
        int[] batches = { 1, 2, 4, 8 };
        var pipelines = batches.ToDictionary(b => b, b => Generation(ml, sd, data, b, o.Size, o.Steps));
        foreach (int b in batches)
            Generate(pipelines[b], data);
        var s = new Samples();
        int reps = Math.Max(3, o.Reps - 2);
        for (int rep = 0; rep < reps; rep++)
            for (int k = 0; k < batches.Length; k++)
            {
                int b = batches[(k + rep) % batches.Length];
                s.Add(b.ToString(Inv), Ms(() => Generate(pipelines[b], data)));
                Console.WriteLine(string.Create(Inv, $"scaling batch {b} rep {rep}: {s[b.ToString(Inv)][^1]:F0} ms"));
            }
        md.AppendLine("### Batch scaling");
        md.AppendLine();
        md.AppendLine(Inv, $"{rows} images of {o.Size}×{o.Size}, {o.Steps} steps, guidance 7.5 through the three stages, each at the given BatchSize; {reps} interleaved repetitions.");
        md.AppendLine();
        md.AppendLine("| BatchSize | median ms for the images | images/s (median) | vs BatchSize 1 | images/s (best rep) | raw ms |");
        md.AppendLine("|---|---|---|---|---|---|");
        double one = rows * 1000 / s.Median("1");
        foreach (int b in batches)
        {
            string key = b.ToString(Inv);
            double ips = rows * 1000 / s.Median(key);
            md.AppendLine(Inv, $"| {b} | {F(s.Median(key))} | {F(ips, 2)} | {F(ips / one, 2)}× | {F(rows * 1000 / s[key].Min(), 2)} | {Raw(s[key], 0)} |");
        }
        md.AppendLine();
    }

    // ---------------------------------------------------------------------------------------------------------------
    private static void Steps(StringBuilder md, MLContext ml, StableDiffusionModel sd, Options o)
    {
        md.AppendLine("### Managed allocations per denoising step (steady state)");
        md.AppendLine();
        md.AppendLine($"`GC.GetAllocatedBytesForCurrentThread()` around the steps of LatentDenoiser's second run ({o.Size}×{o.Size}, {o.Steps} steps, guidance, the stage's channel), "
            + "and around each part alone on the same shapes (averaged over the step count). Schedulers: a fresh clone per pass, as LatentDenoiser makes one per cursor (then reused for its batches: SetTimesteps resets it); second pass measured.");
        md.AppendLine();
        md.AppendLine("| N | whole step: median bytes (min–max over steps 2…" + o.Steps + ") | part | bytes per call |");
        md.AppendLine("|---|---|---|---|");
        var schedulerLines = new List<string>();
        foreach (int n in new[] { 1, 4 })
        {
            var r = StepAllocations.Measure(ml, sd, n, o.Size, o.Steps);
            string whole = $"{Median(r.WholeStep.Select(v => (double)v).ToArray()):F0} ({r.WholeStep.Min()}–{r.WholeStep.Max()})";
            bool first = true;
            foreach (var (name, bytes) in r.Parts)
            {
                md.AppendLine(Inv, $"| {(first ? n.ToString(Inv) : "")} | {(first ? whole : "")} | {name} | {bytes} |");
                first = false;
            }
            schedulerLines.Add($"| {n} | " + string.Join(" | ", r.Schedulers.Select(x => $"{x.Steady} ({x.Warmup})")) + " |");
            if (n == 1)
            {
                schedulerLines.Insert(0, "| N | " + string.Join(" | ", r.Schedulers.Select(x => x.Name)) + " |");
                schedulerLines.Insert(1, "|---|" + string.Concat(r.Schedulers.Select(_ => "---|")));
            }
        }
        md.AppendLine();
        md.AppendLine($"Scheduler ScaleModelInput + Step: largest bytes of one step from step {StepAllocations.SteadyFrom + 1} on (target 0), and in parentheses the total of steps 1…{StepAllocations.SteadyFrom} "
            + "(scratch buffers and multistep history, allocated once per scheduler clone, i.e. once per cursor):");
        md.AppendLine();
        foreach (string line in schedulerLines)
            md.AppendLine(line);
        md.AppendLine();
    }

    // ---------------------------------------------------------------------------------------------------------------
    private static void WorkingSet(StringBuilder md, Options o)
    {
        md.AppendLine("### Working set while generating " + o.MemoryImages + " images in a row");
        md.AppendLine();
        md.AppendLine($"A child process (`pipeline-memory`) loads the model and reads {o.MemoryImages} images of {o.MemorySize}×{o.MemorySize} "
            + $"({o.Steps} steps, guidance 7.5, DenoiseLatents BatchSize 4, other stages at their defaults) through one cursor, disposing each image; "
            + $"then, in the same process, twice more {o.MemoryImages} through new cursors of the same pipeline. Pass 1 (*cold*) includes the "
            + "runtime's one-time warm-up: tiered compilation recompiles the methods called once per batch after 30 calls, and with tiered PGO "
            + "once more after another 30 (so still during pass 2); pass 3 is the steady state. "
            + "Working set sampled after every batch of 4 images (resident set from /proc/self/statm, read without allocating; = `Process.WorkingSet64`); "
            + "growth = max after a batch − after batch 1; peak = `Process.PeakWorkingSet64` at the end of the pass; "
            + "allocated = `GC.GetTotalAllocatedBytes` during the pass; committed = `GC.GetGCMemoryInfo().TotalCommittedBytes` (as of the last GC). "
            + "Runs: default GC settings; the gen0 budget capped at 4 MiB (`DOTNET_GCgen0size=0x400000`), which separates garbage not yet "
            + "collected from memory that is kept; and, as a diagnosis of pass 1, tiered compilation off (`DOTNET_TieredCompilation=0`, "
            + "every method compiled once, fully optimised). The leak check: the managed heap that survives a full blocking collection "
            + "(`GC.GetTotalMemory(forceFullCollection: true)`) after batch 1 and at the end of the pass — memory the pipeline keeps, as opposed "
            + "to garbage not collected yet — and the working set right after that final collection.");
        md.AppendLine();
        md.AppendLine("| run | pass | images | seconds | WS after batch 1 MiB | max WS after a batch MiB | growth MiB | WS at end MiB | peak WS MiB | allocated MiB | committed after batch 1 / end MiB | gen0/1/2 GCs in the pass (with the forced one after batch 1) | retained after full GC: batch 1 / end KiB | retained growth KiB | WS after the final full GC MiB |");
        md.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        var traces = new List<string>();
        foreach (var (label, variable, value) in new[]
        {
            ("default GC", (string?)null, (string?)null),
            ("gen0 budget 4 MiB", "DOTNET_GCgen0size", "0x400000"),
            ("tiered compilation off", "DOTNET_TieredCompilation", "0"),
        })
        {
            var psi = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, UseShellExecute = false };
            if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet")
                psi.ArgumentList.Add(typeof(PipelineHarness).Assembly.Location);
            foreach (string a in new[] { "pipeline-memory", o.MemoryImages.ToString(Inv), o.MemorySize.ToString(Inv), o.Steps.ToString(Inv) })
                psi.ArgumentList.Add(a);
            if (variable is not null)
                psi.Environment[variable] = value;
            using var child = Process.Start(psi)!;
            string text = child.StandardOutput.ReadToEnd();
            child.WaitForExit();
            Console.Write(text);
            var results = text.Split('\n').Where(l => l.StartsWith("MEMORY ", StringComparison.Ordinal)).ToList();
            if (results.Count == 0)
            {
                md.AppendLine($"| {label} | the child process produced no result (exit code {child.ExitCode}) |");
                continue;
            }
            foreach (string result in results)
            {
                var f = result.Substring(7).Split(' ').Select(kv => kv.Split('=')).ToDictionary(kv => kv[0], kv => kv[1]);
                md.AppendLine($"| {label} | {f["pass"]} | {f["images"]} | {f["seconds"]} | {f["ws1"]} | {f["wsmax"]} | {f["growth"]} | {f["wsend"]} | {f["peak"]} | {f["allocated"]} | {f["committed1"]} / {f["committed"]} | {f["gcs"]} | {f["retained1"]} / {f["retained"]} | {f["retainedgrowth"]} | {f["wsgc"]} |");
                traces.Add($"- {label}, pass {f["pass"]}: " + f["trace"].Replace(",", ", ", StringComparison.Ordinal));
            }
        }
        md.AppendLine();
        md.AppendLine("Working set after every 5th batch (MiB):");
        md.AppendLine();
        foreach (string t in traces)
            md.AppendLine(t);
        md.AppendLine();
    }

    /// <summary>The child of <see cref="WorkingSet"/>: arguments images, size, steps. Runs a cold pass, then a warm one.</summary>
    public static int MemoryChild(string[] args)
    {
        int images = int.Parse(args[0], Inv), size = int.Parse(args[1], Inv), steps = int.Parse(args[2], Inv);
        const int batch = 4;
        var ml = new MLContext(seed: 1);
        using var sd = StableDiffusionModel.Load(ml, ShapesModel.EnsureBuilt());
        var data = Rows(ml, images);
        var pipeline = ml.Transforms.EncodePrompt(sd, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Steps = steps, GuidanceScale = 7.5f, Width = size, Height = size, SeedColumnName = "Seed", BatchSize = batch,
            }))
            .Append(ml.Transforms.DecodeLatents(sd, "Image", "Latents"))
            .Fit(data);
        using var self = Process.GetCurrentProcess();
        using var rss = new ResidentSetReader();
        long Ws() => rss.Read();
        static string Mib(long bytes) => (bytes / 1048576.0).ToString("F1", CultureInfo.InvariantCulture);
        static string Kib(long bytes) => (bytes / 1024.0).ToString("F0", CultureInfo.InvariantCulture);
        foreach (string pass in new[] { "1 (cold)", "2", "3" })
        {
            var trace = new List<long>();
            long committed1 = 0, retained1 = 0;
            int[] gcs0 = { GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2) };
            long allocated0 = GC.GetTotalAllocatedBytes(precise: true);
            var sw = Stopwatch.StartNew();
            int n = Generate(pipeline, data, row =>
            {
                // The leak check's collection after batch 1 comes before that batch's sample, so that the memory a full
                // collection itself commits (mark arrays, …) is in the baseline, not in the growth.
                if (row == batch)
                {
                    committed1 = GC.GetGCMemoryInfo().TotalCommittedBytes;
                    retained1 = GC.GetTotalMemory(forceFullCollection: true);
                }
                if (row % batch == 0)
                    trace.Add(Ws());
            });
            double seconds = sw.Elapsed.TotalSeconds;
            long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocated0;
            long end = Ws();
            // The pass's collections, the leak check's forced one after batch 1 included (a gen2, counted in all three).
            string gcs = $"{GC.CollectionCount(0) - gcs0[0]}/{GC.CollectionCount(1) - gcs0[1]}/{GC.CollectionCount(2) - gcs0[2]}";
            long retainedEnd = GC.GetTotalMemory(forceFullCollection: true);
            long wsAfterGc = Ws();
            self.Refresh();
            // Every 5th sample keeps the line short; the first and last are always there.
            var shown = trace.Where((_, i) => i % 5 == 0 || i == trace.Count - 1).Select(Mib);
            Console.WriteLine($"MEMORY pass={pass.Replace(" ", "\u00a0", StringComparison.Ordinal)} images={n} seconds={seconds.ToString("F1", CultureInfo.InvariantCulture)} ws1={Mib(trace[0])} wsmax={Mib(trace.Max())} "
                + $"growth={Mib(trace.Max() - trace[0])} wsend={Mib(end)} peak={Mib(self.PeakWorkingSet64)} allocated={Mib(allocated)} committed1={Mib(committed1)} "
                + $"retained1={Kib(retained1)} retained={Kib(retainedEnd)} retainedgrowth={Kib(retainedEnd - retained1)} wsgc={Mib(wsAfterGc)} "
                + $"committed={Mib(GC.GetGCMemoryInfo().TotalCommittedBytes)} gcs={gcs} trace={string.Join(",", shown)}");
        }
        return 0;
    }

    /// <summary>
    /// The resident set size (what <see cref="Process.WorkingSet64"/> reports on Linux) read from /proc/self/statm
    /// without allocating: <see cref="Process.Refresh"/> + WorkingSet64 parse /proc files into new strings, ~12 KB of
    /// garbage per sample, which would be part of the growth this section measures. Elsewhere: Environment.WorkingSet.
    /// </summary>
    private sealed class ResidentSetReader : IDisposable
    {
        private readonly FileStream? _statm;
        private readonly byte[] _buffer = new byte[128];
        private readonly long _pageSize = Environment.SystemPageSize;

        public ResidentSetReader()
        {
            try
            {
                _statm = new FileStream("/proc/self/statm", FileMode.Open, FileAccess.Read, FileShare.ReadWrite, bufferSize: 0);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }

        public long Read()
        {
            if (_statm is null)
                return Environment.WorkingSet;
            _statm.Position = 0;
            int n = _statm.Read(_buffer, 0, _buffer.Length);
            // "size resident shared text lib data dt", in pages: the second field.
            int i = 0;
            while (i < n && _buffer[i] != (byte)' ')
                i++;
            long pages = 0;
            for (i++; i < n && _buffer[i] >= (byte)'0' && _buffer[i] <= (byte)'9'; i++)
                pages = pages * 10 + (_buffer[i] - '0');
            return pages * _pageSize;
        }

        public void Dispose() => _statm?.Dispose();
    }

    private static void Write(string path, string section)
    {
        string block = Begin + "\n" + section.TrimEnd() + "\n" + End + "\n";
        string text;
        if (File.Exists(path))
        {
            string existing = File.ReadAllText(path);
            int b = existing.IndexOf(Begin, StringComparison.Ordinal), e = existing.IndexOf(End, StringComparison.Ordinal);
            text = b >= 0 && e > b
                ? existing.Substring(0, b) + block + existing.Substring(e + End.Length).TrimStart('\n')
                : existing.TrimEnd() + "\n\n" + block;
        }
        else
        {
            text = "# Benchmarks\n\nWhole pipeline (this file's tables below are written by it):\n\n```bash\n" + Command + "\n```\n\n" + block;
        }
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        File.WriteAllText(path, text);
    }
}
