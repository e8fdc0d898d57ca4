using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Prompting;
using MLNet.Diffusion.Tests.Tokenization;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// <see cref="A1111PromptPlan"/>: AND split, schedule and chunks put together the way A1111's
/// get_multicond_learned_conditioning / get_learned_conditioning and FrozenCLIPEmbedderWithCustomWordsBase.forward do.
/// </summary>
[TestClass]
public sealed class A1111PromptPlanTests
{
    [TestMethod]
    public void PromptIsSplitAtAndThenScheduledAndChunked()
    {
        var chunker = new A1111PromptChunker(SharedClipFiles.RequireTokenizer());

        A1111PromptPlan plan = A1111PromptPlan.ForPrompt("a [cat:dog:2] AND b:0.5", 10, chunker, PromptEmphasis.Original);

        CollectionAssert.AreEqual(new[] { new ConjunctionPart(0, 1.0), new ConjunctionPart(1, 0.5) }, plan.Parts.ToArray());
        Assert.AreEqual("a [cat:dog:2]", plan.Texts[0].Text, "re_weight drops the space before AND");
        CollectionAssert.AreEqual(
            new[] { new ScheduledPrompt(2, "a cat"), new ScheduledPrompt(10, "a dog") }, plan.Texts[0].Schedule.ToArray());
        Assert.AreEqual(0, plan.Texts[0].EntryAt(2));
        Assert.AreEqual(1, plan.Texts[0].EntryAt(3));
        Assert.AreEqual(2368, plan.Texts[0].Chunks[0][0].Tokens[2], "cat");
    }

    [TestMethod]
    public void ScheduleEntriesArePaddedToOneChunkCountWithEmptyChunks()
    {
        var chunker = new A1111PromptChunker(SharedClipFiles.RequireTokenizer());
        string longText = string.Concat(Enumerable.Repeat("cat ", 100));

        A1111PromptPlan plan = A1111PromptPlan.ForPrompt("[short:" + longText + ":3]", 10, chunker, PromptEmphasis.Original);

        A1111PlannedText text = plan.Texts[0];
        Assert.AreEqual(2, text.ChunkCount);
        Assert.IsTrue(text.Chunks.All(entry => entry.Count == 2));
        CollectionAssert.AreEqual(chunker.EmptyChunk().Tokens, text.Chunks[0][1].Tokens, "forward() pads with empty_chunk()");
    }

    [TestMethod]
    public void NegativePromptKeepsAndAsText()
    {
        var chunker = new A1111PromptChunker(SharedClipFiles.RequireTokenizer());

        A1111PromptPlan plan = A1111PromptPlan.ForNegativePrompt("x AND y", 20, chunker, PromptEmphasis.NoNorm);

        Assert.AreEqual(1, plan.Parts.Count);
        Assert.AreEqual("x AND y", plan.Texts[0].Text);
        Assert.AreEqual(PromptEmphasis.NoNorm, plan.Emphasis);
    }
}
