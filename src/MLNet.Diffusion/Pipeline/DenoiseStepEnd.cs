using System;

namespace MLNet.Diffusion;

/// <summary>
/// Called at the end of every step of the denoising loop, as diffusers' <c>callback_on_step_end</c>
/// (the DenoiseLatents stage's <c>DenoiseLatentsOptions.OnStepEnd</c>). It runs on the cursor's thread between two steps; a slow callback
/// slows the loop.
/// </summary>
/// <param name="step">The step just taken and the batch's latents after it (valid only during the call).</param>
public delegate void DenoiseStepCallback(DenoiseStepEnd step);

/// <summary>
/// The state of a mini-batch at the end of a denoising step. <see cref="Latents"/> is a view of the loop's own buffer:
/// it is valid only during the callback (the next step overwrites it) and cannot be kept; copy what you need.
/// </summary>
public readonly ref struct DenoiseStepEnd
{
    internal DenoiseStepEnd(int stepIndex, int stepCount, float timestep, long firstRow, int rowCount, int channels, int height, int width, ReadOnlySpan<float> latents)
    {
        StepIndex = stepIndex;
        StepCount = stepCount;
        Timestep = timestep;
        FirstRow = firstRow;
        RowCount = rowCount;
        Channels = channels;
        LatentHeight = height;
        LatentWidth = width;
        Latents = latents;
    }

    /// <summary>The step just taken, from 0 (diffusers' <c>i</c>); an image-to-image run counts from its first kept timestep.</summary>
    public int StepIndex { get; }

    /// <summary>Steps in this run (UNet evaluations), so the last step has <see cref="StepIndex"/> = StepCount − 1.</summary>
    public int StepCount { get; }

    /// <summary>The scheduler timestep t of the step.</summary>
    public float Timestep { get; }

    /// <summary>Position of the batch's first row in the data view.</summary>
    public long FirstRow { get; }

    /// <summary>Rows in the batch.</summary>
    public int RowCount { get; }

    /// <summary>C, the latent channels.</summary>
    public int Channels { get; }

    /// <summary>h, the latent height (the image height / the VAE factor).</summary>
    public int LatentHeight { get; }

    /// <summary>w, the latent width.</summary>
    public int LatentWidth { get; }

    /// <summary>
    /// The batch's latents after the step, [RowCount, C, h, w] row after row (row r of the batch is position
    /// <see cref="FirstRow"/> + r). Valid only during the call. After the last step these are the stage's output.
    /// </summary>
    public ReadOnlySpan<float> Latents { get; }

    /// <summary>Row <paramref name="row"/>'s latents [C, h, w] (0 ≤ row &lt; <see cref="RowCount"/>); valid only during the call.</summary>
    public ReadOnlySpan<float> Row(int row)
    {
        if ((uint)row >= (uint)RowCount)
            throw new ArgumentOutOfRangeException(nameof(row), row, $"The batch has {RowCount} rows.");
        int length = Channels * LatentHeight * LatentWidth;
        return Latents.Slice(row * length, length);
    }
}
