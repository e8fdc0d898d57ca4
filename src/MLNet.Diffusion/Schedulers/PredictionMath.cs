using System;

namespace MLNet.Diffusion.Schedulers;

/// <summary>Converts a UNet output to (x̂₀, ε̂) per <c>prediction_type</c> (Salimans &amp; Ho 2022 for v: v = √ᾱ·ε − √(1−ᾱ)·x₀).</summary>
internal static class PredictionMath
{
    /// <summary>Writes x̂₀ and ε̂ for x_t = √ᾱ·x₀ + √(1−ᾱ)·ε, evaluated in float32 in diffusers' operation order.</summary>
    public static void OriginalAndEpsilon(string predictionType, ReadOnlySpan<float> modelOutput, ReadOnlySpan<float> sample,
        float sqrtAlphaProd, float sqrtBetaProd, Span<float> x0, Span<float> eps)
    {
        switch (predictionType)
        {
            case "epsilon":
                for (int i = 0; i < sample.Length; i++)
                {
                    x0[i] = (sample[i] - sqrtBetaProd * modelOutput[i]) / sqrtAlphaProd;
                    eps[i] = modelOutput[i];
                }
                break;
            case "sample":
                for (int i = 0; i < sample.Length; i++)
                {
                    x0[i] = modelOutput[i];
                    eps[i] = (sample[i] - sqrtAlphaProd * modelOutput[i]) / sqrtBetaProd;
                }
                break;
            case "v_prediction":
                for (int i = 0; i < sample.Length; i++)
                {
                    x0[i] = sqrtAlphaProd * sample[i] - sqrtBetaProd * modelOutput[i];
                    eps[i] = sqrtAlphaProd * modelOutput[i] + sqrtBetaProd * sample[i];
                }
                break;
            default:
                throw new ArgumentException($"prediction_type '{predictionType}' is not supported.", nameof(predictionType));
        }
    }
}
