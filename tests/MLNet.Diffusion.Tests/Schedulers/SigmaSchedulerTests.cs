using System;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Schedulers;

/// <summary>
/// Published full-loop values of diffusers' Euler and DPM-Solver++ tests (tests/schedulers/test_scheduler_euler.py:
/// linear 0.0001 … 0.02 over 1100 steps, 10 steps; tests/schedulers/test_scheduler_dpm_multi.py: 1000 steps, solver_order 2,
/// dpmsolver++, midpoint, lower_order_final False, final_sigmas_type sigma_min, 10 steps).
/// </summary>
[TestClass]
public sealed class SigmaSchedulerTests : SchedulerTestBase
{
    private static float[] EulerLoop(SchedulerConfig config)
    {
        var s = new EulerDiscreteScheduler(config);
        s.SetTimesteps(10);
        return ScaledLoop(s, Scaled(DummySampleDeter(), s.InitNoiseSigma));
    }

    [TestMethod]
    public void EulerFullLoop_MatchesPublished() => AssertSumMean(EulerLoop(LinearConfig(1100)), 10.0807, 1e-3, 0.0131, 1e-4);

    [TestMethod]
    public void EulerVPrediction_MatchesPublished() =>
        AssertSumMean(EulerLoop(LinearConfig(1100) with { PredictionType = "v_prediction" }), 0.0002, 1e-2, 2.2676e-06, 1e-3);

    [TestMethod]
    public void EulerKarras_MatchesPublished() =>
        AssertSumMean(EulerLoop(LinearConfig(1100) with { UseKarrasSigmas = true }), 124.52299499511719, 1e-2, 0.16213932633399963, 1e-4);

    private static SchedulerConfig DpmConfig() => LinearConfig() with { LowerOrderFinal = false, FinalSigmasType = "sigma_min" };

    private static float[] DpmLoop(SchedulerConfig config)
    {
        var s = new DpmSolverMultistepScheduler(config);
        s.SetTimesteps(10);
        return PlainLoop(s, DummySampleDeter());
    }

    [TestMethod]
    public void DpmFullLoop_MatchesPublished() => AssertSumMean(DpmLoop(DpmConfig()), null, 0, 0.3301, 1e-4);

    [TestMethod]
    public void DpmVPrediction_MatchesPublished() =>
        AssertSumMean(DpmLoop(DpmConfig() with { PredictionType = "v_prediction" }), null, 0, 0.2251, 1e-4);

    [TestMethod]
    public void DpmKarrasVPrediction_MatchesPublished() =>
        AssertSumMean(DpmLoop(DpmConfig() with { PredictionType = "v_prediction", UseKarrasSigmas = true }), null, 0, 0.2096, 1e-3);

    [TestMethod]
    public void DpmFullLoopWithNoise_MatchesPublished()
    {
        var s = new DpmSolverMultistepScheduler(DpmConfig());
        s.SetTimesteps(10);
        int start = 5 * s.Order;
        var sample = DummySampleDeter();
        s.AddNoise(sample, DummyNoiseDeter(), start, sample);
        s.SetBeginIndex(start);
        AssertSumMean(PlainLoop(s, sample, start), 318.4111, 1e-2, 0.4146, 1e-3);
    }

    [TestMethod]
    public void DpmTimesteps_LinspaceTenSteps()
    {
        var s = new DpmSolverMultistepScheduler(DpmConfig());
        s.SetTimesteps(10);
        // np.linspace(0, 999, 11).round()[::-1][:-1]
        AssertSequence(new double[] { 999, 899, 799, 699, 599, 500, 400, 300, 200, 100 }, s.Timesteps);
        Assert.AreEqual(1f, s.InitNoiseSigma);
    }

    [TestMethod]
    public void StableDiffusionSigmaRange_MatchesKDiffusion()
    {
        // SD 1.x (scaled_linear 0.00085 … 0.012): k-diffusion's σ_max ≈ 14.6146, σ_min ≈ 0.0292.
        var s = new EulerDiscreteScheduler(SchedulerConfig.StableDiffusion1);
        s.SetTimesteps(1000);
        Assert.AreEqual(14.6146, s.Sigmas[0], 1e-4);
        Assert.AreEqual(0.0292, s.Sigmas[^2], 1e-4);
        Assert.AreEqual(0f, s.Sigmas[^1]);
        // leading spacing in the SD1 config is overridden by EulerDiscreteScheduler's own default only when absent;
        // here timestep_spacing was not given, so linspace applies and init_noise_sigma = σ_max.
        Assert.AreEqual("linspace", s.Config.TimestepSpacing);
        Assert.AreEqual(s.Sigmas[0], s.InitNoiseSigma);
    }

    [TestMethod]
    public void KarrasSigmas_FollowEquation5()
    {
        var s = new EulerDiscreteScheduler(SchedulerConfig.StableDiffusion1 with { UseKarrasSigmas = true });
        s.SetTimesteps(20);
        var plain = new EulerDiscreteScheduler(SchedulerConfig.StableDiffusion1);
        plain.SetTimesteps(20);
        double max = plain.Sigmas[0], min = plain.Sigmas[^2];
        Assert.AreEqual(21, s.Sigmas.Length);
        for (int i = 0; i < 20; i++)
        {
            // Karras et al. 2022, eq. 5, ρ = 7
            double expected = Math.Pow(Math.Pow(max, 1 / 7.0) + i / 19.0 * (Math.Pow(min, 1 / 7.0) - Math.Pow(max, 1 / 7.0)), 7);
            Assert.AreEqual(expected, s.Sigmas[i], expected * 1e-6, $"σ_{i}");
        }
        Assert.AreEqual(999.0, s.Timesteps[0], 1e-3);
        Assert.AreEqual(0.0, s.Timesteps[^1], 1e-3);
    }

    [TestMethod]
    public void LeadingSpacing_InitNoiseSigmaIsSqrtOfSigmaSquaredPlusOne()
    {
        var s = new EulerDiscreteScheduler(SchedulerConfig.StableDiffusion1 with { TimestepSpacing = "leading" });
        s.SetTimesteps(50);
        float max = s.Sigmas[0];
        Assert.AreEqual(MathF.Sqrt(max * max + 1f), s.InitNoiseSigma);
        Assert.AreEqual(981f, s.Timesteps[0]);
    }
}
