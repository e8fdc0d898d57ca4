using System;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// The forward-process tables of a diffusion model: betas, alphas = 1 − beta and their cumulative product ᾱ,
/// computed in float32 exactly as diffusers computes them with torch (Ho et al. 2020, eq. 4: q(x_t | x_0) =
/// N(√ᾱ_t x_0, (1 − ᾱ_t) I)).
/// </summary>
public sealed class NoiseSchedule
{
    private readonly float[] _betas;
    private readonly float[] _alphas;
    private readonly float[] _alphasCumprod;

    /// <summary>Builds the tables for a scheduler config (<c>beta_schedule</c>, <c>trained_betas</c>, <c>rescale_betas_zero_snr</c>).</summary>
    /// <param name="config">The scheduler settings.</param>
    public NoiseSchedule(SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        int n = config.NumTrainTimesteps;
        _betas = config.TrainedBetas is { } trained
            ? Array.ConvertAll(ToArray(trained), b => (float)b)
            : config.BetaSchedule switch
            {
                "linear" => Linspace((float)config.BetaStart, (float)config.BetaEnd, n),
                "scaled_linear" => Squared(Linspace((float)Math.Sqrt(config.BetaStart), (float)Math.Sqrt(config.BetaEnd), n)),
                "squaredcos_cap_v2" => CosineBetas(n),
                _ => throw new ArgumentException($"beta_schedule '{config.BetaSchedule}' is not supported.", nameof(config)),
            };
        if (config.RescaleBetasZeroSnr)
            RescaleZeroTerminalSnr(_betas);
        _alphas = new float[n];
        for (int i = 0; i < n; i++)
            _alphas[i] = 1f - _betas[i];
        _alphasCumprod = CumulativeProduct(_alphas);
    }

    /// <summary>Number of training timesteps.</summary>
    public int Length => _betas.Length;

    /// <summary>β_t for t = 0 … T−1.</summary>
    public ReadOnlySpan<float> Betas => _betas;

    /// <summary>α_t = 1 − β_t.</summary>
    public ReadOnlySpan<float> Alphas => _alphas;

    /// <summary>ᾱ_t = Π_{s≤t} α_s.</summary>
    public ReadOnlySpan<float> AlphasCumprod => _alphasCumprod;

    /// <summary>
    /// torch.cumprod on CPU: the running product is kept in double (ATen's CPU accumulate type for float) and each
    /// prefix is rounded to float32; a float32 running product would drift by up to ~1e-5 relative over 1000 steps.
    /// </summary>
    internal static float[] CumulativeProduct(ReadOnlySpan<float> values)
    {
        var r = new float[values.Length];
        double p = 1.0;
        for (int i = 0; i < values.Length; i++)
        {
            p *= values[i];
            r[i] = (float)p;
        }
        return r;
    }

    /// <summary>
    /// torch.linspace in float32: step = (end − start)/(n − 1); the first half counts up from start, the second
    /// half down from end (aten/src/ATen/native/cpu/RangeFactoriesKernel.cpp), which is what makes the last value exact.
    /// </summary>
    internal static float[] Linspace(float start, float end, int n)
    {
        var r = new float[n];
        if (n == 1)
        {
            r[0] = start;
            return r;
        }
        float step = (end - start) / (n - 1);
        int half = n / 2;
        for (int i = 0; i < n; i++)
            r[i] = i < half ? start + step * i : end - step * (n - 1 - i);
        return r;
    }

    private static float[] Squared(float[] v)
    {
        for (int i = 0; i < v.Length; i++)
            v[i] *= v[i];
        return v;
    }

    private static double[] ToArray(System.Collections.Generic.IReadOnlyList<double> list)
    {
        var a = new double[list.Count];
        for (int i = 0; i < a.Length; i++)
            a[i] = list[i];
        return a;
    }

    /// <summary>
    /// Improved DDPM cosine schedule (Nichol &amp; Dhariwal 2021, eq. 17): ᾱ(t) = cos²((t + 0.008)/1.008 · π/2),
    /// β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), 0.999); computed in double as diffusers' betas_for_alpha_bar, then float32.
    /// </summary>
    private static float[] CosineBetas(int n)
    {
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        var betas = new float[n];
        for (int i = 0; i < n; i++)
        {
            double t1 = (double)i / n, t2 = (double)(i + 1) / n;
            betas[i] = (float)Math.Min(1 - AlphaBar(t2) / AlphaBar(t1), 0.999);
        }
        return betas;
    }

    /// <summary>Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Algorithm 1.</summary>
    private static void RescaleZeroTerminalSnr(float[] betas)
    {
        int n = betas.Length;
        var alphas = new float[n];
        for (int i = 0; i < n; i++)
            alphas[i] = 1f - betas[i];
        var sqrtAb = CumulativeProduct(alphas);
        for (int i = 0; i < n; i++)
            sqrtAb[i] = MathF.Sqrt(sqrtAb[i]);
        float first = sqrtAb[0], last = sqrtAb[n - 1];
        for (int i = 0; i < n; i++)
        {
            sqrtAb[i] -= last;
            sqrtAb[i] *= first / (first - last);
        }
        var ab = new float[n];
        for (int i = 0; i < n; i++)
            ab[i] = sqrtAb[i] * sqrtAb[i];
        betas[0] = 1f - ab[0];
        for (int i = 1; i < n; i++)
            betas[i] = 1f - ab[i] / ab[i - 1];
    }
}
