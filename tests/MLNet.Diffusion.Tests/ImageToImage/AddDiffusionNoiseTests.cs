using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.ImageToImage;

/// <summary>
/// AddDiffusionNoise: the forward process q(x_t | x₀) = N(√ᾱ_t·x₀, (1 − ᾱ_t)·I) (Ho et al. 2020, eq. 4), exactly and
/// statistically, with ᾱ from the model's scheduler config (NoiseSchedule) and ε from the row's seed (GaussianNoise).
/// </summary>
[TestClass]
public sealed class AddDiffusionNoiseTests
{
    private const int Length = 4 * 8 * 8;

    public sealed class Row
    {
        [VectorType(Length)]
        public float[] Clean { get; set; } = Array.Empty<float>();

        public int Seed { get; set; }

        public long T { get; set; }
    }

    public sealed class VarRow
    {
        public float[] Clean { get; set; } = Array.Empty<float>();
    }

    private static Row[] Rows(params (int Seed, long T)[] rows) => rows.Select((r, i) => new Row
    {
        Clean = Enumerable.Range(0, Length).Select(k => MathF.Sin(0.1f * k + i)).ToArray(),
        Seed = r.Seed,
        T = r.T,
    }).ToArray();

    private static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);

    [TestMethod]
    public void EachRowIsTheForwardProcessAtItsTimestepWithItsSeed()
    {
        using var model = Load();
        var ml = model.MLContext;
        var rows = Rows((1, 0), (2, 250), (3, 999), (4, 500));
        var data = ml.Data.LoadFromEnumerable(rows);
        var view = ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions { TimestepColumnName = "T", SeedColumnName = "Seed", NoiseOutputColumnName = "Noise" })
            .Fit(data).Transform(data);
        var noisy = view.GetColumn<VBuffer<float>>("Noisy").Select(v => v.DenseValues().ToArray()).ToArray();
        var noise = view.GetColumn<VBuffer<float>>("Noise").Select(v => v.DenseValues().ToArray()).ToArray();
        var alphasCumprod = new NoiseSchedule(model.Info.SchedulerConfig).AlphasCumprod;
        for (int r = 0; r < rows.Length; r++)
        {
            var eps = new float[Length];
            new GaussianNoise(rows[r].Seed).NextGaussian(eps);
            CollectionAssert.AreEqual(eps, noise[r], $"row {r}: ε is the row seed's N(0, 1) noise");
            // Ho et al. 2020, eq. 4 in float32, as diffusers' add_noise: √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε.
            float a = alphasCumprod[(int)rows[r].T];
            float sa = MathF.Sqrt(a), sb = MathF.Sqrt(1f - a);
            for (int k = 0; k < Length; k++)
                Assert.AreEqual(sa * rows[r].Clean[k] + sb * eps[k], noisy[r][k], $"row {r}, value {k}");
        }
    }

    [TestMethod]
    public void TheNoisyValuesHaveTheForwardProcessMeanAndVariance()
    {
        // x₀ = c everywhere: x_t has mean √ᾱ_t·c and variance 1 − ᾱ_t. Over n = 4·64·64 values per row the sample mean
        // is within 5·√((1 − ᾱ)/n) and the sample variance within 5·√(2/n) relative (normal theory).
        using var model = Load();
        var ml = model.MLContext;
        const int n = 4 * 64 * 64;
        const float c = 0.7f;
        var alphasCumprod = new NoiseSchedule(model.Info.SchedulerConfig).AlphasCumprod;
        foreach (int t in new[] { 0, 100, 500, 999 })
        {
            var data = ml.Data.LoadFromEnumerable(new[] { new VarRow { Clean = Enumerable.Repeat(c, n).ToArray() } });
            var x = ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions { Timestep = t, Seed = 1000 + t })
                .Fit(data).Transform(data).GetColumn<VBuffer<float>>("Noisy").Single().DenseValues().ToArray();
            double mean = x.Average(v => (double)v);
            double variance = x.Sum(v => (v - mean) * (v - mean)) / (n - 1);
            double a = alphasCumprod[t];
            Console.WriteLine($"t = {t}: mean {mean:F4} (expected {Math.Sqrt(a) * c:F4}), variance {variance:F5} (expected {1 - a:F5})");
            Assert.AreEqual(Math.Sqrt(a) * c, mean, 5 * Math.Sqrt((1 - a) / n), $"t = {t}: mean");
            Assert.AreEqual(1 - a, variance, (1 - a) * 5 * Math.Sqrt(2.0 / n), $"t = {t}: variance");
        }
    }

    [TestMethod]
    public void OutputsKeepTheInputsShapeOrVariableSize()
    {
        using var model = Load();
        var ml = model.MLContext;
        var options = new AddDiffusionNoiseOptions { Timestep = 10, NoiseOutputColumnName = "Noise" };
        var fixedData = ml.Data.LoadFromEnumerable(Rows((1, 1)));
        var fixedView = ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", options).Fit(fixedData).Transform(fixedData);
        Assert.AreEqual(fixedData.Schema["Clean"].Type, fixedView.Schema["Noisy"].Type);
        Assert.AreEqual(fixedData.Schema["Clean"].Type, fixedView.Schema["Noise"].Type);
        var varData = ml.Data.LoadFromEnumerable(new[] { new VarRow { Clean = new float[] { 1, 2, 3 } }, new VarRow { Clean = new float[] { 4 } } });
        var varView = ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", options).Fit(varData).Transform(varData);
        Assert.AreEqual(0, ((VectorDataViewType)varView.Schema["Noisy"].Type).Size);
        CollectionAssert.AreEqual(new[] { 3, 1 }, varView.GetColumn<VBuffer<float>>("Noisy").Select(v => v.Length).ToArray());

        EstimatorConformance.Check(ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions { TimestepColumnName = "T", SeedColumnName = "Seed", NoiseOutputColumnName = "Noise" }),
            ml.Data.LoadFromEnumerable(Rows((1, 1), (2, 2))), "Noisy", "Noise");
        EstimatorConformance.Check(ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", options), varData, "Noisy", "Noise");
    }

    [TestMethod]
    public void WithoutASeedColumnRowsUseTheBaseSeedPlusTheirPosition()
    {
        using var model = Load();
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Rows((0, 0), (0, 0), (0, 0)));
        var noise = ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions { Timestep = 300, Seed = 77, NoiseOutputColumnName = "Noise" })
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("Noise").Select(v => v.DenseValues().ToArray()).ToArray();
        for (int r = 0; r < 3; r++)
        {
            var eps = new float[Length];
            new GaussianNoise(77 + r).NextGaussian(eps);
            CollectionAssert.AreEqual(eps, noise[r], $"row {r}");
        }
    }

    [TestMethod]
    public void BadOptionsAndTimestepsAreNamed()
    {
        using var model = Load();
        var ml = model.MLContext;
        var neither = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions()));
        StringAssert.Contains(neither.Message, "TimestepColumnName");
        var both = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions { Timestep = 3, TimestepColumnName = "T" }));
        StringAssert.Contains(both.Message, "not both");
        var range = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions { Timestep = 1000 }));
        Assert.AreEqual("Timestep", range.ParamName);
        StringAssert.Contains(range.Message, "[0, 999]");

        var data = ml.Data.LoadFromEnumerable(Rows((1, 5), (2, 1000)));
        var view = ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions { TimestepColumnName = "T" }).Fit(data).Transform(data);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => view.GetColumn<VBuffer<float>>("Noisy").ToArray());
        StringAssert.Contains(e.Message, "Row 1");
        StringAssert.Contains(e.Message, "1000");
        StringAssert.Contains(e.Message, "'T'");

        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.AddDiffusionNoise(model, "Noisy", "Latents", new AddDiffusionNoiseOptions { Timestep = 1 }).Fit(data));
        StringAssert.Contains(missing.Message, "'Latents'");
        var mistyped = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.AddDiffusionNoise(model, "Noisy", "Seed", new AddDiffusionNoiseOptions { Timestep = 1 }).Fit(data));
        StringAssert.Contains(mistyped.Message, "'Seed'");
        var timestepType = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.AddDiffusionNoise(model, "Noisy", "Clean", new AddDiffusionNoiseOptions { TimestepColumnName = "Clean" }).Fit(data));
        StringAssert.Contains(timestepType.Message, "'Clean'");
    }
}
