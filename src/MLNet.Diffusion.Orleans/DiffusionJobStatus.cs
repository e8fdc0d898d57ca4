using System;
using System.Collections.Generic;
using Orleans;

namespace MLNet.Diffusion.Orleans;

/// <summary>A row that failed: its index in the job and why (the exception's message, naming the setting or value).</summary>
/// <param name="RowIndex">The row's index in <see cref="DiffusionJob.Rows"/>.</param>
/// <param name="Message">Why it failed.</param>
[GenerateSerializer, Immutable, Alias("MLNet.Diffusion.Orleans.DiffusionRowFailure")]
public sealed record DiffusionRowFailure([property: Id(0)] long RowIndex, [property: Id(1)] string Message);

/// <summary>What became of a row: written to the sink, skipped (its result was already there) or failed.</summary>
public enum DiffusionRowState
{
    /// <summary>Not done yet.</summary>
    Pending = 0,

    /// <summary>Generated and written to the sink.</summary>
    Written = 1,

    /// <summary>Its result was already in the sink (a resumed job); not generated again.</summary>
    Skipped = 2,

    /// <summary>Failed; see <see cref="DiffusionJobStatus.Failures"/>.</summary>
    Failed = 3,
}

/// <summary>A row's outcome as a worker reports it to the coordinator.</summary>
/// <param name="RowIndex">The row's index in the job.</param>
/// <param name="State">Written, skipped or failed.</param>
/// <param name="Message">Why it failed; null otherwise.</param>
[GenerateSerializer, Immutable, Alias("MLNet.Diffusion.Orleans.DiffusionRowOutcome")]
public sealed record DiffusionRowOutcome([property: Id(0)] long RowIndex, [property: Id(1)] DiffusionRowState State, [property: Id(2)] string? Message = null);

/// <summary>A job's progress as the coordinator knows it.</summary>
[GenerateSerializer, Immutable, Alias("MLNet.Diffusion.Orleans.DiffusionJobStatus")]
public sealed record DiffusionJobStatus
{
    /// <summary>The job's id.</summary>
    [Id(0)] public string JobId { get; init; } = string.Empty;

    /// <summary>
    /// False when the coordinator does not know the job: never submitted, or its activation was lost with a silo. The client
    /// (<see cref="DiffusionJobClient.RunDiffusionJobAsync"/>) then submits it again; rows already in the sink are skipped.
    /// </summary>
    [Id(1)] public bool IsKnown { get; init; }

    /// <summary>The job's rows.</summary>
    [Id(2)] public long TotalRows { get; init; }

    /// <summary>Rows generated and written to the sink by this run of the job.</summary>
    [Id(3)] public long Written { get; init; }

    /// <summary>Rows whose result was already in the sink.</summary>
    [Id(4)] public long Skipped { get; init; }

    /// <summary>Rows that failed (all counted; <see cref="Failures"/> lists the first 1000).</summary>
    [Id(5)] public long FailedCount { get; init; }

    /// <summary>The first failed rows, in the order they were reported.</summary>
    [Id(6)] public IReadOnlyList<DiffusionRowFailure> Failures { get; init; } = Array.Empty<DiffusionRowFailure>();

    /// <summary>True when a cancellation was requested: no shard is leased any more.</summary>
    [Id(7)] public bool IsCanceled { get; init; }

    /// <summary>Shards leased to a worker right now.</summary>
    [Id(8)] public int ActiveLeases { get; init; }

    /// <summary>Shards taken back from a worker that stopped reporting and leased again.</summary>
    [Id(9)] public int ShardsReissued { get; init; }

    /// <summary>The silo the coordinator runs on (Orleans' runtime identity), for the log and for tests that kill it.</summary>
    [Id(10)] public string CoordinatorSilo { get; init; } = string.Empty;

    /// <summary>Rows with an outcome (written, skipped or failed).</summary>
    public long Done => Written + Skipped + FailedCount;

    /// <summary>True when every row has an outcome.</summary>
    public bool IsCompleted => IsKnown && Done == TotalRows;

    /// <summary>True when nothing more will be written: completed, or canceled with no shard still leased.</summary>
    public bool IsFinished => IsCompleted || (IsCanceled && ActiveLeases == 0);
}

/// <summary>A shard leased to a worker: its rows and everything needed to run them, and the lease's id for reports.</summary>
[GenerateSerializer, Immutable, Alias("MLNet.Diffusion.Orleans.DiffusionShardLease")]
public sealed record DiffusionShardLease
{
    /// <summary>The lease's id; reports under a lease the coordinator took back are recorded but answered with "stop".</summary>
    [Id(0)] public Guid LeaseId { get; init; }

    /// <summary>The job's id.</summary>
    [Id(1)] public string JobId { get; init; } = string.Empty;

    /// <summary>The shard's number.</summary>
    [Id(2)] public int Shard { get; init; }

    /// <summary>The index of the shard's first row.</summary>
    [Id(3)] public long FirstRow { get; init; }

    /// <summary>The shard's rows (row <c>i</c> has index <see cref="FirstRow"/> + i).</summary>
    [Id(4)] public DiffusionJobRow[] Rows { get; init; } = Array.Empty<DiffusionJobRow>();

    /// <summary><see cref="DiffusionJob.PipelineJson"/>.</summary>
    [Id(5)] public string PipelineJson { get; init; } = string.Empty;

    /// <summary><see cref="DiffusionJob.ModelDirectory"/>.</summary>
    [Id(6)] public string? ModelDirectory { get; init; }

    /// <summary><see cref="DiffusionJob.SinkLocation"/>.</summary>
    [Id(7)] public string SinkLocation { get; init; } = string.Empty;

    /// <summary><see cref="DiffusionJob.LeaseTimeout"/>.</summary>
    [Id(8)] public TimeSpan LeaseTimeout { get; init; }
}
