using System;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>Converts a UNet output to (x̂₀, ε̂) per <c>prediction_type</c> (Salimans &amp; Ho 2022 for v: v = √ᾱ·ε − √(1−ᾱ)·x₀).</summary>
internal static class PredictionMath
{
    /// <summary>
    /// Writes x̂₀ and ε̂ for x_t = √ᾱ·x₀ + √(1−ᾱ)·ε, evaluated in float32 in diffusers' operation order
    /// (each span operation is one torch elementwise op). <paramref name="eps"/> must not alias the inputs.
    /// </summary>
    public static void OriginalAndEpsilon(string predictionType, ReadOnlySpan<float> modelOutput, ReadOnlySpan<float> sample,
        float sqrtAlphaProd, float sqrtBetaProd, Span<float> x0, Span<float> eps)
    {
        switch (predictionType)
        {
            case "epsilon":
                // x0 = (sample − √(1−ᾱ)·ε) / √ᾱ
                TensorPrimitives.Multiply(modelOutput, sqrtBetaProd, x0);
                TensorPrimitives.Subtract(sample, x0, x0);
                TensorPrimitives.Divide(x0, sqrtAlphaProd, x0);
                modelOutput.CopyTo(eps);
                break;
            case "sample":
                // ε = (sample − √ᾱ·x0) / √(1−ᾱ)
                modelOutput.CopyTo(x0);
                TensorPrimitives.Multiply(modelOutput, sqrtAlphaProd, eps);
                TensorPrimitives.Subtract(sample, eps, eps);
                TensorPrimitives.Divide(eps, sqrtBetaProd, eps);
                break;
            case "v_prediction":
                // x0 = √ᾱ·x_t − √(1−ᾱ)·v ;  ε = √ᾱ·v + √(1−ᾱ)·x_t
                for (int i = 0; i < sample.Length; i++)
                {
                    float s = sample[i], v = modelOutput[i];
                    x0[i] = sqrtAlphaProd * s - sqrtBetaProd * v;
                    eps[i] = sqrtAlphaProd * v + sqrtBetaProd * s;
                }
                break;
            default:
                throw new ArgumentException($"scheduler config key 'prediction_type' has unsupported value '{predictionType}'.", nameof(predictionType));
        }
    }

    /// <summary>Writes x̂₀ only (no ε̂), same arithmetic as <see cref="OriginalAndEpsilon"/>.</summary>
    public static void Original(string predictionType, ReadOnlySpan<float> modelOutput, ReadOnlySpan<float> sample,
        float sqrtAlphaProd, float sqrtBetaProd, Span<float> x0)
    {
        switch (predictionType)
        {
            case "epsilon":
                TensorPrimitives.Multiply(modelOutput, sqrtBetaProd, x0);
                TensorPrimitives.Subtract(sample, x0, x0);
                TensorPrimitives.Divide(x0, sqrtAlphaProd, x0);
                break;
            case "sample":
                modelOutput.CopyTo(x0);
                break;
            case "v_prediction":
                for (int i = 0; i < sample.Length; i++)
                    x0[i] = sqrtAlphaProd * sample[i] - sqrtBetaProd * modelOutput[i];
                break;
            default:
                throw new ArgumentException($"scheduler config key 'prediction_type' has unsupported value '{predictionType}'.", nameof(predictionType));
        }
    }

    /// <summary>torch.clamp(x, −r, r) when <c>clip_sample</c> is set.</summary>
    public static void Clip(SchedulerConfig config, Span<float> x0)
    {
        if (!config.ClipSample)
            return;
        float r = (float)config.ClipSampleRange;
        TensorPrimitives.Min<float>(x0, r, x0);
        TensorPrimitives.Max<float>(x0, -r, x0);
    }

    /// <summary>x̂₀ from a σ-parameterised model (Karras et al. 2022 preconditioning as diffusers' discrete schedulers use it).</summary>
    public static void OriginalFromSigma(string predictionType, ReadOnlySpan<float> modelOutput, ReadOnlySpan<float> sample, float sigma, Span<float> x0)
    {
        switch (predictionType)
        {
            case "epsilon":
                // x0 = sample − σ·ε
                TensorPrimitives.Multiply(modelOutput, sigma, x0);
                TensorPrimitives.Subtract(sample, x0, x0);
                break;
            case "v_prediction":
                // x0 = v·(−σ/√(σ²+1)) + sample/(σ²+1)
                float s2 = sigma * sigma + 1f;
                float cOut = -sigma / MathF.Sqrt(s2);
                for (int i = 0; i < sample.Length; i++)
                    x0[i] = modelOutput[i] * cOut + sample[i] / s2;
                break;
            case "sample":
                modelOutput.CopyTo(x0);
                break;
            default:
                throw new ArgumentException($"scheduler config key 'prediction_type' has unsupported value '{predictionType}'.", nameof(predictionType));
        }
    }
}
