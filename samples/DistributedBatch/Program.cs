using System;
using System.Collections.Generic;
using System.CommandLine;
using System.Globalization;
using System.IO;
using System.Net;
using System.Threading;
using System.Threading.Tasks;
using CsvHelper;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MLNet.Diffusion;
using MLNet.Diffusion.Orleans;
using MLNet.Diffusion.Samples;
using MLNet.Diffusion.Shapes;
using Orleans;
using Orleans.Hosting;

namespace DistributedBatch;

/// <summary>
/// A two-silo cluster on localhost and a client that sends it a CSV of prompts (README "Scale out on Orleans"):
/// <code>
/// dotnet run --project samples/DistributedBatch -- silo --port 11111 --gateway-port 30000
/// dotnet run --project samples/DistributedBatch -- silo --port 11112 --gateway-port 30001
/// dotnet run --project samples/DistributedBatch -- run --input samples/DistributedBatch/prompts.csv --output-dir out --job demo
/// </code>
/// Each silo runs one worker per device on its own warm model; the client's job is split into shards that the workers
/// pull; the PNGs land in the output folder keyed by row. Run the client again with the same job id to finish an
/// interrupted job: rows already written are skipped.
/// </summary>
public static class Program
{
    private static readonly Option<int> s_port = new("--port") { Description = "The silo's port (silo to silo).", DefaultValueFactory = _ => 11111 };
    private static readonly Option<int> s_gatewayPort = new("--gateway-port") { Description = "The silo's gateway port (clients connect here).", DefaultValueFactory = _ => 30000 };
    private static readonly Option<int> s_primaryPort = new("--primary-port") { Description = "The port of the first silo, which the others join (localhost clustering).", DefaultValueFactory = _ => 11111 };
    private static readonly Option<int[]> s_cuda = new("--cuda") { Description = "CUDA device ids, one worker each (e.g. --cuda 0 1; an id may repeat): DeviceList.Cuda(ids).", AllowMultipleArgumentsPerToken = true };
    private static readonly Option<int> s_cpu = new("--cpu") { Description = "Without --cuda: CPU workers sharing the cores (DeviceList.Cpu(n)).", DefaultValueFactory = _ => 1 };
    private static readonly Option<FileInfo> s_input = new Option<FileInfo>("--input") { Description = "The prompts CSV: Prompt required; NegativePrompt, Seed, Steps, Guidance, Scheduler, Width, Height optional.", Required = true }.AcceptExistingOnly();
    private static readonly Option<string> s_outputDir = new("--output-dir") { Description = "The folder the silos write the PNGs to (row-000000.png, …): on a real cluster, a shared folder.", Required = true, HelpName = "DIR" };
    private static readonly Option<string> s_job = new("--job") { Description = "The job's id; the same id resumes a job.", DefaultValueFactory = _ => "job" };
    private static readonly Option<string?> s_model = new("--model") { Description = "The model folder, as every silo sees it; default: the Shapes model (built on first use).", HelpName = "DIR" };
    private static readonly Option<int> s_steps = new("--steps") { Description = "Denoising steps of rows without a Steps value.", DefaultValueFactory = _ => 20 };
    private static readonly Option<float> s_guidance = new("--guidance") { Description = "Guidance scale of rows without a Guidance value.", DefaultValueFactory = _ => 7.5f };
    private static readonly Option<int> s_width = new("--width") { Description = "Width of rows without a Width value.", DefaultValueFactory = _ => 512 };
    private static readonly Option<int> s_height = new("--height") { Description = "Height of rows without a Height value.", DefaultValueFactory = _ => 512 };
    private static readonly Option<int> s_shardSize = new("--shard-size") { Description = "Rows per shard (the unit of leasing and retry).", DefaultValueFactory = _ => 8 };
    private static readonly Option<int[]> s_gateways = new("--gateways") { Description = "The silos' gateway ports.", DefaultValueFactory = _ => new[] { 30000, 30001 }, AllowMultipleArgumentsPerToken = true };

    /// <summary>The commands: <c>silo</c> and <c>run</c>.</summary>
    internal static RootCommand Command { get; } = new("Generates a CSV of prompts on an Orleans cluster: start silos, then run a job.")
    {
        new Command("silo", "Starts a silo with one diffusion worker per device (Ctrl+C stops it).") { s_port, s_gatewayPort, s_primaryPort, s_cuda, s_cpu, s_model },
        new Command("run", "Sends a CSV of prompts to the cluster as a job and waits for it (Ctrl+C cancels the job).")
        {
            s_input, s_outputDir, s_job, s_model, s_steps, s_guidance, s_width, s_height, s_shardSize, s_gateways,
        },
    };

    /// <summary>Entry point: 0 done, 1 failure or failed rows, 2 bad arguments, 130 canceled.</summary>
    public static async Task<int> Main(string[] args)
    {
        var parse = Command.Parse(args);
        if (parse.Errors.Count > 0)
        {
            Console.Error.WriteLine($"error: {parse.Errors[0].Message} (see --help)");
            return 2;
        }
        if (parse.CommandResult.Command.Name is not ("silo" or "run"))
            return parse.Invoke(new InvocationConfiguration { Output = Console.Out, Error = Console.Error }); // --help, --version
        try
        {
            return parse.CommandResult.Command.Name == "silo" ? await RunSiloAsync(parse) : await RunJobAsync(parse);
        }
        catch (Exception e)
        {
            return SampleConsole.Fail(e);
        }
    }

    private static async Task<int> RunSiloAsync(ParseResult parse)
    {
        // The model folder each silo has locally (here: the Shapes model, built once per machine).
        string model = parse.GetValue(s_model) ?? ShapesModel.EnsureBuilt();
        // The silo's devices, one worker each: the same DeviceList a model in one process is loaded on (MultiDeviceModel).
        var devices = parse.GetValue(s_cuda) is { Length: > 0 } ids ? DeviceList.Cuda(ids) : DeviceList.Cpu(parse.GetValue(s_cpu));
        int port = parse.GetValue(s_port), gateway = parse.GetValue(s_gatewayPort);
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning).AddFilter("MLNet.Diffusion.Orleans", LogLevel.Information);
        builder.UseOrleans(silo => silo
            // A real cluster: a clustering provider instead (UseAdoNetClustering, UseAzureStorageClustering, Redis, Kubernetes).
            .UseLocalhostClustering(port, gateway, new IPEndPoint(IPAddress.Loopback, parse.GetValue(s_primaryPort)))
            .AddDiffusionWorkers(devices));
        using var host = builder.Build();
        Console.WriteLine($"silo on port {port} (gateway {gateway}), {devices.Count} worker(s) on {devices}, model folder {model}; Ctrl+C stops it");
        await host.RunAsync();
        return 0;
    }

    private static async Task<int> RunJobAsync(ParseResult parse)
    {
        string model = Path.GetFullPath(parse.GetValue(s_model) ?? ShapesModel.EnsureBuilt());
        var rows = ReadCsv(parse.GetRequiredValue(s_input).FullName);
        // The pipeline as data (its persisted form): no model is loaded here, the silos load it.
        var definition = new DiffusionPipelineDefinition
        {
            ModelDirectory = model,
            Stages = new DiffusionStageDefinition[]
            {
                new EncodePromptStageDefinition { InputColumnName = "Prompt", NegativePromptColumnName = "NegativePrompt" },
                new DenoiseLatentsStageDefinition
                {
                    SeedColumnName = "Seed",
                    Steps = parse.GetValue(s_steps),
                    GuidanceScale = parse.GetValue(s_guidance),
                    Width = parse.GetValue(s_width),
                    Height = parse.GetValue(s_height),
                },
                new DecodeLatentsStageDefinition(),
            },
        };
        var job = DiffusionJob.Create(parse.GetValue(s_job)!, definition, rows, Path.GetFullPath(parse.GetRequiredValue(s_outputDir)), model, parse.GetValue(s_shardSize));

        var builder = Host.CreateApplicationBuilder();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.UseOrleansClient(client => client.UseLocalhostClustering(parse.GetValue(s_gateways)!));
        using var host = builder.Build();
        await host.StartAsync();
        var cluster = host.Services.GetRequiredService<IClusterClient>();

        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            Console.Error.WriteLine("\ncanceling the job (each worker finishes the row it is on)…");
            cancel.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            var status = await cluster.RunDiffusionJobAsync(job, new ConsoleProgress(), cancellationToken: cancel.Token);
            foreach (var f in status.Failures)
                Console.WriteLine($"row {f.RowIndex} failed: {f.Message}");
            Console.WriteLine($"job {job.JobId}: {status.Written} written, {status.Skipped} already there, {status.FailedCount} failed{(status.IsCanceled ? ", canceled" : string.Empty)}; PNGs in {job.SinkLocation}");
            await host.StopAsync();
            return status.IsCanceled ? 130 : status.FailedCount > 0 ? 1 : 0;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>A line per poll that changed the counts (on the polling thread, so lines keep their order).</summary>
    private sealed class ConsoleProgress : IProgress<DiffusionJobStatus>
    {
        private long _shown = -1;

        public void Report(DiffusionJobStatus s)
        {
            if (s.Done == _shown)
                return;
            _shown = s.Done;
            Console.WriteLine($"{s.Done}/{s.TotalRows} rows: {s.Written} written, {s.Skipped} already there, {s.FailedCount} failed; {s.ActiveLeases} shard(s) running");
        }
    }

    /// <summary>
    /// The CSV's rows (columns by header name, any case). A value that does not parse stops here with its line and column.
    /// (A table already in an <c>IDataView</c> goes to <c>DiffusionJob.Create(id, definition, data, …)</c> directly; a CSV is
    /// read here rather than by ML.NET's text loader, which maps columns by position and reads a bad number as a missing
    /// value without a word — the problem BatchFromCsv's reader solves the same way.)
    /// </summary>
    private static List<DiffusionJobRow> ReadCsv(string path)
    {
        using var csv = CsvReader.FromFile(path, new CsvReaderOptions { Separator = ',', HasHeader = true, TrimWhitespace = true, TrackLineNumbers = true }, FileOptions.SequentialScan);
        var columns = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < csv.Headers.Count; i++)
            columns[csv.Headers[i].Trim()] = i;
        if (!columns.ContainsKey("Prompt"))
            throw new InvalidDataException($"'{path}': the header has no Prompt column.");
        var rows = new List<DiffusionJobRow>();
        while (csv.Read())
        {
            string? Cell(string column) => columns.TryGetValue(column, out int i) && i < csv.FieldCount && csv.GetString(i) is { Length: > 0 } v ? v : null;
            T? Parse<T>(string column) where T : struct, IParsable<T>
                => Cell(column) is not { } text ? null
                    : T.TryParse(text, CultureInfo.InvariantCulture, out var v) ? v
                    : throw new InvalidDataException($"'{path}' line {csv.LineNumber}, column {column}: '{text}' is not a number.");
            rows.Add(new DiffusionJobRow
            {
                Prompt = Cell("Prompt") ?? string.Empty,
                NegativePrompt = Cell("NegativePrompt") ?? string.Empty,
                Seed = Parse<long>("Seed") ?? rows.Count, // no seed: the row's index
                Steps = Parse<int>("Steps"),
                GuidanceScale = Parse<float>("Guidance"),
                Scheduler = Cell("Scheduler"),
                Width = Parse<int>("Width"),
                Height = Parse<int>("Height"),
            });
        }
        return rows;
    }
}
