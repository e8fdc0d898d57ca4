using System;
using System.IO;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Schedulers;

/// <summary>Properties every registered scheduler must have, plus the factory and config contracts.</summary>
[TestClass]
public sealed class SchedulerPropertyTests : SchedulerTestBase
{
    private static readonly string[] s_deterministic = { "ddim", "pndm", "euler", "euler-karras", "lms", "lms-karras", "dpmpp-2m", "dpmpp-2m-karras", "heun", "heun-karras" };
    private static readonly string[] s_stochastic = { "ddpm", "euler-a", "lcm" };

    private static SchedulerConfig Config() => SchedulerConfig.StableDiffusion1 with { SetAlphaToOne = true, ClipSample = false };

    /// <summary>ᾱ of the model input at a step: ᾱ_t, or 1/(σ² + 1) for σ schedulers (their scaled input is in DDPM scale).</summary>
    private static float AlphaBar(DiffusionScheduler s, int i) => s is SigmaScheduler ss
        ? 1f / (ss.Sigmas[i] * ss.Sigmas[i] + 1f)
        : s.Schedule.AlphasCumprod[(int)s.Timesteps[i]];

    private static float[] Run(DiffusionScheduler s, float[] x0, float[] eps, Func<float[], float, float, float[]> model, INoiseSource? noise = null)
    {
        var sample = new float[x0.Length];
        s.AddNoise(x0, eps, 0, sample);
        var input = new float[x0.Length];
        for (int i = 0; i < s.Timesteps.Length; i++)
        {
            s.ScaleModelInput(sample, input, i);
            s.Step(model(input, s.Timesteps[i], AlphaBar(s, i)), i, sample, noise);
        }
        return sample;
    }

    [TestMethod]
    public void ExactNoiseModel_RecoversCleanSample()
    {
        var x0 = DummySampleDeter();
        var eps = new float[x0.Length];
        new GaussianNoise(7).NextGaussian(eps);
        foreach (string name in s_deterministic)
        {
            var s = SchedulerFactory.Create(name, Config());
            s.SetTimesteps(20);
            var result = Run(s, x0, eps, (_, _, _) => eps);
            for (int i = 0; i < x0.Length; i++)
                Assert.AreEqual(x0[i], result[i], 2e-3, $"{name} at {i}");
        }
    }

    [TestMethod]
    public void VPrediction_EqualsEpsilonPrediction()
    {
        var x0 = DummySampleDeter();
        var eps0 = DummyNoiseDeter();
        // A non-trivial ε-model: ε(x) = 0.9·x; the equivalent v-model returns √ᾱ·ε − √(1−ᾱ)·x̂₀ for the same x̂₀.
        float[] Eps(float[] x) => Array.ConvertAll(x, v => 0.9f * v);
        float[] V(float[] x, float ab)
        {
            var e = Eps(x);
            float sa = MathF.Sqrt(ab), sb = MathF.Sqrt(1f - ab);
            return x.Select((xi, i) => sa * e[i] - sb * ((xi - sb * e[i]) / sa)).ToArray();
        }
        // PNDM is left out on purpose: diffusers converts v to ε inside _get_prev_sample with the PRK/second-PLMS step's
        // shifted (sample, ᾱ) pair, so its v and ε trajectories differ in the reference too (its published v loop is pinned).
        foreach (string name in s_deterministic.Concat(s_stochastic).Where(n => n != "pndm"))
        {
            var a = SchedulerFactory.Create(name, Config());
            var b = SchedulerFactory.Create(name, Config() with { PredictionType = "v_prediction" });
            a.SetTimesteps(10);
            b.SetTimesteps(10);
            var ra = Run(a, x0, eps0, (x, _, _) => Eps(x), a.IsStochastic ? new GaussianNoise(3) : null);
            var rb = Run(b, x0, eps0, (x, _, ab) => V(x, ab), b.IsStochastic ? new GaussianNoise(3) : null);
            for (int i = 0; i < x0.Length; i++)
                Assert.AreEqual(ra[i], rb[i], 1e-3 * (1 + Math.Abs(ra[i])), $"{name} at {i}");
        }
    }

    [TestMethod]
    public void StochasticSchedulers_AreDeterministicPerSeed()
    {
        foreach (string name in s_stochastic.Append("ddim-eta"))
        {
            DiffusionScheduler Make() => name == "ddim-eta"
                ? SchedulerFactory.Create(new DdimSchedulerOptions { Eta = 0.5f }, Config())
                : SchedulerFactory.Create(name, Config());
            float[] Go(long seed)
            {
                var s = Make();
                s.SetTimesteps(4);
                return PipelineLoop(s, Scaled(DummySampleDeter(), s.InitNoiseSigma), (x, t) => Array.ConvertAll(x, v => 0.5f * v), noise: new GaussianNoise(seed));
            }
            var first = Go(1);
            CollectionAssert.AreEqual(first, Go(1), name);
            CollectionAssert.AreNotEqual(first, Go(2), name);
        }
    }

    /// <summary>
    /// LatentDenoiser keeps one scheduler per cursor and calls SetTimesteps before every batch: a second run on the same
    /// instance (after a first run with another step count and other data) must equal a fresh clone's run bit for bit.
    /// </summary>
    [TestMethod]
    public void SetTimesteps_ResetsEveryRunState_ReusedInstanceEqualsFreshClone()
    {
        var x0 = DummySampleDeter();
        var eps = DummyNoiseDeter();
        float[] Model(float[] input, float t, float alphaBar)
        {
            var output = new float[input.Length];
            DummyModel(input, t, output);
            return output;
        }
        foreach (string name in SchedulerFactory.Names)
        {
            var prototype = SchedulerFactory.Create(name, Config());
            var fresh = prototype.Clone();
            fresh.SetTimesteps(10);
            float[] expected = Run(fresh, x0, eps, Model, new GaussianNoise(5));

            var reused = prototype.Clone();
            reused.SetTimesteps(7);
            Run(reused, eps, x0, Model, new GaussianNoise(9)); // a different first run leaves history and scratch behind
            reused.SetTimesteps(10);
            float[] actual = Run(reused, x0, eps, Model, new GaussianNoise(5));
            for (int i = 0; i < expected.Length; i++)
                Assert.AreEqual(BitConverter.SingleToInt32Bits(expected[i]), BitConverter.SingleToInt32Bits(actual[i]), $"{name}: value {i} differs after reuse ({expected[i]:R} vs {actual[i]:R}).");
        }
    }

    [TestMethod]
    public void StochasticStep_WithoutNoise_ThrowsNamingNoise()
    {
        foreach (string name in s_stochastic)
        {
            var s = SchedulerFactory.Create(name, Config());
            Assert.IsTrue(s.IsStochastic, name);
            s.SetTimesteps(4);
            var x = new float[8];
            var e = Assert.ThrowsExactly<ArgumentNullException>(() => s.Step(x, 0, x), name);
            Assert.AreEqual("noise", e.ParamName);
        }
    }

    [TestMethod]
    public void Factory_RegistersEveryName_AndClassNames()
    {
        CollectionAssert.IsSubsetOf(new[] { "ddpm", "ddim", "pndm", "euler", "euler-a", "lms", "dpmpp-2m", "dpmpp-2m-karras", "heun", "lcm" }, SchedulerFactory.Names.ToArray());
        foreach (string name in SchedulerFactory.Names)
        {
            var s = SchedulerFactory.Create(name, Config());
            Assert.AreEqual(name, s.Name, ignoreCase: true);
            Assert.AreEqual(s.GetType(), s.Clone().GetType());
        }
        Assert.IsInstanceOfType<PndmScheduler>(SchedulerFactory.CreateDefault(SchedulerConfig.StableDiffusion1));
        Assert.IsInstanceOfType<EulerAncestralDiscreteScheduler>(SchedulerFactory.CreateDefault(SchedulerConfig.Parse("{\"_class_name\": \"EulerAncestralDiscreteScheduler\"}")));
    }

    [TestMethod]
    public void UnknownName_ListsKnownNames()
    {
        var e = Assert.ThrowsExactly<ArgumentException>(() => SchedulerFactory.Create("k_euler", Config()));
        StringAssert.Contains(e.Message, "dpmpp-2m-karras");
        StringAssert.Contains(e.Message, "euler-a");
    }

    [TestMethod]
    public void ConfigErrors_NameTheKey()
    {
        foreach (var (json, key) in new[]
        {
            ("{\"beta_schedule\": \"cubic\"}", "beta_schedule"),
            ("{\"prediction_type\": \"noise\"}", "prediction_type"),
            ("{\"timestep_spacing\": \"even\"}", "timestep_spacing"),
            ("{\"num_train_timesteps\": 1}", "num_train_timesteps"),
            ("{\"final_sigmas_type\": \"one\"}", "final_sigmas_type"),
            ("{\"clip_sample\": \"yes\"}", "clip_sample"),
            ("{\"thresholding\": true}", "thresholding"),
        })
        {
            var e = Assert.ThrowsExactly<InvalidDataException>(() => SchedulerConfig.Parse(json), json);
            StringAssert.Contains(e.Message, $"'{key}'");
        }
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => new PndmScheduler(Config() with { PredictionType = "sample" })).Message, "prediction_type");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => new DpmSolverMultistepScheduler(Config() with { AlgorithmType = "sde-dpmsolver++" })).Message, "algorithm_type");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => new DdpmScheduler(Config() with { VarianceType = "learned" })).Message, "variance_type");
    }

    [TestMethod]
    public void GetStartIndex_ForStrength()
    {
        foreach (string name in SchedulerFactory.Names)
        {
            var s = SchedulerFactory.Create(name, Config());
            s.SetTimesteps(10);
            // diffusers' img2img: t_start = (steps − ⌊steps·strength⌋)·order; PNDM lists steps + 1 timesteps (skip_prk_steps).
            Assert.AreEqual(Math.Min(10 * s.Order, s.Timesteps.Length), s.GetStartIndex(0f), name);
            Assert.AreEqual(5 * s.Order, s.GetStartIndex(0.5f), name);
            Assert.AreEqual(0, s.GetStartIndex(1f), name);
        }
    }

    [TestMethod]
    public void Timesteps_PerSpacing()
    {
        DiffusionScheduler Ddim(string spacing, int offset = 0) =>
            new DdimScheduler(LinearConfig() with { TimestepSpacing = spacing, StepsOffset = offset });
        void Check(string spacing, int n, double[] expected, int offset = 0)
        {
            var s = Ddim(spacing, offset);
            s.SetTimesteps(n);
            AssertSequence(expected, s.Timesteps);
        }
        Check("leading", 1, new double[] { 0 });
        Check("linspace", 1, new double[] { 0 });
        Check("trailing", 1, new double[] { 999 });
        Check("leading", 4, new double[] { 750, 500, 250, 0 });
        Check("linspace", 4, new double[] { 999, 666, 333, 0 });
        Check("trailing", 4, new double[] { 999, 749, 499, 249 });
        Check("leading", 20, Enumerable.Range(0, 20).Select(i => 951.0 - 50 * i).ToArray(), offset: 1);
        Check("trailing", 20, Enumerable.Range(0, 20).Select(i => 999.0 - 50 * i).ToArray());
        Check("leading", 50, Enumerable.Range(0, 50).Select(i => 980.0 - 20 * i).ToArray());
        Check("trailing", 50, Enumerable.Range(0, 50).Select(i => 999.0 - 20 * i).ToArray());
        var lin20 = Ddim("linspace");
        lin20.SetTimesteps(20);
        // np.linspace(0, 999, 20).round(): 999·18/19 = 946.42 → 946, 999/19 = 52.58 → 53
        Assert.AreEqual(999f, lin20.Timesteps[0]);
        Assert.AreEqual(946f, lin20.Timesteps[1]);
        Assert.AreEqual(53f, lin20.Timesteps[18]);
        Assert.AreEqual(0f, lin20.Timesteps[19]);
        var euler = new EulerDiscreteScheduler(LinearConfig());
        euler.SetTimesteps(4);
        AssertSequence(new double[] { 999, 666, 333, 0 }, euler.Timesteps);
        euler.SetTimesteps(50);
        Assert.AreEqual(999 - 999.0 / 49, euler.Timesteps[1], 1e-4); // fractional: np.linspace in float32
    }

    [TestMethod]
    public void NoiseSchedule_Tables()
    {
        var sd = new NoiseSchedule(SchedulerConfig.StableDiffusion1);
        // scaled_linear: β = linspace(√0.00085, √0.012)² in float32; the endpoints are the configured betas.
        Assert.AreEqual(0.00085, sd.Betas[0], 1e-9);
        Assert.AreEqual(0.012, sd.Betas[999], 1e-9);
        Assert.AreEqual(1 - 0.00085, sd.AlphasCumprod[0], 1e-7);
        // SD 1.x: k-diffusion's σ_max ≈ 14.6146 means ᾱ_999 = 1/(σ_max² + 1) ≈ 0.0046601.
        Assert.AreEqual(1 / (14.6146 * 14.6146 + 1), sd.AlphasCumprod[999], 1e-7);
        var lin = new NoiseSchedule(LinearConfig());
        Assert.AreEqual(0.0001f, lin.Betas[0]);
        Assert.AreEqual(0.02f, lin.Betas[999]);
        var cos = new NoiseSchedule(LinearConfig() with { BetaSchedule = "squaredcos_cap_v2" });
        Assert.AreEqual(0.999f, cos.Betas[999]); // capped (Nichol & Dhariwal 2021)
        var zsnr = new NoiseSchedule(SchedulerConfig.StableDiffusion1 with { RescaleBetasZeroSnr = true });
        Assert.AreEqual(0f, zsnr.AlphasCumprod[999]); // Lin et al. 2023: zero terminal SNR
    }
}
