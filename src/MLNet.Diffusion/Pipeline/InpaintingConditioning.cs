using System;
using System.Numerics.Tensors;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// The inpainting part of the denoising loop, for one batch (diffusers StableDiffusionInpaintPipeline, steps 7–9 of
/// its recipe). Two ways, chosen by the UNet's input channels:
/// <list type="bullet">
/// <item>an inpainting UNet (2C + 1 channels) takes the mask m and the masked image's latents y next to the scaled
/// latents: <c>sample = concat(scale_model_input(x), m, y)</c> on the channel axis (<see cref="BeginBatch"/>);</item>
/// <item>an ordinary UNet (C channels) inpaints by blending the known region after every step
/// (<see cref="BlendKnownRegion"/>): <c>x = (1 − m)·add_noise(x₀, ε, t_next) + m·x</c>, and at the last step
/// <c>x = (1 − m)·x₀ + m·x</c>, so the final latents outside the mask are the initial latents x₀ exactly.</item>
/// </list>
/// Buffers are per row, filled by the caller before the loop (<see cref="Ensure"/>, <see cref="Mask"/>,
/// <see cref="MaskedImageLatents"/>), and reused across batches of the same size.
/// </summary>
internal sealed class InpaintingConditioning : IUnetConditioning
{
    private readonly int _channels;
    private readonly int _plane;
    private float[] _masks = Array.Empty<float>();
    private float[] _maskedLatents = Array.Empty<float>();
    private float[] _known = Array.Empty<float>();
    private float[] _keep = Array.Empty<float>();

    /// <param name="channels">C, the latent channels.</param>
    /// <param name="plane">h·w, the latent pixels.</param>
    /// <param name="unetTakesMask">Whether the UNet is an inpainting UNet (2C + 1 input channels).</param>
    public InpaintingConditioning(int channels, int plane, bool unetTakesMask)
    {
        _channels = channels;
        _plane = plane;
        UnetTakesMask = unetTakesMask;
    }

    /// <summary>Whether the UNet takes the mask and the masked-image latents (else the known region is blended).</summary>
    public bool UnetTakesMask { get; }

    /// <summary>Rows the buffers hold.</summary>
    public int Count { get; private set; }

    /// <summary>Sizes the buffers for <paramref name="count"/> rows.</summary>
    public void Ensure(int count)
    {
        if (_masks.Length != count * _plane)
            _masks = new float[count * _plane];
        int latents = UnetTakesMask ? count * _channels * _plane : 0;
        if (_maskedLatents.Length != latents)
            _maskedLatents = new float[latents];
        Count = count;
    }

    /// <summary>Row <paramref name="row"/>'s mask [h·w]: 1 repaints, 0 keeps.</summary>
    public Span<float> Mask(int row) => _masks.AsSpan(row * _plane, _plane);

    /// <summary>Row <paramref name="row"/>'s masked-image latents [C·h·w] (inpainting UNets only).</summary>
    public Span<float> MaskedImageLatents(int row) => _maskedLatents.AsSpan(row * _channels * _plane, _channels * _plane);

        /// <summary>Channels this conditioning appends to a UNet sample row: the mask and the masked-image latents (C + 1), or none.</summary>
    public int SampleChannels => UnetTakesMask ? _channels + 1 : 0;

    /// <summary>
    /// Checks the batch, and for an inpainting UNet writes its sample channels: per row the mask and the masked-image
    /// latents after the scaled latents, <c>sample = concat(scale_model_input(x), m, y)</c>, in both halves with guidance
    /// (the denoiser rewrites only the latents' channels every step).
    /// </summary>
    public void BeginBatch(in UnetBatch batch)
    {
        int count = batch.Rows.Count, len = _channels * _plane;
        if (Count != count)
            throw new InvalidOperationException($"Inpainting: the batch has {count} rows; the masks were prepared for {Count}.");
        if (!UnetTakesMask)
        {
            if (batch.Rows.InitialLatents.Length != count * len)
                throw new ArgumentException($"Inpainting with an ordinary UNet needs {count}×{len} initial latent values, got {batch.Rows.InitialLatents.Length}.", nameof(batch));
            return;
        }
        int row = batch.SampleChannels * _plane, offset = batch.ChannelOffset * _plane;
        int unetRows = batch.Guidance ? 2 * count : count;
        for (int u = 0; u < unetRows; u++)
        {
            int r = u % count;
            var target = batch.Sample.Slice(u * row + offset, SampleChannels * _plane);
            Mask(r).CopyTo(target);
            MaskedImageLatents(r).CopyTo(target.Slice(_plane));
        }
    }

    /// <summary>The ordinary-UNet path: blends the known region after every step (<see cref="BlendKnownRegion"/>).</summary>
    public void AfterStep(in UnetStep step)
    {
        if (!UnetTakesMask)
            BlendKnownRegion(step.Latents, step.Rows.InitialLatents.Span, step.InitialNoise, step.Scheduler, step.Index);
    }

    /// <summary>
    /// The ordinary-UNet path after the step at <paramref name="stepIndex"/>: latents outside the mask become the
    /// initial latents noised to the next timestep (diffusers: <c>scheduler.add_noise(image_latents, noise, t_next)</c>),
    /// or the initial latents themselves after the last step.
    /// </summary>
    /// <param name="latents">The batch's latents after the step [count, C, h, w], updated in place.</param>
    /// <param name="initialLatents">x₀, the encoded image [count, C, h, w].</param>
    /// <param name="noise">ε, the batch's initial noise [count, C, h, w] (the noise the loop started from).</param>
    /// <param name="scheduler">The batch's scheduler.</param>
    /// <param name="stepIndex">The index of the step just taken.</param>
    public void BlendKnownRegion(Span<float> latents, ReadOnlySpan<float> initialLatents, ReadOnlySpan<float> noise, DiffusionScheduler scheduler, int stepIndex)
    {
        if (_known.Length != latents.Length)
            _known = new float[latents.Length];
        if (stepIndex + 1 < scheduler.Timesteps.Length)
            scheduler.AddNoise(initialLatents, noise, stepIndex + 1, _known);
        else
            initialLatents.CopyTo(_known);
        // x = (1 − m)·known + m·x, channel by channel with the row's mask (exactly known where m = 0, x where m = 1).
        if (_keep.Length != _plane)
            _keep = new float[_plane];
        int len = _channels * _plane;
        for (int r = 0; r < Count; r++)
        {
            var mask = Mask(r);
            TensorPrimitives.Subtract(1f, mask, _keep);
            for (int c = 0; c < _channels; c++)
            {
                int offset = r * len + c * _plane;
                var x = latents.Slice(offset, _plane);
                TensorPrimitives.Multiply(x, mask, x);
                TensorPrimitives.MultiplyAdd(_known.AsSpan(offset, _plane), _keep, x, x);
            }
        }
    }
}
