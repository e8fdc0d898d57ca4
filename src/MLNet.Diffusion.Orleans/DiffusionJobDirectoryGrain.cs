using System.Collections.Generic;
using System.Threading.Tasks;
using Orleans;

namespace MLNet.Diffusion.Orleans;

/// <summary>The job directory (<see cref="IDiffusionJobDirectoryGrain"/>): job ids in registration order.</summary>
internal sealed class DiffusionJobDirectoryGrain : Grain, IDiffusionJobDirectoryGrain
{
    private readonly List<string> _jobs = new();

    public Task RegisterAsync(string jobId)
    {
        if (!_jobs.Contains(jobId))
            _jobs.Add(jobId);
        return Task.CompletedTask;
    }

    public Task UnregisterAsync(string jobId)
    {
        _jobs.Remove(jobId);
        return Task.CompletedTask;
    }

    public Task<IReadOnlyList<string>> GetJobsAsync() => Task.FromResult<IReadOnlyList<string>>(_jobs.ToArray());
}
