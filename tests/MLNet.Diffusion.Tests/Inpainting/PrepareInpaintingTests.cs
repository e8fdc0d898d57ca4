using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Tests.ImageToImage;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>The PrepareInpainting stage: its outputs against diffusers' definitions, resizing, laziness, conformance and bad input.</summary>
[TestClass]
public sealed class PrepareInpaintingTests
{
    private static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);

    private static IDataView RedCircle(MLContext ml) => ml.Data.LoadFromEnumerable(new[] { InpaintingImages.RedCircleRow("a green circle", 3) });

    [TestMethod]
    public void TheOutputsAreTheLatentMaskAndTheVaeLatentsOfTheImageTimesMaskBelowHalf()
    {
        using var model = Load();
        var ml = model.MLContext;
        var view = ml.Transforms.PrepareInpainting(model, width: 128, height: 128).Fit(RedCircle(ml)).Transform(RedCircle(ml));
        Assert.AreEqual(new VectorDataViewType(NumberDataViewType.Single, 1, 16, 16), view.Schema["LatentMask"].Type);
        Assert.AreEqual(new VectorDataViewType(NumberDataViewType.Single, 4, 16, 16), view.Schema["MaskedImageLatents"].Type);
        var mask = view.GetColumn<VBuffer<float>>("LatentMask").Single().DenseValues().ToArray();
        var masked = view.GetColumn<VBuffer<float>>("MaskedImageLatents").Single().DenseValues().ToArray();

        // The box [32, 96)² in pixels is the latent box [4, 12)².
        for (int y = 0; y < 16; y++)
            for (int x = 0; x < 16; x++)
                Assert.AreEqual(x is >= 4 and < 12 && y is >= 4 and < 12 ? 1f : 0f, mask[y * 16 + x], $"latent pixel ({x}, {y})");

        // diffusers: masked_image = image · (mask < 0.5) in [−1, 1], then vae.encode(masked_image) · scaling_factor.
        var pixels = new float[3 * 128 * 128];
        ImageTensor.FromImage(InpaintingImages.RedCircleRow("", 0).Image!, 128, 128, pixels);
        for (int c = 0; c < 3; c++)
            for (int y = 32; y < 96; y++)
                pixels.AsSpan((c * 128 + y) * 128 + 32, 64).Clear();
        var z = ShapesTestModel.Run(ShapesTestModel.VaeEncoder, ("sample", pixels, new long[] { 1, 3, 128, 128 }))["latent_sample"].Data;
        Assert.AreEqual(z.Length, masked.Length);
        for (int i = 0; i < z.Length; i++)
            Assert.AreEqual(z[i] * model.Info.VaeScalingFactor, masked[i], 1e-5f, $"latent value {i}");
    }

    [TestMethod]
    public void ALargerImageAndMaskAreResizedAlike_AndTheMaskIsBinarisedAfterResizing()
    {
        // 256 px with the box [64, 192)² at 128 px: Pillow-bilinear halves the box to [32, 96)² with blended edge
        // pixels that binarise to the same box (diffusers resizes the mask, then binarises), so the latent mask equals
        // the one of the 128 px inputs.
        using var model = Load();
        var ml = model.MLContext;
        var big = ml.Data.LoadFromEnumerable(new[] { new InpaintRow256 { Prompt = "x", Image = ShapesImages.Render(InpaintingImages.RedCircle, 256), Mask = InpaintingImages.Box(256, 64, 192) } });
        var fromBig = ml.Transforms.PrepareInpainting(model, width: 128, height: 128).Fit(big).Transform(big).GetColumn<VBuffer<float>>("LatentMask").Single().DenseValues().ToArray();
        var fromSmall = ml.Transforms.PrepareInpainting(model, width: 128, height: 128).Fit(RedCircle(ml)).Transform(RedCircle(ml)).GetColumn<VBuffer<float>>("LatentMask").Single().DenseValues().ToArray();
        CollectionAssert.AreEqual(fromSmall, fromBig);
        Assert.AreEqual(64, fromBig.Count(v => v == 1f));
    }

    [TestMethod]
    public void TheVaeEncoderRunsOnlyWhenTheMaskedImageLatentsAreRead()
    {
        using var model = Load();
        var ml = model.MLContext;
        var view = ml.Transforms.PrepareInpainting(model, width: 128, height: 128).Fit(RedCircle(ml)).Transform(RedCircle(ml));
        var encoder = model.VaeEncoderOrNull!;
        long before = encoder.RunCount;
        _ = view.GetColumn<VBuffer<float>>("LatentMask").Single();
        Assert.AreEqual(before, encoder.RunCount, "reading the latent mask runs no VAE encoder");
        _ = view.GetColumn<VBuffer<float>>("MaskedImageLatents").Single();
        Assert.AreEqual(before + 1, encoder.RunCount);
    }

    [TestMethod]
    public void PrepareInpaintingConforms()
    {
        using var model = Load();
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { InpaintingImages.RedCircleRow("a", 1), InpaintingImages.RedCircleRow("b", 2), InpaintingImages.RedCircleRow("c", 3) });
        EstimatorConformance.Check(ml.Transforms.PrepareInpainting(model, new PrepareInpaintingOptions { Width = 64, Height = 64, SeedColumnName = "Seed", BatchSize = 2 }), data, "LatentMask", "MaskedImageLatents");
        EstimatorConformance.Check(ml.Transforms.PrepareInpainting(model, "M", null, width: 64, height: 64), data, "M");
    }

    [TestMethod]
    public void AMaskOfAnotherSizeThanItsImage_FailsNamingBoth()
    {
        using var model = Load();
        var ml = model.MLContext;
        var row = InpaintingImages.RedCircleRow("a", 1);
        row.Mask = InpaintingImages.Box(64, 16, 48);
        var data = ml.Data.LoadFromEnumerable(new[] { row });
        var view = ml.Transforms.PrepareInpainting(model, width: 128, height: 128).Fit(data).Transform(data);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => view.GetColumn<VBuffer<float>>("LatentMask").ToArray());
        StringAssert.Contains(e.Message, "'Mask' is 64×64");
        StringAssert.Contains(e.Message, "'Image' is 128×128");
    }

    [TestMethod]
    public void WithoutResizing_AnImageOfAnotherSize_FailsNamingTheSizes()
    {
        using var model = Load();
        var ml = model.MLContext;
        var data = RedCircle(ml);
        var view = ml.Transforms.PrepareInpainting(model, new PrepareInpaintingOptions { Width = 64, Height = 64, ResizeMode = ImageResizeMode.None }).Fit(data).Transform(data);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => view.GetColumn<VBuffer<float>>("LatentMask").ToArray());
        StringAssert.Contains(e.Message, "128×128");
        StringAssert.Contains(e.Message, "expected 64×64");
    }

    public sealed class VectorMaskRow
    {
        [ImageType(128, 128)]
        public MLImage? Image { get; set; }

        [VectorType(16)]
        public float[] Mask { get; set; } = new float[16];
    }

    [TestMethod]
    public void AMaskColumnThatIsNotAnImage_FailsAtFitNamingIt()
    {
        using var model = Load();
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new VectorMaskRow { Image = InpaintingImages.RedCircleRow("", 0).Image } });
        var estimator = ml.Transforms.PrepareInpainting(model, width: 128, height: 128);
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.Fit(data));
        StringAssert.Contains(e.Message, "'Mask'");
        StringAssert.Contains(e.Message, "Image");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(SchemaShapes.FromSchema(ml, data.Schema)));
    }

    [TestMethod]
    public void BadOptionsAreNamed()
    {
        using var model = Load();
        var ml = model.MLContext;
        Assert.AreEqual("Width", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.PrepareInpainting(model, width: 100)).ParamName);
        Assert.AreEqual("MaskedImageLatentsColumnName", Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.PrepareInpainting(model, "Same", "Same")).ParamName);
        Assert.AreEqual("MaskDownsampling", Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.PrepareInpainting(model, new PrepareInpaintingOptions { MaskDownsampling = (MaskDownsampling)7 })).ParamName);
    }
}
