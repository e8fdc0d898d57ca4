using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Linear multistep (k-diffusion's <c>sample_lms</c>; Karras et al. 2022, https://arxiv.org/abs/2206.00364, for the σ
/// parameterisation), as diffusers' <c>LMSDiscreteScheduler</c> with order 4: x ← x + Σ_k c_k·d_{i−k}, where c_k is the
/// integral over [σ_i, σ_{i+1}] of the Lagrange basis polynomial of the last ≤ 4 σ.
/// </summary>
/// <remarks>
/// diffusers integrates the basis with <c>scipy.integrate.quad</c> (21-point Gauss–Kronrod, exact for these polynomials of
/// degree ≤ 3 apart from its float32 integrand). Here the same integral is evaluated exactly in float64 with 4-point
/// Gauss–Legendre quadrature (exact up to degree 7) and cast to float32, which agrees with the reference to float32
/// rounding without depending on an adaptive integrator.
/// </remarks>
public sealed class LmsDiscreteScheduler : SigmaScheduler
{
    private const int LmsOrder = 4;
    private static readonly double[] s_gaussNodes = { -0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526 };
    private static readonly double[] s_gaussWeights = { 0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538 };

    private readonly float[][] _derivatives = new float[LmsOrder][];
    private int _count;
    private int _newest = -1;
    private float[]? _x0;
    private float[]? _acc;
    private int _nextStep = -1;

    /// <summary>Creates an LMS scheduler.</summary>
    /// <param name="config">The settings; <c>timestep_spacing</c> defaults to linspace; <c>rescale_betas_zero_snr</c> is not a key of this diffusers class and is ignored.</param>
    public LmsDiscreteScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "linspace", setAlphaToOne: true, clipSample: false, hasZeroSnr: false))
    {
    }

    /// <inheritdoc/>
    public override string Name => Config.UseKarrasSigmas ? "lms-karras" : "lms";

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new LmsDiscreteScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        // LMS keeps np.linspace(..., dtype=float) timesteps in float64 for the interpolation.
        var (ts, sig) = InterpolatedSchedule(numInferenceSteps, float32Timesteps: false, zeroSnrLast: false);
        SigmasArray = WithFinal(sig, 0f);
        TimestepsArray = Array.ConvertAll(ts, t => (float)t);
        _count = 0;
        _newest = -1;
        _nextStep = -1;
    }

    /// <inheritdoc/>
    public override void SetBeginIndex(int stepIndex)
    {
        _count = 0;
        _newest = -1;
        _nextStep = stepIndex;
    }

    /// <summary>∫_{σ_t}^{σ_{t+1}} Π_{k≠j} (τ − σ_{t−k})/(σ_{t−j} − σ_{t−k}) dτ (diffusers' <c>get_lms_coefficient</c>).</summary>
    /// <param name="order">Number of points (1 … 4).</param>
    /// <param name="t">Step index.</param>
    /// <param name="currentOrder">j, the basis polynomial's point.</param>
    public double GetLmsCoefficient(int order, int t, int currentOrder)
    {
        var s = Sigmas;
        double a = s[t], b = s[t + 1];
        double half = (b - a) / 2, mid = (a + b) / 2, sum = 0;
        for (int q = 0; q < s_gaussNodes.Length; q++)
        {
            double tau = mid + half * s_gaussNodes[q];
            double prod = 1;
            for (int k = 0; k < order; k++)
            {
                if (k == currentOrder)
                    continue;
                prod *= (tau - s[t - k]) / ((double)s[t - currentOrder] - s[t - k]);
            }
            sum += s_gaussWeights[q] * prod;
        }
        return sum * half;
    }

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        if (_nextStep >= 0 && stepIndex != _nextStep)
            throw new InvalidOperationException($"LMS is multistep: expected step {_nextStep}, got {stepIndex}. Call SetTimesteps or SetBeginIndex to restart.");
        int n = sample.Length;
        if (_derivatives[0] is null || _derivatives[0].Length != n)
        {
            for (int k = 0; k < LmsOrder; k++)
                _derivatives[k] = new float[n];
            _count = 0;
            _newest = -1;
        }
        float sigma = Sigmas[stepIndex];
        Span<float> x0 = predictedOriginalSample.Length == n ? predictedOriginalSample : Ensure(ref _x0, n);
        PredictionMath.OriginalFromSigma(Config.PredictionType, modelOutput, sample, sigma, x0);

        _newest = (_newest + 1) % LmsOrder;
        Span<float> d = _derivatives[_newest];
        TensorPrimitives.Subtract(sample, x0, d);
        TensorPrimitives.Divide(d, sigma, d);
        _count = Math.Min(_count + 1, LmsOrder);

        // order = min(step_index + 1, 4) sets the basis; as diffusers' zip(), only the derivatives kept since the
        // (re)start are summed (image-to-image starts mid-schedule with one).
        int order = Math.Min(stepIndex + 1, LmsOrder);
        int terms = Math.Min(order, _count);
        Span<float> acc = Ensure(ref _acc, n);
        Span<float> term = x0; // x̂₀ is no longer needed unless the caller asked for it
        if (predictedOriginalSample.Length == n)
            term = Ensure(ref _x0, n);
        for (int k = 0; k < terms; k++)
        {
            float coeff = (float)GetLmsCoefficient(order, stepIndex, k);
            var dk = _derivatives[(_newest - k + LmsOrder) % LmsOrder];
            if (k == 0)
            {
                TensorPrimitives.Multiply(dk, coeff, acc);
            }
            else
            {
                TensorPrimitives.Multiply(dk, coeff, term);
                TensorPrimitives.Add(acc, term, acc);
            }
        }
        TensorPrimitives.Add(sample, acc, sample);
        _nextStep = stepIndex + 1;
    }
}

/// <summary>
/// Options of <see cref="LmsDiscreteScheduler"/> (diffusers' <c>LMSDiscreteScheduler</c>): the registered names <c>lms</c>
/// and <c>lms-karras</c>. Null keys keep the folder's <c>scheduler_config.json</c> value or the class default.
/// </summary>
public sealed record LmsDiscreteSchedulerOptions : SchedulerOptions
{
    /// <summary><c>use_karras_sigmas</c>: the noise levels of Karras et al. 2022, eq. 5.</summary>
    public bool? UseKarrasSigmas { get; init; }

    /// <inheritdoc/>
    public override SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        config = base.ApplyTo(config);
        if (UseKarrasSigmas is { } karras)
            config = config with { UseKarrasSigmas = karras };
        return config;
    }

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new LmsDiscreteScheduler(config);
}
