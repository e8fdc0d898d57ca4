using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Orleans;

/// <summary>Options of a silo's diffusion workers (<see cref="DiffusionSiloBuilderExtensions.AddDiffusionWorkers"/>).</summary>
public sealed class DiffusionWorkerOptions
{
    /// <summary>
    /// One entry per device: each starts one long-lived worker that loads the job's model with these options (its
    /// execution provider picks the device, e.g. <c>ExecutionProvider.Cuda(1)</c>) and keeps it warm between shards.
    /// Default: one CPU worker.
    /// </summary>
    public IReadOnlyList<StableDiffusionModelOptions> Devices { get; set; } = new[] { new StableDiffusionModelOptions() };

    /// <summary>How long an idle worker waits before asking for work again.</summary>
    public TimeSpan IdlePollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The seed of each worker's <c>MLContext</c> (rows carry their own seeds; this only fixes ML.NET's own randomness).</summary>
    public int MLContextSeed { get; set; }
}
