using System;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.ML;
using MLNet.Diffusion.Benchmarks.Pipeline;
using MLNet.Diffusion.Shapes;
using static MLNet.Diffusion.Benchmarks.Pipeline.BenchSupport;

namespace MLNet.Diffusion.Benchmarks.ScaleOut;

/// <summary>
/// Issue 19, point 5 (the in-process half): rows per second of text to image on the Shapes model through
/// <c>RunOnDevices</c> on 1, 2 and 3 CPU instances in one process, beside the plain single-device pipeline (the pool's
/// overhead at one instance). Every model is loaded and warmed first; the configurations then run in turn within each
/// repetition, and the median of the repetitions is reported.
/// <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- devices [--rows N] [--reps N] [--size PX] [--steps N] [--batch N] [--out FILE]</c>
/// </summary>
internal static class DevicesHarness
{
    public static int Run(string[] args)
    {
        int rows = 24, reps = 3, size = 64, steps = 10, batch = 2;
        string? output = null;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value.");
            switch (args[i])
            {
                case "--rows": rows = int.Parse(Next(), Inv); break;
                case "--reps": reps = int.Parse(Next(), Inv); break;
                case "--size": size = int.Parse(Next(), Inv); break;
                case "--steps": steps = int.Parse(Next(), Inv); break;
                case "--batch": batch = int.Parse(Next(), Inv); break;
                case "--out": output = Next(); break;
                default: throw new ArgumentException($"Unknown option '{args[i]}'. Options: --rows N, --reps N, --size PX, --steps N, --batch N, --out FILE.");
            }
        }

        string folder = ShapesModel.EnsureBuilt();
        var ml = new MLContext(seed: 1);
        var data = Rows(ml, rows);
        var warm = Rows(ml, batch);
        using var single = StableDiffusionModel.Load(ml, folder);
        var plain = Generation(ml, single, data, batch, size, steps);
        // The same pipeline with every core's thread set explicitly: ONNX Runtime's default costs less CPU per row here.
        using var threaded = StableDiffusionModel.Load(ml, folder, new StableDiffusionModelOptions { IntraOpNumThreads = Environment.ProcessorCount });
        var plainThreaded = Generation(ml, threaded, data, batch, size, steps);
        var instances = new[] { 1, 2, 3 };
        var models = instances.Select(n => MultiDeviceModel.Load(ml, folder, DeviceList.Cpu(n))).ToArray();
        try
        {
            var pools = models.Select(m => (ITransformer)ml.Transforms.RunOnDevices(m, sd => PipelineOn(ml, sd, batch, size, steps)).Fit(data)).ToArray();
            // Warm every session (first runs allocate ONNX Runtime's arenas).
            Generate(plain, warm);
            Generate(plainThreaded, warm);
            foreach (var pool in pools)
                Generate(pool, Rows(ml, batch * 3));

            var samples = new Samples();
            for (int r = 0; r < reps; r++)
            {
                Measure(samples, "plain", plain, data);
                Measure(samples, "plain-threads", plainThreaded, data);
                for (int k = 0; k < instances.Length; k++)
                    Measure(samples, $"pool{instances[k]}", pools[k], data);
                Console.Error.WriteLine($"rep {r + 1}/{reps} done");
            }

            string cpu = File.Exists("/proc/cpuinfo")
                ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU"
                : "unknown CPU";
            // The load average says how much of the cores other processes took during the run (a shared machine).
            string load = File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
            var md = new StringBuilder();
            md.AppendLine(Inv, $"Machine: {Environment.ProcessorCount} logical processors ({cpu}); Shapes model, {size}×{size}, {steps} DDIM steps, guidance 7.5, "
                + $"{rows} rows, every stage {batch} rows per call, median of {reps} interleaved repetitions; load average at the end {load}.");
            md.AppendLine();
            md.AppendLine("| configuration | threads per session | ms (median) | rows/s | rows/s ratio to 1 instance | CPU ms per row | CPU ratio to 1 instance | runs (ms) |");
            md.AppendLine("|---|---|---|---|---|---|---|---|");
            double one = samples.Median("pool1"), oneCpu = samples.Median("pool1|cpu");
            void Line(string label, string threads, string name)
            {
                double ms = samples.Median(name), cpuMs = samples.Median(name + "|cpu");
                md.AppendLine(Inv, $"| {label} | {threads} | {F(ms)} | {F(rows / (ms / 1000), 2)} | **{F(one / ms, 3)}** | {F(cpuMs / rows, 2)} | {F(cpuMs / oneCpu, 3)} | {Raw(samples[name])} |");
            }
            Line("single-device pipeline (no pool)", "ONNX Runtime's default", "plain");
            Line("single-device pipeline (no pool)", Environment.ProcessorCount.ToString(Inv), "plain-threads");
            for (int k = 0; k < instances.Length; k++)
                Line($"RunOnDevices, {instances[k]} CPU instance(s)", models[k].Devices.IntraOpNumThreads?.ToString(Inv) ?? "ONNX Runtime's default", $"pool{instances[k]}");
            Console.WriteLine(md.ToString());
            if (output is not null)
                File.WriteAllText(output, md.ToString());
            return 0;
        }
        finally
        {
            foreach (var model in models)
                model.Dispose();
        }
    }

    /// <summary>
    /// Wall time, and the process's CPU time (all threads, spinning included): on a shared machine the wall time follows
    /// the other processes' load, while CPU time per row says what the configuration itself costs.
    /// </summary>
    private static void Measure(Samples samples, string name, ITransformer pipeline, IDataView data)
    {
        var process = System.Diagnostics.Process.GetCurrentProcess();
        process.Refresh();
        var cpu = process.TotalProcessorTime;
        samples.Add(name, Ms(() => Generate(pipeline, data)));
        process.Refresh();
        samples.Add(name + "|cpu", (process.TotalProcessorTime - cpu).TotalMilliseconds);
    }

    private static IEstimator<ITransformer> PipelineOn(MLContext ml, StableDiffusionModel sd, int batch, int size, int steps) =>
        ml.Transforms.EncodePrompt(sd, new EncodePromptOptions { OutputColumnName = "Embeddings", InputColumnName = "Prompt", BatchSize = batch })
            .Append(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Steps = steps, GuidanceScale = 7.5f, Width = size, Height = size, SeedColumnName = "Seed", BatchSize = batch,
            }))
            .Append(ml.Transforms.DecodeLatents(sd, "Image", "Latents", new DecodeLatentsOptions { BatchSize = batch }));
}
