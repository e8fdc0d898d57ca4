using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Orleans;

namespace MLNet.Diffusion.Orleans;

/// <summary>
/// One row of a <see cref="DiffusionJob"/>: what its image depends on. The per-row settings override the pipeline
/// definition's DenoiseLatents stage for this row only (null keeps the definition's value); an invalid one fails this row
/// alone, reported with its index.
/// </summary>
[GenerateSerializer, Immutable, Alias("MLNet.Diffusion.Orleans.DiffusionJobRow")]
public sealed record DiffusionJobRow
{
    /// <summary>The prompt.</summary>
    [Id(0)] public string Prompt { get; init; } = string.Empty;

    /// <summary>The negative prompt (empty for none).</summary>
    [Id(1)] public string NegativePrompt { get; init; } = string.Empty;

    /// <summary>The row's seed: its image depends on it, never on the shard or silo that computes it.</summary>
    [Id(2)] public long Seed { get; init; }

    /// <summary>Denoising steps for this row; null for the definition's.</summary>
    [Id(3)] public int? Steps { get; init; }

    /// <summary>Classifier-free guidance scale for this row; null for the definition's.</summary>
    [Id(4)] public float? GuidanceScale { get; init; }

    /// <summary>A scheduler name (<c>SchedulerFactory.Names</c>) for this row; null for the definition's.</summary>
    [Id(5)] public string? Scheduler { get; init; }

    /// <summary>Image width for this row; null for the definition's.</summary>
    [Id(6)] public int? Width { get; init; }

    /// <summary>Image height for this row; null for the definition's.</summary>
    [Id(7)] public int? Height { get; init; }

    /// <summary>True when the row overrides none of the definition's settings.</summary>
    internal bool HasDefaultSettings => Steps is null && GuidanceScale is null && Scheduler is null && Width is null && Height is null;
}

/// <summary>
/// A distributed generation job: the rows (row <c>i</c> of <see cref="Rows"/> has index <c>i</c> in the sink), the pipeline
/// as its persisted JSON (<see cref="DiffusionPipelineDefinition.ToJson"/>), the model folder every silo has locally, and
/// where the results go. Create one from rows (<see cref="Create(string, DiffusionPipelineDefinition, IEnumerable{DiffusionJobRow}, string, string?, int, TimeSpan?)"/>)
/// or from an <see cref="IDataView"/> of prompts (<see cref="Create(string, DiffusionPipelineDefinition, IDataView, string, DiffusionJobColumnOptions?, string?, int, TimeSpan?)"/>);
/// both check what the cluster relies on. A job is plain data: submitting the same job again (same <see cref="JobId"/>)
/// resumes it, skipping rows already in the sink.
/// </summary>
[GenerateSerializer, Immutable, Alias("MLNet.Diffusion.Orleans.DiffusionJob")]
public sealed record DiffusionJob
{
    /// <summary>The job's id: the coordinator grain's key and half of every result's key (job, row index).</summary>
    [Id(0)] public string JobId { get; init; } = string.Empty;

    /// <summary>The pipeline definition's JSON (<see cref="DiffusionPipelineDefinition.ToJson"/>).</summary>
    [Id(1)] public string PipelineJson { get; init; } = string.Empty;

    /// <summary>The model folder as each silo sees it (the same path on every machine); null for the definition's.</summary>
    [Id(2)] public string? ModelDirectory { get; init; }

    /// <summary>The rows; a row's index is its position here.</summary>
    [Id(3)] public DiffusionJobRow[] Rows { get; init; } = Array.Empty<DiffusionJobRow>();

    /// <summary>
    /// Where the results go, as the silos' result sink reads it: for the default sink (<see cref="PngFolderResultSink"/>)
    /// a folder every silo can write to (a shared or network folder on a real cluster).
    /// </summary>
    [Id(4)] public string SinkLocation { get; init; } = string.Empty;

    /// <summary>Rows per shard: the unit of leasing, retry and cancellation.</summary>
    [Id(5)] public int ShardSize { get; init; } = 16;

    /// <summary>
    /// How long a worker may hold a shard without reporting (a row written, or a heartbeat every third of this) before the
    /// coordinator takes it back and leases it again: the time to notice a dead silo.
    /// </summary>
    [Id(6)] public TimeSpan LeaseTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>
    /// Creates a job, checking what the cluster relies on: the definition encodes a prompt, denoises with a seed column
    /// (so a row's image depends on its own seed, not its position in a shard) and decodes an image.
    /// </summary>
    /// <param name="jobId">The job's id (letters, digits, '-', '_', '.').</param>
    /// <param name="definition">The pipeline (the stages' persisted form).</param>
    /// <param name="rows">The rows, in index order.</param>
    /// <param name="sinkLocation">Where results go (the PNG folder for the default sink).</param>
    /// <param name="modelDirectory">The model folder on the silos; null for <paramref name="definition"/>'s.</param>
    /// <param name="shardSize">Rows per shard.</param>
    /// <param name="leaseTimeout">How long a silent worker keeps a shard; null for two minutes.</param>
    /// <exception cref="ArgumentException">An argument is out of range, or the definition lacks a stage or the seed column.</exception>
    public static DiffusionJob Create(string jobId, DiffusionPipelineDefinition definition, IEnumerable<DiffusionJobRow> rows, string sinkLocation,
        string? modelDirectory = null, int shardSize = 16, TimeSpan? leaseTimeout = null)
    {
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(rows);
        var job = new DiffusionJob
        {
            JobId = jobId,
            PipelineJson = definition.ToJson(),
            ModelDirectory = modelDirectory,
            Rows = rows.ToArray(),
            SinkLocation = sinkLocation,
            ShardSize = shardSize,
            LeaseTimeout = leaseTimeout ?? TimeSpan.FromMinutes(2),
        };
        job.Validate();
        JobPipeline.Check(definition);
        return job;
    }

    /// <summary>
    /// Creates a job from the rows of an <see cref="IDataView"/> of prompts: row <c>i</c> of the data view is row <c>i</c>
    /// of the job. The columns are named by <paramref name="columns"/> — by default the BatchFromCsv sample's headers:
    /// <c>Prompt</c> and <c>Seed</c> required; <c>NegativePrompt</c>, <c>Steps</c>, <c>Guidance</c>, <c>Scheduler</c>,
    /// <c>Width</c>, <c>Height</c> read when present (a missing value — empty text, NaN, or 0 for steps and sizes — keeps the
    /// definition's setting). The data view is read once, here; the job carries the rows as values. Load a CSV with
    /// <c>TextLoader.Options.MissingRealsAsNaNs = true</c>: by default ML.NET's text loader reads a blank number as 0, which
    /// for the guidance scale is a setting (no guidance), not a missing value.
    /// </summary>
    /// <param name="jobId">The job's id (letters, digits, '-', '_', '.').</param>
    /// <param name="definition">The pipeline (the stages' persisted form).</param>
    /// <param name="data">The prompts, one row per image.</param>
    /// <param name="sinkLocation">Where results go (the PNG folder for the default sink).</param>
    /// <param name="columns">The column names; null for the defaults.</param>
    /// <param name="modelDirectory">The model folder on the silos; null for <paramref name="definition"/>'s.</param>
    /// <param name="shardSize">Rows per shard.</param>
    /// <param name="leaseTimeout">How long a silent worker keeps a shard; null for two minutes.</param>
    /// <exception cref="ArgumentOutOfRangeException">A required column is missing, a column named in <paramref name="columns"/>
    /// is missing, or a column has the wrong type (the message names the column, its type and the type expected).</exception>
    /// <exception cref="InvalidOperationException">A value cannot be a row's (a missing or fractional seed): the message
    /// names the row and the column.</exception>
    /// <exception cref="ArgumentException">An argument is out of range, or the definition lacks a stage or the seed column.</exception>
    public static DiffusionJob Create(string jobId, DiffusionPipelineDefinition definition, IDataView data, string sinkLocation,
        DiffusionJobColumnOptions? columns = null, string? modelDirectory = null, int shardSize = 16, TimeSpan? leaseTimeout = null)
    {
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(data);
        // The definition first: a pipeline that cannot run as a job is refused before a large table is read.
        JobPipeline.Check(definition);
        return Create(jobId, definition, DataViewJobRows.Read(data, columns ?? new DiffusionJobColumnOptions()), sinkLocation, modelDirectory, shardSize, leaseTimeout);
    }

    /// <summary>Checks the fields the coordinator relies on (the definition is checked where it is parsed).</summary>
    /// <exception cref="ArgumentException">A field is out of range.</exception>
    internal void Validate()
    {
        if (string.IsNullOrWhiteSpace(JobId) || JobId.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
            throw new ArgumentException($"The job id '{JobId}' must be non-empty letters, digits, '-', '_' or '.' (it names the job's results).", nameof(JobId));
        if (string.IsNullOrWhiteSpace(PipelineJson))
            throw new ArgumentException("The job has no pipeline definition JSON.", nameof(PipelineJson));
        if (Rows is null || Rows.Length == 0)
            throw new ArgumentException($"Job '{JobId}' has no rows.", nameof(Rows));
        for (int i = 0; i < Rows.Length; i++)
        {
            if (Rows[i] is null)
                throw new ArgumentException($"Row {i} of job '{JobId}' is null.", nameof(Rows));
        }
        if (string.IsNullOrWhiteSpace(SinkLocation))
            throw new ArgumentException($"Job '{JobId}' has no sink location.", nameof(SinkLocation));
        if (ShardSize < 1)
            throw new ArgumentOutOfRangeException(nameof(ShardSize), ShardSize, "A shard holds at least one row.");
        if (LeaseTimeout <= TimeSpan.Zero)
            throw new ArgumentOutOfRangeException(nameof(LeaseTimeout), LeaseTimeout, "The lease timeout must be positive.");
    }

    /// <summary>How many shards the rows make.</summary>
    internal int ShardCount => (Rows.Length + ShardSize - 1) / ShardSize;
}
