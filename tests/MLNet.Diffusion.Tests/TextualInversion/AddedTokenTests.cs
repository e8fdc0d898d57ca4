using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.TestSupport;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Tests.TextualInversion;

/// <summary>
/// <see cref="ClipTokenizer.WithAddedTokens"/> against the rules of transformers' slow <c>CLIPTokenizer</c> with
/// <c>add_tokens</c> (added tokens split out of the raw text by a trie, case-sensitive, longest match; the pieces between
/// them cleaned and BPE'd as usual) and diffusers' <c>maybe_convert_prompt</c> (<c>t</c> → <c>t t_1 …</c>).
/// </summary>
[TestClass]
public sealed class AddedTokenTests
{
    private static ClipTokenizer Clip() => ClipTokenizer.FromFolder(Path.Combine(SharedModels.Require("tiny-sd"), "tokenizer"));

    private static IReadOnlyList<int> Bpe(ClipTokenizer tokenizer, string text) => tokenizer.EncodeToIds(text);

    [TestMethod]
    public void AddedTokensGetTheIdsAfterTheVocabularyAndAreMatchedBeforeBpe()
    {
        var clip = Clip();
        var added = clip.WithAddedTokens(["<cat>", "<dog>"]);
        int first = clip.VocabularySize;
        Assert.AreEqual(49408, first, "CLIP's vocabulary");
        Assert.AreEqual(first + 2, added.VocabularySize);
        CollectionAssert.AreEqual(new[] { "<cat>", "<dog>" }, added.AddedTokens.ToArray());
        Assert.AreEqual(first + 1, added.GetTokenId("<dog>"));

        // "a photo of <cat>s  and <dog>": the text around the tokens is cleaned and BPE'd on its own.
        var expected = new List<int>();
        expected.AddRange(Bpe(clip, "a photo of "));
        expected.Add(first);
        expected.AddRange(Bpe(clip, "s  and "));
        expected.Add(first + 1);
        CollectionAssert.AreEqual(expected, added.EncodeToIds("a photo of <cat>s  and <dog>").ToArray());
        CollectionAssert.AreEqual(new[] { first, first, first + 1 }, added.EncodeToIds("<cat><cat><dog>").ToArray());
        Assert.AreEqual(0, clip.AddedTokens.Count, "the original tokenizer is unchanged");
        CollectionAssert.AreEqual(Bpe(clip, "a photo of <cat>").ToArray(), clip.EncodeToIds("a photo of <cat>").ToArray());
    }

    [TestMethod]
    public void MatchingIsCaseSensitiveAsInTransformersSlowTokenizer()
    {
        var clip = Clip();
        var added = clip.WithAddedTokens(["<Cat>"]);
        // CLIP lower-cases the text it BPEs; the added-token split runs before, on the raw text.
        CollectionAssert.AreEqual(Bpe(clip, "<cat>").ToArray(), added.EncodeToIds("<cat>").ToArray());
        CollectionAssert.AreEqual(new[] { clip.VocabularySize }, added.EncodeToIds("<Cat>").ToArray());
    }

    [TestMethod]
    public void AMultiVectorTokenStandsForItsCompanionsAndTheLongestMatchWins()
    {
        var clip = Clip();
        var added = clip.WithAddedTokens(["<tok>", "<tok>_1", "<tok>_2", "<tok>x"]);
        int first = clip.VocabularySize;
        CollectionAssert.AreEqual(new[] { first, first + 1, first + 2 }, added.EncodeToIds("<tok>").ToArray());
        CollectionAssert.AreEqual(new[] { first + 2 }, added.EncodeToIds("<tok>_2").ToArray());
        CollectionAssert.AreEqual(new[] { first + 3 }, added.EncodeToIds("<tok>x").ToArray(), "<tok>x has no companions");
        Assert.AreEqual("<tok>", added.Decode([first], skipSpecialTokens: false));
    }

    [TestMethod]
    public void AddingTwiceOrAKnownTokenIsRefused()
    {
        var clip = Clip();
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => clip.WithAddedTokens(["cat</w>"])).Message, "already in the tokenizer's vocabulary");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => clip.WithAddedTokens(["<a>", "<a>"])).Message, "already added");
        var once = clip.WithAddedTokens(["<a>"]);
        Assert.ThrowsExactly<ArgumentException>(() => once.WithAddedTokens(["<a>"]));
        var twice = once.WithAddedTokens(["<b>"]);
        Assert.AreEqual(clip.VocabularySize + 1, twice.GetTokenId("<b>"), "a second call appends after the first's tokens");
        Assert.ThrowsExactly<ArgumentException>(() => clip.WithAddedTokens([" "]));
    }
}
