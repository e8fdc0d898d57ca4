using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using Microsoft.Extensions.Logging;
using Orleans;

namespace MLNet.Diffusion.Orleans;

/// <summary>
/// The job coordinator (<see cref="IDiffusionJobGrain"/>). Shards wait in a queue; a lease is a shard, a worker and a
/// deadline that every report pushes back. A lease past its deadline is taken back when the next worker asks, and its
/// shard goes to the front of the queue. Each row's outcome is recorded once, whoever reports it, so counts stay exact
/// when a shard runs twice (the sink makes the second write of a row the same bytes, or skips it).
/// </summary>
internal sealed class DiffusionJobGrain : Grain, IDiffusionJobGrain
{
    private const int MaxListedFailures = 1000;

    private readonly ILogger<DiffusionJobGrain> _log;
    private readonly LinkedList<int> _queue = new();
    private readonly Dictionary<Guid, Lease> _leases = new();
    private readonly List<DiffusionRowFailure> _failures = new();
    private DiffusionJob? _job;
    private DiffusionRowState[] _rows = Array.Empty<DiffusionRowState>();
    private int[] _shardLeft = Array.Empty<int>();
    private long _written, _skipped, _failed;
    private bool _canceled;
    private int _reissued;

    public DiffusionJobGrain(ILogger<DiffusionJobGrain> log) => _log = log;

    private sealed class Lease
    {
        public required int Shard { get; init; }

        public required string Worker { get; init; }

        public long Deadline { get; set; }
    }

    public async Task<DiffusionJobStatus> SubmitAsync(DiffusionJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        job.Validate();
        string key = this.GetPrimaryKeyString();
        if (!string.Equals(job.JobId, key, StringComparison.Ordinal))
            throw new ArgumentException($"Job '{job.JobId}' was submitted to the coordinator of job '{key}'.", nameof(job));
        if (_job is not null && (_canceled || Done == _rows.Length)
            && job.Rows.Length == _job.Rows.Length && string.Equals(job.PipelineJson, _job.PipelineJson, StringComparison.Ordinal))
        {
            // A finished or canceled job submitted again runs again: the sink tells which rows are done.
            _job = null;
            _queue.Clear();
            _leases.Clear();
            _failures.Clear();
            _written = _skipped = _failed = 0;
            _canceled = false;
            _reissued = 0;
        }
        if (_job is null)
        {
            _job = job;
            _rows = new DiffusionRowState[job.Rows.Length];
            _shardLeft = new int[job.ShardCount];
            for (int s = 0; s < _shardLeft.Length; s++)
            {
                _shardLeft[s] = (int)Math.Min(job.ShardSize, job.Rows.Length - (long)s * job.ShardSize);
                _queue.AddLast(s);
            }
            _log.LogInformation("Job {Job}: {Rows} rows in {Shards} shards of {ShardSize}.", key, job.Rows.Length, _shardLeft.Length, job.ShardSize);
        }
        else if (job.Rows.Length != _job.Rows.Length || !string.Equals(job.PipelineJson, _job.PipelineJson, StringComparison.Ordinal))
        {
            throw new ArgumentException($"Job '{key}' is already running with other rows or another pipeline; give a changed job a new id.", nameof(job));
        }
        await Register();
        return Status();
    }

    public Task<DiffusionShardLease?> LeaseAsync(string workerId)
    {
        if (_job is null || _canceled)
            return Task.FromResult<DiffusionShardLease?>(null);
        ReclaimExpired();
        while (_queue.First is { } first)
        {
            int shard = first.Value;
            _queue.RemoveFirst();
            if (_shardLeft[shard] == 0)
                continue;
            var id = Guid.NewGuid();
            _leases[id] = new Lease { Shard = shard, Worker = workerId, Deadline = Environment.TickCount64 + (long)_job.LeaseTimeout.TotalMilliseconds };
            long firstRow = (long)shard * _job.ShardSize;
            var rows = new DiffusionJobRow[Math.Min(_job.ShardSize, _job.Rows.Length - firstRow)];
            Array.Copy(_job.Rows, firstRow, rows, 0, rows.Length);
            return Task.FromResult<DiffusionShardLease?>(new DiffusionShardLease
            {
                LeaseId = id,
                JobId = _job.JobId,
                Shard = shard,
                FirstRow = firstRow,
                Rows = rows,
                PipelineJson = _job.PipelineJson,
                ModelDirectory = _job.ModelDirectory,
                SinkLocation = _job.SinkLocation,
                LeaseTimeout = _job.LeaseTimeout,
            });
        }
        return Task.FromResult<DiffusionShardLease?>(null);
    }

    public async Task<bool> ReportAsync(Guid leaseId, IReadOnlyList<DiffusionRowOutcome> outcomes)
    {
        ArgumentNullException.ThrowIfNull(outcomes);
        if (_job is null)
            return false;
        foreach (var o in outcomes)
            Record(o);
        if (Done == _rows.Length)
            await Unregister();
        if (_canceled || !_leases.TryGetValue(leaseId, out var lease))
            return false;
        lease.Deadline = Environment.TickCount64 + (long)_job.LeaseTimeout.TotalMilliseconds;
        return true;
    }

    public Task ReleaseAsync(Guid leaseId)
    {
        if (_leases.Remove(leaseId, out var lease) && _shardLeft[lease.Shard] > 0 && !_canceled)
            _queue.AddFirst(lease.Shard); // stopped early (its silo is stopping): lease it again first
        return Task.CompletedTask;
    }

    public async Task<DiffusionJobStatus> GetStatusAsync()
    {
        ReclaimExpired();
        if (_job is not null && !_canceled && Done < _rows.Length)
            await Register(); // rebuilds a directory that was lost with its silo
        return Status();
    }

    public async Task<DiffusionJobStatus> CancelAsync()
    {
        if (_job is not null && !_canceled)
        {
            _canceled = true;
            _queue.Clear();
            _log.LogInformation("Job {Job} canceled with {Leases} shard(s) in progress.", _job.JobId, _leases.Count);
            await Unregister();
        }
        return Status();
    }

    private long Done => _written + _skipped + _failed;

    private void Record(DiffusionRowOutcome o)
    {
        if (o.RowIndex < 0 || o.RowIndex >= _rows.Length || o.State == DiffusionRowState.Pending || _rows[o.RowIndex] != DiffusionRowState.Pending)
            return; // each row counts once, whichever worker reports it first
        _rows[o.RowIndex] = o.State;
        _shardLeft[(int)(o.RowIndex / _job!.ShardSize)]--;
        switch (o.State)
        {
            case DiffusionRowState.Written:
                _written++;
                break;
            case DiffusionRowState.Skipped:
                _skipped++;
                break;
            default:
                if (_failed++ < MaxListedFailures)
                    _failures.Add(new DiffusionRowFailure(o.RowIndex, o.Message ?? "failed"));
                break;
        }
    }

    /// <summary>Takes back leases past their deadline (the worker's silo died or hangs); their shards are leased first.</summary>
    private void ReclaimExpired()
    {
        long now = Environment.TickCount64;
        foreach (var (id, lease) in _leases.Where(l => l.Value.Deadline < now).ToArray())
        {
            _leases.Remove(id);
            if (_shardLeft[lease.Shard] > 0 && !_canceled)
            {
                _queue.AddFirst(lease.Shard);
                _reissued++;
                _log.LogWarning("Job {Job}: shard {Shard} leased to {Worker} timed out; leasing it again.", _job!.JobId, lease.Shard, lease.Worker);
            }
        }
    }

    private DiffusionJobStatus Status() => new()
    {
        JobId = this.GetPrimaryKeyString(),
        IsKnown = _job is not null,
        TotalRows = _rows.Length,
        Written = _written,
        Skipped = _skipped,
        FailedCount = _failed,
        Failures = _failures.ToArray(),
        IsCanceled = _canceled,
        ActiveLeases = _leases.Count,
        ShardsReissued = _reissued,
        CoordinatorSilo = RuntimeIdentity,
    };

    private Task Register() => GrainFactory.GetGrain<IDiffusionJobDirectoryGrain>(0).RegisterAsync(this.GetPrimaryKeyString());

    private Task Unregister() => GrainFactory.GetGrain<IDiffusionJobDirectoryGrain>(0).UnregisterAsync(this.GetPrimaryKeyString());
}
