using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Text;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion;
using MLNet.Diffusion.Imaging;

namespace BatchFromCsv;

/// <summary>One CSV row: <c>Prompt,NegativePrompt,Seed</c> with a header line.</summary>
public sealed class PromptRow
{
    /// <summary>The prompt.</summary>
    [LoadColumn(0)]
    public string Prompt { get; set; } = string.Empty;

    /// <summary>The negative prompt (may be empty).</summary>
    [LoadColumn(1)]
    public string NegativePrompt { get; set; } = string.Empty;

    /// <summary>The seed.</summary>
    [LoadColumn(2)]
    public long Seed { get; set; }
}

/// <summary>Settings of a batch run.</summary>
internal sealed record BatchSettings(string Input, string OutputDirectory, string? Model, int Steps, float Guidance, int Width, int Height, string? Scheduler, int BatchSize);

/// <summary>
/// Generates one PNG per CSV row (generation parameters in the PNG text chunk) and a summary.csv. A stop request ends the
/// run after the batch in progress: every row of that batch is written, the next batch is never started.
/// </summary>
internal static class BatchJob
{
    public static int Run(BatchSettings s, StableDiffusionModel model, TextWriter output, Func<bool> stopRequested, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromTextFile<PromptRow>(s.Input, separatorChar: ',', hasHeader: true, allowQuoting: true, trimWhitespace: true);
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", nameof(PromptRow.Prompt), nameof(PromptRow.NegativePrompt))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Steps = s.Steps,
                GuidanceScale = s.Guidance,
                Width = s.Width,
                Height = s.Height,
                Scheduler = s.Scheduler,
                SeedColumnName = nameof(PromptRow.Seed),
                BatchSize = s.BatchSize,
                Progress = progress,
                CancellationToken = cancellationToken,
            }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { BatchSize = s.BatchSize }));
        var images = pipeline.Fit(data).Transform(data);
        string scheduler = s.Scheduler ?? model.Info.SchedulerConfig.ClassName ?? "default";

        Directory.CreateDirectory(s.OutputDirectory);
        var summary = new StringBuilder("File,Prompt,NegativePrompt,Seed\n");
        var schema = images.Schema;
        using var cursor = images.GetRowCursor(new[] { schema["Image"], schema[nameof(PromptRow.Prompt)], schema[nameof(PromptRow.NegativePrompt)], schema[nameof(PromptRow.Seed)] });
        var image = cursor.GetGetter<MLImage>(schema["Image"]);
        var prompt = cursor.GetGetter<ReadOnlyMemory<char>>(schema[nameof(PromptRow.Prompt)]);
        var negative = cursor.GetGetter<ReadOnlyMemory<char>>(schema[nameof(PromptRow.NegativePrompt)]);
        var seed = cursor.GetGetter<long>(schema[nameof(PromptRow.Seed)]);
        int written = 0;
        try
        {
            while (cursor.MoveNext())
            {
                MLImage img = null!;
                ReadOnlyMemory<char> p = default, n = default;
                long sd = 0;
                image(ref img);
                prompt(ref p);
                negative(ref n);
                seed(ref sd);
                string file = $"row-{cursor.Position:D4}.png";
                PngFile.Save(img, Path.Combine(s.OutputDirectory, file), new Dictionary<string, string>
                {
                    ["prompt"] = p.ToString(),
                    ["negative_prompt"] = n.ToString(),
                    ["seed"] = sd.ToString(CultureInfo.InvariantCulture),
                    ["steps"] = s.Steps.ToString(CultureInfo.InvariantCulture),
                    ["guidance"] = s.Guidance.ToString(CultureInfo.InvariantCulture),
                    ["scheduler"] = scheduler,
                    ["size"] = $"{s.Width}x{s.Height}",
                    ["model"] = model.Directory,
                    ["software"] = "MLNet.Diffusion",
                });
                img.Dispose();
                summary.Append(CultureInfo.InvariantCulture, $"{file},{Csv(p.ToString())},{Csv(n.ToString())},{sd}\n");
                written++;
                // Rows are computed a batch at a time: stop only once the batch in progress is written.
                bool endOfBatch = (cursor.Position + 1) % s.BatchSize == 0;
                if (endOfBatch && stopRequested())
                {
                    output.WriteLine($"Stopped after {written} row(s) at the end of a batch.");
                    break;
                }
            }
        }
        finally
        {
            File.WriteAllText(Path.Combine(s.OutputDirectory, "summary.csv"), summary.ToString());
        }
        output.WriteLine($"{written} image(s) and summary.csv written to {s.OutputDirectory}");
        return written;
    }

    private static string Csv(string value) => value.Contains(',') || value.Contains('"') ? "\"" + value.Replace("\"", "\"\"") + "\"" : value;
}
