using System;
using MLNet.Diffusion;

namespace Microsoft.ML;

/// <summary>
/// <c>mlContext.Transforms.RunOnDevices(…)</c>: a diffusion pipeline on every device of a <see cref="MultiDeviceModel"/>.
/// </summary>
public static class MultiDeviceCatalog
{
    /// <summary>
    /// Create a <see cref="DevicePoolingEstimator"/>, which builds <paramref name="pipeline"/> once per device of
    /// <paramref name="model"/> and, when a cursor moves, lets each device pull the next mini-batch of rows from the one
    /// input cursor and run it through its whole pipeline (e.g. EncodePrompt → DenoiseLatents → DecodeLatents). Rows come
    /// back in input order, and each row's values are the same whatever the number of devices: seeds and errors follow the
    /// row's position in the input, and every stage batches the rows as it would on one device.
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The model loaded on the devices (<see cref="MultiDeviceModel.Load"/>).</param>
    /// <param name="pipeline">Builds the per-device pipeline on the given device's model; called once per device. Every
    /// diffusion stage must be built on the model it is given.</param>
    /// <param name="options">Mini-batch size, look-ahead, progress and cancellation; defaults when null.</param>
    /// <example><code>
    /// using var model = MultiDeviceModel.Load(mlContext, folder, DeviceList.Cuda(0, 1, 2));
    /// var pipeline = mlContext.Transforms.RunOnDevices(model, m =&gt;
    ///     mlContext.Transforms.EncodePrompt(m, "Embeddings", "Prompt")
    ///         .Append(mlContext.Transforms.DenoiseLatents(m, "Latents", "Embeddings", new DenoiseLatentsOptions { SeedColumnName = "Seed" }))
    ///         .Append(mlContext.Transforms.DecodeLatents(m, "Image", "Latents")));
    /// </code></example>
    public static DevicePoolingEstimator RunOnDevices(this TransformsCatalog catalog, MultiDeviceModel model,
        Func<StableDiffusionModel, IEstimator<ITransformer>> pipeline, RunOnDevicesOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new DevicePoolingEstimator(model, pipeline, options ?? new RunOnDevicesOptions());
    }
}
