using System;
using System.Numerics;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Denoising Diffusion Implicit Models (Song et al. 2021, https://arxiv.org/abs/2010.02502), eq. 12 with σ_t(η) of
/// eq. 16, following diffusers' <c>DDIMScheduler</c> (timestep spacing, <c>set_alpha_to_one</c>, <c>clip_sample</c>,
/// prediction types, zero-SNR rescale). Deterministic for <see cref="Eta"/> = 0, stochastic otherwise.
/// </summary>
public sealed class DdimScheduler : DiffusionScheduler
{
    private float[]? _x0;
    private float[]? _eps;
    private float[]? _noise;

    /// <summary>Creates a DDIM scheduler.</summary>
    /// <param name="config">The scheduler settings; keys it does not give take DDIMScheduler's defaults (leading, set_alpha_to_one, clip_sample).</param>
    public DdimScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "leading", setAlphaToOne: true, clipSample: true))
    {
        FinalAlphaCumprod = Config.SetAlphaToOne ? 1f : Schedule.AlphasCumprod[0];
    }

    /// <inheritdoc/>
    public override string Name => "ddim";

    /// <summary>η of eq. 16 (diffusers' <c>step(eta=…)</c>); 0 = deterministic DDIM, 1 = DDPM-like. Must be ≥ 0.</summary>
    public float Eta
    {
        get => _eta;
        init => _eta = value >= 0 && float.IsFinite(value) ? value : throw new ArgumentOutOfRangeException(nameof(Eta), value, "eta must be a finite number ≥ 0.");
    }

    private readonly float _eta;

    /// <inheritdoc/>
    public override bool IsStochastic => _eta > 0;

    /// <summary>ᾱ used for the step past timestep 0 (<c>set_alpha_to_one</c>).</summary>
    public float FinalAlphaCumprod { get; }

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new DdimScheduler(Config) { Eta = Eta };

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        TimestepsArray = TimestepSpacing.Compute(Config, numInferenceSteps);
    }

    /// <summary>DDIM's σ_t² before η (eq. 16): (1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev), in float32 as diffusers' <c>_get_variance</c>.</summary>
    /// <param name="timestep">Training timestep t.</param>
    /// <param name="prevTimestep">The previous timestep (negative means past the end).</param>
    public float GetVariance(int timestep, int prevTimestep)
    {
        var ac = Schedule.AlphasCumprod;
        float a = ac[timestep];
        float aPrev = prevTimestep >= 0 ? ac[prevTimestep] : FinalAlphaCumprod;
        return ((1f - aPrev) / (1f - a)) * (1f - a / aPrev);
    }

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        int n = sample.Length;
        int t = (int)Timesteps[stepIndex];
        int prevT = t - Config.NumTrainTimesteps / NumInferenceSteps;
        var ac = Schedule.AlphasCumprod;
        float alphaProdT = ac[t];
        float alphaProdPrev = prevT >= 0 ? ac[prevT] : FinalAlphaCumprod;
        float betaProdT = 1f - alphaProdT;

        if (_eta == 0 && !Config.ClipSample && Config.PredictionType == "epsilon")
        {
            // The common case (SD's DDIM: ε-prediction, no clipping, η = 0) in one pass over memory, with the same float32
            // operations per element as the span form below: x̂₀ = (x − √(1−ᾱ)·ε) / √ᾱ; x = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev)·ε.
            StepEpsilon(modelOutput, sample, predictedOriginalSample, MathF.Sqrt(alphaProdT), MathF.Sqrt(betaProdT),
                MathF.Sqrt(alphaProdPrev), MathF.Sqrt(1f - alphaProdPrev)); // σ_t = η·… = 0
            return;
        }
        Span<float> x0 = predictedOriginalSample.Length == n ? predictedOriginalSample : Ensure(ref _x0, n);
        Span<float> eps = Ensure(ref _eps, n);
        PredictionMath.OriginalAndEpsilon(Config.PredictionType, modelOutput, sample, MathF.Sqrt(alphaProdT), MathF.Sqrt(betaProdT), x0, eps);
        PredictionMath.Clip(Config, x0);

        float variance = GetVariance(t, prevT);
        float stdDev = _eta * MathF.Sqrt(variance);
        // x_{t−1} = √ᾱ_prev·x̂₀ + √(1 − ᾱ_prev − σ_t²)·ε̂ (+ σ_t·z)   (eq. 12)
        float dirCoeff = MathF.Sqrt(1f - alphaProdPrev - stdDev * stdDev);
        TensorPrimitives.Multiply(eps, dirCoeff, eps);
        TensorPrimitives.Multiply(x0, MathF.Sqrt(alphaProdPrev), sample);
        TensorPrimitives.Add(sample, eps, sample);
        if (_eta > 0)
        {
            Span<float> z = Ensure(ref _noise, n);
            noise!.NextGaussian(z);
            TensorPrimitives.Multiply(z, MathF.Sqrt(variance) * _eta, z);
            TensorPrimitives.Add(sample, z, sample);
        }
    }

    private static void StepEpsilon(ReadOnlySpan<float> eps, Span<float> sample, Span<float> x0Out, float sqrtAlpha, float sqrtBeta, float sqrtAlphaPrev, float dirCoeff)
    {
        int i = 0, length = sample.Length;
        bool keepX0 = x0Out.Length == length;
        if (Vector.IsHardwareAccelerated)
        {
            int n = Vector<float>.Count;
            var a = new Vector<float>(sqrtAlpha);
            var b = new Vector<float>(sqrtBeta);
            var ap = new Vector<float>(sqrtAlphaPrev);
            var d = new Vector<float>(dirCoeff);
            for (; i <= length - n; i += n)
            {
                var e = new Vector<float>(eps.Slice(i, n));
                var x0 = (new Vector<float>(sample.Slice(i, n)) - e * b) / a;
                if (keepX0)
                    x0.CopyTo(x0Out.Slice(i, n));
                (x0 * ap + e * d).CopyTo(sample.Slice(i, n));
            }
        }
        for (; i < length; i++)
        {
            float e = eps[i];
            float x0 = (sample[i] - e * sqrtBeta) / sqrtAlpha;
            if (keepX0)
                x0Out[i] = x0;
            sample[i] = x0 * sqrtAlphaPrev + e * dirCoeff;
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
/// Options of <see cref="DdimScheduler"/> (diffusers' <c>DDIMScheduler</c>): the registered name <c>ddim</c>. Null keys keep
/// the folder's <c>scheduler_config.json</c> value or the class default.
/// </summary>
public sealed record DdimSchedulerOptions : SchedulerOptions
{
    /// <summary>η of Song et al. 2021, eq. 16 (diffusers' <c>step(eta=…)</c>): 0 (default) is deterministic DDIM, 1 DDPM-like sampling; must be ≥ 0.</summary>
    public float Eta { get; init; }

    /// <summary><c>clip_sample</c>: clip the predicted x̂₀ to ±<see cref="ClipSampleRange"/>.</summary>
    public bool? ClipSample { get; init; }

    /// <summary><c>clip_sample_range</c>.</summary>
    public double? ClipSampleRange { get; init; }

    /// <summary><c>set_alpha_to_one</c>: the step past the last uses ᾱ = 1 rather than ᾱ₀.</summary>
    public bool? SetAlphaToOne { get; init; }

    /// <summary><c>rescale_betas_zero_snr</c> (Lin et al. 2023).</summary>
    public bool? RescaleBetasZeroSnr { get; init; }

    /// <inheritdoc/>
    public override SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        config = base.ApplyTo(config);
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

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new DdimScheduler(config) { Eta = Eta };
}
