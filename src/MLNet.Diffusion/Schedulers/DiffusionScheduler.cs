using System;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// The one contract every sampler follows (diffusers' SchedulerMixin): set the number of inference steps, feed the
/// UNet each of <see cref="Timesteps"/> in order with the input scaled by <see cref="ScaleModelInput"/>, and call
/// <see cref="Step"/> with its output. Pure math on spans: no ONNX, no ML.NET.
/// </summary>
/// <remarks>
/// <para>
/// A span holds a whole batch (rows of [C, h, w] back to back); every row is at the same step. Multistep
/// schedulers keep their history for the batch, so one instance serves one batch from <see cref="SetTimesteps"/>
/// to the last <see cref="Step"/>; create one instance per concurrent batch (<see cref="Clone"/>).
/// </para>
/// <para>
/// Second-order schedulers (Heun) list some timesteps twice and expect one <see cref="Step"/> per entry, exactly
/// as diffusers' pipelines iterate them. Stochastic schedulers draw noise from the <see cref="INoiseSource"/>
/// passed to <see cref="Step"/>, so the caller's seed fixes the result.
/// </para>
/// </remarks>
public abstract class DiffusionScheduler
{
    /// <summary>Initializes the scheduler from its config.</summary>
    /// <param name="config">The scheduler settings; validated here.</param>
    protected DiffusionScheduler(SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        Schedule = new NoiseSchedule(config);
    }

    /// <summary>The settings this scheduler was created with.</summary>
    public SchedulerConfig Config { get; }

    /// <summary>The training noise schedule (betas, ᾱ).</summary>
    public NoiseSchedule Schedule { get; }

    /// <summary>The scheduler's name as accepted by <see cref="SchedulerFactory.Create(string, SchedulerConfig)"/>, e.g. <c>ddim</c>.</summary>
    public abstract string Name { get; }

    /// <summary>How many UNet evaluations one inference step takes (diffusers' <c>order</c>); 2 for Heun.</summary>
    public virtual int Order => 1;

    /// <summary>
    /// Whether <see cref="Step"/> draws noise (DDPM, Euler ancestral, DDIM with eta &gt; 0, LCM). A stochastic scheduler
    /// throws <see cref="ArgumentNullException"/> when a step gets no <see cref="INoiseSource"/>.
    /// </summary>
    public virtual bool IsStochastic => false;

    /// <summary>The number of inference steps set by the last <see cref="SetTimesteps"/>.</summary>
    public int NumInferenceSteps { get; private set; }

    /// <summary>The timesteps to feed the UNet, in loop order; valid after <see cref="SetTimesteps"/>.</summary>
    public ReadOnlySpan<float> Timesteps => TimestepsArray ?? throw NotSet();

    /// <summary>Standard deviation of the initial noise (1 for DDPM-style schedulers, σ_max-based for sigma schedulers).</summary>
    public virtual float InitNoiseSigma => 1f;

    /// <summary>The timesteps array a subclass fills in <see cref="OnSetTimesteps"/>.</summary>
    protected float[]? TimestepsArray { get; set; }

    /// <summary>Computes the inference timesteps (and sigmas) for <paramref name="numInferenceSteps"/> steps and resets all per-run state.</summary>
    /// <param name="numInferenceSteps">Number of denoising steps, at least 1 and at most the number of training timesteps.</param>
    /// <exception cref="ArgumentOutOfRangeException">The number of steps is out of range.</exception>
    public void SetTimesteps(int numInferenceSteps)
    {
        if (numInferenceSteps < 1 || numInferenceSteps > Config.NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps,
                $"The number of inference steps must be in [1, {Config.NumTrainTimesteps}] (num_train_timesteps).");
        NumInferenceSteps = numInferenceSteps;
        OnSetTimesteps(numInferenceSteps);
    }

    /// <summary>Fills <see cref="TimestepsArray"/> and resets state; arguments are already validated.</summary>
    /// <param name="numInferenceSteps">Number of denoising steps.</param>
    protected abstract void OnSetTimesteps(int numInferenceSteps);

    /// <summary>
    /// Scales the UNet input for the timestep at <paramref name="stepIndex"/> (x / √(σ² + 1) for sigma schedulers,
    /// identity otherwise). <paramref name="destination"/> may be the same memory as <paramref name="sample"/>.
    /// </summary>
    /// <param name="sample">The current sample (whole batch).</param>
    /// <param name="destination">Receives the scaled input.</param>
    /// <param name="stepIndex">Index into <see cref="Timesteps"/>.</param>
    public virtual void ScaleModelInput(ReadOnlySpan<float> sample, Span<float> destination, int stepIndex)
    {
        if (!sample.Overlaps(destination, out int offset) || offset != 0)
            sample.CopyTo(destination);
    }

    /// <summary>
    /// One reverse-diffusion step: replaces <paramref name="sample"/> (x_t) by the previous sample (x_{t−1}) given
    /// the model output at <see cref="Timesteps"/>[<paramref name="stepIndex"/>].
    /// </summary>
    /// <param name="modelOutput">The UNet's prediction (ε, v or x₀ per <c>prediction_type</c>), same length as the sample.</param>
    /// <param name="stepIndex">Index into <see cref="Timesteps"/>; steps must be taken in order.</param>
    /// <param name="sample">The current sample, updated in place.</param>
    /// <param name="noise">Noise for stochastic schedulers; required by them, ignored by the others.</param>
    /// <param name="predictedOriginalSample">Optional: receives the predicted x₀ of this step (same length as the sample).</param>
    public abstract void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default);

    /// <summary>
    /// The forward process q(x_t | x_0) at <see cref="Timesteps"/>[<paramref name="stepIndex"/>]:
    /// √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε for DDPM-style schedulers, x₀ + σ_t·ε for sigma schedulers (image-to-image start).
    /// </summary>
    /// <param name="originalSamples">x₀.</param>
    /// <param name="noise">ε, same length.</param>
    /// <param name="stepIndex">Index into <see cref="Timesteps"/>.</param>
    /// <param name="destination">Receives x_t; may alias <paramref name="originalSamples"/>.</param>
    public abstract void AddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, Span<float> destination);

    /// <summary>
    /// Image-to-image: the index into <see cref="Timesteps"/> where denoising starts for a strength in [0, 1],
    /// as diffusers' img2img pipelines compute it (init = min(⌊steps·strength⌋, steps); start = (steps − init)·order).
    /// </summary>
    /// <param name="strength">0 keeps the input, 1 starts from pure noise.</param>
    /// <returns>The first step index; equal to <c>Timesteps.Length</c> when nothing is to be denoised.</returns>
    public int GetStartIndex(float strength)
    {
        if (!(strength >= 0f && strength <= 1f))
            throw new ArgumentOutOfRangeException(nameof(strength), strength, "Strength must be in [0, 1].");
        if (TimestepsArray is null)
            throw NotSet();
        int init = Math.Min((int)(NumInferenceSteps * strength), NumInferenceSteps);
        int start = Math.Max(NumInferenceSteps - init, 0) * Order;
        return Math.Min(start, TimestepsArray.Length);
    }

    /// <summary>Image-to-image starting mid-schedule: tells a scheduler that keeps a step counter where the loop begins.</summary>
    /// <param name="stepIndex">The first index the loop will use.</param>
    public virtual void SetBeginIndex(int stepIndex)
    {
    }

    /// <summary>Creates a fresh instance with the same config (no timesteps set, no state).</summary>
    public abstract DiffusionScheduler Clone();

    /// <summary>Checks the arguments every <see cref="Step"/> shares: timesteps set, index in range, equal lengths, noise when stochastic.</summary>
    /// <param name="modelOutput">The model output.</param>
    /// <param name="stepIndex">The step index.</param>
    /// <param name="sample">The sample.</param>
    /// <param name="noise">The noise source.</param>
    /// <param name="predictedOriginalSample">The optional x₀ destination.</param>
    protected void CheckStep(ReadOnlySpan<float> modelOutput, int stepIndex, ReadOnlySpan<float> sample, INoiseSource? noise, ReadOnlySpan<float> predictedOriginalSample)
    {
        var timesteps = Timesteps;
        if ((uint)stepIndex >= (uint)timesteps.Length)
            throw new ArgumentOutOfRangeException(nameof(stepIndex), stepIndex, $"Step index must be in [0, {timesteps.Length}).");
        if (modelOutput.Length != sample.Length)
            throw new ArgumentException($"Model output has {modelOutput.Length} values but the sample has {sample.Length}.", nameof(modelOutput));
        if (predictedOriginalSample.Length != 0 && predictedOriginalSample.Length != sample.Length)
            throw new ArgumentException($"predictedOriginalSample has {predictedOriginalSample.Length} values but the sample has {sample.Length}; pass an empty span or one of the sample's length.", nameof(predictedOriginalSample));
        if (IsStochastic && noise is null)
            throw new ArgumentNullException(nameof(noise), $"The {Name} scheduler is stochastic: every Step needs a noise source.");
    }

    /// <summary>Checks the arguments of <see cref="AddNoise"/>.</summary>
    /// <param name="originalSamples">x₀.</param>
    /// <param name="noise">ε.</param>
    /// <param name="stepIndex">The step index.</param>
    /// <param name="destination">The destination.</param>
    protected void CheckAddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, ReadOnlySpan<float> destination)
    {
        var timesteps = Timesteps;
        if ((uint)stepIndex >= (uint)timesteps.Length)
            throw new ArgumentOutOfRangeException(nameof(stepIndex), stepIndex, $"Step index must be in [0, {timesteps.Length}).");
        if (noise.Length != originalSamples.Length || destination.Length != originalSamples.Length)
            throw new ArgumentException($"originalSamples ({originalSamples.Length}), noise ({noise.Length}) and destination ({destination.Length}) must have the same length.", nameof(noise));
    }

    /// <summary>Returns <paramref name="buffer"/> resized to <paramref name="length"/>, reallocating only when the length changes.</summary>
    /// <param name="buffer">The buffer kept by the scheduler.</param>
    /// <param name="length">The batch length.</param>
    protected static float[] Ensure(ref float[]? buffer, int length)
    {
        if (buffer is null || buffer.Length != length)
            buffer = new float[length];
        return buffer;
    }

    /// <summary>The exception thrown when the schedule is used before <see cref="SetTimesteps"/>.</summary>
    protected static InvalidOperationException NotSet() => new("SetTimesteps must be called before the scheduler is used.");
}
