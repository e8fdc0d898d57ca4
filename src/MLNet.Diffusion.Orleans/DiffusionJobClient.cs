using System;
using System.Threading;
using System.Threading.Tasks;
using Orleans;
using Orleans.Runtime;

namespace MLNet.Diffusion.Orleans;

/// <summary>Runs a <see cref="DiffusionJob"/> on a cluster from a client (or a grain): submit, poll, resubmit, cancel.</summary>
public static class DiffusionJobClient
{
    /// <summary>Consecutive failed calls to the coordinator (silos leaving) tolerated before giving up.</summary>
    private const int MaxConsecutiveFailures = 60;

    /// <summary>
    /// Submits a job and waits until every row has an outcome, reporting the status at each poll. When the coordinator
    /// forgets the job (its silo died) the job is submitted again: rows already in the sink are skipped, so nothing is
    /// done twice and nothing is lost. When <paramref name="cancellationToken"/> fires, the job is canceled: no shard is
    /// leased any more, running shards stop at their next row or denoising step, and the returned status (with
    /// <see cref="DiffusionJobStatus.IsCanceled"/>) is read once no shard is leased.
    /// </summary>
    /// <param name="grains">The cluster client (<c>IClusterClient</c>) or a grain's factory.</param>
    /// <param name="job">The job.</param>
    /// <param name="progress">Receives the status at each poll.</param>
    /// <param name="pollInterval">Time between polls; null for half a second.</param>
    /// <param name="cancellationToken">Cancels the job.</param>
    /// <returns>The final status: completed, or canceled and drained.</returns>
    /// <exception cref="ArgumentException">The job is not valid.</exception>
    public static async Task<DiffusionJobStatus> RunDiffusionJobAsync(this IGrainFactory grains, DiffusionJob job, IProgress<DiffusionJobStatus>? progress = null,
        TimeSpan? pollInterval = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(grains);
        ArgumentNullException.ThrowIfNull(job);
        job.Validate();
        var poll = pollInterval ?? TimeSpan.FromMilliseconds(500);
        var coordinator = grains.GetGrain<IDiffusionJobGrain>(job.JobId);
        var status = await coordinator.SubmitAsync(job).ConfigureAwait(false);
        progress?.Report(status);
        int failures = 0;
        bool canceled = false;
        while (!status.IsFinished)
        {
            if (!canceled)
            {
                try
                {
                    await Task.Delay(poll, cancellationToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                }
            }
            else
            {
                await Task.Delay(poll, CancellationToken.None).ConfigureAwait(false);
            }
            try
            {
                if (cancellationToken.IsCancellationRequested && !canceled)
                {
                    status = await coordinator.CancelAsync().ConfigureAwait(false);
                    canceled = status.IsCanceled || !status.IsKnown;
                    if (!status.IsKnown)
                        return status; // its silo died and nothing runs the job any more
                }
                else
                {
                    status = await coordinator.GetStatusAsync().ConfigureAwait(false);
                    if (!status.IsKnown && canceled)
                        return status; // canceled, then lost with its silo: nothing runs the job any more
                    if (!status.IsKnown)
                        status = await coordinator.SubmitAsync(job).ConfigureAwait(false); // the coordinator was lost with its silo
                }
                failures = 0;
            }
            catch (Exception e) when (e is OrleansException or TimeoutException && ++failures < MaxConsecutiveFailures)
            {
                continue; // a silo is leaving; the grain is reactivated on another one
            }
            progress?.Report(status);
        }
        return status;
    }
}
