using System;
using Orleans.Hosting;

namespace MLNet.Diffusion.Orleans;

/// <summary>Options of a silo's diffusion workers (<see cref="DiffusionSiloBuilderExtensions.AddDiffusionWorkers(ISiloBuilder, Action{DiffusionWorkerOptions}?)"/>).</summary>
public sealed class DiffusionWorkerOptions
{
    /// <summary>
    /// The silo's devices, as for a model in one process (<see cref="MultiDeviceModel"/>): each starts one long-lived
    /// worker that loads the job's model on its device (<see cref="DeviceList.LoadModel"/>) and keeps it warm between
    /// shards. <c>DeviceList.Cuda(0, 1)</c> for a machine's GPUs; <c>DeviceList.Cpu(2)</c> for two CPU workers sharing the
    /// cores. Default: one CPU worker (<c>DeviceList.Cpu(1)</c>).
    /// </summary>
    public DeviceList Devices { get; set; } = DeviceList.Cpu(1);

    /// <summary>
    /// Loading options of every worker's model (fallback, optimized-model cache, threads of a single CPU instance, …);
    /// each worker replaces the execution provider by its device's, and the threads by <see cref="DeviceList.IntraOpNumThreads"/>
    /// where the list sets them.
    /// </summary>
    public StableDiffusionModelOptions ModelOptions { get; set; } = new();

    /// <summary>How long an idle worker waits before asking for work again.</summary>
    public TimeSpan IdlePollInterval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>The seed of each worker's <c>MLContext</c> (rows carry their own seeds; this only fixes ML.NET's own randomness).</summary>
    public int MLContextSeed { get; set; }
}
