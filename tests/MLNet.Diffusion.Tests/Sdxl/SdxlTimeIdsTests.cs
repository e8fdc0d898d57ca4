using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Sdxl;

/// <summary>
/// The SDXL micro-conditioning values. Reference: diffusers pipeline_stable_diffusion_xl.py <c>__call__</c>
/// (original_size = target_size = (height, width) by default, crops_coords_top_left = (0, 0), negative_add_time_ids =
/// add_time_ids) and <c>_get_add_time_ids</c> (list(original_size + crops_coords_top_left + target_size)); for
/// requires_aesthetics_score, pipeline_stable_diffusion_xl_img2img.py <c>_get_add_time_ids</c>
/// (original_size + crops_coords_top_left + (aesthetic_score,), aesthetic_score 6.0, negative_aesthetic_score 2.5).
/// </summary>
[TestClass]
public sealed class SdxlTimeIdsTests
{
    [TestMethod]
    public void SixTimeIdsAreOriginalSizeCropAndTargetSizeHeightFirst()
    {
        var defaults = new DenoiseLatentsOptions { Width = 96, Height = 64 }.SdxlTimeIds.Create(6);
        CollectionAssert.AreEqual(new[] { 64f, 96f, 0f, 0f, 64f, 96f }, defaults.Cond);
        CollectionAssert.AreEqual(defaults.Cond, defaults.Uncond, "negative_add_time_ids = add_time_ids");

        var set = new DenoiseLatentsOptions { Width = 96, Height = 64, OriginalWidth = 1024, OriginalHeight = 768, CropTop = 16, CropLeft = 8, TargetWidth = 512, TargetHeight = 256 }.SdxlTimeIds.Create(6);
        CollectionAssert.AreEqual(new[] { 768f, 1024f, 16f, 8f, 256f, 512f }, set.Cond);
        CollectionAssert.AreEqual(set.Cond, set.Uncond);
    }

    [TestMethod]
    public void FiveTimeIdsEndWithTheAestheticScores()
    {
        var defaults = new DenoiseLatentsOptions { Width = 96, Height = 64 }.SdxlTimeIds.Create(5);
        CollectionAssert.AreEqual(new[] { 64f, 96f, 0f, 0f, 6f }, defaults.Cond);
        CollectionAssert.AreEqual(new[] { 64f, 96f, 0f, 0f, 2.5f }, defaults.Uncond);

        var set = new DenoiseLatentsOptions { Width = 96, Height = 64, OriginalWidth = 2048, CropLeft = 32, AestheticScore = 7f, NegativeAestheticScore = 1.5f }.SdxlTimeIds.Create(5);
        CollectionAssert.AreEqual(new[] { 64f, 2048f, 0f, 32f, 7f }, set.Cond);
        CollectionAssert.AreEqual(new[] { 64f, 2048f, 0f, 32f, 1.5f }, set.Uncond);
    }

    [TestMethod]
    public void TheRefinersUnconditionalRowsGetTheNegativeAestheticScore()
    {
        // The Shapes refiner counts a prompt only at aesthetic score 6. A negative prompt sits in the unconditional rows:
        // with their default score 2.5 it has no effect; given 6 as NegativeAestheticScore it steers the picture.
        using var model = SdxlTestModel.LoadRefiner();
        float[] Latents(string negative, DenoiseLatentsOptions options) =>
            SdxlTextToImageTests.Latents(model, options, new SdxlTextToImageTests.Row { Prompt = "a circle", NegativePrompt = negative })[0];
        var plain = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, Seed = 12 };
        var without = Latents(string.Empty, plain);
        CollectionAssert.AreEqual(without, Latents("red on a white background", plain), "at 2.5 the negative prompt must not count");
        var six = new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 6, Seed = 12, NegativeAestheticScore = 6f };
        Assert.IsFalse(without.SequenceEqual(Latents("red on a white background", six)), "at 6 the negative prompt must count");
    }
}
