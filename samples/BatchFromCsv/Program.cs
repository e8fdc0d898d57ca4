using System;
using System.CommandLine;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Threading;
using Microsoft.ML;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion;
using MLNet.Diffusion.Samples;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using Spectre.Console;

namespace BatchFromCsv;

/// <summary>
/// <c>dotnet run --project samples/BatchFromCsv -- --input samples/BatchFromCsv/prompts.csv --output-dir out</c>:
/// one PNG per CSV row, columns mapped by header name. Ctrl+C stops after the current batch, keeping every PNG written; a
/// second Ctrl+C cancels at once. Run it again to finish: rows whose PNG is already there with the same parameters are skipped.
/// </summary>
public static class Program
{
    private static readonly Option<FileInfo> s_input = new Option<FileInfo>("--input") { Description = "The prompts CSV: a header line naming its columns (Prompt required; " + string.Join(", ", PromptCsv.KnownColumns.Skip(1)) + " optional, any order, any case), then one row per image.", Required = true }.AcceptExistingOnly();
    private static readonly Option<string> s_outputDir = new("--output-dir") { Description = "Where the PNGs (row-0000.png, …) and summary.csv go.", Required = true, HelpName = "DIR" };
    private static readonly Option<string?> s_model = new("--model") { Description = "A Stable Diffusion ONNX folder; default: the embedded Shapes model.", HelpName = "DIR" };
    private static readonly Option<int> s_steps = Ranged(new Option<int>("--steps") { Description = "Denoising steps of rows without a Steps value.", DefaultValueFactory = _ => 20 }, 1, 1000);
    private static readonly Option<float> s_guidance = Ranged(new Option<float>("--guidance") { Description = "Guidance scale of rows without a Guidance value.", DefaultValueFactory = _ => 7.5f }, 0, 100);
    private static readonly Option<int> s_width = Multiple8(new Option<int>("--width") { Description = "Width of rows without a Width value.", DefaultValueFactory = _ => 512 });
    private static readonly Option<int> s_height = Multiple8(new Option<int>("--height") { Description = "Height of rows without a Height value.", DefaultValueFactory = _ => 512 });
    private static readonly Option<string?> s_scheduler = new Option<string?>("--scheduler") { Description = "Scheduler of rows without a Scheduler value; default: the model's.", HelpName = "NAME" }
        .AcceptOnlyFromAmong(SchedulerFactory.Names.ToArray());
    private static readonly Option<string> s_rng = new Option<string>("--rng")
    {
        Description = "The noise generator: library (this library's own), torch-cpu (torch.randn on a CPU generator per row, as diffusers with a list of generators) or philox (AUTOMATIC1111's NV/GPU source).",
        DefaultValueFactory = _ => "library",
    }.AcceptOnlyFromAmong("library", "torch-cpu", "philox");
    private static readonly Option<string> s_promptSyntax = new Option<string>("--prompt-syntax")
    {
        Description = "How prompts of rows without a PromptSyntax value are read: plain, a1111 ((red:1.3), [red:blue:0.5], AND …) or compel (red++, .blend() …); docs/prompt-syntax.md.",
        DefaultValueFactory = _ => "plain",
    }.AcceptOnlyFromAmong("plain", "a1111", "compel");
    private static readonly Option<string> s_emphasis = new Option<string>("--emphasis")
    {
        Description = "A1111's emphasis mode for rows read with a1111 syntax; no-norm for the Shapes model, whose text states average to 0.",
        DefaultValueFactory = _ => "original",
    }.AcceptOnlyFromAmong("original", "no-norm", "ignore", "none");
    private static readonly Option<int> s_batchSize = Ranged(new Option<int>("--batch-size") { Description = "Rows per ONNX call.", DefaultValueFactory = _ => 4 }, 1, 64);

    /// <summary>The command (its options; response files: <c>BatchFromCsv @args.rsp</c>).</summary>
    internal static RootCommand Command { get; } = new("Generates one PNG per row of a prompts CSV; run it again to finish an interrupted run.")
    {
        s_input, s_outputDir, s_model, s_steps, s_guidance, s_width, s_height, s_scheduler, s_batchSize, s_rng, s_promptSyntax, s_emphasis,
    };

    /// <summary>Entry point: 0 done, 1 failure or failed rows, 2 bad arguments, 130 stopped by Ctrl+C.</summary>
    public static int Main(string[] args)
    {
        var parse = Command.Parse(args);
        if (parse.Errors.Count > 0)
        {
            Console.Error.WriteLine($"error: {parse.Errors[0].Message} (see --help)");
            return 2;
        }
        if (parse.Action is not null)
            return parse.Invoke(new InvocationConfiguration { Output = Console.Out, Error = Console.Error }); // --help, --version
        var settings = new BatchSettings(parse.GetRequiredValue(s_input).FullName, parse.GetRequiredValue(s_outputDir), parse.GetValue(s_model), parse.GetValue(s_steps),
            parse.GetValue(s_guidance), parse.GetValue(s_width), parse.GetValue(s_height), parse.GetValue(s_scheduler), parse.GetValue(s_batchSize),
            new NoiseOptions { Generator = parse.GetValue(s_rng) switch { "torch-cpu" => NoiseGenerator.TorchCpu, "philox" => NoiseGenerator.Philox, _ => NoiseGenerator.Library } },
            parse.GetValue(s_promptSyntax) switch
            {
                "a1111" => MLNet.Diffusion.Prompting.PromptSyntax.A1111,
                "compel" => MLNet.Diffusion.Prompting.PromptSyntax.Compel,
                _ => MLNet.Diffusion.Prompting.PromptSyntax.Plain,
            },
            parse.GetValue(s_emphasis) switch
            {
                "no-norm" => MLNet.Diffusion.Prompting.PromptEmphasis.NoNorm,
                "ignore" => MLNet.Diffusion.Prompting.PromptEmphasis.Ignore,
                "none" => MLNet.Diffusion.Prompting.PromptEmphasis.None,
                _ => MLNet.Diffusion.Prompting.PromptEmphasis.Original,
            });

        int stops = 0;
        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            if (Interlocked.Increment(ref stops) == 1)
                Console.Error.WriteLine("\nStopping after the current batch (Ctrl+C again to cancel now)…");
            else
                cancel.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            var console = SampleConsole.Create(Console.Error);
            long rows = PromptCsv.CountRows(settings.Input);
            using var model = StableDiffusionModel.Load(new MLContext(seed: 0), settings.Model ?? ShapesModel.EnsureBuilt());
            BatchResult result = null!;
            console.Progress()
                .AutoClear(false)
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new ElapsedTimeColumn())
                .Start(context =>
                {
                    // A bar for the rows (with the run's ETA) and one for the steps of the batch in progress.
                    var rowTask = context.AddTask("rows", maxValue: Math.Max(1, rows));
                    var stepTask = context.AddTask("steps", maxValue: settings.Steps);
                    var steps = new Progress(stepTask);
                    result = BatchJob.Run(settings, model, Console.Out, () => Volatile.Read(ref stops) > 0, steps, cancel.Token, _ => rowTask.Increment(1));
                });
            WriteSummary(console, result);
            return result.FailedCount > 0 ? 1 : stops > 0 ? 130 : 0;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("\ncancelled; PNGs already written are kept (run again to finish)");
            return 130;
        }
        catch (Exception e)
        {
            // Any failure (bad model folder, bad config value, bad CSV header, unreadable file) is one line, never a stack trace.
            return SampleConsole.Fail(e);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static void WriteSummary(IAnsiConsole console, BatchResult result)
    {
        var table = new Table().AddColumn("written").AddColumn("already there").AddColumn("failed");
        table.AddRow(result.Written.ToString(CultureInfo.InvariantCulture), result.Skipped.ToString(CultureInfo.InvariantCulture), result.FailedCount.ToString(CultureInfo.InvariantCulture));
        console.Write(table);
        if (result.FailedCount == 0)
            return;
        const int shown = 20;
        var failed = new Table().AddColumn("line").AddColumn("row").AddColumn("column").AddColumn("problem");
        foreach (var f in result.Failed.Take(shown))
            failed.AddRow(f.Line.ToString(CultureInfo.InvariantCulture), f.Index.ToString(CultureInfo.InvariantCulture), Markup.Escape(f.Column), Markup.Escape(f.Problem));
        console.Write(failed);
        if (result.FailedCount > shown)
            console.WriteLine($"… and {result.FailedCount - shown} more failed row(s)");
        string more = result.FailedCount > result.Failed.Count ? ", …" : string.Empty;
        console.WriteLine($"Failed rows: {string.Join(", ", result.Failed.Select(f => f.Index.ToString(CultureInfo.InvariantCulture)))}{more}");
    }

    private static Option<T> Ranged<T>(Option<T> option, double min, double max)
    {
        option.Validators.Add(r =>
        {
            double v = Convert.ToDouble(r.GetValueOrDefault<T>(), CultureInfo.InvariantCulture);
            if (!(v >= min && v <= max))
                r.AddError(string.Format(CultureInfo.InvariantCulture, "{0} must be in [{1}, {2}], not {3}", option.Name, min, max, v));
        });
        return option;
    }

    private static Option<int> Multiple8(Option<int> option)
    {
        option.Validators.Add(r =>
        {
            int v = r.GetValueOrDefault<int>();
            if (v < 8 || v > 4096 || v % 8 != 0)
                r.AddError($"{option.Name} must be a multiple of 8 in [8, 4096], not {v}");
        });
        return option;
    }

    /// <summary>Feeds the denoising loop's reports (on the generating thread) to the "steps" bar.</summary>
    private sealed class Progress : IProgress<DenoiseProgress>
    {
        private readonly ProgressTask _task;

        public Progress(ProgressTask task) => _task = task;

        public void Report(DenoiseProgress value)
        {
            _task.MaxValue = value.TotalSteps;
            _task.Value = value.Step;
            _task.Description = $"steps (rows {value.FirstRow}–{value.FirstRow + value.RowCount - 1} of the run)";
        }
    }
}
