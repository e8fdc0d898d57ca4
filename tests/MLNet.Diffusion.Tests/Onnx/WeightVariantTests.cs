using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Onnx;

/// <summary>
/// The session hook for replaced initializers (<see cref="StableDiffusionModel.Open(string, WeightVariant?)"/>): sessions
/// with other weights coexist with the base session, and the variant's native memory lives exactly as long as needed.
/// </summary>
[TestClass]
public sealed class WeightVariantTests
{
    private static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);

    /// <summary>The UNet's biggest float32 initializer (the one a weight edit is most sure to show in the output).</summary>
    private static OnnxInitializer Target(OnnxModelReader reader) =>
        reader.Initializers.Where(i => i.ElementType == TensorElementType.Float).MaxBy(i => i.ElementCount)!;

    private static float[] PredictNoise(OnnxComponent unet)
    {
        const int n = ShapesTestModel.LatentLength;
        var random = new Random(7);
        float[] sample = Enumerable.Range(0, n).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        float[] states = ShapesTestModel.Encode("a red circle on a white background");
        int hidden = states.Length / 77;
        return ShapesTestModel.Run(unet.Session,
            ("sample", sample, new long[] { 1, 4, ShapesTestModel.LatentSize, ShapesTestModel.LatentSize }),
            ("timestep", new[] { 501f }, new long[] { 1 }),
            ("encoder_hidden_states", states, new long[] { 1, 77, hidden }))["out_sample"].Data;
    }

    [TestMethod]
    public void AReplacedInitializerChangesTheVariantsOutputAndNotTheBaseSessions()
    {
        using var model = Load();
        var reader = OnnxModelReader.Open(model.Unet.Path);
        var target = Target(reader);
        float[] original = reader.ReadSingles(target.Name);
        float[] before = PredictNoise(model.Unet);

        using var changed = new WeightVariant("plus-half");
        changed.Add(target.Name, target.Dims.ToArray(), TensorElementType.Float, original.Select(v => v + 0.5f).ToArray());
        using var same = new WeightVariant("same-values");
        same.Add(target.Name, target.Dims.ToArray(), TensorElementType.Float, original);

        var changedUnet = model.Open("unet", changed);
        var sameUnet = model.Open("unet", same);

        Assert.AreNotSame(model.Unet, changedUnet);
        Assert.AreNotSame(changedUnet, sameUnet);
        Assert.AreEqual("plus-half", changedUnet.WeightVariantId);
        Assert.AreSame(changedUnet, model.Open("unet", changed), "one session per (component, variant id)");
        Assert.AreSame(model.Unet, model.Open("unet", null));

        float[] withChange = PredictNoise(changedUnet);
        Assert.IsTrue(withChange.Zip(before).Any(p => p.First != p.Second), $"replacing '{target.Name}' changes the output");
        CollectionAssert.AreEqual(before, PredictNoise(model.Unet), "the base session keeps the file's weights");
        CollectionAssert.AreEqual(before, PredictNoise(sameUnet), "the same values (read by OnnxModelReader) give the same output");
    }

    [TestMethod]
    public void TheVariantsMemoryLivesUntilItsOwnerAndEverySessionAreDone()
    {
        var reader = OnnxModelReader.Open(Path.Combine(ShapesTestModel.Folder, "unet", "model.onnx"));
        var target = Target(reader);
        float[] values = reader.ReadSingles(target.Name).Select(v => v * 2).ToArray();

        var unused = new WeightVariant("unused");
        unused.Add(target.Name, target.Dims.ToArray(), TensorElementType.Float, values);
        unused.Dispose();
        Assert.IsTrue(unused.IsReleased, "no session: freed with its owner");
        Assert.ThrowsExactly<ObjectDisposedException>(() => unused.Add("x", new long[] { 1 }, TensorElementType.Float, new float[1]));

        var variant = new WeightVariant("doubled");
        variant.Add(target.Name, target.Dims.ToArray(), TensorElementType.Float, values);
        var model = Load();
        try
        {
            var unet = model.Open("unet", variant);
            float[] expected = PredictNoise(unet);
            Assert.ThrowsExactly<InvalidOperationException>(() => variant.Add("y", new long[] { 1 }, TensorElementType.Float, new float[1]));

            variant.Dispose();
            Assert.IsFalse(variant.IsReleased, "the session still uses the values in place");
            CollectionAssert.AreEqual(expected, PredictNoise(unet));
            Assert.AreSame(unet, model.Open("unet", variant), "the cached session is found by id after the owner let go");
        }
        finally
        {
            model.Dispose();
        }
        Assert.IsTrue(variant.IsReleased, "the model's disposal released the last session and with it the memory");
        Assert.ThrowsExactly<ObjectDisposedException>(() => model.Open("unet", variant));
    }

    [TestMethod]
    public void AVariantThatDoesNotFitTheModelIsRefusedNamingTheInitializer()
    {
        using var model = Load();
        var reader = OnnxModelReader.Open(model.Unet.Path);
        var target = Target(reader);

        using var unknown = new WeightVariant("unknown");
        unknown.Add("no.such.weight", new long[] { 2 }, TensorElementType.Float, new float[2]);
        var e = Assert.ThrowsExactly<ArgumentException>(() => model.Open("unet", unknown));
        StringAssert.Contains(e.Message, "'no.such.weight'");
        StringAssert.Contains(e.Message, "'unknown'");

        using var reshaped = new WeightVariant("reshaped");
        reshaped.Add(target.Name, new[] { target.ElementCount }, TensorElementType.Float, new float[target.ElementCount]);
        e = Assert.ThrowsExactly<ArgumentException>(() => model.Open("unet", reshaped));
        StringAssert.Contains(e.Message, $"'{target.Name}'");

        using var half = new WeightVariant("half");
        half.Add(target.Name, target.Dims.ToArray(), TensorElementType.Float16, new float[target.ElementCount]);
        e = Assert.ThrowsExactly<ArgumentException>(() => model.Open("unet", half));
        StringAssert.Contains(e.Message, "Float16");

        e = Assert.ThrowsExactly<ArgumentException>(() => model.Open("transformer", unknown));
        StringAssert.Contains(e.Message, "'transformer'");
        e = Assert.ThrowsExactly<ArgumentException>(() => new WeightVariant("v").Add("w", new long[] { 3 }, TensorElementType.Float, new float[2]));
        StringAssert.Contains(e.Message, "'w'");
    }
}
