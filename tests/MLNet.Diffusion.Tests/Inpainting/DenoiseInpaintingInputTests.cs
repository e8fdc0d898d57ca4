using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>DenoiseLatents' inpainting inputs: which columns each UNet kind needs, their checks, conformance and batching.</summary>
[TestClass]
public sealed class DenoiseInpaintingInputTests
{
    private const int Size = 64;

    /// <summary>Embeddings, initial latents, a latent mask and masked-image latents for rows of 64×64 images with different masks.</summary>
    private static IDataView Prepared(StableDiffusionModel model, int rows = 3)
    {
        var ml = model.MLContext;
        var items = Enumerable.Range(0, rows).Select(i => new InpaintRow128
        {
            Prompt = i % 2 == 0 ? "a green circle" : "a yellow square on a white background",
            Seed = 20 + i,
            Image = InpaintingImages.RedCircleRow("", 0).Image,
            Mask = InpaintingImages.Box(128, 16 * i, 64 + 16 * i),
        }).ToArray();
        var data = ml.Data.LoadFromEnumerable(items);
        return ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.EncodeImage(model, "InitialLatents", "Image", new EncodeImageOptions { Width = Size, Height = Size, SeedColumnName = "Seed" }))
            .Append(ml.Transforms.PrepareInpainting(model, new PrepareInpaintingOptions { Width = Size, Height = Size, SeedColumnName = "Seed" }))
            .Fit(data).Transform(data);
    }

    private static DenoiseLatentsOptions Options(int batch = 2, bool masked = true, bool initial = true, string mask = "LatentMask") => new()
    {
        Width = Size,
        Height = Size,
        Steps = 5,
        SeedColumnName = "Seed",
        InitialLatentsColumnName = initial ? "InitialLatents" : null,
        MaskColumnName = mask,
        MaskedImageLatentsColumnName = masked ? "MaskedImageLatents" : null,
        BatchSize = batch,
    };

    private static float[][] Latents(StableDiffusionModel model, IDataView data, DenoiseLatentsOptions options) =>
        model.MLContext.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options).Fit(data).Transform(data)
            .GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void RowsWithDifferentMasksGiveTheSameLatentsAloneOrInABatch(bool inpaintingUnet)
    {
        using var model = inpaintingUnet ? InpaintingPipelineTests.LoadInpainting() : InpaintingPipelineTests.LoadOrdinary();
        var data = Prepared(model);
        var together = Latents(model, data, Options(batch: 3));
        var alone = Latents(model, data, Options(batch: 1));
        Assert.AreEqual(3, together.Length);
        for (int r = 0; r < 3; r++)
            CollectionAssert.AreEqual(alone[r], together[r], $"row {r}");
        CollectionAssert.AreNotEqual(together[0], together[2], "rows with other prompts, seeds and masks differ");
    }

    [TestMethod]
    public void AnInpaintingUnetWithoutAMask_FailsNamingItsInChannelsAndTheMissingColumn()
    {
        using var model = InpaintingPipelineTests.LoadInpainting();
        var ml = model.MLContext;
        var plain = new DenoiseLatentsOptions { Width = Size, Height = Size };
        var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", plain));
        StringAssert.Contains(e.Message, "in_channels 9");
        StringAssert.Contains(e.Message, "MaskColumnName is not set");
        Assert.AreEqual("MaskColumnName", e.ParamName);

        var noMasked = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Options(masked: false)));
        StringAssert.Contains(noMasked.Message, "in_channels 9");
        Assert.AreEqual("MaskedImageLatentsColumnName", noMasked.ParamName);

        // Below strength 1 the inpainting UNet starts from the initial latents too (diffusers: image + noise).
        var noInitial = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings",
            new DenoiseLatentsOptions { Width = Size, Height = Size, Strength = 0.5f, MaskColumnName = "LatentMask", MaskedImageLatentsColumnName = "MaskedImageLatents" }));
        StringAssert.Contains(noInitial.Message, "InitialLatentsColumnName");
    }

    [TestMethod]
    public void AnOrdinaryUnetWithAMaskButNoInitialLatents_FailsNamingTheOption()
    {
        using var model = InpaintingPipelineTests.LoadOrdinary();
        var ml = model.MLContext;
        var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Options(initial: false)));
        Assert.AreEqual("InitialLatentsColumnName", e.ParamName);
        StringAssert.Contains(e.Message, "takes 4 channels");
        var maskless = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings",
            new DenoiseLatentsOptions { Width = Size, Height = Size, MaskedImageLatentsColumnName = "MaskedImageLatents" }));
        Assert.AreEqual("MaskColumnName", maskless.ParamName);
    }

    [TestMethod]
    public void AMaskColumnOfTheWrongSizeOrType_FailsAtFitNamingIt()
    {
        using var model = InpaintingPipelineTests.LoadInpainting();
        var ml = model.MLContext;
        var data = Prepared(model, rows: 1);
        // The masked-image latents ([4, 8, 8]) given as the mask ([1, 8, 8] expected).
        var wrongSize = ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Options(mask: "MaskedImageLatents"));
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => wrongSize.Fit(data));
        StringAssert.Contains(e.Message, "'MaskedImageLatents'");
        StringAssert.Contains(e.Message, "size 64 (1×8×8)");
        StringAssert.Contains(e.Message, "size 256");
        // A text column as the mask.
        var text = ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Options(mask: "Prompt"));
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => text.Fit(data)).Message, "'Prompt'");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => text.GetOutputSchema(MLNet.Diffusion.Transforms.SchemaShapes.FromSchema(ml, data.Schema))).Message, "'Prompt'");
        // A missing masked-image latents column.
        var missing = ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = Size, Height = Size, MaskColumnName = "LatentMask", MaskedImageLatentsColumnName = "Nope" });
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => missing.Fit(data)).Message, "'Nope'");
    }

    public sealed class MaskRow
    {
        [VectorType(2, 77, 32)]
        public float[] Embeddings { get; set; } = new float[2 * 77 * 32];

        [VectorType(4, 8, 8)]
        public float[] Initial { get; set; } = new float[256];

        [VectorType(1, 8, 8)]
        public float[] Mask { get; set; } = new float[64];
    }

    [TestMethod]
    public void MaskValuesOutside0To1_FailNamingTheRowAndColumn()
    {
        using var model = InpaintingPipelineTests.LoadOrdinary();
        var ml = model.MLContext;
        var bad = new MaskRow();
        bad.Mask[5] = 255f;
        var data = ml.Data.LoadFromEnumerable(new[] { new MaskRow(), bad });
        var view = ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions
        {
            Width = Size, Height = Size, Steps = 2, BatchSize = 1, InitialLatentsColumnName = "Initial", MaskColumnName = "Mask",
        }).Fit(data).Transform(data);
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => view.GetColumn<VBuffer<float>>("Latents").ToArray());
        StringAssert.Contains(e.Message, "Row 1");
        StringAssert.Contains(e.Message, "'Mask'");
        StringAssert.Contains(e.Message, "[0, 255]");
    }

    [TestMethod]
    [DataRow(false)]
    [DataRow(true)]
    public void DenoiseLatentsWithAMaskConforms(bool inpaintingUnet)
    {
        using var model = inpaintingUnet ? InpaintingPipelineTests.LoadInpainting() : InpaintingPipelineTests.LoadOrdinary();
        EstimatorConformance.Check(model.MLContext.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Options()), Prepared(model, rows: 2), "Latents");
    }
}
