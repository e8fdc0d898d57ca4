using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Denoising Diffusion Implicit Models (Song et al. 2021, https://arxiv.org/abs/2010.02502), eq. 12, with diffusers'
/// <c>DDIMScheduler</c> conventions (timestep spacing, <c>set_alpha_to_one</c>, clipping, prediction types).
/// Deterministic for eta = 0.
/// </summary>
public sealed class DdimScheduler : DiffusionScheduler
{
    private float[] _scratch = Array.Empty<float>();

    /// <summary>Creates a DDIM scheduler.</summary>
    /// <param name="config">The scheduler settings.</param>
    public DdimScheduler(SchedulerConfig config)
        : base(config)
    {
        FinalAlphaCumprod = config.SetAlphaToOne ? 1f : Schedule.AlphasCumprod[0];
    }

    /// <inheritdoc/>
    public override string Name => "ddim";

    /// <summary>ᾱ used for the step past timestep 0 (<c>set_alpha_to_one</c>).</summary>
    public float FinalAlphaCumprod { get; }

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new DdimScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int numInferenceSteps)
    {
        TimestepsArray = TimestepSpacing.Compute(Config, numInferenceSteps);
    }

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        var timesteps = Timesteps;
        if ((uint)stepIndex >= (uint)timesteps.Length)
            throw new ArgumentOutOfRangeException(nameof(stepIndex), stepIndex, $"Step index must be in [0, {timesteps.Length}).");
        if (modelOutput.Length != sample.Length)
            throw new ArgumentException($"Model output has {modelOutput.Length} values but the sample has {sample.Length}.", nameof(modelOutput));

        int t = (int)timesteps[stepIndex];
        int prevT = t - Config.NumTrainTimesteps / NumInferenceSteps;
        var ac = Schedule.AlphasCumprod;
        float alphaProdT = ac[t];
        float alphaProdPrev = prevT >= 0 ? ac[prevT] : FinalAlphaCumprod;
        float betaProdT = 1f - alphaProdT;
        float sqrtA = MathF.Sqrt(alphaProdT), sqrtB = MathF.Sqrt(betaProdT);

        if (_scratch.Length < sample.Length)
            _scratch = new float[sample.Length];
        Span<float> predEps = _scratch.AsSpan(0, sample.Length);
        Span<float> x0 = predictedOriginalSample.Length == sample.Length ? predictedOriginalSample : stackalloc float[0];
        float[]? rented = null;
        if (x0.Length == 0)
        {
            rented = System.Buffers.ArrayPool<float>.Shared.Rent(sample.Length);
            x0 = rented.AsSpan(0, sample.Length);
        }
        try
        {
            PredictionMath.OriginalAndEpsilon(Config.PredictionType, modelOutput, sample, sqrtA, sqrtB, x0, predEps);
            if (Config.ClipSample)
                {
                float r = (float)Config.ClipSampleRange;
                TensorPrimitives.Min(x0, r, x0);
                TensorPrimitives.Max(x0, -r, x0);
            }

            // x_{t-1} = √ᾱ_{t-1}·x̂₀ + √(1 − ᾱ_{t-1})·ε̂  (eq. 12 with σ_t = 0).
            float dir = MathF.Sqrt(1f - alphaProdPrev);
            float sqrtPrev = MathF.Sqrt(alphaProdPrev);
            for (int i = 0; i < sample.Length; i++)
                sample[i] = sqrtPrev * x0[i] + dir * predEps[i];
        }
        finally
        {
            if (rented is not null)
                System.Buffers.ArrayPool<float>.Shared.Return(rented);
        }
    }

    /// <inheritdoc/>
    public override void AddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, Span<float> destination)
    {
        int t = (int)Timesteps[stepIndex];
        float a = Schedule.AlphasCumprod[t];
        float sa = MathF.Sqrt(a), sb = MathF.Sqrt(1f - a);
        for (int i = 0; i < destination.Length; i++)
            destination[i] = sa * originalSamples[i] + sb * noise[i];
    }
}
