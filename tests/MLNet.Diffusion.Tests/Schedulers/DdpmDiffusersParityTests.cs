using System;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tests.Randomness;

namespace MLNet.Diffusion.Tests.Schedulers;

/// <summary>
/// <see cref="DdpmScheduler"/> against diffusers' <c>DDPMScheduler</c> run with PyTorch (Fixtures/Schedulers/make_ddpm.py):
/// the previous timestep is the next entry of the schedule (−1 after the last), and a seeded loop whose step noise comes
/// from <see cref="TorchCpuNoise"/> lands on diffusers' samples.
/// </summary>
[TestClass]
public sealed class DdpmDiffusersParityTests
{
    private static DdpmScheduler Create(string spacing, bool clip) => new(SchedulerConfig.StableDiffusion1 with
    {
        ClassName = "DDPMScheduler",
        TimestepSpacing = spacing,
        ClipSample = clip,
        StepsOffset = 0,
        SetAlphaToOne = true,
        VarianceType = "fixed_small",
    });

    [TestMethod]
    public void Linspace4Steps_StepsFrom999To666_NotTo749()
    {
        // The example: linspace, 4 steps → timesteps 999, 666, 333, 0; x_{666} follows x_{999}.
        var s = Create("linspace", clip: false);
        s.SetTimesteps(4);
        CollectionAssert.AreEqual(new[] { 999f, 666f, 333f, 0f }, s.Timesteps.ToArray());
        // diffusers: _get_variance(999) = 0.8592358827590942 with prev_t 666 (with prev_t 749 it would be much smaller).
        Assert.AreEqual(0.8592358827590942, s.GetVariance(999), 1e-6);
    }

    [TestMethod]
    public void TimestepsVariancesAndSeededLoops_MatchDiffusers()
    {
        using var doc = NoiseFixtures.Load("../Schedulers/ddpm_diffusers.json");
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            string spacing = c.GetProperty("timestep_spacing").GetString()!;
            int steps = c.GetProperty("steps").GetInt32();
            string name = $"{spacing}, {steps} steps";
            var s = Create(spacing, c.GetProperty("clip_sample").GetBoolean());
            s.SetTimesteps(steps);
            var timesteps = c.GetProperty("timesteps").EnumerateArray().Select(e => (float)e.GetInt32()).ToArray();
            CollectionAssert.AreEqual(timesteps, s.Timesteps.ToArray(), name);
            var variances = c.GetProperty("variances").EnumerateArray().Select(e => e.GetDouble()).ToArray();
            for (int i = 0; i < timesteps.Length; i++)
                Assert.AreEqual(variances[i], s.GetVariance((int)timesteps[i]), Math.Max(1e-7, variances[i] * 2e-6), $"{name}: variance at t = {timesteps[i]}");

            // diffusers' loop: model(x, t) = x·t/(t + 1); noise randn_tensor(model_output.shape, generator) per step from
            // torch.Generator("cpu").manual_seed(0).
            var sample = TorchLinspace(-1.2f, 1.2f, 256);
            var noise = new TorchCpuNoise(0);
            var model = new float[256];
            var afterFirst = NoiseFixtures.Floats(c.GetProperty("after_first_step_bits"));
            var final = NoiseFixtures.Floats(c.GetProperty("final_bits"));
            for (int i = 0; i < timesteps.Length; i++)
            {
                float t = timesteps[i];
                for (int k = 0; k < 256; k++)
                    model[k] = sample[k] * t / (t + 1f);
                s.Step(model, i, sample, noise);
                if (i == 0)
                    AssertClose(afterFirst, sample, $"{name}: after the first step");
            }
            AssertClose(final, sample, $"{name}: final sample");
        }
    }

    [TestMethod]
    public void GetVariance_OfATimestepOutsideTheSchedule_IsRefused()
    {
        var s = Create("linspace", clip: false);
        s.SetTimesteps(4);
        Assert.AreEqual("t", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => s.GetVariance(749)).ParamName);
    }

    /// <summary>torch.linspace in float32: start + i·step for the first half, end − (n − 1 − i)·step for the second.</summary>
    private static float[] TorchLinspace(float start, float end, int n)
    {
        var values = new float[n];
        float step = (end - start) / (n - 1);
        int half = n / 2;
        for (int i = 0; i < n; i++)
            values[i] = i < half ? start + step * i : end - step * (n - 1 - i);
        return values;
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        // The schedulers' float32 arithmetic is written in a different order than PyTorch's; the noise is bit-identical.
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(expected[i], actual[i], 2e-5f + 2e-5f * Math.Abs(expected[i]), $"{what}, value {i}");
    }
}
