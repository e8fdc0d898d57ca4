using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Latent Consistency Models (Luo et al. 2023, https://arxiv.org/abs/2310.04378; consistency models, Song et al. 2023),
/// as diffusers' <c>LCMScheduler</c>: timesteps are drawn from the distillation schedule of <c>original_inference_steps</c>
/// (k = T/original_steps; t ∈ {k−1, 2k−1, …}); each step predicts x̂₀, applies the boundary conditions
/// c_skip = σ_d²/((10t)² + σ_d²), c_out = 10t/√((10t)² + σ_d²) (σ_d = 0.5, scaled by <c>timestep_scaling</c>), and re-noises
/// the denoised sample to the next timestep with fresh noise (not after the last). Stochastic.
/// </summary>
public sealed class LcmScheduler : DiffusionScheduler
{
    private const float SigmaData = 0.5f;
    private float[]? _x0;
    private float[]? _noise;

    /// <summary>Creates an LCM scheduler.</summary>
    /// <param name="config">The settings; <c>set_alpha_to_one</c> defaults to true and <c>clip_sample</c> to false; <c>timestep_spacing</c> does not apply.</param>
    public LcmScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "leading", setAlphaToOne: true, clipSample: false))
    {
        FinalAlphaCumprod = Config.SetAlphaToOne ? 1f : Schedule.AlphasCumprod[0];
    }

    /// <inheritdoc/>
    public override string Name => "lcm";

    /// <inheritdoc/>
    public override bool IsStochastic => true;

    /// <summary>ᾱ used past timestep 0 (<c>set_alpha_to_one</c>).</summary>
    public float FinalAlphaCumprod { get; }

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new LcmScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        int original = Config.OriginalInferenceSteps;
        int k = Config.NumTrainTimesteps / original;
        if (numInferenceSteps > original)
            throw new ArgumentOutOfRangeException(nameof(numInferenceSteps), numInferenceSteps,
                $"LCM takes at most original_inference_steps ({original}) steps.");
        // lcm_origin_timesteps = arange(1, original + 1)·k − 1, reversed; indices floor(linspace(0, original, n, endpoint=False))
        var ts = new float[numInferenceSteps];
        for (int i = 0; i < numInferenceSteps; i++)
        {
            int index = (int)Math.Floor(i * ((double)original / numInferenceSteps));
            ts[i] = (original - index) * k - 1;
        }
        TimestepsArray = ts;
    }

    /// <summary>The boundary-condition scalings (c_skip, c_out) at timestep <paramref name="t"/> in float32.</summary>
    /// <param name="t">Training timestep.</param>
    public (float CSkip, float COut) GetScalings(int t)
    {
        float scaled = t * (float)Config.TimestepScaling;
        float cSkip = SigmaData * SigmaData / (scaled * scaled + SigmaData * SigmaData);
        float cOut = scaled / MathF.Sqrt(scaled * scaled + SigmaData * SigmaData);
        return (cSkip, cOut);
    }

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        int n = sample.Length;
        var timesteps = Timesteps;
        int t = (int)timesteps[stepIndex];
        int prevT = stepIndex + 1 < timesteps.Length ? (int)timesteps[stepIndex + 1] : t;
        var ac = Schedule.AlphasCumprod;
        float a = ac[t];
        float aPrev = prevT >= 0 ? ac[prevT] : FinalAlphaCumprod;
        var (cSkip, cOut) = GetScalings(t);

        Span<float> x0 = Ensure(ref _x0, n);
        PredictionMath.Original(Config.PredictionType, modelOutput, sample, MathF.Sqrt(a), MathF.Sqrt(1f - a), x0);
        PredictionMath.Clip(Config, x0);
        // denoised = c_out·x̂₀ + c_skip·x_t
        for (int i = 0; i < n; i++)
            sample[i] = cOut * x0[i] + cSkip * sample[i];
        if (predictedOriginalSample.Length == n)
            sample.CopyTo(predictedOriginalSample);
        if (stepIndex != NumInferenceSteps - 1)
        {
            // x_prev = √ᾱ_prev·denoised + √(1 − ᾱ_prev)·z
            Span<float> z = Ensure(ref _noise, n);
            noise!.NextGaussian(z);
            float sa = MathF.Sqrt(aPrev), sb = MathF.Sqrt(1f - aPrev);
            for (int i = 0; i < n; i++)
                sample[i] = sa * sample[i] + sb * z[i];
        }
    }

    /// <inheritdoc/>
    public override void AddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, Span<float> destination)
    {
        CheckAddNoise(originalSamples, noise, stepIndex, destination);
        NoiseScheduleMath.AddNoise(Schedule, (int)Timesteps[stepIndex], originalSamples, noise, destination);
    }
}

/// <summary>
/// Options of <see cref="LcmScheduler"/> (diffusers' <c>LCMScheduler</c>): the registered name <c>lcm</c>. Null keys keep the
/// folder's <c>scheduler_config.json</c> value or the class default.
/// </summary>
public sealed record LcmSchedulerOptions : SchedulerOptions
{
    /// <summary><c>original_inference_steps</c>: the length of the distillation schedule the timesteps are drawn from.</summary>
    public int? OriginalInferenceSteps { get; init; }

    /// <summary><c>timestep_scaling</c>: the timestep scale of the boundary conditions c_skip and c_out.</summary>
    public double? TimestepScaling { get; init; }

    /// <summary><c>clip_sample</c>: clip the predicted x̂₀ to ±<see cref="ClipSampleRange"/>.</summary>
    public bool? ClipSample { get; init; }

    /// <summary><c>clip_sample_range</c>.</summary>
    public double? ClipSampleRange { get; init; }

    /// <summary><c>set_alpha_to_one</c>: ᾱ = 1 rather than ᾱ₀ past the last timestep.</summary>
    public bool? SetAlphaToOne { get; init; }

    /// <summary><c>rescale_betas_zero_snr</c> (Lin et al. 2023).</summary>
    public bool? RescaleBetasZeroSnr { get; init; }

    /// <inheritdoc/>
    public override SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        config = base.ApplyTo(config);
        if (OriginalInferenceSteps is { } original)
            config = config with { OriginalInferenceSteps = original };
        if (TimestepScaling is { } scaling)
            config = config with { TimestepScaling = scaling };
        if (ClipSample is { } clip)
            config = config with { ClipSample = clip };
        if (ClipSampleRange is { } range)
            config = config with { ClipSampleRange = range };
        if (SetAlphaToOne is { } one)
            config = config with { SetAlphaToOne = one };
        if (RescaleBetasZeroSnr is { } zeroSnr)
            config = config with { RescaleBetasZeroSnr = zeroSnr };
        return config;
    }

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new LcmScheduler(config);
}
