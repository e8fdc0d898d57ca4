using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Heun's second-order method on the probability-flow ODE (Karras et al. 2022, https://arxiv.org/abs/2206.00364,
/// Algorithm 1), as diffusers' <c>HeunDiscreteScheduler</c>: every timestep but the first is listed twice; the first
/// evaluation takes an Euler step, the second corrects it with the average of both slopes. <see cref="Order"/> is 2.
/// </summary>
public sealed class HeunDiscreteScheduler : SigmaScheduler
{
    private float[]? _x0;
    private float[]? _prevDerivative;
    private float[]? _prevSample;
    private float[]? _d;
    private float _dt;
    private int _firstOrderIndex = -1;

    /// <summary>Creates a Heun scheduler.</summary>
    /// <param name="config">The settings; <c>timestep_spacing</c> defaults to linspace; <c>rescale_betas_zero_snr</c> is not a key of this diffusers class and is ignored.</param>
    public HeunDiscreteScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "linspace", setAlphaToOne: true, clipSample: false, hasZeroSnr: false))
    {
    }

    /// <inheritdoc/>
    public override string Name => Config.UseKarrasSigmas ? "heun-karras" : "heun";

    /// <inheritdoc/>
    public override int Order => 2;

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new HeunDiscreteScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        var (ts, sig) = InterpolatedSchedule(numInferenceSteps, float32Timesteps: true, zeroSnrLast: false);
        var s = WithFinal(sig, 0f);
        // σ: [σ0, σ1, σ1, …, σ_{n−1}, σ_{n−1}, 0]; timesteps: [t0, t1, t1, …, t_{n−1}, t_{n−1}]
        int n = sig.Length;
        var sigmas = new float[2 * n];
        var timesteps = new float[2 * n - 1];
        sigmas[0] = s[0];
        timesteps[0] = (float)ts[0];
        for (int i = 1; i < n; i++)
        {
            sigmas[2 * i - 1] = sigmas[2 * i] = s[i];
            timesteps[2 * i - 1] = timesteps[2 * i] = (float)ts[i];
        }
        sigmas[^1] = s[n];
        SigmasArray = sigmas;
        TimestepsArray = timesteps;
        _firstOrderIndex = -1;
    }

    /// <inheritdoc/>
    public override void SetBeginIndex(int stepIndex) => _firstOrderIndex = -1;

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        int n = sample.Length;
        var sigmas = Sigmas;
        // Even indices start a Heun step (first order); odd indices complete it.
        bool first = stepIndex % 2 == 0;
        if (!first && _firstOrderIndex != stepIndex - 1)
            throw new InvalidOperationException($"Heun step {stepIndex} completes step {stepIndex - 1}, which was not taken; image-to-image must start at an even index (GetStartIndex).");
        float sigma = first ? sigmas[stepIndex] : sigmas[stepIndex - 1];
        float sigmaNext = first ? sigmas[stepIndex + 1] : sigmas[stepIndex];
        float sigmaInput = first ? sigma : sigmaNext;

        Span<float> x0 = predictedOriginalSample.Length == n ? predictedOriginalSample : Ensure(ref _x0, n);
        PredictionMath.OriginalFromSigma(Config.PredictionType, modelOutput, sample, sigmaInput, x0);
        PredictionMath.Clip(Config, x0);
        Span<float> prevD = Ensure(ref _prevDerivative, n);
        Span<float> prevSample = Ensure(ref _prevSample, n);
        if (first)
        {
            // derivative = (x − x̂₀)/σ ; dt = σ_next − σ ; remember both and x.
            TensorPrimitives.Subtract(sample, x0, prevD);
            TensorPrimitives.Divide(prevD, sigma, prevD);
            _dt = sigmaNext - sigma;
            sample.CopyTo(prevSample);
            Span<float> d = Ensure(ref _d, n);
            TensorPrimitives.Multiply(prevD, _dt, d);
            TensorPrimitives.Add(sample, d, sample);
            _firstOrderIndex = stepIndex;
        }
        else
        {
            // derivative = ((x − x̂₀)/σ_next + d_prev)/2 ; x ← x_prev + derivative·dt
            Span<float> d = Ensure(ref _d, n);
            TensorPrimitives.Subtract(sample, x0, d);
            TensorPrimitives.Divide(d, sigmaNext, d);
            TensorPrimitives.Add(prevD, d, d);
            TensorPrimitives.Divide(d, 2f, d);
            TensorPrimitives.Multiply(d, _dt, d);
            TensorPrimitives.Add(prevSample, d, sample);
            _firstOrderIndex = -1;
        }
    }
}

/// <summary>
/// Options of <see cref="HeunDiscreteScheduler"/> (diffusers' <c>HeunDiscreteScheduler</c>): the registered names
/// <c>heun</c> and <c>heun-karras</c>. Null keys keep the folder's <c>scheduler_config.json</c> value or the class default.
/// </summary>
public sealed record HeunDiscreteSchedulerOptions : SchedulerOptions
{
    /// <summary><c>use_karras_sigmas</c>: the noise levels of Karras et al. 2022, eq. 5.</summary>
    public bool? UseKarrasSigmas { get; init; }

    /// <summary><c>clip_sample</c>: clip the predicted x̂₀ to ±<see cref="ClipSampleRange"/>.</summary>
    public bool? ClipSample { get; init; }

    /// <summary><c>clip_sample_range</c>.</summary>
    public double? ClipSampleRange { get; init; }

    /// <inheritdoc/>
    public override SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        config = base.ApplyTo(config);
        if (UseKarrasSigmas is { } karras)
            config = config with { UseKarrasSigmas = karras };
        if (ClipSample is { } clip)
            config = config with { ClipSample = clip };
        if (ClipSampleRange is { } range)
            config = config with { ClipSampleRange = range };
        return config;
    }

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new HeunDiscreteScheduler(config);
}
