using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Denoising Diffusion Probabilistic Models (Ho et al. 2020, https://arxiv.org/abs/2006.11239), Algorithm 2 with the
/// posterior mean of eq. 7 on a strided schedule, as diffusers' <c>DDPMScheduler</c>: x_{t−1} = c₀·x̂₀ + c_t·x_t + σ·z
/// with <c>variance_type</c> fixed_small (β̃_t), fixed_small_log or fixed_large (β_t). Stochastic (no noise at t = 0).
/// </summary>
public sealed class DdpmScheduler : DiffusionScheduler
{
    private float[]? _x0;
    private float[]? _noise;

    /// <summary>Creates a DDPM scheduler.</summary>
    /// <param name="config">The settings; <c>clip_sample</c> defaults to true and <c>timestep_spacing</c> to leading as in diffusers.
    /// <c>variance_type</c> learned/learned_range need a model with twice the channels and fixed_large_log yields NaN in the reference; those are rejected.</param>
    public DdpmScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "leading", setAlphaToOne: true, clipSample: true))
    {
        if (Config.VarianceType is not ("fixed_small" or "fixed_small_log" or "fixed_large"))
            throw new ArgumentException($"scheduler config key 'variance_type' has unsupported value '{Config.VarianceType}': expected 'fixed_small', 'fixed_small_log' or 'fixed_large'.", nameof(config));
    }

    /// <inheritdoc/>
    public override string Name => "ddpm";

    /// <inheritdoc/>
    public override bool IsStochastic => true;

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new DdpmScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        TimestepsArray = TimestepSpacing.Compute(Config, numInferenceSteps);
    }

    /// <summary>The variance of <c>variance_type</c> at timestep <paramref name="t"/> (diffusers' <c>_get_variance</c>, float32).</summary>
    /// <param name="t">Training timestep, one of <see cref="DiffusionScheduler.Timesteps"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException">The timestep is not in the schedule.</exception>
    public float GetVariance(int t)
    {
        int index = Timesteps.IndexOf(t);
        if (index < 0)
            throw new ArgumentOutOfRangeException(nameof(t), t, "The timestep is not one of this schedule's timesteps (set by SetTimesteps).");
        int prevT = PreviousTimestep(index);
        var ac = Schedule.AlphasCumprod;
        float a = ac[t];
        float aPrev = prevT >= 0 ? ac[prevT] : 1f;
        float currentBeta = 1f - a / aPrev;
        // β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t (eq. 7), clamped to 1e-20
        float variance = Math.Max((1f - aPrev) / (1f - a) * currentBeta, 1e-20f);
        return Config.VarianceType switch
        {
            "fixed_small_log" => MathF.Exp(0.5f * MathF.Log(variance)),
            "fixed_large" => currentBeta,
            _ => variance,
        };
    }

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        int n = sample.Length;
        int t = (int)Timesteps[stepIndex];
        int prevT = PreviousTimestep(stepIndex);
        var ac = Schedule.AlphasCumprod;
        float a = ac[t];
        float aPrev = prevT >= 0 ? ac[prevT] : 1f;
        float b = 1f - a, bPrev = 1f - aPrev;
        float currentAlpha = a / aPrev;
        float currentBeta = 1f - currentAlpha;

        Span<float> x0 = predictedOriginalSample.Length == n ? predictedOriginalSample : Ensure(ref _x0, n);
        PredictionMath.Original(Config.PredictionType, modelOutput, sample, MathF.Sqrt(a), MathF.Sqrt(b), x0);
        PredictionMath.Clip(Config, x0);

        // eq. 7: μ̃ = √ᾱ_{t−1}β_t/(1 − ᾱ_t)·x̂₀ + √α_t(1 − ᾱ_{t−1})/(1 − ᾱ_t)·x_t
        float x0Coeff = MathF.Sqrt(aPrev) * currentBeta / b;
        float xtCoeff = MathF.Sqrt(currentAlpha) * bPrev / b;
        for (int i = 0; i < n; i++)
            sample[i] = x0Coeff * x0[i] + xtCoeff * sample[i];

        if (t > 0)
        {
            Span<float> z = Ensure(ref _noise, n);
            noise!.NextGaussian(z);
            float v = GetVariance(t);
            float scale = Config.VarianceType == "fixed_small_log" ? v : MathF.Sqrt(v);
            TensorPrimitives.Multiply(z, scale, z);
            TensorPrimitives.Add(sample, z, sample);
        }
    }

    /// <summary>
    /// diffusers' <c>previous_timestep</c>: the next entry of <see cref="DiffusionScheduler.Timesteps"/>, −1 after the last.
    /// Not t − T/N, which differs for linspace spacing and for trailing spacing when
    /// N does not divide T (linspace, 4 steps: 999 → 666, not 749).
    /// </summary>
    private int PreviousTimestep(int stepIndex)
        => stepIndex + 1 < Timesteps.Length ? (int)Timesteps[stepIndex + 1] : -1;

    /// <inheritdoc/>
    public override void AddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, Span<float> destination)
    {
        CheckAddNoise(originalSamples, noise, stepIndex, destination);
        NoiseScheduleMath.AddNoise(Schedule, (int)Timesteps[stepIndex], originalSamples, noise, destination);
    }
}

/// <summary>
/// Options of <see cref="DdpmScheduler"/> (diffusers' <c>DDPMScheduler</c>): the registered name <c>ddpm</c>. Null keys keep
/// the folder's <c>scheduler_config.json</c> value or the class default.
/// </summary>
public sealed record DdpmSchedulerOptions : SchedulerOptions
{
    /// <summary><c>variance_type</c>: <c>fixed_small</c>, <c>fixed_small_log</c> or <c>fixed_large</c>.</summary>
    public string? VarianceType { get; init; }

    /// <summary><c>clip_sample</c>: clip the predicted x̂₀ to ±<see cref="ClipSampleRange"/>.</summary>
    public bool? ClipSample { get; init; }

    /// <summary><c>clip_sample_range</c>.</summary>
    public double? ClipSampleRange { get; init; }

    /// <summary><c>rescale_betas_zero_snr</c> (Lin et al. 2023).</summary>
    public bool? RescaleBetasZeroSnr { get; init; }

    /// <inheritdoc/>
    public override SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        config = base.ApplyTo(config);
        if (VarianceType is { } variance)
            config = config with { VarianceType = variance };
        if (ClipSample is { } clip)
            config = config with { ClipSample = clip };
        if (ClipSampleRange is { } range)
            config = config with { ClipSampleRange = range };
        if (RescaleBetasZeroSnr is { } zeroSnr)
            config = config with { RescaleBetasZeroSnr = zeroSnr };
        return config;
    }

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new DdpmScheduler(config);
}
