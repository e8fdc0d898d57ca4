using System;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Orleans.Hosting;

namespace MLNet.Diffusion.Orleans;

/// <summary>Adds MLNet.Diffusion's workers to a silo.</summary>
public static class DiffusionSiloBuilderExtensions
{
    /// <summary>
    /// Adds the diffusion workers to a silo: one long-lived worker per configured device, pulling shards of the jobs
    /// submitted with <see cref="DiffusionJobClient.RunDiffusionJobAsync"/>. Results go to the sink that the registered
    /// <see cref="IDiffusionResultSinkProvider"/> opens (a folder of PNGs unless another is registered).
    /// Only run jobs from trusted clients: a job names a model folder and a sink location on the silo's machine.
    /// </summary>
    /// <param name="builder">The silo builder.</param>
    /// <param name="configure">Configures the workers' options (devices, poll interval).</param>
    /// <returns>The builder.</returns>
    public static ISiloBuilder AddDiffusionWorkers(this ISiloBuilder builder, Action<DiffusionWorkerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.Services.AddOptions<DiffusionWorkerOptions>();
        if (configure is not null)
            options.Configure(configure);
        builder.Services.TryAddSingleton<IDiffusionResultSinkProvider, PngFolderResultSinkProvider>();
        builder.Services.AddHostedService<DiffusionWorkerService>();
        return builder;
    }

    /// <summary>
    /// Adds the diffusion workers to a silo with one worker per device of <paramref name="devices"/> — the same list a
    /// model in one process is loaded on (<see cref="MultiDeviceModel.Load"/>): <c>DeviceList.Cuda(0, 1)</c> for a
    /// machine's two GPUs, <c>DeviceList.Cpu(2)</c> for two CPU workers. Otherwise as
    /// <see cref="AddDiffusionWorkers(ISiloBuilder, Action{DiffusionWorkerOptions}?)"/>.
    /// </summary>
    /// <param name="builder">The silo builder.</param>
    /// <param name="devices">The silo's devices, one worker each.</param>
    /// <param name="configure">Configures the other options (model loading options, poll interval); applied after the devices.</param>
    /// <returns>The builder.</returns>
    public static ISiloBuilder AddDiffusionWorkers(this ISiloBuilder builder, DeviceList devices, Action<DiffusionWorkerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(devices);
        return builder.AddDiffusionWorkers(o =>
        {
            o.Devices = devices;
            configure?.Invoke(o);
        });
    }
}
