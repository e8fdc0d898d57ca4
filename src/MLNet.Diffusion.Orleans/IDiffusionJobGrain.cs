using System;
using System.Collections.Generic;
using System.Threading.Tasks;
using Orleans;

namespace MLNet.Diffusion.Orleans;

/// <summary>
/// The coordinator of one job (keyed by <see cref="DiffusionJob.JobId"/>): it splits the rows into shards, leases them to
/// the workers that ask, takes back a lease whose worker stopped reporting, counts each row's outcome once, and answers
/// progress and cancellation. Its state is soft: if its silo dies the client submits the job again and the sink, which
/// is the record of what is done, makes the rerun skip finished rows.
/// </summary>
[Alias("MLNet.Diffusion.Orleans.IDiffusionJobGrain")]
public interface IDiffusionJobGrain : IGrainWithStringKey
{
    /// <summary>
    /// Starts the job; returns the status of a job already running here (submitting is idempotent); runs a finished or
    /// canceled job again (rows whose result is in the sink are skipped).
    /// </summary>
    /// <param name="job">The job; its id must be this grain's key.</param>
    [Alias("Submit")]
    Task<DiffusionJobStatus> SubmitAsync(DiffusionJob job);

    /// <summary>Leases the next shard to a worker; null when none is waiting (all leased or done, canceled, or unknown job).</summary>
    /// <param name="workerId">The worker's id (silo and device), for the log.</param>
    [Alias("Lease")]
    Task<DiffusionShardLease?> LeaseAsync(string workerId);

    /// <summary>Records rows' outcomes (each row counts once) and renews the lease.</summary>
    /// <param name="leaseId">The lease.</param>
    /// <param name="outcomes">The rows done since the last report (may be empty: a heartbeat).</param>
    /// <returns>True to go on; false when the job was canceled or the lease was taken back (stop the shard).</returns>
    [Alias("Report")]
    Task<bool> ReportAsync(Guid leaseId, IReadOnlyList<DiffusionRowOutcome> outcomes);

    /// <summary>Ends a lease: its shard is done, or (rows without an outcome) goes back to the queue unless canceled.</summary>
    /// <param name="leaseId">The lease.</param>
    [Alias("Release")]
    Task ReleaseAsync(Guid leaseId);

    /// <summary>The job's progress.</summary>
    [Alias("GetStatus")]
    Task<DiffusionJobStatus> GetStatusAsync();

    /// <summary>Cancels the job: no more shards are leased and the workers stop their shards at the next report.</summary>
    [Alias("Cancel")]
    Task<DiffusionJobStatus> CancelAsync();
}

/// <summary>
/// Where workers find work: the ids of the jobs with shards left. One instance (key 0). Its state is soft too: the
/// coordinators register again at each status poll, so a directory lost with its silo is rebuilt within a poll.
/// </summary>
[Alias("MLNet.Diffusion.Orleans.IDiffusionJobDirectoryGrain")]
public interface IDiffusionJobDirectoryGrain : IGrainWithIntegerKey
{
    /// <summary>Adds a job with work left.</summary>
    /// <param name="jobId">The job's id.</param>
    [Alias("Register")]
    Task RegisterAsync(string jobId);

    /// <summary>Removes a finished or canceled job.</summary>
    /// <param name="jobId">The job's id.</param>
    [Alias("Unregister")]
    Task UnregisterAsync(string jobId);

    /// <summary>The jobs with work left, oldest first.</summary>
    [Alias("GetJobs")]
    Task<IReadOnlyList<string>> GetJobsAsync();
}
