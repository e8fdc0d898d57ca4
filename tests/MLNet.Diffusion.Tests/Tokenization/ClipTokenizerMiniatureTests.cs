using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Tests.Tokenization;

/// <summary>
/// BPE behaviour, file handling and fixed-length/window layout on a miniature vocabulary built here the way
/// CLIP builds its own (simple_tokenizer.py: the 256 byte symbols in bytes_to_unicode order, the same with
/// "&lt;/w&gt;", one entry per merge in rank order, then &lt;|startoftext|&gt; and &lt;|endoftext|&gt;), so these
/// tests run without ../shared.
/// </summary>
[TestClass]
public sealed class ClipTokenizerMiniatureTests
{
    // Rank order decides: "c a" (rank 0) before "a t</w>" (rank 4), so "cat" merges c+a first, then ca+t</w>.
    private static readonly string[] s_merges = ["c a", "ca t</w>", "t h", "th e</w>", "a t</w>", "d o", "do g</w>"];

    [TestMethod]
    // "cat": (c,a) rank 0 → ca; (ca,t</w>) rank 1 → cat</w>.
    [DataRow("cat", "cat</w>")]
    // "the cat": two words, each merged fully.
    [DataRow("The  CAT", "the</w> cat</w>")]
    // "cab": (c,a) → ca; no merge (ca,b</w>) exists → ca + b</w>.
    [DataRow("cab", "ca b</w>")]
    // "bat": (b,a) has no rank; (a,t</w>) rank 4 → b + at</w>.
    [DataRow("bat", "b at</w>")]
    // Single character word: the character plus </w>.
    [DataRow("x", "x</w>")]
    // Digits one at a time, punctuation runs whole before BPE (",!" → ",", "!</w>" since no merge joins them).
    [DataRow("dog42,!", "dog</w> 4</w> 2</w> , !</w>")]
    // Special token at the start of a match is one id.
    [DataRow("cat<|endoftext|>", "cat</w> <|endoftext|>")]
    public void MergesApplyInRankOrder(string text, string expectedTokens)
    {
        ClipTokenizer tokenizer = CreateMiniature(s_merges);

        IReadOnlyList<int> ids = tokenizer.EncodeToIds(text);

        Assert.AreEqual(expectedTokens, string.Join(" ", ids.Select(tokenizer.GetToken)));
    }

    [TestMethod]
    public void SwappingRanksChangesTheSplit()
    {
        // With "a t</w>" ranked before "c a", "cat" becomes c + at</w>: proves ranks come from line order.
        ClipTokenizer tokenizer = CreateMiniature(["a t</w>", "c a", "ca t</w>"]);

        Assert.AreEqual("c at</w>", string.Join(" ", tokenizer.EncodeToIds("cat").Select(tokenizer.GetToken)));
    }

    [TestMethod]
    public void IdsFollowClipVocabularyLayout()
    {
        ClipTokenizer tokenizer = CreateMiniature(s_merges);

        // '!' is the first byte symbol (id 0); "cat</w>" is merge rank 1 → 512 + 1; specials come last.
        Assert.AreEqual(0, tokenizer.GetTokenId("!"));
        Assert.AreEqual(513, tokenizer.GetTokenId("cat</w>"));
        Assert.AreEqual(512 + s_merges.Length, tokenizer.StartTokenId);
        Assert.AreEqual(512 + s_merges.Length + 1, tokenizer.EndTokenId);
        Assert.AreEqual(tokenizer.EndTokenId, tokenizer.PadTokenId);
        CollectionAssert.AreEqual(new[] { 513 }, tokenizer.EncodeToIds("cat").ToArray());
    }

    [TestMethod]
    public void ShortModelMaxLengthTruncatesAndWindows()
    {
        ClipTokenizer tokenizer = CreateMiniature(s_merges, new ClipTokenizerOptions { ModelMaxLength = 5 });
        int cat = tokenizer.GetTokenId("cat</w>"), dog = tokenizer.GetTokenId("dog</w>");
        int s = tokenizer.StartTokenId, e = tokenizer.EndTokenId;
        const string Text = "cat dog cat dog cat"; // 5 tokens, 3 fit per sequence

        var row = new int[5];
        Assert.AreEqual(2, tokenizer.EncodeToFixedLength(Text, row));
        CollectionAssert.AreEqual(new[] { s, cat, dog, cat, e }, row);

        Assert.AreEqual(2, tokenizer.CountWindows(Text));
        var windows = new int[15];
        tokenizer.EncodeWindows(Text, 3, windows);
        CollectionAssert.AreEqual(new[] { s, cat, dog, cat, e, s, dog, cat, e, e, s, e, e, e, e }, windows);

        Assert.ThrowsExactly<ArgumentException>(() => tokenizer.EncodeWindows(Text, 3, new int[14]));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => tokenizer.EncodeWindows(Text, 0, Span<int>.Empty));
    }

    [TestMethod]
    public void DecodeTurnsEndOfWordIntoSpaceAndSkipsSpecials()
    {
        ClipTokenizer tokenizer = CreateMiniature(s_merges);
        var row = new int[77];
        tokenizer.EncodeToFixedLength("the cat, dog", row);

        Assert.AreEqual("the cat , dog", tokenizer.Decode(row));
        Assert.AreEqual(
            "<|startoftext|>the cat , dog <|endoftext|>" + string.Concat(Enumerable.Repeat("<|endoftext|>", 71)),
            tokenizer.Decode(row, skipSpecialTokens: false));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => tokenizer.Decode(new[] { 100_000 }));
    }

    [TestMethod]
    public void MergesHeaderAndStrayTrailingLineAreTolerated()
    {
        // A "#version" header, CRLF line ends, a stray last line (neither "a b" nor in the vocabulary) and blank tail.
        string merges = "#version: 0.2\r\n" + string.Join("\r\n", s_merges) + "\r\nstray\r\n\r\n";
        ClipTokenizer tokenizer = CreateMiniature(s_merges, mergesText: merges);

        Assert.AreEqual("cat</w>", tokenizer.GetToken(tokenizer.EncodeToIds("cat")[0]));
    }

    [TestMethod]
    public void MalformedMergeLineInTheMiddleIsAnError()
    {
        string merges = "#version: 0.2\n" + "c a\nnot-a-pair\nca t</w>\n";

        InvalidDataException ex = Assert.ThrowsExactly<InvalidDataException>(() => CreateMiniature(s_merges, mergesText: merges));

        StringAssert.Contains(ex.Message, "merges.txt");
        StringAssert.Contains(ex.Message, "line 3");
    }

    [TestMethod]
    public void MergeOutsideTheVocabularyIsAnError()
    {
        string merges = "q z\nc a\n";

        InvalidDataException ex = Assert.ThrowsExactly<InvalidDataException>(() => CreateMiniature(s_merges, mergesText: merges));

        StringAssert.Contains(ex.Message, "line 1");
        StringAssert.Contains(ex.Message, "not in the vocabulary");
    }

    [TestMethod]
    [DataRow("[1, 2]", "expected a JSON object")]
    [DataRow("{\"a\": \"x\"}", "is not a non-negative integer")]
    [DataRow("{\"a\": 0, ", "not valid JSON")]
    [DataRow("{\"a\": 0, \"b\": 5}", "ids must be 0..1")]
    public void MalformedVocabularyIsAnError(string json, string expectedMessage)
    {
        using var vocab = new MemoryStream(Encoding.UTF8.GetBytes(json));
        using var merges = new MemoryStream(Encoding.UTF8.GetBytes("a b\n"));

        InvalidDataException ex = Assert.ThrowsExactly<InvalidDataException>(() => ClipTokenizer.Create(vocab, merges));

        StringAssert.Contains(ex.Message, "vocab.json");
        StringAssert.Contains(ex.Message, expectedMessage);
    }

    [TestMethod]
    public void OptionsNamingUnknownTokensAreRejected()
    {
        ArgumentException ex = Assert.ThrowsExactly<ArgumentException>(
            () => CreateMiniature(s_merges, new ClipTokenizerOptions { PadToken = "<pad>" }));
        Assert.AreEqual("PadToken", ex.ParamName);

        Assert.ThrowsExactly<ArgumentException>(() => CreateMiniature(s_merges, new ClipTokenizerOptions { ModelMaxLength = 2 }));
        Assert.ThrowsExactly<ArgumentNullException>(() => ClipTokenizer.Create(null!, new MemoryStream()));
    }

    [TestMethod]
    [DataRow("\"!\"")]
    [DataRow("{\"content\": \"!\", \"lstrip\": false, \"normalized\": true, \"rstrip\": false, \"single_word\": false}")]
    public void Sd2StyleFolderPadsWithExclamationMark(string padJson)
    {
        string dir = WriteFolder(
            specialTokensMap: "{\"bos_token\": \"<|startoftext|>\", \"eos_token\": \"<|endoftext|>\", \"pad_token\": " + padJson + "}",
            tokenizerConfig: "{\"model_max_length\": 77, \"pad_token\": \"<|endoftext|>\"}");
        try
        {
            ClipTokenizer tokenizer = ClipTokenizer.FromFolder(dir);
            var row = new int[77];
            tokenizer.EncodeToFixedLength("cat", row);

            // special_tokens_map.json wins over tokenizer_config.json; "!" is id 0 in CLIP's layout.
            Assert.AreEqual(0, tokenizer.PadTokenId);
            CollectionAssert.AreEqual(
                new[] { tokenizer.StartTokenId, 513, tokenizer.EndTokenId }.Concat(Enumerable.Repeat(0, 74)).ToArray(), row);
            Assert.AreEqual("cat", tokenizer.Decode(row), "padding after the end token is not text");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    [DataRow("1e+30", 77)]
    [DataRow("1000000000000000019884624838656", 77)]
    [DataRow("16", 16)]
    public void ModelMaxLengthIsReadUnlessAbsurd(string value, int expected)
    {
        string dir = WriteFolder(specialTokensMap: null, tokenizerConfig: "{\"model_max_length\": " + value + "}");
        try
        {
            Assert.AreEqual(expected, ClipTokenizer.FromFolder(dir).ModelMaxLength);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [TestMethod]
    public void MissingAndMalformedFolderFilesNameTheFile()
    {
        string dir = WriteFolder(specialTokensMap: "{\"pad_token\": 5}", tokenizerConfig: null);
        try
        {
            InvalidDataException bad = Assert.ThrowsExactly<InvalidDataException>(() => ClipTokenizer.FromFolder(dir));
            StringAssert.Contains(bad.Message, "special_tokens_map.json");
            StringAssert.Contains(bad.Message, "pad_token");

            File.WriteAllText(Path.Combine(dir, "special_tokens_map.json"), "{ not json");
            bad = Assert.ThrowsExactly<InvalidDataException>(() => ClipTokenizer.FromFolder(dir));
            StringAssert.Contains(bad.Message, "special_tokens_map.json");

            File.Delete(Path.Combine(dir, "merges.txt"));
            FileNotFoundException missing = Assert.ThrowsExactly<FileNotFoundException>(() => ClipTokenizer.FromFolder(dir));
            StringAssert.Contains(missing.Message, "merges.txt");
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        Assert.ThrowsExactly<DirectoryNotFoundException>(() => ClipTokenizer.FromFolder(dir));
    }

    [TestMethod]
    public void FromFolderReusesTheTokenizerOfIdenticalFilesAndRebuildsWhenTheyChange()
    {
        string dir = WriteFolder(specialTokensMap: null, tokenizerConfig: null);
        string other = WriteFolder(specialTokensMap: null, tokenizerConfig: null);
        try
        {
            ClipTokenizer first = ClipTokenizer.FromFolder(dir);
            Assert.AreSame(first, ClipTokenizer.FromFolder(dir), "the same folder again");
            Assert.AreSame(first, ClipTokenizer.FromFolder(other), "another folder with the same files");
            var cat = new int[77];
            first.EncodeToFixedLength("cat", cat);

            // The same vocabulary without the merge "ca t</w>": "cat" no longer becomes one token.
            File.WriteAllText(Path.Combine(other, "merges.txt"), "#version: 0.2\n" + string.Join("\n", s_merges.Where(m => m != "ca t</w>")) + "\n");
            ClipTokenizer changed = ClipTokenizer.FromFolder(other);
            Assert.AreNotSame(first, changed);
            var split = new int[77];
            changed.EncodeToFixedLength("cat", split);
            CollectionAssert.AreNotEqual(cat, split);
            Assert.AreEqual(513, cat[1], "the first folder's tokenizer is unchanged");

            // Other options from the configs make another tokenizer.
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), "{\"model_max_length\": 16}");
            Assert.AreEqual(16, ClipTokenizer.FromFolder(dir).ModelMaxLength);
            Assert.AreEqual(77, first.ModelMaxLength);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
            Directory.Delete(other, recursive: true);
        }
    }

    /// <summary>GPT-2/CLIP bytes_to_unicode in its published order (printable bytes first, then the rest at U+0100+).</summary>
    internal static List<string> ByteSymbols()
    {
        var printable = new List<int>();
        printable.AddRange(Enumerable.Range('!', '~' - '!' + 1));
        printable.AddRange(Enumerable.Range(0xA1, 0xAC - 0xA1 + 1));
        printable.AddRange(Enumerable.Range(0xAE, 0xFF - 0xAE + 1));
        var symbols = printable.Select(b => ((char)b).ToString()).ToList();
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            if (!printable.Contains(b))
            {
                symbols.Add(((char)(256 + n++)).ToString());
            }
        }

        return symbols;
    }

    internal static string VocabularyJson(IReadOnlyList<string> merges)
    {
        List<string> tokens = ByteSymbols();
        tokens.AddRange(ByteSymbols().Select(s => s + "</w>"));
        tokens.AddRange(merges.Select(m => m.Replace(" ", string.Empty, StringComparison.Ordinal)));
        tokens.Add("<|startoftext|>");
        tokens.Add("<|endoftext|>");
        var map = new Dictionary<string, int>();
        for (int i = 0; i < tokens.Count; i++)
        {
            map.TryAdd(tokens[i], i);
        }

        return JsonSerializer.Serialize(map);
    }

    private static ClipTokenizer CreateMiniature(IReadOnlyList<string> merges, ClipTokenizerOptions? options = null, string? mergesText = null)
    {
        using var vocab = new MemoryStream(Encoding.UTF8.GetBytes(VocabularyJson(merges)));
        using var mergeStream = new MemoryStream(Encoding.UTF8.GetBytes(mergesText ?? "#version: 0.2\n" + string.Join("\n", merges) + "\n"));
        return ClipTokenizer.Create(vocab, mergeStream, options);
    }

    private static string WriteFolder(string? specialTokensMap, string? tokenizerConfig)
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-diffusion-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "vocab.json"), VocabularyJson(s_merges));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\n" + string.Join("\n", s_merges) + "\n");
        if (specialTokensMap is not null)
        {
            File.WriteAllText(Path.Combine(dir, "special_tokens_map.json"), specialTokensMap);
        }

        if (tokenizerConfig is not null)
        {
            File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), tokenizerConfig);
        }

        return dir;
    }
}
