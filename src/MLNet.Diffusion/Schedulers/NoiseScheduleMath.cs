using System;

namespace MLNet.Diffusion.Schedulers;

/// <summary>The forward process shared by the ᾱ-parameterised schedulers (DDPM, DDIM, PNDM, LCM).</summary>
internal static class NoiseScheduleMath
{
    /// <summary>x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε (Ho et al. 2020, eq. 4), in float32 as diffusers' <c>add_noise</c>.</summary>
    public static void AddNoise(NoiseSchedule schedule, int t, ReadOnlySpan<float> original, ReadOnlySpan<float> noise, Span<float> destination)
    {
        float a = schedule.AlphasCumprod[t];
        float sa = MathF.Sqrt(a), sb = MathF.Sqrt(1f - a);
        for (int i = 0; i < destination.Length; i++)
            destination[i] = sa * original[i] + sb * noise[i];
    }
}
