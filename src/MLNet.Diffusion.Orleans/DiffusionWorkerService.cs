using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.ML;
using Orleans;
using Orleans.Runtime;

namespace MLNet.Diffusion.Orleans;

/// <summary>
/// A silo's workers: one loop per configured device that asks the job directory for work, leases a shard, runs it on
/// its warm model into the job's sink, reports every row and a heartbeat, and releases the lease. A worker that stops
/// reporting (its silo died) loses the lease when it times out, and another worker runs the shard.
/// </summary>
internal sealed class DiffusionWorkerService : BackgroundService
{
    private readonly IGrainFactory _grains;
    private readonly DiffusionWorkerOptions _options;
    private readonly IDiffusionResultSinkProvider _sinks;
    private readonly ILocalSiloDetails _silo;
    private readonly ILogger<DiffusionWorkerService> _log;

    public DiffusionWorkerService(IGrainFactory grains, IOptions<DiffusionWorkerOptions> options, IDiffusionResultSinkProvider sinks, ILocalSiloDetails silo, ILogger<DiffusionWorkerService> log)
    {
        _grains = grains;
        _options = options.Value;
        _sinks = sinks;
        _silo = silo;
        _log = log;
        if (_options.Devices is null)
            throw new ArgumentException("DiffusionWorkerOptions.Devices is null: set a DeviceList (DeviceList.Cuda(0, 1), DeviceList.Cpu(2)).", nameof(options));
        if (_options.ModelOptions is null)
            throw new ArgumentException("DiffusionWorkerOptions.ModelOptions is null: leave the default or set loading options.", nameof(options));
    }

    protected override Task ExecuteAsync(CancellationToken stoppingToken)
        => Task.WhenAll(Enumerable.Range(0, _options.Devices.Count).Select(i => Task.Run(() => RunWorkerAsync(i, stoppingToken), CancellationToken.None)));

    private async Task RunWorkerAsync(int deviceIndex, CancellationToken stoppingToken)
    {
        // Device index and name: a CUDA id may repeat (two copies on one GPU), the index may not.
        string worker = $"{_silo.SiloAddress}/{deviceIndex}:{_options.Devices.Describe(deviceIndex)}";
        using var state = new WorkerState(_options.Devices, deviceIndex, _options.ModelOptions, _options.MLContextSeed);
        while (!stoppingToken.IsCancellationRequested)
        {
            bool worked = false;
            try
            {
                var jobs = await _grains.GetGrain<IDiffusionJobDirectoryGrain>(0).GetJobsAsync().ConfigureAwait(false);
                foreach (string jobId in jobs)
                {
                    var job = _grains.GetGrain<IDiffusionJobGrain>(jobId);
                    var lease = await job.LeaseAsync(worker).ConfigureAwait(false);
                    if (lease is null)
                        continue;
                    worked = true;
                    await RunShardAsync(worker, state, job, lease, stoppingToken).ConfigureAwait(false);
                    break;
                }
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception e)
            {
                // A silo leaving or joining makes grain calls fail for a moment; the lease (if any) times out and is re-issued.
                _log.LogWarning(e, "Diffusion worker {Worker}: {Message}", worker, e.Message);
            }
            if (!worked)
            {
                try
                {
                    await Task.Delay(_options.IdlePollInterval, stoppingToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }
        }
    }

    private async Task RunShardAsync(string worker, WorkerState state, IDiffusionJobGrain job, DiffusionShardLease lease, CancellationToken stoppingToken)
    {
        using var shard = CancellationTokenSource.CreateLinkedTokenSource(stoppingToken);
        async Task<bool> Report(IReadOnlyList<DiffusionRowOutcome> outcomes)
        {
            if (!await job.ReportAsync(lease.LeaseId, outcomes).ConfigureAwait(false))
            {
                shard.Cancel();
                return false;
            }
            return true;
        }
        // Between rows the reports renew the lease; during a long batch this heartbeat does.
        var heartbeat = HeartbeatAsync(job, lease, shard);
        try
        {
            var pipeline = state.Pipeline(lease);
            var sink = _sinks.Open(lease.JobId, lease.SinkLocation);
            if (await pipeline.RunAsync(lease.JobId, lease.FirstRow, lease.Rows, sink, Report, shard.Token).ConfigureAwait(false))
                _log.LogInformation("Diffusion worker {Worker}: shard {Shard} of job {Job} done (rows {First}–{Last}).", worker, lease.Shard, lease.JobId, lease.FirstRow, lease.FirstRow + lease.Rows.Length - 1);
        }
        catch (OperationCanceledException) when (shard.IsCancellationRequested)
        {
            _log.LogInformation("Diffusion worker {Worker}: shard {Shard} of job {Job} stopped.", worker, lease.Shard, lease.JobId);
        }
        catch (Exception e)
        {
            // The pipeline could not even start (model folder missing, definition unreadable): every row fails with the reason.
            _log.LogError(e, "Diffusion worker {Worker}: shard {Shard} of job {Job} failed: {Message}", worker, lease.Shard, lease.JobId, e.Message);
            var failed = Enumerable.Range(0, lease.Rows.Length).Select(i => new DiffusionRowOutcome(lease.FirstRow + i, DiffusionRowState.Failed, e.Message)).ToArray();
            await job.ReportAsync(lease.LeaseId, failed).ConfigureAwait(false);
        }
        finally
        {
            shard.Cancel();
            await heartbeat.ConfigureAwait(false);
        }
        try
        {
            // Also when the silo is stopping: a released shard is leased again at once instead of after its timeout.
            await job.ReleaseAsync(lease.LeaseId).WaitAsync(lease.LeaseTimeout, CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception e) when (stoppingToken.IsCancellationRequested)
        {
            _log.LogInformation("Diffusion worker {Worker}: lease of shard {Shard} not released ({Message}); it times out.", worker, lease.Shard, e.Message);
        }
    }

    private static async Task HeartbeatAsync(IDiffusionJobGrain job, DiffusionShardLease lease, CancellationTokenSource shard)
    {
        var period = lease.LeaseTimeout / 3;
        try
        {
            while (true)
            {
                await Task.Delay(period, shard.Token).ConfigureAwait(false);
                if (!await job.ReportAsync(lease.LeaseId, Array.Empty<DiffusionRowOutcome>()).ConfigureAwait(false))
                {
                    shard.Cancel();
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception)
        {
            // The coordinator is unreachable: stop reporting; if it is gone for good the lease times out there.
        }
    }

    /// <summary>A worker's warm model (one folder at a time, on its device) and the pipelines of the jobs it served last.</summary>
    private sealed class WorkerState : IDisposable
    {
        private readonly Dictionary<string, (string Json, JobPipeline Pipeline)> _pipelines = new(StringComparer.Ordinal);
        private readonly DeviceList _devices;
        private readonly int _deviceIndex;
        private readonly StableDiffusionModelOptions _modelOptions;
        private readonly int _seed;
        private StableDiffusionModel? _model;

        public WorkerState(DeviceList devices, int deviceIndex, StableDiffusionModelOptions modelOptions, int seed)
        {
            _devices = devices;
            _deviceIndex = deviceIndex;
            _modelOptions = modelOptions;
            _seed = seed;
        }

        public JobPipeline Pipeline(DiffusionShardLease lease)
        {
            if (_pipelines.TryGetValue(lease.JobId, out var cached) && string.Equals(cached.Json, lease.PipelineJson, StringComparison.Ordinal))
                return cached.Pipeline;
            var definition = DiffusionPipelineDefinition.FromJson(lease.PipelineJson);
            if (lease.ModelDirectory is { } folder)
                definition = definition.WithModelDirectory(folder);
            if (_model is null || !string.Equals(_model.Directory, definition.ModelDirectory, StringComparison.Ordinal))
            {
                _pipelines.Clear();
                _model?.Dispose();
                _model = null;
                _model = _devices.LoadModel(new MLContext(_seed), definition.ModelDirectory, _deviceIndex, _modelOptions);
            }
            if (_pipelines.Count >= 16)
                _pipelines.Clear();
            var pipeline = new JobPipeline(definition, _model);
            _pipelines[lease.JobId] = (lease.PipelineJson, pipeline);
            return pipeline;
        }

        public void Dispose() => _model?.Dispose();
    }
}
