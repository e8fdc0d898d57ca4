using System;
using System.Collections.Generic;
using System.Threading;
using System.Threading.Tasks;

namespace MLNet.Diffusion.Orleans;

/// <summary>
/// Runs a <see cref="DiffusionJob"/> in this process on one loaded model, with no cluster: the same rows, stages and
/// sink code as a worker's shards, one after the other. The reference a cluster run is compared with (its PNGs are the
/// same bytes), and the way to run a job where there is one machine.
/// </summary>
public static class LocalDiffusionJob
{
    /// <summary>Runs every row of a job (rows already in the sink are skipped) and returns the final status.</summary>
    /// <param name="job">The job.</param>
    /// <param name="model">The model, loaded from the job's model folder.</param>
    /// <param name="sink">The sink; null for a <see cref="PngFolderResultSink"/> on <see cref="DiffusionJob.SinkLocation"/>.</param>
    /// <param name="cancellationToken">Stops the run between denoising steps.</param>
    /// <exception cref="ArgumentException">The job or its pipeline definition is not valid for a job.</exception>
    public static async Task<DiffusionJobStatus> RunAsync(DiffusionJob job, StableDiffusionModel model, IDiffusionResultSink? sink = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(model);
        job.Validate();
        var definition = DiffusionPipelineDefinition.FromJson(job.PipelineJson).WithModelDirectory(job.ModelDirectory ?? model.Directory);
        var pipeline = new JobPipeline(definition, model);
        sink ??= new PngFolderResultSink(job.SinkLocation);
        long written = 0, skipped = 0, failedCount = 0;
        var failures = new List<DiffusionRowFailure>();
        Task<bool> Report(IReadOnlyList<DiffusionRowOutcome> outcomes)
        {
            foreach (var o in outcomes)
            {
                switch (o.State)
                {
                    case DiffusionRowState.Written:
                        written++;
                        break;
                    case DiffusionRowState.Skipped:
                        skipped++;
                        break;
                    case DiffusionRowState.Failed:
                        failedCount++;
                        failures.Add(new DiffusionRowFailure(o.RowIndex, o.Message ?? "failed"));
                        break;
                }
            }
            return Task.FromResult(true);
        }
        for (long first = 0; first < job.Rows.Length; first += job.ShardSize)
        {
            var rows = new ArraySegment<DiffusionJobRow>(job.Rows, (int)first, (int)Math.Min(job.ShardSize, job.Rows.Length - first));
            await pipeline.RunAsync(job.JobId, first, rows, sink, Report, cancellationToken).ConfigureAwait(false);
        }
        return new DiffusionJobStatus
        {
            JobId = job.JobId,
            IsKnown = true,
            TotalRows = job.Rows.Length,
            Written = written,
            Skipped = skipped,
            FailedCount = failedCount,
            Failures = failures,
        };
    }
}
