using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Euler's method on the probability-flow ODE (Karras et al. 2022, https://arxiv.org/abs/2206.00364, Algorithm 2 with
/// S_churn = 0), as diffusers' <c>EulerDiscreteScheduler</c> after k-diffusion: d = (x − x̂₀)/σ, x ← x + d·(σ_next − σ).
/// Supports <c>use_karras_sigmas</c>, <c>final_sigmas_type</c>, zero-SNR rescale and all three prediction types.
/// </summary>
public sealed class EulerDiscreteScheduler : SigmaScheduler
{
    private float[]? _x0;
    private float[]? _d;

    /// <summary>Creates an Euler scheduler.</summary>
    /// <param name="config">The settings; <c>timestep_spacing</c> defaults to linspace as in diffusers.</param>
    public EulerDiscreteScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "linspace", setAlphaToOne: true, clipSample: false))
    {
    }

    /// <inheritdoc/>
    public override string Name => Config.UseKarrasSigmas ? "euler-karras" : "euler";

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new EulerDiscreteScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        var (ts, sig) = InterpolatedSchedule(numInferenceSteps, float32Timesteps: true, zeroSnrLast: Config.RescaleBetasZeroSnr);
        SigmasArray = WithFinal(sig, FinalSigma());
        TimestepsArray = Array.ConvertAll(ts, t => (float)t);
    }

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        int n = sample.Length;
        var sigmas = Sigmas;
        float sigma = sigmas[stepIndex];
        Span<float> x0 = predictedOriginalSample.Length == n ? predictedOriginalSample : Ensure(ref _x0, n);
        Span<float> d = Ensure(ref _d, n);
        PredictionMath.OriginalFromSigma(Config.PredictionType, modelOutput, sample, sigma, x0);
        // derivative = (sample − x̂₀)/σ ; x ← sample + derivative·(σ_next − σ)
        TensorPrimitives.Subtract(sample, x0, d);
        TensorPrimitives.Divide(d, sigma, d);
        TensorPrimitives.Multiply(d, sigmas[stepIndex + 1] - sigma, d);
        TensorPrimitives.Add(sample, d, sample);
    }
}

/// <summary>
/// Options of <see cref="EulerDiscreteScheduler"/> (diffusers' <c>EulerDiscreteScheduler</c>): the registered names
/// <c>euler</c> and <c>euler-karras</c>. Null keys keep the folder's <c>scheduler_config.json</c> value or the class default.
/// </summary>
public sealed record EulerDiscreteSchedulerOptions : SchedulerOptions
{
    /// <summary><c>use_karras_sigmas</c>: the noise levels of Karras et al. 2022, eq. 5.</summary>
    public bool? UseKarrasSigmas { get; init; }

    /// <summary><c>final_sigmas_type</c>: <c>zero</c> or <c>sigma_min</c>.</summary>
    public string? FinalSigmasType { get; init; }

    /// <summary><c>rescale_betas_zero_snr</c> (Lin et al. 2023).</summary>
    public bool? RescaleBetasZeroSnr { get; init; }

    /// <inheritdoc/>
    public override SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        config = base.ApplyTo(config);
        if (UseKarrasSigmas is { } karras)
            config = config with { UseKarrasSigmas = karras };
        if (FinalSigmasType is { } final)
            config = config with { FinalSigmasType = final };
        if (RescaleBetasZeroSnr is { } zeroSnr)
            config = config with { RescaleBetasZeroSnr = zeroSnr };
        return config;
    }

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new EulerDiscreteScheduler(config);
}
