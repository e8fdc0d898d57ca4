using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
/// Models", https://arxiv.org/abs/2211.01095, Algorithm 2 — "2M"), as diffusers' <c>DPMSolverMultistepScheduler</c> with
/// <c>algorithm_type = dpmsolver++</c>: data-prediction updates in λ = log(α/σ), first order for the warm-up step,
/// the midpoint (or Heun) second-order rule afterwards, <c>lower_order_final</c>/<c>euler_at_final</c>, optional
/// Karras et al. (2022) σ and <c>final_sigmas_type</c>. The sample is in DDPM scale (no input scaling).
/// </summary>
public sealed class DpmSolverMultistepScheduler : SigmaScheduler
{
    private float[]? _m0;
    private float[]? _m1;
    private float[]? _tmp;
    private int _lowerOrderNums;
    private int _nextStep = -1;

    /// <summary>Creates a DPM-Solver++ multistep scheduler.</summary>
    /// <param name="config">The settings; <c>solver_order</c> 1 or 2, <c>algorithm_type</c> dpmsolver++, <c>solver_type</c> midpoint or heun.</param>
    public DpmSolverMultistepScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "linspace", setAlphaToOne: true, clipSample: false))
    {
        if (Config.AlgorithmType != "dpmsolver++")
            throw new ArgumentException($"scheduler config key 'algorithm_type' has unsupported value '{Config.AlgorithmType}': only 'dpmsolver++' is implemented.", nameof(config));
        if (Config.SolverOrder is not (1 or 2))
            throw new ArgumentException($"scheduler config key 'solver_order' has unsupported value '{Config.SolverOrder}': 1 or 2 (DPM-Solver++ 2M) is implemented.", nameof(config));
        if (Config.SolverType is not ("midpoint" or "heun"))
            throw new ArgumentException($"scheduler config key 'solver_type' has unsupported value '{Config.SolverType}': expected 'midpoint' or 'heun'.", nameof(config));
    }

    /// <inheritdoc/>
    public override string Name => Config.UseKarrasSigmas ? "dpmpp-2m-karras" : "dpmpp-2m";

    /// <summary>DPM-Solver feeds the UNet the unscaled DDPM-style sample.</summary>
    public override float InitNoiseSigma => 1f;

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new DpmSolverMultistepScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        var train = SigmaMath.TrainingSigmas(Schedule.AlphasCumprod, Config.RescaleBetasZeroSnr);
        var logSigmas = SigmaMath.Log(train);
        // Integer timesteps (lambda_min_clipped = −inf, so the last timestep is num_train_timesteps).
        var ts = TimestepSpacing.ComputeDouble(Config, numInferenceSteps + (Config.TimestepSpacing == "trailing" ? 0 : 1), round: true);
        if (Config.TimestepSpacing != "trailing")
            ts = ts.AsSpan(0, numInferenceSteps).ToArray(); // [::-1][:-1] of n + 1 points
        double[] sig;
        if (Config.UseKarrasSigmas)
        {
            sig = SigmaMath.Karras(train[0], train[^1], numInferenceSteps);
            ts = new double[sig.Length];
            for (int i = 0; i < sig.Length; i++)
                ts[i] = Math.Round(SigmaMath.SigmaToT(sig[i], logSigmas), MidpointRounding.ToEven);
        }
        else
        {
            sig = new double[ts.Length];
            for (int i = 0; i < ts.Length; i++)
                sig[i] = SigmaMath.Interp(ts[i], train);
        }
        SigmasArray = WithFinal(sig, FinalSigma());
        TimestepsArray = Array.ConvertAll(ts, t => (float)t);
        _lowerOrderNums = 0;
        _nextStep = -1;
    }

    /// <inheritdoc/>
    public override void SetBeginIndex(int stepIndex)
    {
        _lowerOrderNums = 0;
        _nextStep = stepIndex;
    }

    /// <summary>Scale is the identity: DPM-Solver models see x_t directly.</summary>
    /// <param name="sample">The sample.</param>
    /// <param name="destination">Receives the copy.</param>
    /// <param name="stepIndex">Index into the timesteps.</param>
    public override void ScaleModelInput(ReadOnlySpan<float> sample, Span<float> destination, int stepIndex)
    {
        if (!sample.Overlaps(destination, out int offset) || offset != 0)
            sample.CopyTo(destination);
    }

    /// <summary>x_t = α_t·x₀ + σ_t·ε with α_t = 1/√(σ² + 1), σ_t = σ·α_t.</summary>
    /// <param name="originalSamples">x₀.</param>
    /// <param name="noise">ε.</param>
    /// <param name="stepIndex">Index into the timesteps.</param>
    /// <param name="destination">Receives x_t.</param>
    public override void AddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, Span<float> destination)
    {
        CheckAddNoise(originalSamples, noise, stepIndex, destination);
        var (alpha, sigma) = AlphaSigma(Sigmas[stepIndex]);
        for (int i = 0; i < destination.Length; i++)
            destination[i] = alpha * originalSamples[i] + sigma * noise[i];
    }

    private static (float Alpha, float Sigma) AlphaSigma(float sigma)
    {
        float alpha = 1f / MathF.Sqrt(sigma * sigma + 1f);
        return (alpha, sigma * alpha);
    }

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        if (_nextStep >= 0 && stepIndex != _nextStep)
            throw new InvalidOperationException($"DPM-Solver++ is multistep: expected step {_nextStep}, got {stepIndex}. Call SetTimesteps or SetBeginIndex to restart.");
        int n = sample.Length;
        if (_m0 is null || _m0.Length != n)
        {
            _m0 = new float[n];
            _m1 = new float[n];
            _tmp = new float[n];
        }
        else
        {
            (_m0, _m1) = (_m1!, _m0);
        }
        var sigmas = Sigmas;
        int count = Timesteps.Length;

        // convert_model_output: data prediction x̂₀ at σ_s0.
        var (alphaS0, sigmaS0) = AlphaSigma(sigmas[stepIndex]);
        PredictionMath.Original(Config.PredictionType, modelOutput, sample, alphaS0, sigmaS0, _m0);
        PredictionMath.Clip(Config, _m0);
        if (predictedOriginalSample.Length == n)
            _m0.CopyTo(predictedOriginalSample);

        bool lowerOrderFinal = stepIndex == count - 1
            && (Config.EulerAtFinal || (Config.LowerOrderFinal && count < 15) || Config.FinalSigmasType == "zero");

        var (alphaT, sigmaT) = AlphaSigma(sigmas[stepIndex + 1]);
        float lambdaT = MathF.Log(alphaT) - MathF.Log(sigmaT);
        float lambdaS0 = MathF.Log(alphaS0) - MathF.Log(sigmaS0);
        float h = lambdaT - lambdaS0;
        float ratio = sigmaT / sigmaS0;
        float c = alphaT * (MathF.Exp(-h) - 1f);
        Span<float> tmp = _tmp;

        if (Config.SolverOrder == 1 || _lowerOrderNums < 1 || lowerOrderFinal)
        {
            // First order (DPM-Solver++ eq. 9 / DDIM): x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·x̂₀
            TensorPrimitives.Multiply(_m0, c, tmp);
            TensorPrimitives.Multiply(sample, ratio, sample);
            TensorPrimitives.Subtract(sample, tmp, sample);
        }
        else
        {
            var (alphaS1, sigmaS1) = AlphaSigma(sigmas[stepIndex - 1]);
            float lambdaS1 = MathF.Log(alphaS1) - MathF.Log(sigmaS1);
            float h0 = lambdaS0 - lambdaS1;
            float r0 = h0 / h;
            // D1 = (1/r0)·(m0 − m1)
            TensorPrimitives.Subtract(_m0, _m1!, tmp);
            TensorPrimitives.Multiply(tmp, 1f / r0, tmp);
            TensorPrimitives.Multiply(sample, ratio, sample);
            if (Config.SolverType == "midpoint")
            {
                // x_t = (σ_t/σ_s0)·x − α_t(e^{−h} − 1)·D0 − ½·α_t(e^{−h} − 1)·D1
                TensorPrimitives.Multiply(tmp, 0.5f * c, tmp);
                SubtractScaled(sample, _m0, c);
                TensorPrimitives.Subtract(sample, tmp, sample);
            }
            else
            {
                // heun: x_t = (σ_t/σ_s0)·x − α_t(e^{−h} − 1)·D0 + α_t((e^{−h} − 1)/h + 1)·D1
                float c2 = alphaT * ((MathF.Exp(-h) - 1f) / h + 1f);
                TensorPrimitives.Multiply(tmp, c2, tmp);
                SubtractScaled(sample, _m0, c);
                TensorPrimitives.Add(sample, tmp, sample);
            }
        }
        if (_lowerOrderNums < Config.SolverOrder)
            _lowerOrderNums++;
        _nextStep = stepIndex + 1;
    }

    /// <summary>x ← x − c·y, elementwise in float32 (c·y rounded, then the subtraction).</summary>
    private static void SubtractScaled(Span<float> x, ReadOnlySpan<float> y, float c)
    {
        for (int i = 0; i < x.Length; i++)
            x[i] -= c * y[i];
    }
}

/// <summary>
/// Options of <see cref="DpmSolverMultistepScheduler"/> (diffusers' <c>DPMSolverMultistepScheduler</c>): the registered
/// names <c>dpmpp-2m</c> and <c>dpmpp-2m-karras</c>. Null keys keep the folder's <c>scheduler_config.json</c> value or the
/// class default.
/// </summary>
public sealed record DpmSolverMultistepSchedulerOptions : SchedulerOptions
{
    /// <summary><c>solver_order</c>: 1 or 2 (DPM-Solver++ 2M).</summary>
    public int? SolverOrder { get; init; }

    /// <summary><c>solver_type</c>: <c>midpoint</c> or <c>heun</c>.</summary>
    public string? SolverType { get; init; }

    /// <summary><c>lower_order_final</c>: first-order final steps for runs under 15 steps.</summary>
    public bool? LowerOrderFinal { get; init; }

    /// <summary><c>euler_at_final</c>: a first-order final step.</summary>
    public bool? EulerAtFinal { get; init; }

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
        if (SolverOrder is { } order)
            config = config with { SolverOrder = order };
        if (SolverType is { } type)
            config = config with { SolverType = type };
        if (LowerOrderFinal is { } lowerOrderFinal)
            config = config with { LowerOrderFinal = lowerOrderFinal };
        if (EulerAtFinal is { } eulerAtFinal)
            config = config with { EulerAtFinal = eulerAtFinal };
        if (UseKarrasSigmas is { } karras)
            config = config with { UseKarrasSigmas = karras };
        if (FinalSigmasType is { } final)
            config = config with { FinalSigmasType = final };
        if (RescaleBetasZeroSnr is { } zeroSnr)
            config = config with { RescaleBetasZeroSnr = zeroSnr };
        return config;
    }

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new DpmSolverMultistepScheduler(config);
}
