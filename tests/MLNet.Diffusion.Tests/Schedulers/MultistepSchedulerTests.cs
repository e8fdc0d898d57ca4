using System;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Schedulers;

/// <summary>
/// Published full-loop values of diffusers' tests/schedulers/test_scheduler_lms.py, test_scheduler_heun.py (both:
/// linear 0.0001 … 0.02 over 1100 steps, 10 steps, CPU values), test_scheduler_pndm.py (1000 steps, PRK warm-up) and
/// test_scheduler_lcm.py (scaled_linear 0.00085 … 0.012; the one-step loop draws no noise).
/// </summary>
[TestClass]
public sealed class MultistepSchedulerTests : SchedulerTestBase
{
    private static float[] SigmaLoop(SigmaScheduler s, int start = 0, bool noise = false)
    {
        s.SetTimesteps(10);
        var sample = Scaled(DummySampleDeter(), s.InitNoiseSigma);
        if (noise)
            s.AddNoise(sample, DummyNoiseDeter(), start, sample);
        return ScaledLoop(s, sample, start);
    }

    [TestMethod]
    public void LmsFullLoop_MatchesPublished() => AssertSumMean(SigmaLoop(new LmsDiscreteScheduler(LinearConfig(1100))), 1006.388, 1e-2, 1.31, 1e-3);

    [TestMethod]
    public void LmsVPrediction_MatchesPublished() =>
        AssertSumMean(SigmaLoop(new LmsDiscreteScheduler(LinearConfig(1100) with { PredictionType = "v_prediction" })), 0.0017, 1e-2, 2.2676e-06, 1e-3);

    [TestMethod]
    public void LmsKarras_MatchesPublished() =>
        AssertSumMean(SigmaLoop(new LmsDiscreteScheduler(LinearConfig(1100) with { UseKarrasSigmas = true })), 3812.9927, 2e-2, 4.9648, 1e-3);

    [TestMethod]
    public void LmsWithNoise_MatchesPublished() =>
        AssertSumMean(SigmaLoop(new LmsDiscreteScheduler(LinearConfig(1100)), start: 8, noise: true), 27663.6895, 1e-2, 36.0204, 1e-3);

    [TestMethod]
    public void LmsCoefficients_IntegrateLagrangeBasis()
    {
        var s = new LmsDiscreteScheduler(LinearConfig(1100));
        s.SetTimesteps(10);
        // The basis polynomials sum to 1, so the coefficients of one step sum to σ_{i+1} − σ_i.
        for (int order = 1; order <= 4; order++)
        {
            int i = 5;
            double sum = 0;
            for (int k = 0; k < order; k++)
                sum += s.GetLmsCoefficient(order, i, k);
            Assert.AreEqual(s.Sigmas[i + 1] - (double)s.Sigmas[i], sum, 1e-9, $"order {order}");
        }
        Assert.AreEqual(s.Sigmas[1] - (double)s.Sigmas[0], s.GetLmsCoefficient(1, 0, 0), 1e-12);
    }

    [TestMethod]
    public void HeunFullLoop_MatchesPublished() => AssertSumMean(SigmaLoop(new HeunDiscreteScheduler(LinearConfig(1100))), 0.1233, 1e-2, 0.0002, 1e-3);

    [TestMethod]
    public void HeunVPrediction_MatchesPublished() =>
        AssertSumMean(SigmaLoop(new HeunDiscreteScheduler(LinearConfig(1100) with { PredictionType = "v_prediction" })), 4.6934e-07, 1e-2, 6.1112e-10, 1e-3);

    [TestMethod]
    public void HeunKarras_MatchesPublished() =>
        AssertSumMean(SigmaLoop(new HeunDiscreteScheduler(LinearConfig(1100) with { UseKarrasSigmas = true })), 0.00015, 1e-2, 1.9869554535034695e-07, 1e-2);

    [TestMethod]
    public void HeunWithNoise_MatchesPublished() =>
        AssertSumMean(SigmaLoop(new HeunDiscreteScheduler(LinearConfig(1100)), start: 8 * 2, noise: true), 75074.8906, 1e-2, 97.7538, 1e-3);

    [TestMethod]
    public void HeunTimesteps_AreDuplicated()
    {
        var s = new HeunDiscreteScheduler(LinearConfig());
        s.SetTimesteps(4);
        Assert.AreEqual(2, s.Order);
        AssertSequence(new double[] { 999, 666, 666, 333, 333, 0, 0 }, s.Timesteps);
        Assert.AreEqual(8, s.Sigmas.Length);
        Assert.AreEqual(2, s.GetStartIndex(0.75f));
    }

    private static float[] PndmLoop(Func<SchedulerConfig, SchedulerConfig>? edit = null)
    {
        var c = LinearConfig();
        var s = new PndmScheduler(edit is null ? c : edit(c));
        s.SetTimesteps(10);
        return PlainLoop(s, DummySampleDeter());
    }

    [TestMethod]
    public void PndmTimesteps_StepsOffsetOne_IsPublishedList()
    {
        var s = new PndmScheduler(LinearConfig() with { StepsOffset = 1 });
        s.SetTimesteps(10);
        AssertSequence(new double[] { 901, 851, 851, 801, 801, 751, 751, 701, 701, 651, 651, 601, 601, 501, 401, 301, 201, 101, 1 }, s.Timesteps);
        Assert.AreEqual(12, s.PrkStepCount);
    }

    [TestMethod]
    public void PndmSkipPrk_Timesteps()
    {
        var s = new PndmScheduler(SchedulerConfig.StableDiffusion1);
        s.SetTimesteps(10);
        AssertSequence(new double[] { 901, 801, 801, 701, 601, 501, 401, 301, 201, 101, 1 }, s.Timesteps);
    }

    [TestMethod]
    public void PndmFullLoop_MatchesPublished() => AssertSumMean(PndmLoop(), 198.1318, 1e-2, 0.2580, 1e-3);

    [TestMethod]
    public void PndmVPrediction_MatchesPublished() => AssertSumMean(PndmLoop(c => c with { PredictionType = "v_prediction" }), 67.3986, 1e-2, 0.0878, 1e-3);

    [TestMethod]
    public void PndmSetAlphaToOne_MatchesPublished() => AssertSumMean(PndmLoop(c => c with { SetAlphaToOne = true, BetaStart = 0.01 }), 230.0399, 1e-2, 0.2995, 1e-3);

    [TestMethod]
    public void PndmNoSetAlphaToOne_MatchesPublished() => AssertSumMean(PndmLoop(c => c with { SetAlphaToOne = false, BetaStart = 0.01 }), 186.9482, 1e-2, 0.2434, 1e-3);

    private static SchedulerConfig LcmConfig() => new() { NumTrainTimesteps = 1000, BetaStart = 0.00085, BetaEnd = 0.012, BetaSchedule = "scaled_linear" };

    [TestMethod]
    public void LcmOneStep_MatchesPublished()
    {
        var s = new LcmScheduler(LcmConfig());
        s.SetTimesteps(1);
        AssertSequence(new double[] { 999 }, s.Timesteps);
        AssertSumMean(PlainLoop(s, DummySampleDeter(), noise: new GaussianNoise(0)), 18.7097, 1e-3, 0.0244, 1e-3);
    }

    [TestMethod]
    public void LcmTimesteps_FollowOriginalSchedule()
    {
        var s = new LcmScheduler(LcmConfig());
        s.SetTimesteps(4);
        // k = 20; origin = [19, 39, …, 999] reversed; indices floor(linspace(0, 50, 4, endpoint=False)) = [0, 12, 25, 37]
        AssertSequence(new double[] { 999, 759, 499, 259 }, s.Timesteps);
        var (cSkip, cOut) = s.GetScalings(0);
        Assert.AreEqual(1f, cSkip);
        Assert.AreEqual(0f, cOut);
    }
}
