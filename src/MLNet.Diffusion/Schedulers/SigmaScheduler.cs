using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Base of the k-diffusion style schedulers (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
/// Generative Models", https://arxiv.org/abs/2206.00364): the sample lives at noise level σ (x = x₀ + σ·ε), the UNet sees
/// x/√(σ² + 1), and the initial noise has standard deviation <see cref="InitNoiseSigma"/>.
/// </summary>
public abstract class SigmaScheduler : DiffusionScheduler
{
    /// <summary>Initializes the scheduler; only this library derives from it.</summary>
    /// <param name="config">The settings (class defaults already applied).</param>
    private protected SigmaScheduler(SchedulerConfig config)
        : base(config)
    {
    }

    /// <summary>σ for every entry of <see cref="DiffusionScheduler.Timesteps"/> followed by the final σ (float32, as diffusers' <c>sigmas</c>).</summary>
    public ReadOnlySpan<float> Sigmas => SigmasArray ?? throw NotSet();

    /// <summary>The σ table a subclass fills in <see cref="DiffusionScheduler.OnSetTimesteps"/>.</summary>
    private protected float[]? SigmasArray { get; set; }

    /// <summary>
    /// max σ for <c>linspace</c>/<c>trailing</c> spacing, √(max σ² + 1) for <c>leading</c> (diffusers' <c>init_noise_sigma</c>, float32).
    /// </summary>
    public override float InitNoiseSigma
    {
        get
        {
            float max = TensorPrimitives.Max(Sigmas);
            return Config.TimestepSpacing is "linspace" or "trailing" ? max : MathF.Sqrt(max * max + 1f);
        }
    }

    /// <summary>The σ the input at <paramref name="stepIndex"/> is scaled with.</summary>
    /// <param name="stepIndex">Index into the timesteps.</param>
    private protected virtual float SigmaForStep(int stepIndex) => Sigmas[stepIndex];

    /// <summary>x / √(σ² + 1) (the c_in of Karras et al. 2022, Table 1).</summary>
    /// <param name="sample">The sample.</param>
    /// <param name="destination">Receives the scaled input; may be the sample itself.</param>
    /// <param name="stepIndex">Index into the timesteps.</param>
    public override void ScaleModelInput(ReadOnlySpan<float> sample, Span<float> destination, int stepIndex)
    {
        if ((uint)stepIndex >= (uint)Timesteps.Length)
            throw new ArgumentOutOfRangeException(nameof(stepIndex), stepIndex, $"Step index must be in [0, {Timesteps.Length}).");
        float sigma = SigmaForStep(stepIndex);
        TensorPrimitives.Divide(sample, MathF.Sqrt(sigma * sigma + 1f), destination);
    }

    /// <summary>x₀ + σ·ε at the σ of <paramref name="stepIndex"/> (diffusers: <c>original_samples + noise * sigma</c>).</summary>
    /// <param name="originalSamples">x₀.</param>
    /// <param name="noise">ε.</param>
    /// <param name="stepIndex">Index into the timesteps.</param>
    /// <param name="destination">Receives x_σ.</param>
    public override void AddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, Span<float> destination)
    {
        CheckAddNoise(originalSamples, noise, stepIndex, destination);
        float sigma = Sigmas[stepIndex];
        for (int i = 0; i < destination.Length; i++)
            destination[i] = originalSamples[i] + noise[i] * sigma;
    }

    /// <summary>
    /// The σ-interpolated schedule shared by Euler, Euler ancestral, LMS and Heun: timesteps by <c>timestep_spacing</c>
    /// (cast to float32 when <paramref name="float32Timesteps"/>, as np.linspace(..., dtype=np.float32)), σ by np.interp on
    /// the training σ, optionally Karras σ (then timesteps from <c>_sigma_to_t</c>), and the final σ.
    /// </summary>
    private protected (double[] Timesteps, double[] Sigmas) InterpolatedSchedule(int n, bool float32Timesteps, bool zeroSnrLast)
    {
        var train = SigmaMath.TrainingSigmas(Schedule.AlphasCumprod, zeroSnrLast);
        var logSigmas = SigmaMath.Log(train);
        var ts = TimestepSpacing.ComputeDouble(Config, n, round: false);
        if (float32Timesteps)
            for (int i = 0; i < ts.Length; i++)
                ts[i] = (float)ts[i];
        var sig = new double[ts.Length];
        for (int i = 0; i < ts.Length; i++)
            sig[i] = SigmaMath.Interp(ts[i], train);
        if (Config.UseKarrasSigmas)
        {
            sig = SigmaMath.Karras(sig[^1], sig[0], sig.Length);
            for (int i = 0; i < sig.Length; i++)
                ts[i] = SigmaMath.SigmaToT(sig[i], logSigmas);
        }
        return (ts, sig);
    }

    /// <summary>The final σ of <c>final_sigmas_type</c>: 0, or the training σ at t = 0 (float32).</summary>
    private protected float FinalSigma() => Config.FinalSigmasType == "sigma_min"
        ? MathF.Sqrt((1f - Schedule.AlphasCumprod[0]) / Schedule.AlphasCumprod[0])
        : 0f;

    /// <summary>Concatenates σ and the final σ and casts to float32.</summary>
    private protected static float[] WithFinal(double[] sigmas, float last)
    {
        var r = new float[sigmas.Length + 1];
        for (int i = 0; i < sigmas.Length; i++)
            r[i] = (float)sigmas[i];
        r[^1] = last;
        return r;
    }
}
