using System;
using System.Collections.Generic;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Tests.Schedulers;

/// <summary>
/// The common fixtures of diffusers' scheduler tests (tests/schedulers/test_schedulers.py, SchedulerCommonTest), which
/// every scheduler's test class here uses: the deterministic sample and noise, the dummy model x·t/(t+1), the
/// full-loop drivers and the sum/mean of |x| the reference tests pin.
/// </summary>
public abstract class SchedulerTestBase
{
    /// <summary>Batch 4 × 3 × 8 × 8, as diffusers' dummy samples.</summary>
    protected const int Batch = 4, Channels = 3, Height = 8, Width = 8, Count = Batch * Channels * Height * Width;

    /// <summary>
    /// diffusers' <c>dummy_sample_deter</c>: torch.arange(768).reshape(3, 8, 8, 4) / 768, permuted to (4, 3, 8, 8),
    /// so element [b, c, h, w] = (((c·8 + h)·8 + w)·4 + b) / 768 (float32 division).
    /// </summary>
    protected static float[] DummySampleDeter() => Deter(flip: false);

    /// <summary>diffusers' <c>dummy_noise_deter</c>: the same with arange flipped (767 − k).</summary>
    protected static float[] DummyNoiseDeter() => Deter(flip: true);

    private static float[] Deter(bool flip)
    {
        var x = new float[Count];
        for (int b = 0; b < Batch; b++)
            for (int c = 0; c < Channels; c++)
                for (int h = 0; h < Height; h++)
                    for (int w = 0; w < Width; w++)
                    {
                        int k = ((c * Height + h) * Width + w) * Batch + b;
                        if (flip)
                            k = Count - 1 - k;
                        x[((b * Channels + c) * Height + h) * Width + w] = (float)k / Count;
                    }
        return x;
    }

    /// <summary>diffusers' <c>dummy_model</c>: sample·t/(t + 1) with t cast to float32, evaluated left to right.</summary>
    protected static void DummyModel(ReadOnlySpan<float> sample, float t, Span<float> output)
    {
        for (int i = 0; i < sample.Length; i++)
            output[i] = sample[i] * t / (t + 1f);
    }

    /// <summary>torch.sum(torch.abs(x)).</summary>
    protected static double AbsSum(ReadOnlySpan<float> x)
    {
        double s = 0;
        foreach (float v in x)
            s += Math.Abs(v);
        return s;
    }

    /// <summary>torch.mean(torch.abs(x)).</summary>
    protected static double AbsMean(ReadOnlySpan<float> x) => AbsSum(x) / x.Length;

    /// <summary>The config of a diffusers test (<c>get_scheduler_config</c>): linear 0.0001 … 0.02 over <paramref name="trainSteps"/>.</summary>
    protected static SchedulerConfig LinearConfig(int trainSteps = 1000) => new()
    {
        NumTrainTimesteps = trainSteps,
        BetaStart = 0.0001,
        BetaEnd = 0.02,
        BetaSchedule = "linear",
    };

    /// <summary>
    /// The loop of DDIM/DPM/PNDM/LCM tests: model(sample, t) then step, no input scaling, from <paramref name="start"/>.
    /// </summary>
    protected static float[] PlainLoop(DiffusionScheduler scheduler, float[] sample, int start = 0, INoiseSource? noise = null)
    {
        var output = new float[sample.Length];
        var ts = scheduler.Timesteps.ToArray();
        for (int i = start; i < ts.Length; i++)
        {
            DummyModel(sample, ts[i], output);
            scheduler.Step(output, i, sample, noise);
        }
        return sample;
    }

    /// <summary>
    /// The loop of the Euler/LMS/Heun tests: sample = scale_model_input(sample, t) (the scaled tensor replaces the sample,
    /// as those tests do), model, step.
    /// </summary>
    protected static float[] ScaledLoop(DiffusionScheduler scheduler, float[] sample, int start = 0, INoiseSource? noise = null)
    {
        var output = new float[sample.Length];
        var ts = scheduler.Timesteps.ToArray();
        for (int i = start; i < ts.Length; i++)
        {
            scheduler.ScaleModelInput(sample, sample, i);
            DummyModel(sample, ts[i], output);
            scheduler.Step(output, i, sample, noise);
        }
        return sample;
    }

    /// <summary>The pipeline loop (scaled input to the model, unscaled sample to the step).</summary>
    protected static float[] PipelineLoop(DiffusionScheduler scheduler, float[] sample, Func<float[], float, float[]> model, int start = 0, INoiseSource? noise = null)
    {
        var input = new float[sample.Length];
        var ts = scheduler.Timesteps.ToArray();
        for (int i = start; i < ts.Length; i++)
        {
            scheduler.ScaleModelInput(sample, input, i);
            scheduler.Step(model(input, ts[i]), i, sample, noise);
        }
        return sample;
    }

    /// <summary>Multiplies a copy of <paramref name="x"/> by <paramref name="s"/> (float32).</summary>
    protected static float[] Scaled(float[] x, float s) => Array.ConvertAll(x, v => v * s);

    /// <summary>Asserts a published sum/mean of |x| within the reference test's tolerance.</summary>
    protected static void AssertSumMean(float[] x, double? sum, double sumTol, double? mean, double meanTol)
    {
        if (sum is { } s)
            Assert.AreEqual(s, AbsSum(x), sumTol, $"sum |x| (mean {AbsMean(x)})");
        if (mean is { } m)
            Assert.AreEqual(m, AbsMean(x), meanTol, $"mean |x| (sum {AbsSum(x)})");
    }

    /// <summary>Asserts two float sequences are equal element by element.</summary>
    protected static void AssertSequence(IReadOnlyList<double> expected, ReadOnlySpan<float> actual, double tolerance = 0)
    {
        Assert.AreEqual(expected.Count, actual.Length, $"length; actual [{string.Join(", ", actual.ToArray())}]");
        for (int i = 0; i < expected.Count; i++)
            Assert.AreEqual(expected[i], actual[i], tolerance, $"index {i}; actual [{string.Join(", ", actual.ToArray())}]");
    }
}
