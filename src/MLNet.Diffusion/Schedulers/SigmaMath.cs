using System;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// The noise-level (σ) helpers shared by the k-diffusion style schedulers, reproducing diffusers' mix of torch float32
/// and numpy float64: σ_t = √((1 − ᾱ_t)/ᾱ_t) in float32, np.interp in float64, Karras et al. (2022) eq. 5 in float64,
/// and the final cast of the σ table to float32.
/// </summary>
internal static class SigmaMath
{
    /// <summary>Training sigmas σ_t = ((1 − ᾱ_t)/ᾱ_t)^½ evaluated in float32 (torch), t = 0 … T−1.</summary>
    /// <param name="alphasCumprod">ᾱ.</param>
    /// <param name="zeroSnrLast">diffusers' Euler/DPM rule for rescaled zero-SNR schedules: ᾱ_{T−1} = 2⁻²⁴ so that σ_max is finite.</param>
    public static float[] TrainingSigmas(ReadOnlySpan<float> alphasCumprod, bool zeroSnrLast)
    {
        var s = new float[alphasCumprod.Length];
        for (int i = 0; i < s.Length; i++)
        {
            float ac = alphasCumprod[i];
            if (zeroSnrLast && i == s.Length - 1)
                ac = 5.9604645e-08f; // 2**-24
            s[i] = MathF.Sqrt((1f - ac) / ac);
        }
        return s;
    }

    /// <summary>np.log of a float32 array (float32 result).</summary>
    public static float[] Log(float[] values) => Array.ConvertAll(values, MathF.Log);

    /// <summary>np.interp(x, arange(len(fp)), fp) in float64, with numpy's exact-knot and end rules.</summary>
    public static double Interp(double x, ReadOnlySpan<float> fp)
    {
        int n = fp.Length;
        if (!(x > 0))
            return fp[0];
        if (x >= n - 1)
            return fp[n - 1];
        int j = (int)Math.Floor(x);
        if (x == j)
            return fp[j];
        double slope = ((double)fp[j + 1] - fp[j]) / 1.0;
        return slope * (x - j) + fp[j];
    }

    /// <summary>
    /// Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"), eq. 5 with ρ = 7:
    /// σ_i = (σ_max^{1/ρ} + i/(N−1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, in float64 as k-diffusion/diffusers compute it.
    /// </summary>
    public static double[] Karras(double sigmaMin, double sigmaMax, int n, double rho = 7.0)
    {
        var ramp = TimestepSpacing.Linspace(0, 1, n);
        double minInv = Math.Pow(sigmaMin, 1 / rho), maxInv = Math.Pow(sigmaMax, 1 / rho);
        var s = new double[n];
        for (int i = 0; i < n; i++)
            s[i] = Math.Pow(maxInv + ramp[i] * (minInv - maxInv), rho);
        return s;
    }

    /// <summary>
    /// diffusers' <c>_sigma_to_t</c>: the fractional training timestep whose log σ interpolates <paramref name="sigma"/>
    /// linearly between the two neighbouring training log σ (float64 against the float32 table, numpy ≥ 2 promotion).
    /// </summary>
    public static double SigmaToT(double sigma, ReadOnlySpan<float> logSigmas)
    {
        double logSigma = Math.Log(Math.Max(sigma, 1e-10));
        // low = last index with log σ_i ≤ log σ (0 if none), capped at len − 2.
        int low = 0;
        for (int i = 0; i < logSigmas.Length; i++)
            if (logSigma - logSigmas[i] >= 0)
                low = i;
        low = Math.Min(low, logSigmas.Length - 2);
        int high = low + 1;
        float lo = logSigmas[low], hi = logSigmas[high];
        double w = (lo - logSigma) / (double)(lo - hi);
        w = Math.Clamp(w, 0, 1);
        return (1 - w) * low + w * high;
    }
}
