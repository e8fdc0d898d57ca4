using System;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// Latent-diffusion super-resolution (diffusers <c>LDMSuperResolutionPipeline.__call__</c>): at every step the UNet takes
/// the latents concatenated with the low-resolution image on the channel axis, and the scheduler's
/// <c>scale_model_input</c> scales the whole concatenation:
/// <code>
/// latents_input = torch.cat([latents, image], dim=1)
/// latents_input = self.scheduler.scale_model_input(latents_input, t)
/// </code>
/// So the image channels are written every step (<see cref="BeforeUnet"/>), scaled as the latents are (the identity for
/// DDIM, the pipeline's usual scheduler; x / √(σ² + 1) for sigma schedulers). The image is the pipeline's
/// <c>preprocess</c> output, [3, h, w] in [−1, 1] at the latent grid's size; buffers are per row, filled by the caller
/// before the loop (<see cref="Ensure"/>, <see cref="Image"/>).
/// </summary>
internal sealed class SuperResolutionConditioning : IUnetConditioning
{
    /// <summary>The channels of the low-resolution image (RGB).</summary>
    public const int ImageChannels = 3;

    private readonly int _plane;
    private float[] _images = Array.Empty<float>();
    private int _channelOffset;
    private int _sampleChannels;

    /// <param name="plane">h·w, the latent grid's pixels (= the low-resolution image's pixels).</param>
    public SuperResolutionConditioning(int plane)
    {
        _plane = plane;
    }

    /// <summary>Rows the buffers hold.</summary>
    public int Count { get; private set; }

    /// <summary>Sizes the per-row buffers for <paramref name="count"/> rows.</summary>
    public void Ensure(int count)
    {
        if (_images.Length < count * ImageChannels * _plane)
            _images = new float[count * ImageChannels * _plane];
        Count = count;
    }

    /// <summary>Row <paramref name="row"/>'s low-resolution image [3, h, w] in [−1, 1].</summary>
    public Span<float> Image(int row) => _images.AsSpan(row * ImageChannels * _plane, ImageChannels * _plane);

    public int SampleChannels => ImageChannels;

    public void BeginBatch(in UnetBatch batch)
    {
        if (batch.Rows.Count != Count)
            throw new InvalidOperationException($"The super-resolution conditioning holds {Count} rows; the batch has {batch.Rows.Count}.");
        if (batch.Plane != _plane)
            throw new InvalidOperationException($"The low-resolution images have {_plane} pixels; the latent grid has {batch.Plane}.");
        _channelOffset = batch.ChannelOffset;
        _sampleChannels = batch.SampleChannels;
    }

    public void BeforeUnet(in UnetStep step)
    {
        int count = step.Rows.Count, row = _sampleChannels * _plane, len = ImageChannels * _plane;
        for (int r = 0; r < count; r++)
        {
            var image = Image(r);
            step.Scheduler.ScaleModelInput(image, step.Sample.Slice(r * row + _channelOffset * _plane, len), step.Index);
            if (step.Guidance)
                step.Scheduler.ScaleModelInput(image, step.Sample.Slice((count + r) * row + _channelOffset * _plane, len), step.Index);
        }
    }
}
