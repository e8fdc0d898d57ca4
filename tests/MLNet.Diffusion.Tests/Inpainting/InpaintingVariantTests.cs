using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using MLNet.Diffusion.Tests.Variants;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>
/// The inpainting UNet in the export forms of the other variants (the graph passes of ShapesVariants apply to it as to
/// the text-to-image UNet): float16 weights and inputs, int64 or scalar timesteps, v-prediction, external weights.
/// </summary>
[TestClass]
public sealed class InpaintingVariantTests
{
    [TestMethod]
    [DataRow(ShapesVariant.Inpainting | ShapesVariant.Float16 | ShapesVariant.TimestepInt64)]
    [DataRow(ShapesVariant.Inpainting | ShapesVariant.VPrediction | ShapesVariant.ExternalWeights)]
    [DataRow(ShapesVariant.Inpainting | ShapesVariant.TimestepScalar | ShapesVariant.LatentParameters | ShapesVariant.Int64InputIds)]
    public void AnExportVariantOfTheInpaintingUnetRepaintsTheMaskedCircle(ShapesVariant variant)
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesVariantModels.Folder(variant));
        Assert.AreEqual(9, model.Info.UnetInputChannels);
        var data = model.MLContext.Data.LoadFromEnumerable(new[] { InpaintingImages.RedCircleRow("a green circle on a blue background", 3) });
        var output = InpaintingPipelineTests.Inpaint(model, data).GetColumn<MLImage>("Output").Single();
        var (inside, _) = ImageChecks.RegionMeans(output, ShapeKind.Circle, ShapePosition.Center, margin: 4);
        var outside = InpaintingPipelineTests.Mean(output, (x, y) => x < 32 || x >= 96 || y < 32 || y >= 96);
        Console.WriteLine($"{variant}: inside ({inside[0]:F0}, {inside[1]:F0}, {inside[2]:F0}), outside ({outside[0]:F0}, {outside[1]:F0}, {outside[2]:F0})");
        Assert.AreEqual(ShapeColor.Green, ImageChecks.NearestShapeColor(inside), $"{variant}: the prompt's colour inside the mask");
        Assert.IsTrue(ImageChecks.Distance(inside, ShapesDataset.GetRgb(ShapeColor.Green)) < 20, $"{variant}: a clean green");
        Assert.IsTrue(ImageChecks.Distance(outside, ShapesDataset.GetRgb(BackgroundColor.Blue)) < 3, $"{variant}: the blue background outside the mask");
    }
}
