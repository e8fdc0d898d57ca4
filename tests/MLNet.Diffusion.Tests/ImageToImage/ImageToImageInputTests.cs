using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.ImageToImage;

/// <summary>DenoiseLatents' image-to-image options and columns: bad values are named, and the stage conforms.</summary>
[TestClass]
public sealed class ImageToImageInputTests
{
    private const int Latent = 4 * 8 * 8;

    public sealed class Row
    {
        public string Prompt { get; set; } = "a red circle";

        public int Seed { get; set; }

        [VectorType(Latent)]
        public float[] Initial { get; set; } = new float[Latent];

        [VectorType(Latent / 2)]
        public float[] Short { get; set; } = new float[Latent / 2];

        public float[] Variable { get; set; } = new float[Latent];
    }

    private static DenoiseLatentsOptions Options(float strength, string? column = "Initial") => new()
    {
        Width = 64,
        Height = 64,
        Steps = 4,
        SeedColumnName = "Seed",
        InitialLatentsColumnName = column,
        Strength = strength,
    };

    [TestMethod]
    public void StrengthIsValidatedAndNeedsInitialLatents()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        foreach (float bad in new[] { -0.1f, 1.5f, float.NaN, float.PositiveInfinity })
        {
            var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.DenoiseLatents(model, "L", "E", Options(bad)), bad.ToString());
            Assert.AreEqual("Strength", e.ParamName);
        }
        var noColumn = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "L", "E", Options(0.5f, column: null)));
        Assert.AreEqual("Strength", noColumn.ParamName);
        StringAssert.Contains(noColumn.Message, "InitialLatentsColumnName");
        // Strength 1 with a column is valid (the image noised at the first timestep, as diffusers); so is Strength 0 with one.
        _ = ml.Transforms.DenoiseLatents(model, "L", "E", Options(1f));
        _ = ml.Transforms.DenoiseLatents(model, "L", "E", Options(0f));
    }

    [TestMethod]
    public void MissingMistypedAndMissizedInitialLatentsAreNamed()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row() });
        var encode = ml.Transforms.EncodePrompt(model, "E", "Prompt");

        var missing = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => encode.Append(ml.Transforms.DenoiseLatents(model, "L", "E", Options(0.5f, "Nope"))).Fit(data));
        StringAssert.Contains(missing.Message, "'Nope'");
        var mistyped = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => encode.Append(ml.Transforms.DenoiseLatents(model, "L", "E", Options(0.5f, "Prompt"))).Fit(data));
        StringAssert.Contains(mistyped.Message, "'Prompt'");
        var size = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => encode.Append(ml.Transforms.DenoiseLatents(model, "L", "E", Options(0.5f, "Short"))).Fit(data));
        StringAssert.Contains(size.Message, "'Short'");
        StringAssert.Contains(size.Message, $"size {Latent}");
        StringAssert.Contains(size.Message, $"size {Latent / 2}");

        // A variable-size column is checked per row.
        var rows = ml.Data.LoadFromEnumerable(new[] { new Row(), new Row { Variable = new float[5] } });
        var view = encode.Append(ml.Transforms.DenoiseLatents(model, "L", "E", Options(0.5f, "Variable"))).Fit(rows).Transform(rows);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => view.GetColumn<VBuffer<float>>("L").ToArray());
        StringAssert.Contains(e.Message, "Row 1");
        StringAssert.Contains(e.Message, "'Variable'");
        StringAssert.Contains(e.Message, "5 values");
    }

    [TestMethod]
    public void DenoiseLatentsWithInitialLatentsConforms()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(Enumerable.Range(0, 3).Select(i => new Row { Seed = i }).ToArray());
        var encoded = ml.Transforms.EncodePrompt(model, "E", "Prompt").Fit(data).Transform(data);
        EstimatorConformance.Check(ml.Transforms.DenoiseLatents(model, "L", "E", Options(0.5f)), encoded, "L");
    }
}
