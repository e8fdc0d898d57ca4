using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Threading.Tasks;
using Microsoft.ML;
using MLNet.Diffusion.Benchmarks.Pipeline;
using MLNet.Diffusion.Orleans;
using MLNet.Diffusion.Shapes;
using Orleans.Hosting;
using Orleans.TestingHost;

namespace MLNet.Diffusion.Benchmarks.Orleans;

/// <summary>
/// Issue 19's scale-out benchmark: rows per second of the same job run locally (<see cref="LocalDiffusionJob"/>, no
/// cluster), on an in-process Orleans cluster of one silo and on one of two silos (Microsoft.Orleans.TestingHost, all in
/// this process, one CPU worker per silo), interleaved repetitions, medians. The overhead of the cluster path is the
/// one-silo time over the local time (target ≤ 1.05).
/// <code>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- scale-out [--rows 48] [--size 512] [--steps 20] [--shard 8] [--reps 3]</code>
/// </summary>
internal static class ScaleOutHarness
{
    private static CultureInfo Inv => CultureInfo.InvariantCulture;

    public static int Run(string[] args)
    {
        int Arg(string name, int value) => Array.IndexOf(args, name) is int i and >= 0 && i + 1 < args.Length ? int.Parse(args[i + 1], Inv) : value;
        int rows = Arg("--rows", 48), size = Arg("--size", 512), steps = Arg("--steps", 20), shard = Arg("--shard", 8), reps = Arg("--reps", 3);
        return RunAsync(rows, size, steps, shard, reps).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(int rowCount, int size, int steps, int shardSize, int reps)
    {
        string folder = ShapesModel.EnsureBuilt();
        using var model = StableDiffusionModel.Load(new MLContext(1), folder);
        var ml = model.MLContext;
        var sample = ml.Data.LoadFromEnumerable(new[] { new { Prompt = "a red circle", NegativePrompt = string.Empty, Seed = 1L } });
        var definition = DiffusionPipelineDefinition.FromTransformer(ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Steps = steps, Width = size, Height = size, SeedColumnName = "Seed", BatchSize = 4 }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { BatchSize = 4 }))
            .Fit(sample));
        string[] prompts = BenchSupport.Prompts();
        var rows = Enumerable.Range(0, rowCount).Select(i => new DiffusionJobRow { Prompt = prompts[i % prompts.Length], Seed = 1000 + i }).ToArray();
        string root = Path.Combine(Path.GetTempPath(), "mlnet-scale-out-" + Guid.NewGuid().ToString("N")[..8]);
        int run = 0;
        DiffusionJob NewJob() => DiffusionJob.Create("bench-" + run++.ToString(Inv), definition, rows, Path.Combine(root, run.ToString(Inv)), shardSize: shardSize);

        Console.Error.WriteLine("starting the clusters (1 and 2 silos)…");
        var one = await Start(1);
        var two = await Start(2);
        try
        {
            async Task<double> Local() => await Seconds(() => LocalDiffusionJob.RunAsync(NewJob(), model));
            async Task<double> Cluster(TestCluster c) => await Seconds(() => c.Client.RunDiffusionJobAsync(NewJob(), pollInterval: TimeSpan.FromMilliseconds(20)));
            // Warm-up: each worker loads its model and JIT compiles on its first shard.
            await Local();
            await Cluster(one);
            await Cluster(two);
            var (local, c1, c2) = (new List<double>(), new List<double>(), new List<double>());
            for (int r = 0; r < reps; r++)
            {
                // ABC, BCA, CAB: no configuration always runs first.
                var order = new Func<Task>[] { async () => local.Add(await Local()), async () => c1.Add(await Cluster(one)), async () => c2.Add(await Cluster(two)) };
                for (int k = 0; k < 3; k++)
                    await order[(r + k) % 3]();
                Console.Error.WriteLine($"rep {r + 1}/{reps}: local {local[^1]:F2} s, 1 silo {c1[^1]:F2} s, 2 silos {c2[^1]:F2} s");
            }
            Report(rowCount, size, steps, shardSize, reps, folder, local, c1, c2);
            return 0;
        }
        finally
        {
            await one.StopAllSilosAsync();
            await two.StopAllSilosAsync();
            await one.DisposeAsync();
            await two.DisposeAsync();
            Directory.Delete(root, true);
        }
    }

    private static async Task<TestCluster> Start(int silos)
    {
        var builder = new TestClusterBuilder((short)silos);
        builder.Options.ConfigureFileLogging = false; // no logs/ folder in the working directory
        builder.AddSiloBuilderConfigurator<BenchSiloConfigurator>();
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return cluster;
    }

    private static async Task<double> Seconds(Func<Task<DiffusionJobStatus>> run)
    {
        var sw = Stopwatch.StartNew();
        var status = await run();
        sw.Stop();
        if (!status.IsCompleted || status.Written != status.TotalRows)
            throw new InvalidOperationException($"The job did not write every row: {status}");
        return sw.Elapsed.TotalSeconds;
    }

    private static void Report(int rows, int size, int steps, int shard, int reps, string folder, List<double> local, List<double> c1, List<double> c2)
    {
        double l = BenchSupport.Median(local), o = BenchSupport.Median(c1), t = BenchSupport.Median(c2);
        string Raw(List<double> v) => string.Join(", ", v.Select(x => x.ToString("F2", Inv)));
        Console.WriteLine($"| | |");
        Console.WriteLine($"|---|---|");
        Console.WriteLine($"| date (UTC) | {DateTime.UtcNow:yyyy-MM-dd HH:mm} |");
        Console.WriteLine($"| machine | {Environment.ProcessorCount} logical cores visible, {RuntimeInformation.OSDescription} {RuntimeInformation.OSArchitecture}, {RuntimeInformation.FrameworkDescription} |");
        Console.WriteLine($"| model | Shapes ({Path.GetFileName(folder)}), CPU execution provider, default intra-op threads |");
        Console.WriteLine($"| job | {rows} rows, {size}×{size}, {steps} steps, batch 4, shards of {shard}; {reps} interleaved repetitions after one warm-up each, medians |");
        Console.WriteLine();
        Console.WriteLine("| run | seconds (median) | rows/s | vs local |");
        Console.WriteLine("|---|---|---|---|");
        Console.WriteLine($"| local (`LocalDiffusionJob`, no cluster) | {l:F2} | {rows / l:F2} | 1.000 |");
        Console.WriteLine($"| 1 silo (in-process TestCluster) | {o:F2} | {rows / o:F2} | **{o / l:F3}** |");
        Console.WriteLine($"| 2 silos (in-process TestCluster) | {t:F2} | {rows / t:F2} | {t / l:F3} |");
        Console.WriteLine();
        // The machine's load moves all three of a repetition together: the per-repetition ratio is the steadier figure.
        var r1 = local.Zip(c1, (a, b) => b / a).ToList();
        var r2 = local.Zip(c2, (a, b) => b / a).ToList();
        Console.WriteLine($"Median of per-repetition ratios to local: 1 silo {BenchSupport.Median(r1):F3}, 2 silos {BenchSupport.Median(r2):F3}.");
        Console.WriteLine();
        Console.WriteLine($"Raw seconds: local [{Raw(local)}]; 1 silo [{Raw(c1)}]; 2 silos [{Raw(c2)}].");
    }
}

/// <summary>A benchmark silo: one CPU worker with default options, polling every 20 ms.</summary>
public sealed class BenchSiloConfigurator : ISiloConfigurator
{
    /// <inheritdoc/>
    public void Configure(ISiloBuilder siloBuilder)
        => siloBuilder.AddDiffusionWorkers(o => o.IdlePollInterval = TimeSpan.FromMilliseconds(20));
}
