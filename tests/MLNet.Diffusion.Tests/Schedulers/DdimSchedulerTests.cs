using System;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Schedulers;

/// <summary>Published values of diffusers' tests/schedulers/test_scheduler_ddim.py (config: linear 0.0001 … 0.02, clip_sample).</summary>
[TestClass]
public sealed class DdimSchedulerTests : SchedulerTestBase
{
    private static DdimScheduler Create(Func<SchedulerConfig, SchedulerConfig>? edit = null)
    {
        var c = LinearConfig() with { ClipSample = true };
        return new DdimScheduler(edit is null ? c : edit(c));
    }

    private static float[] FullLoop(Func<SchedulerConfig, SchedulerConfig>? edit = null)
    {
        var s = Create(edit);
        s.SetTimesteps(10);
        return PlainLoop(s, DummySampleDeter());
    }

    [TestMethod]
    public void StepsOffsetOne_FiveSteps_IsPublishedList()
    {
        var s = Create(c => c with { StepsOffset = 1 });
        s.SetTimesteps(5);
        AssertSequence(new double[] { 801, 601, 401, 201, 1 }, s.Timesteps);
    }

    [TestMethod]
    public void Variance_MatchesPublished()
    {
        var s = Create();
        Assert.AreEqual(0.0, s.GetVariance(0, 0), 1e-5);
        Assert.AreEqual(0.14771, s.GetVariance(420, 400), 1e-5);
        Assert.AreEqual(0.32460, s.GetVariance(980, 960), 1e-5);
        Assert.AreEqual(0.00979, s.GetVariance(487, 486), 1e-5);
        Assert.AreEqual(0.02, s.GetVariance(999, 998), 1e-5);
    }

    [TestMethod]
    public void FullLoopNoNoise_MatchesPublished() => AssertSumMean(FullLoop(), 172.0067, 1e-3, 0.223967, 1e-5);

    [TestMethod]
    public void FullLoopVPrediction_MatchesPublished() =>
        AssertSumMean(FullLoop(c => c with { PredictionType = "v_prediction" }), 52.5302, 1e-3, 0.0684, 1e-3);

    [TestMethod]
    public void FullLoopSetAlphaToOne_MatchesPublished() =>
        AssertSumMean(FullLoop(c => c with { SetAlphaToOne = true, BetaStart = 0.01 }), 149.8295, 1e-2, 0.1951, 1e-3);

    [TestMethod]
    public void FullLoopNoSetAlphaToOne_MatchesPublished() =>
        AssertSumMean(FullLoop(c => c with { SetAlphaToOne = false, BetaStart = 0.01 }), 149.0784, 1e-2, 0.1941, 1e-3);

    [TestMethod]
    public void FullLoopWithNoise_MatchesPublished()
    {
        var s = Create();
        s.SetTimesteps(10);
        int start = 8 * s.Order;
        var sample = DummySampleDeter();
        s.AddNoise(sample, DummyNoiseDeter(), start, sample);
        AssertSumMean(PlainLoop(s, sample, start), 354.5418, 1e-2, 0.4616, 1e-3);
    }

    [TestMethod]
    public void ClassDefaults_ApplyWhenKeysAreAbsent()
    {
        // DDIMScheduler's defaults: clip_sample=True, set_alpha_to_one=True, timestep_spacing="leading".
        var s = new DdimScheduler(SchedulerConfig.Parse("{\"beta_schedule\": \"linear\", \"beta_start\": 0.0001, \"beta_end\": 0.02}"));
        Assert.IsTrue(s.Config.ClipSample);
        Assert.IsTrue(s.Config.SetAlphaToOne);
        Assert.AreEqual("leading", s.Config.TimestepSpacing);
        Assert.AreEqual(1f, s.FinalAlphaCumprod);
    }

    [TestMethod]
    public void Eta_IsStochasticAndNeedsNoise()
    {
        var s = (DdimScheduler)SchedulerFactory.Create("ddim", LinearConfig(), new SchedulerOptions { Eta = 1f });
        Assert.AreEqual(1f, s.Eta);
        Assert.IsTrue(s.IsStochastic);
        Assert.IsFalse(Create().IsStochastic);
        Assert.AreEqual(1f, ((DdimScheduler)s.Clone()).Eta);
    }
}
