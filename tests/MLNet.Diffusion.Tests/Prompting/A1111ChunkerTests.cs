using System;
using System.Collections.Generic;
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
    public void EveryEmbeddingFixturePromptPlacesItsEmbeddingsAsA1111Did()
    {
        // A1111's tokenize_line with stub embeddings (make_a1111_fixtures.py): its chunks hold 0 where an embedding's
        // vectors go and a fix (offset after BOS, name, vector count); here the added tokens hold those places.
        ClipTokenizer plain = SharedClipFiles.RequireTokenizer();
        var added = new List<string>();
        var vectors = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (JsonProperty embedding in PromptFixtures.A1111.GetProperty("embeddings").EnumerateObject())
        {
            vectors.Add(embedding.Name, embedding.Value.GetInt32());
            added.Add(embedding.Name);
            for (int k = 1; k < embedding.Value.GetInt32(); k++)
                added.Add($"{embedding.Name}_{k}");
        }

        ClipTokenizer tokenizer = plain.WithAddedTokens(added);
        var chunker = new A1111PromptChunker(tokenizer);
        var firstIds = vectors.Keys.ToDictionary(tokenizer.GetTokenId, name => name);
        int checkedCount = 0;
        int moved = 0;
        int staleCount = 0;
        foreach (JsonElement item in PromptFixtures.A1111.GetProperty("embeddingChunks").EnumerateArray())
        {
            string prompt = item.GetProperty("prompt").GetString()!;
            var emphasis = item.GetProperty("emphasis").GetString() == "None" ? PromptEmphasis.None : PromptEmphasis.Original;
            string label = $"[{emphasis}] \"{(prompt.Length > 60 ? "…" + prompt[^60..] : prompt)}\"";

            ChunkedPrompt actual = chunker.TokenizeLine(prompt, emphasis);
            JsonElement expectedChunks = item.GetProperty("chunks");
            Assert.AreEqual(expectedChunks.GetArrayLength(), actual.Chunks.Count, $"{label}: chunk count");
            Assert.AreEqual(item.GetProperty("tokenCount").GetInt32(), actual.TokenCount, $"{label}: token count");
            int c = 0;
            var previousStale = new List<string>();
            foreach (JsonElement chunk in expectedChunks.EnumerateArray())
            {
                int[] tokens = actual.Chunks[c].Tokens;
                CollectionAssert.AreEqual(
                    chunk.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray(),
                    tokens.Select(t => t >= plain.VocabularySize ? 0 : t).ToArray(), $"{label}: chunk {c} tokens");
                CollectionAssert.AreEqual(
                    chunk.GetProperty("multipliers").EnumerateArray().Select(e => (float)e.GetDouble()).ToArray(),
                    actual.Chunks[c].Multipliers, $"{label}: chunk {c} multipliers");

                // A1111's fixes that point at its placeholders (0) are where the vectors go; here the embedding's
                // tokens are there, whole.
                var valid = new List<string>();
                var stale = new List<string>();
                int[] expectedTokens = chunk.GetProperty("tokens").EnumerateArray().Select(e => e.GetInt32()).ToArray();
                foreach (JsonElement f in chunk.GetProperty("fixes").EnumerateArray())
                {
                    (expectedTokens[f[0].GetInt32() + 1] == 0 ? valid : stale).Add($"{f[0].GetInt32()}:{f[1].GetString()}");
                }

                var actualFixes = new List<string>();
                for (int i = 1; i < tokens.Length; i++)
                {
                    if (firstIds.TryGetValue(tokens[i], out string? name))
                    {
                        actualFixes.Add($"{i - 1}:{name}");
                        for (int k = 1; k < vectors[name]; k++)
                            Assert.AreEqual(tokens[i] + k, tokens[i + k], $"{label}: chunk {c}: '{name}' is whole at {i - 1}");
                    }
                }

                foreach (string fix in valid)
                    CollectionAssert.Contains(actualFixes, fix, $"{label}: chunk {c}");

                // A1111 bug, reproduced by its own code: when the comma rule moves the text after a comma to the next
                // chunk, an embedding in that text moves as placeholders but its fix stays behind, pointing into the
                // closed chunk's padding. Here the embedding moves with its text: the extra ones in this chunk are
                // exactly the previous chunk's stale fixes.
                CollectionAssert.AreEquivalent(
                    previousStale.Select(f => f[(f.IndexOf(':') + 1)..]).ToList(),
                    actualFixes.Except(valid).Select(f => f[(f.IndexOf(':') + 1)..]).ToList(),
                    $"{label}: chunk {c} embeddings moved by the comma rule");
                staleCount += stale.Count;
                previousStale = stale;
                if (c > 0 && valid.Any(f => f.StartsWith("0:", StringComparison.Ordinal)))
                    moved++;
                c++;
            }

            checkedCount++;
        }

        Assert.IsTrue(checkedCount >= 60);
        Assert.IsTrue(moved >= 5, "the corpus moves embeddings to the next chunk");
        Assert.IsTrue(staleCount >= 1, "the corpus has an embedding moved by the comma rule");
    }

    [TestMethod]
    public void ThreeVectorEmbeddingAtTokens74To76MovesWholeToTheNextChunk()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer().WithAddedTokens(["threevec", "threevec_1", "threevec_2"]);
        var chunker = new A1111PromptChunker(tokenizer);
        int first = tokenizer.GetTokenId("threevec");
        int dog = tokenizer.EncodeToIds("dog").Single();

        // 73 tokens, then 3 vectors would take chunk positions 73..75 (0-based) of 75: A1111 pads the chunk instead.
        ChunkedPrompt moved = chunker.TokenizeLine(string.Concat(Enumerable.Repeat("cat ", 73)) + "threevec dog", PromptEmphasis.Original);
        Assert.AreEqual(2, moved.Chunks.Count);
        CollectionAssert.AreEqual(new[] { End, End, End }, moved.Chunks[0].Tokens[74..77], "chunk 1 is padded after the 73 cats");
        CollectionAssert.AreEqual(new[] { Start, first, first + 1, first + 2, dog, End }, moved.Chunks[1].Tokens[..6]);
        Assert.AreEqual(75 + 4, moved.TokenCount);

        // 72 tokens: the three vectors fill the chunk exactly and stay.
        ChunkedPrompt fits = chunker.TokenizeLine(string.Concat(Enumerable.Repeat("cat ", 72)) + "threevec", PromptEmphasis.Original);
        Assert.AreEqual(1, fits.Chunks.Count);
        CollectionAssert.AreEqual(new[] { first, first + 1, first + 2, End }, fits.Chunks[0].Tokens[73..77]);

        // Without added tokens nothing is a unit: the same text is ordinary BPE, cut at 75 tokens.
        ChunkedPrompt plain = new A1111PromptChunker(SharedClipFiles.RequireTokenizer())
            .TokenizeLine(string.Concat(Enumerable.Repeat("cat ", 73)) + "threevec dog", PromptEmphasis.Original);
        Assert.AreNotEqual(End, plain.Chunks[0].Tokens[75]);
    }

    [TestMethod]
    public void EmbeddingLongerThanAChunkIsRefused()
    {
        var names = new[] { "huge" }.Concat(Enumerable.Range(1, 75).Select(k => $"huge_{k}")).ToArray();
        var chunker = new A1111PromptChunker(SharedClipFiles.RequireTokenizer().WithAddedTokens(names));

        var error = Assert.ThrowsExactly<ArgumentException>(() => chunker.TokenizeLine("a huge cat", PromptEmphasis.Original));

        StringAssert.Contains(error.Message, "'huge'");
        StringAssert.Contains(error.Message, "76 vectors");
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
