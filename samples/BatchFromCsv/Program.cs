using System;
using System.Globalization;
using System.IO;
using System.Threading;
using Microsoft.ML;
using MLNet.Diffusion;
using MLNet.Diffusion.Shapes;

namespace BatchFromCsv;

/// <summary>
/// <c>dotnet run --project samples/BatchFromCsv -- --input samples/BatchFromCsv/prompts.csv --output-dir out</c>:
/// one PNG per CSV row. Ctrl+C stops after the current batch, keeping every PNG written; a second Ctrl+C cancels at once.
/// </summary>
public static class Program
{
    /// <summary>Entry point: 0 done, 1 failure, 2 bad arguments, 130 stopped by Ctrl+C.</summary>
    public static int Main(string[] args)
    {
        BatchSettings settings;
        try
        {
            settings = Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            Console.Error.WriteLine("usage: BatchFromCsv --input prompts.csv --output-dir DIR [--model DIR] [--steps 20] [--guidance 7.5] [--width 512] [--height 512] [--scheduler NAME] [--batch-size 4]");
            return 2;
        }

        int stops = 0;
        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            if (Interlocked.Increment(ref stops) == 1)
                Console.Error.WriteLine("\nStopping after the current batch (Ctrl+C again to cancel now)…");
            else
                cancel.Cancel();
        };
        try
        {
            using var model = StableDiffusionModel.Load(new MLContext(seed: 0), settings.Model ?? ShapesModel.EnsureBuilt());
            var bar = new ProgressBar();
            BatchJob.Run(settings, model, Console.Out, () => Volatile.Read(ref stops) > 0, bar, cancel.Token);
            bar.Clear();
            return stops > 0 ? 130 : 0;
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("\ncancelled; PNGs already written are kept");
            return 130;
        }
        catch (Exception e) when (e is InvalidOperationException or IOException or ArgumentException or FormatException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static BatchSettings Parse(string[] args)
    {
        string? input = null, output = null, model = null, scheduler = null;
        int steps = 20, width = 512, height = 512, batch = 4;
        float guidance = 7.5f;
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{name} needs a value");
            int Int(int min, int max)
            {
                string v = Value();
                return int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int r) && r >= min && r <= max
                    ? r : throw new ArgumentException($"{name} must be an integer in [{min}, {max}], not '{v}'");
            }
            switch (name)
            {
                case "--input": input = Value(); break;
                case "--output-dir": output = Value(); break;
                case "--model": model = Value(); break;
                case "--scheduler": scheduler = Value(); break;
                case "--steps": steps = Int(1, 1000); break;
                case "--width": width = Int(8, 4096); break;
                case "--height": height = Int(8, 4096); break;
                case "--batch-size": batch = Int(1, 64); break;
                case "--guidance":
                    string g = Value();
                    if (!float.TryParse(g, NumberStyles.Float, CultureInfo.InvariantCulture, out guidance) || !(guidance >= 0 && guidance <= 100))
                        throw new ArgumentException($"--guidance must be a number in [0, 100], not '{g}'");
                    break;
                default: throw new ArgumentException($"unknown argument '{name}'");
            }
        }
        if (input is null || output is null)
            throw new ArgumentException("--input and --output-dir are required");
        if (!File.Exists(input))
            throw new ArgumentException($"input file '{input}' does not exist");
        if (width % 8 != 0 || height % 8 != 0)
            throw new ArgumentException("--width and --height must be multiples of 8");
        return new BatchSettings(input, output, model, steps, guidance, width, height, scheduler, batch);
    }

    private sealed class ProgressBar : IProgress<DenoiseProgress>
    {
        private readonly bool _interactive = !Console.IsErrorRedirected;

        public void Report(DenoiseProgress p)
        {
            if (!_interactive)
                return;
            int filled = p.Step * 30 / p.TotalSteps;
            Console.Error.Write($"\r[{new string('#', filled)}{new string('.', 30 - filled)}] rows {p.FirstRow}–{p.FirstRow + p.RowCount - 1} step {p.Step}/{p.TotalSteps}");
        }

        public void Clear()
        {
            if (_interactive)
                Console.Error.Write("\r" + new string(' ', 79) + "\r");
        }
    }
}
