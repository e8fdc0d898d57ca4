using System;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// The <c>timestep_spacing</c> rules of diffusers (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps
/// are Flawed", Table 2), evaluated with numpy's float64 semantics (np.linspace, np.arange with a float step, np.round
/// half to even) so that the integer and fractional timesteps are bit-identical to the reference.
/// </summary>
internal static class TimestepSpacing
{
    /// <summary>Integer timesteps in descending order for DDPM, DDIM and the integer-timestep schedulers.</summary>
    public static float[] Compute(SchedulerConfig config, int n)
    {
        var ts = ComputeDouble(config, n, round: true);
        return Array.ConvertAll(ts, t => (float)t);
    }

    /// <summary>
    /// The timesteps in float64 and descending order. <paramref name="round"/> selects the integer variant of
    /// <c>linspace</c> (<c>np.linspace(...).round()</c>, DDIM/DDPM/DPM-Solver) instead of the fractional one
    /// (Euler, LMS, Heun).
    /// </summary>
    public static double[] ComputeDouble(SchedulerConfig config, int n, bool round)
    {
        int T = config.NumTrainTimesteps;
        double[] ts;
        switch (config.TimestepSpacing)
        {
            case "linspace":
                // np.linspace(0, T - 1, n)[::-1], rounded for the integer schedulers.
                var lin = Linspace(0, T - 1, n);
                ts = new double[n];
                for (int i = 0; i < n; i++)
                    ts[n - 1 - i] = round ? Math.Round(lin[i], MidpointRounding.ToEven) : lin[i];
                break;
            case "leading":
                // (np.arange(0, n) * (T // n)).round()[::-1] + steps_offset
                int ratio = T / n;
                ts = new double[n];
                for (int i = 0; i < n; i++)
                    ts[n - 1 - i] = (double)i * ratio + config.StepsOffset;
                break;
            case "trailing":
                // np.round(np.arange(T, 0, -T / n)) - 1
                var ar = Arange(T, 0, -(double)T / n);
                ts = new double[ar.Length];
                for (int i = 0; i < ar.Length; i++)
                    ts[i] = Math.Round(ar[i], MidpointRounding.ToEven) - 1;
                break;
            default:
                throw new ArgumentException($"scheduler config key 'timestep_spacing' has unsupported value '{config.TimestepSpacing}': expected 'leading', 'linspace' or 'trailing'.", nameof(config));
        }
        // Integer timesteps index ᾱ: leading spacing plus steps_offset can pass the table's end (e.g. n = T with offset 1).
        if (round && ts.Length > 0 && ts[0] >= T)
            throw new ArgumentOutOfRangeException(nameof(n), n,
                $"{n} steps with timestep_spacing '{config.TimestepSpacing}' and steps_offset {config.StepsOffset} give timestep {ts[0]}, past num_train_timesteps ({T}).");
        return ts;
    }

    /// <summary>np.linspace(start, stop, n) in float64: i·step + start, with the last value set to stop exactly.</summary>
    public static double[] Linspace(double start, double stop, int n)
    {
        var y = new double[n];
        if (n == 1)
        {
            y[0] = start;
            return y;
        }
        double step = (stop - start) / (n - 1);
        for (int i = 0; i < n; i++)
            y[i] = i * step + start;
        y[n - 1] = stop;
        return y;
    }

    /// <summary>
    /// np.arange(start, stop, step) for float64: length ceil((stop − start)/step); values start + i·delta where delta is
    /// recomputed as (start + step) − start, as numpy's fill does.
    /// </summary>
    public static double[] Arange(double start, double stop, double step)
    {
        int len = Math.Max((int)Math.Ceiling((stop - start) / step), 0);
        var y = new double[len];
        if (len == 0)
            return y;
        y[0] = start;
        if (len > 1)
        {
            y[1] = start + step;
            double delta = y[1] - y[0];
            for (int i = 2; i < len; i++)
                y[i] = start + i * delta;
        }
        return y;
    }
}
