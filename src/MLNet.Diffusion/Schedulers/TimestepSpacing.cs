using System;

namespace MLNet.Diffusion.Schedulers;

/// <summary>The <c>timestep_spacing</c> rules shared by DDPM-style schedulers (diffusers, "Common Diffusion Noise Schedules and Sample Steps are Flawed", Table 2).</summary>
internal static class TimestepSpacing
{
    /// <summary>Integer timesteps in descending order for <paramref name="n"/> inference steps.</summary>
    public static float[] Compute(SchedulerConfig config, int n)
    {
        int T = config.NumTrainTimesteps;
        var ts = new float[n];
        switch (config.TimestepSpacing)
        {
            case "linspace":
                // np.linspace(0, T - 1, n).round()[::-1]
                for (int i = 0; i < n; i++)
                {
                    double v = n == 1 ? 0 : (double)(T - 1) * i / (n - 1);
                    ts[n - 1 - i] = (float)Math.Round(v, MidpointRounding.ToEven);
                }
                break;
            case "leading":
                // (np.arange(0, n) * (T // n)).round()[::-1] + steps_offset
                int ratio = T / n;
                for (int i = 0; i < n; i++)
                    ts[n - 1 - i] = i * ratio + config.StepsOffset;
                break;
            case "trailing":
                // np.round(np.arange(T, 0, -T / n)) - 1
                double r = (double)T / n;
                for (int i = 0; i < n; i++)
                    ts[i] = (float)(Math.Round(T - i * r, MidpointRounding.ToEven) - 1);
                break;
            default:
                throw new ArgumentException($"timestep_spacing '{config.TimestepSpacing}' is not supported.", nameof(config));
        }
        return ts;
    }
}
