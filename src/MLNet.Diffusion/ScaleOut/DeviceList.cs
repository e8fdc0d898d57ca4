using System;
using System.Collections;
using System.Collections.Generic;
using Microsoft.ML;

namespace MLNet.Diffusion;

/// <summary>
/// The devices a <see cref="MultiDeviceModel"/> loads the model on, one set of ONNX Runtime sessions each: CUDA GPUs by
/// device id (<see cref="Cuda(int[])"/>), or several CPU instances (<see cref="Cpu(int, int?)"/>) — for tests, and for
/// machines whose cores one session does not keep busy.
/// </summary>
public sealed class DeviceList : IReadOnlyList<ExecutionProvider>
{
    private readonly ExecutionProvider[] _devices;

    private DeviceList(ExecutionProvider[] devices, int? intraOpNumThreads)
    {
        _devices = devices;
        IntraOpNumThreads = intraOpNumThreads;
    }

    /// <summary>
    /// One device per CUDA device id, in this order (the first is device 0 of the list). An id may repeat: two model
    /// copies on one GPU overlap one copy's host work (prompt encoding, scheduler steps) with the other's GPU work.
    /// </summary>
    /// <param name="deviceIds">The CUDA device ordinals (0 for the first GPU).</param>
    /// <exception cref="ArgumentException">The list is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is negative.</exception>
    public static DeviceList Cuda(params int[] deviceIds) => Cuda(deviceIds, null);

    /// <summary>One device per CUDA device id, each with the same provider settings.</summary>
    /// <param name="deviceIds">The CUDA device ordinals.</param>
    /// <param name="options">The CUDA provider settings of every device; defaults when null.</param>
    /// <exception cref="ArgumentException">The list is empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An id is negative.</exception>
    public static DeviceList Cuda(IEnumerable<int> deviceIds, CudaProviderOptions? options)
    {
        ArgumentNullException.ThrowIfNull(deviceIds);
        var devices = new List<ExecutionProvider>();
        foreach (int id in deviceIds)
            devices.Add(ExecutionProvider.Cuda(id, options));
        if (devices.Count == 0)
            throw new ArgumentException("A CUDA device list needs at least one device id.", nameof(deviceIds));
        return new DeviceList(devices.ToArray(), null);
    }

    /// <summary>
    /// <paramref name="instances"/> CPU devices, each with its own sessions. The cores are shared among them: each session
    /// runs <paramref name="threadsPerInstance"/> intra-op threads, by default the machine's logical processors divided by
    /// the instance count (at least 1), so that the instances together use every core once; a single instance keeps
    /// ONNX Runtime's own default (or <see cref="StableDiffusionModelOptions.IntraOpNumThreads"/>), as a single-device load.
    /// </summary>
    /// <param name="instances">How many CPU instances, 1 to 64.</param>
    /// <param name="threadsPerInstance">Intra-op threads per session; null divides the processors among several instances.</param>
    /// <exception cref="ArgumentOutOfRangeException">A count is out of range.</exception>
    public static DeviceList Cpu(int instances, int? threadsPerInstance = null)
    {
        if (instances < 1 || instances > 64)
            throw new ArgumentOutOfRangeException(nameof(instances), instances, "The number of CPU instances must be in [1, 64].");
        if (threadsPerInstance is int t && (t < 1 || t > 1024))
            throw new ArgumentOutOfRangeException(nameof(threadsPerInstance), t, "Threads per CPU instance must be in [1, 1024].");
        var devices = new ExecutionProvider[instances];
        Array.Fill(devices, ExecutionProvider.Cpu);
        // Measured on 2 cores (docs/benchmarks.md, "Several devices in one process"): a session given 2 threads explicitly
        // cost 1.3-1.7x the CPU per row of ONNX Runtime's default, so one instance keeps the default.
        return new DeviceList(devices, threadsPerInstance ?? (instances == 1 ? null : Math.Max(1, Environment.ProcessorCount / instances)));
    }

    /// <summary>The devices' count.</summary>
    public int Count => _devices.Length;

    /// <summary>The execution provider of device <paramref name="index"/>.</summary>
    /// <param name="index">The device's index in the list.</param>
    public ExecutionProvider this[int index] => _devices[index];

    /// <summary>
    /// Intra-op threads of each CPU instance's sessions; null for CUDA lists and a single CPU instance, whose threads follow
    /// <see cref="StableDiffusionModelOptions.IntraOpNumThreads"/>.
    /// </summary>
    public int? IntraOpNumThreads { get; }

    /// <summary>
    /// Loads a model folder on device <paramref name="index"/> of this list alone, with the settings
    /// <see cref="MultiDeviceModel.Load"/> gives that device: its execution provider in place of the options', and
    /// <see cref="IntraOpNumThreads"/> where the list sets it (several CPU instances). For hosts that load each device's
    /// model on their own schedule, such as the Orleans package's workers (one per device of a silo); rows without a seed
    /// column are seeded from <paramref name="mlContext"/>'s default seed, as a single-device load does.
    /// </summary>
    /// <param name="mlContext">The context of the loaded model.</param>
    /// <param name="modelDirectory">The model folder (see <see cref="StableDiffusionModel.Load"/> for its contract).</param>
    /// <param name="index">The device's index in the list.</param>
    /// <param name="options">Loading options; their execution provider (and threads, for several CPU instances) are replaced
    /// as above. Defaults when null.</param>
    /// <returns>The loaded model; dispose it when done.</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="index"/> is not a device of the list.</exception>
    /// <remarks>Only load models from trusted sources: an ONNX file is code that ONNX Runtime executes.</remarks>
    public StableDiffusionModel LoadModel(MLContext mlContext, string modelDirectory, int index, StableDiffusionModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDirectory);
        if ((uint)index >= (uint)_devices.Length)
            throw new ArgumentOutOfRangeException(nameof(index), index, $"The device list has {_devices.Length} device(s): {this}.");
        options ??= new StableDiffusionModelOptions();
        return StableDiffusionModel.LoadOnDevice(mlContext, modelDirectory, options, _devices[index], IntraOpNumThreads ?? options.IntraOpNumThreads, defaultSeed: null);
    }

    /// <summary>A short name of device <paramref name="index"/> for logs and errors: <c>CUDA:1</c>, <c>CPU#2</c>.</summary>
    /// <param name="index">The device's index in the list.</param>
    public string Describe(int index) => _devices[index] is CpuExecutionProvider ? $"CPU#{index}" : _devices[index].ToString();

    /// <summary>The list for logs: <c>CUDA:0, CUDA:1</c> or <c>3 × CPU (1 thread each)</c>.</summary>
    public override string ToString()
    {
        if (_devices[0] is not CpuExecutionProvider)
            return string.Join(", ", (IEnumerable<ExecutionProvider>)_devices);
        return IntraOpNumThreads is int t ? $"{Count} × CPU ({t} thread{(t == 1 ? "" : "s")} each)" : $"{Count} × CPU";
    }

    /// <inheritdoc/>
    public IEnumerator<ExecutionProvider> GetEnumerator() => ((IEnumerable<ExecutionProvider>)_devices).GetEnumerator();

    IEnumerator IEnumerable.GetEnumerator() => _devices.GetEnumerator();
}
