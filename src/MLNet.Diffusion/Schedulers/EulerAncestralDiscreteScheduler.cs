using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Ancestral sampling with Euler steps (k-diffusion's <c>sample_euler_ancestral</c>; Karras et al. 2022,
/// https://arxiv.org/abs/2206.00364; Song et al. 2021 for ancestral steps), as diffusers'
/// <c>EulerAncestralDiscreteScheduler</c>: step to σ_down, then add fresh noise of size σ_up, where
/// σ_up = √(σ_next²(σ² − σ_next²)/σ²) and σ_down = √(σ_next² − σ_up²). Stochastic.
/// </summary>
public sealed class EulerAncestralDiscreteScheduler : SigmaScheduler
{
    private float[]? _x0;
    private float[]? _d;
    private float[]? _noise;

    /// <summary>Creates an Euler ancestral scheduler.</summary>
    /// <param name="config">The settings; <c>timestep_spacing</c> defaults to linspace; <c>use_karras_sigmas</c> is not a key of this diffusers class and is ignored.</param>
    public EulerAncestralDiscreteScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "linspace", setAlphaToOne: true, clipSample: false) with { UseKarrasSigmas = false })
    {
    }

    /// <inheritdoc/>
    public override string Name => "euler-a";

    /// <inheritdoc/>
    public override bool IsStochastic => true;

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new EulerAncestralDiscreteScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        var (ts, sig) = InterpolatedSchedule(numInferenceSteps, float32Timesteps: true, zeroSnrLast: Config.RescaleBetasZeroSnr);
        SigmasArray = WithFinal(sig, 0f);
        TimestepsArray = Array.ConvertAll(ts, t => (float)t);
    }

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        int n = sample.Length;
        var sigmas = Sigmas;
        float sigma = sigmas[stepIndex];
        float sigmaTo = sigmas[stepIndex + 1];
        Span<float> x0 = predictedOriginalSample.Length == n ? predictedOriginalSample : Ensure(ref _x0, n);
        Span<float> d = Ensure(ref _d, n);
        Span<float> z = Ensure(ref _noise, n);
        PredictionMath.OriginalFromSigma(Config.PredictionType, modelOutput, sample, sigma, x0);

        float sigmaUp = MathF.Sqrt(sigmaTo * sigmaTo * (sigma * sigma - sigmaTo * sigmaTo) / (sigma * sigma));
        float sigmaDown = MathF.Sqrt(sigmaTo * sigmaTo - sigmaUp * sigmaUp);
        TensorPrimitives.Subtract(sample, x0, d);
        TensorPrimitives.Divide(d, sigma, d);
        TensorPrimitives.Multiply(d, sigmaDown - sigma, d);
        TensorPrimitives.Add(sample, d, sample);
        // diffusers draws the noise on every step, the last included (σ_up = 0 there).
        noise!.NextGaussian(z);
        TensorPrimitives.Multiply(z, sigmaUp, z);
        TensorPrimitives.Add(sample, z, sample);
    }
}

/// <summary>
/// Options of <see cref="EulerAncestralDiscreteScheduler"/> (diffusers' <c>EulerAncestralDiscreteScheduler</c>): the
/// registered name <c>euler-a</c>. Null keys keep the folder's <c>scheduler_config.json</c> value or the class default.
/// </summary>
public sealed record EulerAncestralDiscreteSchedulerOptions : SchedulerOptions
{
    /// <summary><c>rescale_betas_zero_snr</c> (Lin et al. 2023).</summary>
    public bool? RescaleBetasZeroSnr { get; init; }

    /// <inheritdoc/>
    public override SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        config = base.ApplyTo(config);
        if (RescaleBetasZeroSnr is { } zeroSnr)
            config = config with { RescaleBetasZeroSnr = zeroSnr };
        return config;
    }

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new EulerAncestralDiscreteScheduler(config);
}
