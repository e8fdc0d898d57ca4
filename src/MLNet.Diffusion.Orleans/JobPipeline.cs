using System;
using System.Collections.Generic;
using System.Globalization;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Orleans;

/// <summary>
/// Runs rows of a job through its pipeline on one loaded model into a sink: the one code path of both a worker's shard
/// and a local run (<see cref="LocalDiffusionJob"/>), so the cluster's bytes are the local run's bytes. Rows whose result
/// is in the sink are skipped; the rest are grouped by their settings, each group one <c>IDataView</c> through the
/// definition's stages (mini-batched as the definition says: a row's image does not depend on its batch). A group that
/// fails is run again a row at a time, so a bad row is reported with its index and the others are written.
/// </summary>
internal sealed class JobPipeline
{
    private readonly DiffusionPipelineDefinition _definition;
    private readonly StableDiffusionModel _model;
    private readonly EncodePromptStageDefinition _encode;
    private readonly DenoiseLatentsStageDefinition _denoise;
    private readonly DecodeLatentsStageDefinition _decode;
    private readonly SchemaDefinition _inputSchema;

    /// <param name="definition">The job's pipeline (already pointed at the local model folder).</param>
    /// <param name="model">The model loaded from that folder, on this worker's device.</param>
    public JobPipeline(DiffusionPipelineDefinition definition, StableDiffusionModel model)
    {
        (_encode, _denoise, _decode) = Check(definition);
        _definition = definition;
        _model = model;
        _inputSchema = SchemaDefinition.Create(typeof(InputRow));
        _inputSchema[nameof(InputRow.Prompt)].ColumnName = _encode.InputColumnName;
        _inputSchema[nameof(InputRow.Seed)].ColumnName = _denoise.SeedColumnName!;
        if (_encode.NegativePromptColumnName is { } negative)
            _inputSchema[nameof(InputRow.NegativePrompt)].ColumnName = negative;
    }

    /// <summary>
    /// Checks that a definition can run as a job: it encodes a prompt, denoises with a seed column and a per-row noise
    /// generator (so a row's image depends on its own seed only, whatever shard or batch it lands in), and decodes.
    /// </summary>
    /// <exception cref="ArgumentException">A stage is missing or would make a row depend on its neighbours.</exception>
    public static (EncodePromptStageDefinition, DenoiseLatentsStageDefinition, DecodeLatentsStageDefinition) Check(DiffusionPipelineDefinition definition)
    {
        ArgumentNullException.ThrowIfNull(definition);
        var encode = definition.Stages.OfType<EncodePromptStageDefinition>().FirstOrDefault()
            ?? throw new ArgumentException("A diffusion job's pipeline needs an EncodePrompt stage (it reads the rows' prompts).", nameof(definition));
        var denoise = definition.Stages.OfType<DenoiseLatentsStageDefinition>().FirstOrDefault()
            ?? throw new ArgumentException("A diffusion job's pipeline needs a DenoiseLatents stage.", nameof(definition));
        var decode = definition.Stages.OfType<DecodeLatentsStageDefinition>().LastOrDefault()
            ?? throw new ArgumentException("A diffusion job's pipeline needs a DecodeLatents stage (the sink stores images).", nameof(definition));
        if (denoise.SeedColumnName is null)
            throw new ArgumentException("A diffusion job's DenoiseLatents stage must read a seed column (SeedColumnName): without one a row's seed is its position in the data view, which differs between shards.", nameof(definition));
        if (denoise.Noise.BatchPolicy != NoiseBatchPolicy.GeneratorPerRow)
            throw new ArgumentException($"A diffusion job's DenoiseLatents stage must draw noise with NoiseBatchPolicy.GeneratorPerRow (it has {denoise.Noise.BatchPolicy}): otherwise a row's image depends on the batch it runs in.", nameof(definition));
        return (encode, denoise, decode);
    }

    /// <summary>Runs rows into the sink, reporting each row's outcome as soon as it has one.</summary>
    /// <param name="jobId">The job's id.</param>
    /// <param name="firstRow">The index of <paramref name="rows"/>[0].</param>
    /// <param name="rows">The rows.</param>
    /// <param name="sink">The job's sink.</param>
    /// <param name="report">Receives outcomes; returns false to stop (job canceled or lease lost).</param>
    /// <param name="cancellationToken">Stops the run between denoising steps.</param>
    /// <returns>True when every row got an outcome; false when stopped.</returns>
    public async Task<bool> RunAsync(string jobId, long firstRow, IReadOnlyList<DiffusionJobRow> rows, IDiffusionResultSink sink,
        Func<IReadOnlyList<DiffusionRowOutcome>, Task<bool>> report, CancellationToken cancellationToken)
    {
        var skipped = new List<DiffusionRowOutcome>();
        var groups = new Dictionary<DiffusionJobRow, List<long>>(SettingsComparer.Instance);
        for (int i = 0; i < rows.Count; i++)
        {
            long index = firstRow + i;
            if (await sink.ContainsAsync(index, cancellationToken).ConfigureAwait(false))
                skipped.Add(new DiffusionRowOutcome(index, DiffusionRowState.Skipped));
            else if (groups.TryGetValue(rows[i], out var group))
                group.Add(index);
            else
                groups.Add(rows[i], new List<long> { index });
        }
        if (skipped.Count > 0 && !await report(skipped).ConfigureAwait(false))
            return false;
        foreach (var group in groups.Values)
        {
            if (!await RunGroupAsync(jobId, firstRow, rows, group, sink, report, cancellationToken).ConfigureAwait(false))
                return false;
        }
        return true;
    }

    /// <summary>One group of rows with equal settings; on an error, each row not yet written alone.</summary>
    private async Task<bool> RunGroupAsync(string jobId, long firstRow, IReadOnlyList<DiffusionJobRow> rows, List<long> indices, IDiffusionResultSink sink,
        Func<IReadOnlyList<DiffusionRowOutcome>, Task<bool>> report, CancellationToken cancellationToken)
    {
        int done = 0;
        try
        {
            var settings = rows[(int)(indices[0] - firstRow)];
            var denoise = _denoise with
            {
                Steps = settings.Steps ?? _denoise.Steps,
                GuidanceScale = settings.GuidanceScale ?? _denoise.GuidanceScale,
                Scheduler = settings.Scheduler is { } name ? SchedulerFactory.GetOptions(name) : _denoise.Scheduler,
                Width = settings.Width ?? _denoise.Width,
                Height = settings.Height ?? _denoise.Height,
            };
            var stages = new DiffusionPipelineDefinition
            {
                ModelDirectory = _definition.ModelDirectory,
                Stages = _definition.Stages.Select(s => ReferenceEquals(s, _denoise) ? denoise : s).ToArray(),
            };
            var chain = stages.Build(_model, cancellationToken: cancellationToken);
            var ml = _model.MLContext;
            var input = ml.Data.LoadFromEnumerable(indices.Select(i => InputRow.From(rows[(int)(i - firstRow)])).ToArray(), _inputSchema);
            var output = chain.Transform(input);
            var column = output.Schema[_decode.OutputColumnName];
            using var cursor = output.GetRowCursor(new[] { column });
            var getter = cursor.GetGetter<MLImage>(column);
            string scheduler = settings.Scheduler ?? SchedulerName(denoise.Scheduler);
            while (cursor.MoveNext())
            {
                long index = indices[done];
                var row = rows[(int)(index - firstRow)];
                MLImage image = null!;
                getter(ref image);
                using (image)
                {
                    var text = new Dictionary<string, string>(StringComparer.Ordinal)
                    {
                        ["job"] = jobId,
                        ["row"] = index.ToString(CultureInfo.InvariantCulture),
                    };
                    await sink.WriteAsync(new DiffusionRowResult(jobId, index, image, Parameters(row, denoise, scheduler), text), cancellationToken).ConfigureAwait(false);
                }
                done++;
                if (!await report(new[] { new DiffusionRowOutcome(index, DiffusionRowState.Written) }).ConfigureAwait(false))
                    return false;
            }
            return true;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            if (indices.Count - done == 1)
                return await report(new[] { new DiffusionRowOutcome(indices[done], DiffusionRowState.Failed, e.Message) }).ConfigureAwait(false);
            // Which row is bad is not known: each row not yet written runs alone, so only the bad ones fail.
            for (int k = done; k < indices.Count; k++)
            {
                if (!await RunGroupAsync(jobId, firstRow, rows, new List<long> { indices[k] }, sink, report, cancellationToken).ConfigureAwait(false))
                    return false;
            }
            return true;
        }
    }

    private string SchedulerName(SchedulerOptions? options)
    {
        if (options is null)
            return _model.Info.SchedulerConfig.ClassName ?? "default";
        string name = options.GetType().Name;
        return name.EndsWith("Options", StringComparison.Ordinal) ? name[..^"Options".Length] : name;
    }

    /// <summary>AUTOMATIC1111's infotext of a row (its PNG <c>parameters</c> entry), as the BatchFromCsv sample writes it.</summary>
    private static GenerationParameters Parameters(DiffusionJobRow row, DenoiseLatentsStageDefinition denoise, string scheduler)
    {
        bool known = A1111Samplers.TryGetSampler(scheduler, out string sampler, out string scheduleType);
        var noise = denoise.Noise;
        return new GenerationParameters
        {
            Prompt = row.Prompt,
            NegativePrompt = row.NegativePrompt,
            Steps = denoise.Steps,
            Sampler = known ? sampler : null,
            ScheduleType = known ? scheduleType : null,
            CfgScale = denoise.GuidanceScale,
            Seed = row.Seed,
            Width = denoise.Width,
            Height = denoise.Height,
            EtaNoiseSeedDelta = noise.StepNoiseSeedOffset,
            Rng = noise.Generator switch { NoiseGenerator.TorchCpu => "CPU", NoiseGenerator.Philox => "NV", _ => "MLNet" },
            Extra = known ? Array.Empty<KeyValuePair<string, string>>() : new[] { new KeyValuePair<string, string>("Scheduler", scheduler) },
        };
    }

    /// <summary>The row the stages read; its columns are renamed to the definition's column names.</summary>
    private sealed class InputRow
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public long Seed { get; set; }

        public static InputRow From(DiffusionJobRow row) => new() { Prompt = row.Prompt, NegativePrompt = row.NegativePrompt, Seed = row.Seed };
    }

    /// <summary>Rows are equal when their settings are (the key of a group).</summary>
    private sealed class SettingsComparer : IEqualityComparer<DiffusionJobRow>
    {
        public static readonly SettingsComparer Instance = new();

        public bool Equals(DiffusionJobRow? x, DiffusionJobRow? y)
            => x is not null && y is not null && x.Steps == y.Steps && x.GuidanceScale == y.GuidanceScale
                && string.Equals(x.Scheduler, y.Scheduler, StringComparison.Ordinal) && x.Width == y.Width && x.Height == y.Height;

        public int GetHashCode(DiffusionJobRow row) => HashCode.Combine(row.Steps, row.GuidanceScale, row.Scheduler, row.Width, row.Height);
    }
}
