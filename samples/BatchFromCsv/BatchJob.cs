using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Randomness;

namespace BatchFromCsv;

/// <summary>Settings of a batch run; Steps … Scheduler are the defaults of the CSV columns of the same names.</summary>
/// <param name="Noise">The stages' noise (<c>--rng</c>/<c>--reproduce</c>); null for the library's generator.</param>
/// <param name="PromptSyntax">How prompts are read (<c>--prompt-syntax</c>) in rows without a PromptSyntax value.</param>
/// <param name="Emphasis">A1111's emphasis mode (<c>--emphasis</c>) for rows read with A1111 syntax.</param>
internal sealed record BatchSettings(string Input, string OutputDirectory, string? Model, int Steps, float Guidance, int Width, int Height, string? Scheduler, int BatchSize, NoiseOptions? Noise = null,
    MLNet.Diffusion.Prompting.PromptSyntax PromptSyntax = MLNet.Diffusion.Prompting.PromptSyntax.Plain,
    MLNet.Diffusion.Prompting.PromptEmphasis Emphasis = MLNet.Diffusion.Prompting.PromptEmphasis.Original)
{
    /// <summary>The noise options every seeded stage gets.</summary>
    public NoiseOptions NoiseOrDefault => Noise ?? NoiseOptions.Default;
}

/// <summary>
/// What a run did: PNGs written, rows skipped because their PNG was already there, rows that failed, and the first
/// <see cref="BatchJob.MaxReportedFailures"/> of those (in CSV order; a file of bad rows must not fill the memory either).
/// </summary>
internal sealed record BatchResult(long Written, long Skipped, long FailedCount, IReadOnlyList<CsvRowError> Failed, bool Stopped);

/// <summary>
/// Generates one PNG per CSV row (generation parameters in the PNG text chunk) and a summary.csv.
/// <list type="bullet">
/// <item>The CSV is streamed: rows are read one at a time and generated in runs of consecutive rows with the same settings
/// (at most <see cref="RunRows"/> rows, a multiple of the batch size), each run an <c>IDataView</c> of its own
/// (<c>LoadFromEnumerable</c>), so memory does not grow with the file.</item>
/// <item>A row whose PNG already exists with the same parameters (its text chunk) is skipped: a restarted run does
/// nothing twice. PNGs are written to a temporary file and renamed, so a killed run leaves no half-written PNG.</item>
/// <item>A stop request ends the run after the batch in progress: every row of that batch is written, the next batch is
/// never started.</item>
/// <item>A row with a bad value is reported (line, row, column) and the run goes on.</item>
/// </list>
/// </summary>
internal static class BatchJob
{
    private const string PartialSuffix = ".partial";

    /// <summary>How many failed rows a result lists (all are counted).</summary>
    public const int MaxReportedFailures = 1000;

    /// <summary>The most rows one run holds (rounded down to a multiple of the batch size, at least one batch).</summary>
    public const int RunRows = 64;

    public static BatchResult Run(BatchSettings s, StableDiffusionModel model, TextWriter output, Func<bool> stopRequested, IProgress<DenoiseProgress>? progress,
        CancellationToken cancellationToken, Action<CsvPrompt>? rowDone = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var csv = PromptCsv.Open(s.Input, s);
        Directory.CreateDirectory(s.OutputDirectory);
        foreach (string stale in Directory.EnumerateFiles(s.OutputDirectory, "*" + PartialSuffix))
            File.Delete(stale); // left by a run killed while writing

        var job = new Job(s, model, output, stopRequested, progress, cancellationToken, rowDone);
        string summaryPath = Path.Combine(s.OutputDirectory, "summary.csv");
        using (job.Summary = new StreamWriter(summaryPath + PartialSuffix))
        {
            job.Summary.Write("File,Prompt,NegativePrompt,Seed\n");
            try
            {
                job.ReadAll(csv);
            }
            finally
            {
                job.Summary.Flush();
            }
        }
        File.Move(summaryPath + PartialSuffix, summaryPath, overwrite: true);

        if (job.Stopped)
            output.WriteLine($"Stopped after {job.Written} row(s) at the end of a batch.");
        output.WriteLine($"{job.Written} image(s) written, {job.Skipped} already there, {job.FailedCount} row(s) failed; summary.csv in {s.OutputDirectory}");
        return new BatchResult(job.Written, job.Skipped, job.FailedCount, job.Failed, job.Stopped);
    }

    /// <summary>The PNG text entries of a row: what it was generated with, compared on restart.</summary>
    internal static Dictionary<string, string> Parameters(CsvPrompt p, string scheduler, string modelDirectory, NoiseOptions? noise = null,
        MLNet.Diffusion.Prompting.PromptEmphasis emphasis = MLNet.Diffusion.Prompting.PromptEmphasis.Original)
    {
        var r = p.Settings;
        noise ??= NoiseOptions.Default;
        var text = new Dictionary<string, string>
        {
            ["prompt"] = p.Row.Prompt,
            ["negative_prompt"] = p.Row.NegativePrompt,
            ["seed"] = p.Row.Seed.ToString(CultureInfo.InvariantCulture),
            ["steps"] = r.Steps.ToString(CultureInfo.InvariantCulture),
            ["guidance"] = r.Guidance.ToString(CultureInfo.InvariantCulture),
            ["scheduler"] = scheduler,
            ["size"] = string.Create(CultureInfo.InvariantCulture, $"{r.Width}x{r.Height}"),
            ["model"] = modelDirectory,
            ["software"] = "MLNet.Diffusion",
        };
        if (r.InitImage)
        {
            text["init_image"] = p.Row.InitImagePath;
            text["strength"] = r.Strength!.Value.ToString(CultureInfo.InvariantCulture);
        }
        if (r.Mask)
            text["mask"] = p.Row.MaskPath;
        // AUTOMATIC1111's 'parameters' chunk (its PNG Info, ComfyUI and image sites read it), with the noise generator as RNG.
        bool known = A1111Samplers.TryGetSampler(scheduler, out string sampler, out string scheduleType);
        bool a1111 = r.Syntax == MLNet.Diffusion.Prompting.PromptSyntax.A1111;
        text[GenerationParameters.PngKeyword] = new GenerationParameters
        {
            Prompt = p.Row.Prompt,
            NegativePrompt = p.Row.NegativePrompt,
            Steps = r.Steps,
            Sampler = known ? sampler : null,
            ScheduleType = known ? scheduleType : null,
            CfgScale = r.Guidance,
            Seed = p.Row.Seed,
            Width = r.Width,
            Height = r.Height,
            DenoisingStrength = r.InitImage ? r.Strength : null,
            EtaNoiseSeedDelta = noise.BatchPolicy == NoiseBatchPolicy.GeneratorPerRow ? noise.StepNoiseSeedOffset : null,
            Rng = noise.Generator switch { NoiseGenerator.TorchCpu => "CPU", NoiseGenerator.Philox => "NV", _ => "MLNet" },
            Extra = Extra(known ? null : scheduler, r.Syntax),
            // Prompt syntax (issue 15): A1111's Emphasis key when not Original, and this library's "Prompt syntax" key when not plain.
            Emphasis = a1111 ? emphasis : null,
            PromptSyntax = r.Syntax,
        }.ToInfotext();
        return text;
    }

    /// <summary>
    /// The infotext's extra pairs: the scheduler when A1111 has no name for it, and with A1111 syntax its <c>Pad conds: True</c>
    /// (EncodePrompt pads the prompt and the negative prompt to the same chunk count, as A1111 with that setting on).
    /// </summary>
    private static KeyValuePair<string, string>[] Extra(string? scheduler, MLNet.Diffusion.Prompting.PromptSyntax syntax)
    {
        var extra = new List<KeyValuePair<string, string>>(2);
        if (scheduler is not null)
            extra.Add(new("Scheduler", scheduler));
        if (syntax == MLNet.Diffusion.Prompting.PromptSyntax.A1111)
            extra.Add(new("Pad conds", "True"));
        return extra.ToArray();
    }

    /// <summary>One run's state; rows flow through <see cref="ReadAll"/> and are generated a run at a time.</summary>
    private sealed class Job
    {
        private readonly BatchSettings _s;
        private readonly StableDiffusionModel _model;
        private readonly TextWriter _output;
        private readonly Func<bool> _stopRequested;
        private readonly IProgress<DenoiseProgress>? _progress;
        private readonly CancellationToken _cancellationToken;
        private readonly Action<CsvPrompt>? _rowDone;
        private readonly int _runRows;
        private readonly List<(CsvPrompt Prompt, Dictionary<string, string> Text)> _run = new();
        private readonly Dictionary<RowSettings, ITransformer> _pipelines = new();

        public Job(BatchSettings s, StableDiffusionModel model, TextWriter output, Func<bool> stopRequested, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken, Action<CsvPrompt>? rowDone)
        {
            (_s, _model, _output, _stopRequested, _progress, _cancellationToken, _rowDone) = (s, model, output, stopRequested, progress, cancellationToken, rowDone);
            _runRows = Math.Max(1, RunRows / s.BatchSize) * s.BatchSize;
        }

        public StreamWriter Summary { get; set; } = null!;

        public long Written { get; private set; }

        public long Skipped { get; private set; }

        public long FailedCount { get; private set; }

        public List<CsvRowError> Failed { get; } = new();

        public bool Stopped { get; private set; }

        public void ReadAll(PromptCsv csv)
        {
            while (!Stopped && csv.Read(out var prompt, out var error))
            {
                _cancellationToken.ThrowIfCancellationRequested();
                if (error is not null)
                {
                    if (FailedCount++ < MaxReportedFailures)
                        Failed.Add(error);
                    _output.WriteLine($"failed: {error}");
                    continue;
                }
                var p = prompt!;
                var text = Parameters(p, p.Settings.Scheduler ?? _model.Info.SchedulerConfig.ClassName ?? "default", _model.Directory, _s.Noise, _s.Emphasis);
                if (AlreadyWritten(Path.Combine(_s.OutputDirectory, p.FileName), text))
                {
                    Generate(); // rows before it first, so that summary.csv keeps the CSV's order
                    if (Stopped)
                        break;
                    AddToSummary(p);
                    Skipped++;
                    _rowDone?.Invoke(p);
                    continue;
                }
                if (_run.Count > 0 && _run[0].Prompt.Settings != p.Settings)
                    Generate();
                if (Stopped)
                    break;
                _run.Add((p, text));
                if (_run.Count == _runRows)
                    Generate();
            }
            if (!Stopped)
                Generate();
        }

        /// <summary>True when the PNG exists and carries exactly these parameters (an unreadable PNG is made again).</summary>
        private static bool AlreadyWritten(string path, Dictionary<string, string> text)
        {
            if (!File.Exists(path))
                return false;
            IReadOnlyDictionary<string, string> existing;
            try
            {
                existing = PngFile.ReadText(path);
            }
            catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or UnauthorizedAccessException)
            {
                return false;
            }
            return existing.Count == text.Count && text.All(kv => existing.TryGetValue(kv.Key, out string? v) && v == kv.Value);
        }

        /// <summary>Generates the pending run through the pipeline fitted for its settings, writing each PNG atomically.</summary>
        private void Generate()
        {
            if (_run.Count == 0)
                return;
            var ml = _model.MLContext;
            var data = ml.Data.LoadFromEnumerable(_run.Select(r => r.Prompt.Row).ToList());
            var settings = _run[0].Prompt.Settings;
            if (!_pipelines.TryGetValue(settings, out var transformer))
            {
                if (_pipelines.Count >= 16)
                    _pipelines.Clear(); // many different settings: keep the cache small
                transformer = Pipeline(settings).Fit(data);
                _pipelines[settings] = transformer;
            }
            var images = transformer.Transform(data);
            using var cursor = images.GetRowCursor(new[] { images.Schema["Image"] });
            var image = cursor.GetGetter<MLImage>(images.Schema["Image"]);
            int i = 0;
            while (cursor.MoveNext())
            {
                var (prompt, text) = _run[i];
                MLImage img = null!;
                image(ref img);
                string path = Path.Combine(_s.OutputDirectory, prompt.FileName);
                PngFile.Save(img, path + PartialSuffix, text);
                File.Move(path + PartialSuffix, path, overwrite: true);
                img.Dispose();
                AddToSummary(prompt);
                Written++;
                _rowDone?.Invoke(prompt);
                i++;
                // Rows are computed a batch at a time: stop only once the batch in progress is written.
                bool endOfBatch = i % _s.BatchSize == 0 || i == _run.Count;
                if (endOfBatch && _stopRequested())
                {
                    Stopped = true;
                    break;
                }
            }
            _run.Clear();
        }

        private IEstimator<ITransformer> Pipeline(RowSettings r)
        {
            var ml = _model.MLContext;
            // Prompt syntax (issue 15): A1111's [a:b:n], [a|b] and AND need the schedule column between the stages (SD 1.x/2.x).
            string? schedule = r.Syntax == MLNet.Diffusion.Prompting.PromptSyntax.A1111 && _model.Info.Kind == ModelKind.StableDiffusion ? "PromptSchedule" : null;
            var chain = new EstimatorChain<ITransformer>()
                .Append<ITransformer>(ml.Transforms.EncodePrompt(_model, new EncodePromptOptions
                {
                    OutputColumnName = "Embeddings",
                    InputColumnName = nameof(PromptRow.Prompt),
                    NegativePromptColumnName = nameof(PromptRow.NegativePrompt),
                    PromptSyntax = r.Syntax,
                    Emphasis = _s.Emphasis,
                    PromptScheduleColumnName = schedule,
                    ScheduleSteps = schedule is null ? null : MLNet.Diffusion.Prompting.A1111SamplerSteps.ScheduleSteps(r.Scheduler, _model.Info.SchedulerConfig, r.Steps),
                }));
            if (r.InitImage)
            {
                chain = chain
                    .Append<ITransformer>(ml.Transforms.LoadImages("InitImage", imageFolder: null, inputColumnName: nameof(PromptRow.InitImagePath)))
                    .Append<ITransformer>(ml.Transforms.EncodeImage(_model, "InitialLatents", "InitImage",
                        new EncodeImageOptions { Width = r.Width, Height = r.Height, SeedColumnName = nameof(PromptRow.Seed), BatchSize = _s.BatchSize, Noise = _s.NoiseOrDefault }));
            }
            if (r.Mask)
            {
                chain = chain
                    .Append<ITransformer>(ml.Transforms.LoadImages("MaskImage", imageFolder: null, inputColumnName: nameof(PromptRow.MaskPath)))
                    .Append<ITransformer>(ml.Transforms.PrepareInpainting(_model, new PrepareInpaintingOptions
                    {
                        ImageColumnName = "InitImage",
                        MaskColumnName = "MaskImage",
                        Width = r.Width,
                        Height = r.Height,
                        SeedColumnName = nameof(PromptRow.Seed),
                        Noise = _s.NoiseOrDefault,
                    }));
            }
            return chain
                .Append<ITransformer>(ml.Transforms.DenoiseLatents(_model, "Latents", "Embeddings", new DenoiseLatentsOptions
                {
                    Steps = r.Steps,
                    GuidanceScale = r.Guidance,
                    Width = r.Width,
                    Height = r.Height,
                    Scheduler = r.Scheduler,
                    SeedColumnName = nameof(PromptRow.Seed),
                    InitialLatentsColumnName = r.InitImage ? "InitialLatents" : null,
                    Strength = r.Strength ?? 1f,
                    MaskColumnName = r.Mask ? "LatentMask" : null,
                    MaskedImageLatentsColumnName = r.Mask ? "MaskedImageLatents" : null,
                    BatchSize = _s.BatchSize,
                    Noise = _s.NoiseOrDefault,
                    Progress = _progress,
                    CancellationToken = _cancellationToken,
                    PromptScheduleColumnName = schedule,
                }))
                .Append<ITransformer>(ml.Transforms.DecodeLatents(_model, "Image", "Latents", new DecodeLatentsOptions { BatchSize = _s.BatchSize }));
        }

        private void AddToSummary(CsvPrompt p)
            => Summary.Write(string.Create(CultureInfo.InvariantCulture, $"{p.FileName},{Csv(p.Row.Prompt)},{Csv(p.Row.NegativePrompt)},{p.Row.Seed}\n"));

        private static string Csv(string value) => value.AsSpan().IndexOfAny(",\"\r\n") >= 0 ? "\"" + value.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : value;
    }
}
