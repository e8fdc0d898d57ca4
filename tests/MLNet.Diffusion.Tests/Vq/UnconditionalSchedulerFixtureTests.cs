using System;
using System.IO;
using System.Linq;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>
/// The schedulers of the unconditional folders, as loaded (LDMPipeline/DDPMPipeline keep the config's clip_sample and
/// steps_offset), against diffusers' DDIM and DDPM loops computed in PyTorch by Fixtures/make_unconditional_scheduler_fixture.py
/// over a stand-in noise model whose x̂₀ is clipped at every step.
/// </summary>
[TestClass]
public sealed class UnconditionalSchedulerFixtureTests
{
    private static JsonElement Fixture()
    {
        string path = Path.Combine(AppContext.BaseDirectory, "Vq", "Fixtures", "unconditional_schedulers.json");
        return JsonDocument.Parse(File.ReadAllText(path)).RootElement;
    }

    private static float[] Floats(JsonElement e) => e.EnumerateArray().Select(v => (float)v.GetDouble()).ToArray();

    /// <summary>The fixture's stand-in model: ε(x, t) = −x·(t/(t + 1)) in float32.</summary>
    private static void Model(ReadOnlySpan<float> sample, float t, Span<float> eps)
    {
        float scale = t / (t + 1f);
        for (int i = 0; i < sample.Length; i++)
            eps[i] = -(sample[i] * scale);
    }

    private sealed class Replay : INoiseSource
    {
        private readonly float[][] _noise;
        private int _next;

        public Replay(float[][] noise) => _noise = noise;

        public int Draws => _next;

        public void NextGaussian(Span<float> destination) => _noise[_next++].CopyTo(destination);
    }

    private static float[] Run(string dir, JsonElement f, INoiseSource? noise)
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), dir);
        var scheduler = SchedulerFactory.CreateDefault(model.Info.SchedulerConfig);
        int steps = f.GetProperty("steps").GetInt32();
        scheduler.SetTimesteps(steps);
        var sample = Floats(f.GetProperty("initial"));
        var input = new float[sample.Length];
        var eps = new float[sample.Length];
        for (int i = 0; i < steps; i++)
        {
            scheduler.ScaleModelInput(sample, input, i);
            Model(input, scheduler.Timesteps[i], eps);
            scheduler.Step(eps, i, sample, noise);
        }
        return sample;
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(expected[i], actual[i], 2e-5f, $"{what}: element {i}");
    }

    [TestMethod]
    public void LdmDdimWithClipSampleMatchesDiffusers()
    {
        var f = Fixture().GetProperty("ldm");
        AssertClose(Floats(f.GetProperty("expected")), Run(UnconditionalModels.RequireLdmVq(), f, null), "DDIM (tiny-ldm-vq config)");
    }

    [TestMethod]
    public void DdpmWithClipSampleAndFixedSmallVarianceMatchesDiffusers()
    {
        var f = Fixture().GetProperty("ddpm");
        var noise = f.GetProperty("noise").EnumerateArray().Select(Floats).ToArray();
        var replay = new Replay(noise);
        var result = Run(UnconditionalModels.RequireDdpmPixel(), f, replay);
        // diffusers draws the variance noise for every t > 0 (all but the last of the 5 steps).
        Assert.AreEqual(4, replay.Draws);
        AssertClose(Floats(f.GetProperty("expected")), result, "DDPM (tiny-ddpm-pixel config)");
    }
}
