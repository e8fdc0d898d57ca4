using System;
using System.Linq;
using System.Text.Json;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Prompting;
using MLNet.Diffusion.Tests.Tokenization;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// <see cref="A1111PromptChunker"/> on the real CLIP vocabulary (../shared/clip) against AUTOMATIC1111's
/// <c>tokenize_line</c> (modules/sd_hijack_clip.py @ 00e0938) run on OpenAI CLIP's tokenizer: every fixture prompt
/// gives the same chunks, ids, multipliers and token count.
/// </summary>
[TestClass]
public sealed class A1111ChunkerTests
{
    private const int Start = 49406;
    private const int End = 49407;
    private const int Comma = 267;

    [TestMethod]
    public void EveryFixturePromptIsChunkedAsA1111Did()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        var chunker = new A1111PromptChunker(tokenizer);
        int checkedCount = 0;
        foreach (JsonElement item in PromptFixtures.A1111.GetProperty("chunks").EnumerateArray())
        {
            string prompt = item.GetProperty("prompt").GetString()!;
            var emphasis = item.GetProperty("emphasis").GetString() == "None" ? PromptEmphasis.None : PromptEmphasis.Original;
            string label = $"[{emphasis}] \"{(prompt.Length > 60 ? prompt[..60] + "…" : prompt)}\"";

            // The pieces tokenize to the ids CLIP's simple_tokenizer gave A1111's chunker.
            foreach (JsonElement fragment in item.GetProperty("fragments").EnumerateArray())
            {
                CollectionAssert.AreEqual(
                    fragment[2].EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                    tokenizer.EncodeToIds(fragment[0].GetString()).ToArray(),
                    $"{label}: ids of piece \"{fragment[0].GetString()}\"");
            }

            ChunkedPrompt actual = chunker.TokenizeLine(prompt, emphasis);
            JsonElement expectedChunks = item.GetProperty("chunks");
            Assert.AreEqual(expectedChunks.GetArrayLength(), actual.Chunks.Count, $"{label}: chunk count");
            Assert.AreEqual(item.GetProperty("tokenCount").GetInt32(), actual.TokenCount, $"{label}: token count");
            int c = 0;
            foreach (JsonElement chunk in expectedChunks.EnumerateArray())
            {
                CollectionAssert.AreEqual(
                    chunk.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                    actual.Chunks[c].Tokens, $"{label}: chunk {c} tokens");
                CollectionAssert.AreEqual(
                    chunk.GetProperty("multipliers").EnumerateArray().Select(e => (float)e.GetDouble()).ToArray(),
                    actual.Chunks[c].Multipliers, $"{label}: chunk {c} multipliers");
                c++;
            }

            checkedCount++;
        }

        Assert.IsTrue(checkedCount >= 60);
    }

    [TestMethod]
    public void CommaAsThe76thTokenStartsTheNextChunk()
    {
        var chunker = new A1111PromptChunker(SharedClipFiles.RequireTokenizer());

        ChunkedPrompt chunked = chunker.TokenizeLine(string.Concat(Enumerable.Repeat("cat ", 75)) + ", dog", PromptEmphasis.Original);

        Assert.AreEqual(2, chunked.Chunks.Count);
        Assert.AreEqual(End, chunked.Chunks[0].Tokens[76]);
        Assert.AreEqual(Comma, chunked.Chunks[1].Tokens[1], "the comma opens chunk 2");
        Assert.AreEqual(75 + 2, chunked.TokenCount);
    }

    [TestMethod]
    public void TextAfterACommaWithinTheLast20TokensMovesToTheNextChunk()
    {
        var chunker = new A1111PromptChunker(SharedClipFiles.RequireTokenizer());

        // The comma is token 56 of 75 (index 55): 75 - 55 = 20 <= 20, so the 19 "dog" after it move on.
        ChunkedPrompt moved = chunker.TokenizeLine(string.Concat(Enumerable.Repeat("cat ", 55)) + ", " + string.Concat(Enumerable.Repeat("dog ", 30)), PromptEmphasis.Original);
        Assert.AreEqual(Comma, moved.Chunks[0].Tokens[56]);
        Assert.AreEqual(End, moved.Chunks[0].Tokens[57], "padding follows the comma");
        Assert.AreEqual(1 + 30, moved.Chunks[1].Tokens.Count(t => t != Start && t != End) + 1);

        // With the rule off, the chunk is cut at 75 tokens regardless.
        ChunkedPrompt cut = new A1111PromptChunker(SharedClipFiles.RequireTokenizer(), commaPaddingBacktrack: 0)
            .TokenizeLine(string.Concat(Enumerable.Repeat("cat ", 55)) + ", " + string.Concat(Enumerable.Repeat("dog ", 30)), PromptEmphasis.Original);
        Assert.AreNotEqual(End, cut.Chunks[0].Tokens[75]);
    }

    [TestMethod]
    public void LeadingBreakGivesAnAllPaddingFirstChunkAndEmptyPromptOneChunk()
    {
        var chunker = new A1111PromptChunker(SharedClipFiles.RequireTokenizer());
        int[] empty = chunker.EmptyChunk().Tokens;
        Assert.AreEqual(Start, empty[0]);
        Assert.IsTrue(empty.Skip(1).All(t => t == End));

        ChunkedPrompt leading = chunker.TokenizeLine("BREAK a", PromptEmphasis.Original);
        Assert.AreEqual(2, leading.Chunks.Count);
        CollectionAssert.AreEqual(empty, leading.Chunks[0].Tokens);

        ChunkedPrompt none = chunker.TokenizeLine(string.Empty, PromptEmphasis.Original);
        Assert.AreEqual(1, none.Chunks.Count);
        CollectionAssert.AreEqual(empty, none.Chunks[0].Tokens);
        Assert.AreEqual(0, none.TokenCount);
    }

    [TestMethod]
    public void PadTokenReplacesEverythingAfterTheFirstEnd()
    {
        int[] tokens = [Start, 320, End, End, End];
        A1111PromptChunker.ApplyPadToken(tokens, End, 0);
        CollectionAssert.AreEqual(new[] { Start, 320, End, 0, 0 }, tokens);

        int[] same = [Start, 320, End, End];
        A1111PromptChunker.ApplyPadToken(same, End, End);
        CollectionAssert.AreEqual(new[] { Start, 320, End, End }, same);
    }
}
