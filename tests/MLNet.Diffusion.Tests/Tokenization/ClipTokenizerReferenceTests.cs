using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading.Tasks;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Tests.Tokenization;

/// <summary>
/// The tokenizer on the real CLIP ViT-L/14 vocabulary (../shared/clip), against OpenAI CLIP's
/// <c>clip/simple_tokenizer.py</c>. Expected values are written as the reference's token strings (byte-level
/// form: 'Ã©' is the UTF-8 of 'é' through bytes_to_unicode, "&lt;/w&gt;" ends a word) and looked up in
/// vocab.json, so each row reads as the rule it checks; the split follows the reference pattern
/// <c>&lt;\|startoftext\|&gt;|&lt;\|endoftext\|&gt;|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+</c>
/// and the BPE follows merges.txt rank order (CLIP-NOTES.md).
/// </summary>
[TestClass]
public sealed class ClipTokenizerReferenceTests
{
    private const int Start = 49406;
    private const int End = 49407;

    [TestMethod]
    public void KnownPromptGivesPublishedIdsPaddedWithEndToken()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        var row = new int[77];

        int dropped = tokenizer.EncodeToFixedLength("a photo of a cat", row);

        // Published CLIP ids: a=320, photo=1125, of=539, cat=2368; SD 1.x pads with <|endoftext|> 49407.
        int[] expected = [Start, 320, 1125, 539, 320, 2368, End, .. Enumerable.Repeat(End, 70)];
        CollectionAssert.AreEqual(expected, row);
        Assert.AreEqual(0, dropped);
        Assert.AreEqual(Start, tokenizer.StartTokenId);
        Assert.AreEqual(End, tokenizer.EndTokenId);
        Assert.AreEqual(End, tokenizer.PadTokenId);
        Assert.AreEqual(77, tokenizer.ModelMaxLength);
    }

    [TestMethod]
    // Punctuation is its own word ([^\s\p{L}\p{N}]+), here one character each.
    [DataRow("Hello, world!", "hello</w> ,</w> world</w> !</w>")]
    // Contractions: "'t" and "'s" are words; "o'clock" has no contraction after the quote, so "'" stands alone.
    [DataRow("don't stop: it's 5 o'clock", "don</w> 't</w> stop</w> :</w> it</w> 's</w> 5</w> o</w> '</w> clock</w>")]
    // All seven contractions; lower-casing happens before the split (I'll → i'll).
    [DataRow("I'll we've they're she'd I'm", "i</w> 'll</w> we</w> 've</w> they</w> 're</w> she</w> 'd</w> i</w> 'm</w>")]
    // [\p{N}] matches one digit: numbers are split into single digits.
    [DataRow("2024 was 3.14", "2</w> 0</w> 2</w> 4</w> was</w> 3</w> .</w> 1</w> 4</w>")]
    // Runs of spaces, tabs and newlines collapse (whitespace_clean); "newlines" is two BPE pieces.
    [DataRow("  multiple   spaces\t\tand \n\n newlines  ", "multiple</w> spaces</w> and</w> new lines</w>")]
    // Accents: UTF-8 bytes through bytes_to_unicode (é = C3 A9 → 'Ã©').
    [DataRow("café naïve résumé", "cafÃ©</w> na Ã¯ ve</w> rÃ© sum Ã©</w>")]
    // Emoji are "other" runs; U+FE0F (variation selector, a mark) joins the run of 🖌.
    [DataRow("a 🐱 cat 🎨🖌️", "a</w> ðŁĲ±</w> cat</w> ðŁİ¨ ðŁĸ Į ï¸ı</w>")]
    // CJK ideographs and katakana are letters: one word per run, BPE'd over their UTF-8 bytes.
    [DataRow("東京タワー 夜景", "æĿ± äº ¬ ãĤ¿ ãĥ ¯ ãĥ¼</w> å¤ ľ æĻ ¯</w>")]
    // html.unescape: &amp; → &.
    [DataRow("salt &amp; pepper", "salt</w> &</w> pepper</w>")]
    // Double-escaped: ftfy plus html.unescape twice reach a single '&'.
    [DataRow("Tom &amp;amp; Jerry", "tom</w> &</w> jerry</w>")]
    // A special token where a match starts is one token.
    [DataRow("a<|endoftext|>b", "a</w> <|endoftext|> b</w>")]
    [DataRow("<|startoftext|>hi", "<|startoftext|> hi</w>")]
    // ... but inside a punctuation run it is not: "!<|" is one word, then "endoftext", then "|>".
    [DataRow("wow!<|endoftext|>", "wow</w> ! < |</w> endof text</w> | ></w>")]
    // Outside the BMP: 𝐀 (U+1D400) is a letter, 𝟏 (U+1D7CF) a number; ² is \p{N} too.
    [DataRow("𝐀𝐁𝐂 x² 𝟏", "ðĿĲ Ģ ðĿĲ ģ ðĿĲ Ĥ</w> x</w> Â²</w> ðĿ Ł ı</w>")]
    // Python lower(): İ → i + U+0307 (a mark, so its own word); final sigma ΟΔΟΣ → οδος with ς (CF 82 → 'Ï','Ĥ</w>').
    [DataRow("İstanbul ΟΔΟΣ", "i</w> Ìĩ</w> stanbul</w> Î ¿ Î ´ Î ¿ Ï Ĥ</w>")]
    // "!'" is one punctuation run (the contraction alternative only applies where a match starts at the quote).
    [DataRow("it!'s ''sun", "it</w> !'</w> s</w> ''</w> sun</w>")]
    // A typical SD prompt with weights syntax (plain text to CLIP).
    [DataRow("masterpiece, best quality, ultra-detailed, 8k, (cinematic lighting:1.2)",
        "masterpiece</w> ,</w> best</w> quality</w> ,</w> ultra</w> -</w> detailed</w> ,</w> 8</w> k</w> ,</w> (</w> cinematic</w> lighting</w> :</w> 1</w> .</w> 2</w> )</w>")]
    // ftfy: curly apostrophe → ', then "'s" is a contraction; ﬁ ligature → "fi".
    [DataRow("the cat\u2019s ﬁsh", "the</w> cat</w> 's</w> fish</w>")]
    // ftfy: mojibake "Ã©" (é read as Windows-1252) repaired before BPE, full-width ＡＢ → ab.
    [DataRow("cafÃ© ＡＢ", "cafÃ©</w> ab</w>")]
    public void EncodesLikeReference(string text, string expectedTokens)
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        int[] expected = ToIds(tokenizer, expectedTokens);

        IReadOnlyList<int> actual = tokenizer.EncodeToIds(text);

        CollectionAssert.AreEqual(expected, actual.ToArray(), $"'{text}': got [{string.Join(" ", actual.Select(tokenizer.GetToken))}]");
    }

    [TestMethod]
    public void ExplicitIdsForPunctuationAndDigits()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();

        // Ids pinned literally (vocab.json): hello</w>=3306 ,</w>=267 world</w>=1002 !</w>=256; digits 0..9 are
        // 271..280 ("0</w>"=271 follows "/</w>"=270 in byte order of bytes_to_unicode).
        CollectionAssert.AreEqual(new[] { 3306, 267, 1002, 256 }, tokenizer.EncodeToIds("Hello, world!").ToArray());
        CollectionAssert.AreEqual(new[] { 273, 271, 273, 275 }, tokenizer.EncodeToIds("2024").ToArray());
    }

    [TestMethod]
    [DataRow(null)]
    [DataRow("")]
    [DataRow(" \t\n ")]
    public void EmptyInputsGiveNoTokensAndAnEmptyRow(string? text)
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        var row = new int[77];

        Assert.AreEqual(0, tokenizer.EncodeToIds(text).Count);
        Assert.AreEqual(0, tokenizer.EncodeToFixedLength(text, row));
        Assert.AreEqual(Start, row[0]);
        Assert.AreEqual(End, row[1]);
        Assert.IsTrue(row.Skip(2).All(id => id == End));
        Assert.AreEqual(1, tokenizer.CountWindows(text));
    }

    [TestMethod]
    public void LongPromptIsTruncatedTo75TokensAndReportsTheDropped()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        // 80 words "cat" → 80 tokens 2368; 75 fit between start and end, 5 are dropped.
        string text = string.Join(" ", Enumerable.Repeat("cat", 80));
        var row = new int[77];

        int dropped = tokenizer.EncodeToFixedLength(text, row);

        Assert.AreEqual(5, dropped);
        Assert.AreEqual(Start, row[0]);
        Assert.IsTrue(row.Skip(1).Take(75).All(id => id == 2368));
        Assert.AreEqual(End, row[76], "the end token is always written, even after truncation");
    }

    [TestMethod]
    public void ExactlySeventyFiveTokensFit()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        var row = new int[77];

        int dropped = tokenizer.EncodeToFixedLength(string.Join(" ", Enumerable.Repeat("cat", 75)), row);

        Assert.AreEqual(0, dropped);
        Assert.AreEqual(2368, row[75]);
        Assert.AreEqual(End, row[76]);
        Assert.AreEqual(1, tokenizer.CountWindows(string.Join(" ", Enumerable.Repeat("cat", 75))));
    }

    [TestMethod]
    public void LongPromptSplitsIntoWindowsOf75()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        // 160 tokens: "dog" ×100 (1929... looked up below), then "cat" ×60 → windows of 75, 75, 10.
        string text = string.Join(" ", Enumerable.Repeat("dog", 100)) + " " + string.Join(" ", Enumerable.Repeat("cat", 60));
        int dog = tokenizer.GetTokenId("dog</w>");
        int cat = tokenizer.GetTokenId("cat</w>");
        Assert.AreEqual(3, tokenizer.CountWindows(text));

        var windows = new int[4 * 77];
        tokenizer.EncodeWindows(text, 4, windows);

        int[] w0 = windows[..77], w1 = windows[77..154], w2 = windows[154..231], w3 = windows[231..];
        CollectionAssert.AreEqual((int[])[Start, .. Enumerable.Repeat(dog, 75), End], w0);
        CollectionAssert.AreEqual((int[])[Start, .. Enumerable.Repeat(dog, 25), .. Enumerable.Repeat(cat, 50), End], w1);
        CollectionAssert.AreEqual((int[])[Start, .. Enumerable.Repeat(cat, 10), End, .. Enumerable.Repeat(End, 65)], w2);
        CollectionAssert.AreEqual((int[])[Start, End, .. Enumerable.Repeat(End, 75)], w3, "a window past the prompt is empty");

        var tooFew = new int[2 * 77];
        ArgumentException ex = Assert.ThrowsExactly<ArgumentException>(() => tokenizer.EncodeWindows(text, 2, tooFew));
        Assert.AreEqual("windowCount", ex.ParamName);
    }

    [TestMethod]
    public void FixedLengthRejectsWrongDestinationLength()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();

        ArgumentException ex = Assert.ThrowsExactly<ArgumentException>(() => tokenizer.EncodeToFixedLength("cat", new int[76]));

        Assert.AreEqual("destination", ex.ParamName);
        StringAssert.Contains(ex.Message, "76");
        StringAssert.Contains(ex.Message, "77");
    }

    [TestMethod]
    [DataRow("a photo of a cat", "a photo of a cat")]
    [DataRow("Café, naïve & 東京!", "café , naïve & 東京 !")]
    [DataRow("a 🐱", "a 🐱")]
    public void DecodeJoinsWordsWithSpacesLikeClip(string text, string expected)
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        var row = new int[77];
        tokenizer.EncodeToFixedLength(text, row);

        // CLIP's decode: bytes back to UTF-8, "</w>" → " " (so punctuation gets a space before it), trimmed.
        Assert.AreEqual(expected, tokenizer.Decode(row));
        StringAssert.StartsWith(tokenizer.Decode(row, skipSpecialTokens: false), "<|startoftext|>");
    }

    [TestMethod]
    public void ConcurrentEncodingMatchesSequential()
    {
        ClipTokenizer tokenizer = SharedClipFiles.RequireTokenizer();
        string[] prompts = Enumerable.Range(0, 64)
            .Select(i => $"prompt {i}: a photorealistic portrait of a {(i % 2 == 0 ? "cat" : "dog")} wearing hat number {i * 37}, café lights")
            .ToArray();
        int[][] sequential = prompts.Select(p => tokenizer.EncodeToIds(p).ToArray()).ToArray();

        var parallel = new int[prompts.Length * 8][];
        Parallel.For(0, parallel.Length, new ParallelOptions { MaxDegreeOfParallelism = 8 },
            i => parallel[i] = tokenizer.EncodeToIds(prompts[i % prompts.Length]).ToArray());

        for (int i = 0; i < parallel.Length; i++)
        {
            CollectionAssert.AreEqual(sequential[i % prompts.Length], parallel[i], $"prompt {i % prompts.Length}");
        }
    }

    [TestMethod]
    public void TinySdFolderReadsSd1SpecialTokens()
    {
        string folder = System.IO.Path.Combine(TestSupport.SharedModels.RequireTinySd(), "tokenizer");

        ClipTokenizer tokenizer = ClipTokenizer.FromFolder(folder);

        // special_tokens_map.json: bos/eos as AddedToken objects, pad as the string "<|endoftext|>".
        Assert.AreEqual(Start, tokenizer.StartTokenId);
        Assert.AreEqual(End, tokenizer.EndTokenId);
        Assert.AreEqual(End, tokenizer.PadTokenId);
        Assert.AreEqual(77, tokenizer.ModelMaxLength);
    }

    private static int[] ToIds(ClipTokenizer tokenizer, string tokens)
    {
        string[] parts = tokens.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var ids = new int[parts.Length];
        for (int i = 0; i < parts.Length; i++)
        {
            ids[i] = tokenizer.GetTokenId(parts[i]);
            Assert.AreNotEqual(-1, ids[i], $"token '{parts[i]}' of the expectation is not in vocab.json");
        }

        return ids;
    }
}
