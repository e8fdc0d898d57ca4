using System;
using System.Linq;
using System.Text.Json;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Prompting;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// <see cref="PromptWeighting"/> and <see cref="ConditioningPadding"/>: A1111's emphasis maths
/// (sd_emphasis.EmphasisOriginal / EmphasisOriginalNoNorm, run in torch float32 by the fixture script) and its
/// padding rules (sd_samplers_cfg_denoiser.pad_cond_uncond, prompt_parser.stack_conds).
/// </summary>
[TestClass]
public sealed class PromptWeightingTests
{
    [TestMethod]
    public void OriginalAndNoNormMatchA1111InTorch()
    {
        foreach (JsonElement item in PromptFixtures.A1111.GetProperty("emphasis").EnumerateArray())
        {
            int[] shape = item.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            float[] z = Floats(item, "z");
            float[] multipliers = Floats(item, "multipliers");

            // A1111 takes the mean over the whole batch it encoded at once, so the batch is passed as one span.
            float[] original = (float[])z.Clone();
            PromptWeighting.Apply(original, shape[2], multipliers, PromptEmphasis.Original);
            AssertClose(Floats(item, "original"), original, 2e-6f, "Original");

            float[] noNorm = (float[])z.Clone();
            PromptWeighting.Apply(noNorm, shape[2], multipliers, PromptEmphasis.NoNorm);
            CollectionAssert.AreEqual(Floats(item, "noNorm"), noNorm, "No norm is one float multiply per value");

            float[] ignored = (float[])z.Clone();
            PromptWeighting.Apply(ignored, shape[2], multipliers, PromptEmphasis.Ignore);
            CollectionAssert.AreEqual(z, ignored);
        }
    }

    [TestMethod]
    public void OriginalKeepsTheMeanAndScalesWeightedRowsRelativeToOthers()
    {
        float[] z = [1, 2, 3, 4, 5, 6];
        float[] multipliers = [1, 2, 1];
        PromptWeighting.Apply(z, 2, multipliers, PromptEmphasis.Original);

        // mean0 = 3.5; weighted = [1,2,6,8,5,6], mean 14/3; ratio 3.5 / (14/3) = 0.75.
        float ratio = 3.5f / (28f / 6f);
        CollectionAssert.AreEqual(new[] { 1 * ratio, 2 * ratio, 6 * ratio, 8 * ratio, 5 * ratio, 6 * ratio }, z);
    }

    [TestMethod]
    public void MismatchedLengthsAreAClearError()
    {
        var error = Assert.ThrowsExactly<ArgumentException>(
            () => PromptWeighting.Apply(new float[10], 4, new float[3], PromptEmphasis.Original));
        StringAssert.Contains(error.Message, "10 values");
    }

    [TestMethod]
    public void ShorterConditioningGetsEmptyPromptChunks()
    {
        // pad_cond_uncond: (cond.shape[1] - uncond.shape[1]) // 77
        Assert.AreEqual((0, 2), ConditioningPadding.EmptyChunksToAdd(231, 77, 77));
        Assert.AreEqual((1, 0), ConditioningPadding.EmptyChunksToAdd(77, 154, 77));
        Assert.AreEqual((0, 0), ConditioningPadding.EmptyChunksToAdd(154, 154, 77));

        float[] states = [1, 2];
        float[] empty = [7, 8];
        var padded = new float[6];
        ConditioningPadding.AppendEmptyChunks(states, empty, 2, padded);
        CollectionAssert.AreEqual(new float[] { 1, 2, 7, 8, 7, 8 }, padded);
    }

    [TestMethod]
    public void AndPartsOfDifferentLengthsRepeatTheLastTokenState()
    {
        float[] states = [1, 2, 3, 4];
        var stacked = new float[8];
        ConditioningPadding.RepeatLastToken(states, 2, stacked);
        CollectionAssert.AreEqual(new float[] { 1, 2, 3, 4, 3, 4, 3, 4 }, stacked);
    }

    private static float[] Floats(JsonElement item, string name) =>
        item.GetProperty(name).EnumerateArray().Select(e => (float)e.GetDouble()).ToArray();

    private static void AssertClose(float[] expected, float[] actual, float relative, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
        {
            float tolerance = relative * Math.Max(1f, Math.Abs(expected[i]));
            Assert.AreEqual(expected[i], actual[i], tolerance, $"{what} value {i}");
        }
    }
}
