using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace MLNet.Diffusion;

/// <summary>
/// A Stable Diffusion model folder loaded once per device of a <see cref="DeviceList"/>: one
/// <see cref="StableDiffusionModel"/> (one set of ONNX Runtime sessions) per GPU or CPU instance. Build the pipeline
/// per device with <c>mlContext.Transforms.RunOnDevices(model, m =&gt; …)</c>, which runs each mini-batch of rows, prompt
/// to image, on whichever device is free, and returns the rows in input order. Dispose it when done: it holds every
/// device's native memory.
/// </summary>
/// <remarks>Only load models from trusted sources: an ONNX file is code that ONNX Runtime executes.</remarks>
public sealed class MultiDeviceModel : IDisposable
{
    private readonly StableDiffusionModel[] _models;
    private int _disposed;

    private MultiDeviceModel(DeviceList devices, StableDiffusionModel[] models)
    {
        Devices = devices;
        _models = models;
    }

    /// <summary>
    /// Loads the model folder on every device of <paramref name="devices"/>, in list order (see
    /// <see cref="StableDiffusionModel.Load"/> for the folder's contract). Every device's model seeds rows without a seed
    /// column from the same default seed, so a row's image does not depend on the device that ran it.
    /// </summary>
    /// <param name="mlContext">The context: its log receives each device's messages; its random source gives the default seed.</param>
    /// <param name="modelDirectory">The model folder.</param>
    /// <param name="devices">The devices, e.g. <c>DeviceList.Cuda(0, 1)</c> or <c>DeviceList.Cpu(instances: 3)</c>.</param>
    /// <param name="options">Loading options for every device; their <see cref="StableDiffusionModelOptions.ExecutionProvider"/>
    /// is replaced by each device's, and <see cref="StableDiffusionModelOptions.IntraOpNumThreads"/> by
    /// <see cref="DeviceList.IntraOpNumThreads"/> where the list sets it (several CPU instances). Defaults when null.</param>
    /// <returns>The loaded model; dispose it when done.</returns>
    /// <exception cref="InvalidOperationException">A device cannot be loaded (the message names it); the devices loaded
    /// before it are released.</exception>
    public static MultiDeviceModel Load(MLContext mlContext, string modelDirectory, DeviceList devices, StableDiffusionModelOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(mlContext);
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDirectory);
        ArgumentNullException.ThrowIfNull(devices);
        options ??= new StableDiffusionModelOptions();
        var models = new StableDiffusionModel[devices.Count];
        int loaded = 0;
        try
        {
            for (; loaded < models.Length; loaded++)
            {
                int? threads = devices.IntraOpNumThreads ?? options.IntraOpNumThreads;
                // Device 0 draws the default seed from the context as a single-device load does; the others take it.
                int? seed = loaded == 0 ? null : models[0].DefaultSeed;
                try
                {
                    models[loaded] = StableDiffusionModel.LoadOnDevice(mlContext, modelDirectory, options, devices[loaded], threads, seed);
                }
                catch (Exception e) when (loaded > 0 && e is not OutOfMemoryException)
                {
                    throw new InvalidOperationException($"Loading '{modelDirectory}' on device {loaded} ({devices.Describe(loaded)}) failed: {e.Message}", e);
                }
            }
        }
        catch
        {
            for (int i = 0; i < loaded; i++)
                models[i].Dispose();
            throw;
        }
        var result = new MultiDeviceModel(devices, models);
        using (var ch = models[0].Host.Start("MultiDeviceModel"))
            ch.Info(MessageSensitivity.None, $"Loaded '{models[0].Directory}' on {devices.Count} devices: {devices}.");
        return result;
    }

    /// <summary>The devices, in the order of <see cref="Models"/>.</summary>
    public DeviceList Devices { get; }

    /// <summary>One loaded model per device (index i runs on <c>Devices[i]</c>); the pipeline is built on each.</summary>
    public IReadOnlyList<StableDiffusionModel> Models
    {
        get
        {
            ThrowIfDisposed();
            return _models;
        }
    }

    /// <summary>The context the model was loaded with.</summary>
    public MLContext MLContext => _models[0].MLContext;

    /// <summary>What the folder says about the model (the same on every device).</summary>
    public ModelInfo Info => _models[0].Info;

    internal bool IsDisposed => System.Threading.Volatile.Read(ref _disposed) != 0;

    internal void ThrowIfDisposed()
    {
        if (IsDisposed)
            throw new ObjectDisposedException(nameof(MultiDeviceModel), $"The multi-device model '{_models[0].Directory}' was disposed; load it again to use it.");
    }

    /// <summary>Releases every device's sessions. Pipelines built on it fail with <see cref="ObjectDisposedException"/> afterwards.</summary>
    public void Dispose()
    {
        if (System.Threading.Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        foreach (var model in _models)
            model.Dispose();
    }
}
