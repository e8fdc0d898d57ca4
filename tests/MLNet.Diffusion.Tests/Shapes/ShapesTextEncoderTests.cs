using System;
using System.IO;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Shapes;

[TestClass]
public sealed class ShapesTextEncoderTests
{
    private const int D = 32;

    // Attribute dimensions (see AttributeSpace): shapes 0–2, shape colours 3–8, backgrounds 9–13, positions 14–16.
    private static int Dim(ShapeKind v) => (int)v;

    private static int Dim(ShapeColor v) => 3 + (int)v;

    private static int Dim(BackgroundColor v) => 9 + (int)v;

    private static int Dim(ShapePosition v) => 14 + (int)v;

    [TestMethod]
    public void Vocabulary_HasClipLayout()
    {
        var vocab = ShapesTestModel.Tokenizer.Vocab;
        Assert.AreEqual(0, vocab["!"]);
        Assert.AreEqual(93, vocab["~"]);
        Assert.AreEqual(256, vocab["!</w>"]);
        Assert.AreEqual(511, vocab[((char)(256 + 67)).ToString() + "</w>"]); // byte 0xAD, the last non-printable byte
        Assert.AreEqual(vocab.Count - 1, ShapesTestModel.Tokenizer.EndId);
        Assert.AreEqual(vocab.Count - 2, ShapesTestModel.Tokenizer.StartId);
        Assert.AreEqual(vocab.Count, vocab.Values.Distinct().Count());
        CollectionAssert.AreEquivalent(Enumerable.Range(0, vocab.Count).ToArray(), vocab.Values.ToArray());
        string[] merges = File.ReadAllLines(Path.Combine(ShapesTestModel.Folder, "tokenizer", "merges.txt"));
        Assert.AreEqual("#version: 0.2", merges[0]);
        Assert.IsTrue(merges.Skip(1).All(l => l.Split(' ').Length == 2), "every merge line is two tokens");
    }

    [TestMethod]
    public void EveryPromptWord_IsOneToken()
    {
        var tok = ShapesTestModel.Tokenizer;
        foreach (string word in ShapesDataset.PromptWords)
        {
            var parts = tok.Bpe(word);
            Assert.AreEqual(1, parts.Count, $"'{word}' → {string.Join(" ", parts)}");
            Assert.AreEqual(word + "</w>", parts[0]);
        }
        // A word outside the vocabulary falls apart into several tokens (which the encoder maps to zero).
        Assert.IsTrue(tok.Bpe("dog").Count > 1);
    }

    [TestMethod]
    public void RedCircleOnBlueBackground_LightsObjectAndBackgroundDimensions()
    {
        var ids = ShapesTestModel.Tokenizer.Encode("a red circle on a blue background");
        Assert.AreEqual(ShapesTestModel.Tokenizer.StartId, ids[0]);
        Assert.AreEqual(ShapesTestModel.Tokenizer.EndId, ids[8]);
        var outputs = ShapesTestModel.Run(ShapesTestModel.TextEncoder, ("input_ids", ids, new long[] { 1, 77 }));
        var hidden = outputs["last_hidden_state"].Data;
        var pooled = outputs["pooler_output"].Data;
        CollectionAssert.AreEqual(new long[] { 1, 77, D }, outputs["last_hidden_state"].Shape);

        // Tokens: <start> a red circle on a blue background <end> …
        Assert.AreEqual(1f, hidden[2 * D + Dim(ShapeColor.Red)]);
        Assert.AreEqual(1f, hidden[3 * D + Dim(ShapeKind.Circle)]);
        Assert.AreEqual(1f, hidden[6 * D + Dim(BackgroundColor.Blue)]);
        Assert.AreEqual(0f, hidden[6 * D + Dim(ShapeColor.Blue)]);

        var expected = new float[D];
        expected[Dim(ShapeColor.Red)] = 1;
        expected[Dim(ShapeKind.Circle)] = 1;
        expected[Dim(BackgroundColor.Blue)] = 1;
        CollectionAssert.AreEqual(expected, pooled, "pooler_output is the sum over the sequence");
    }

    [TestMethod]
    public void ColourWord_IsTheShapeColourUnlessAfterOnOrBeforeBackground()
    {
        var pooled = Pool("a blue square on a green background", "a blue square, green background", "a green triangle in the middle of a grey image", "", "a dog");
        float[] first = pooled[0], second = pooled[1], third = pooled[2];
        foreach (var p in new[] { first, second })
        {
            Assert.AreEqual(1f, p[Dim(ShapeColor.Blue)]);
            Assert.AreEqual(0f, p[Dim(BackgroundColor.Blue)]);
            Assert.AreEqual(1f, p[Dim(BackgroundColor.Green)]);
            Assert.AreEqual(0f, p[Dim(ShapeColor.Green)]);
            Assert.AreEqual(1f, p[Dim(ShapeKind.Square)]);
        }
        Assert.AreEqual(1f, third[Dim(ShapeColor.Green)]);
        Assert.AreEqual(1f, third[Dim(ShapePosition.Center)]);
        Assert.AreEqual(1f, third[Dim(BackgroundColor.Gray)]);
        Assert.AreEqual(1f, third[Dim(ShapeKind.Triangle)]);
        Assert.AreEqual(4f, third.Sum());
        Assert.IsTrue(pooled[3].All(v => v == 0), "the empty prompt encodes to zero");
        Assert.IsTrue(pooled[4].All(v => v == 0), "unknown words encode to zero");
    }

    private static float[][] Pool(params string[] prompts)
    {
        var ids = prompts.SelectMany(ShapesTestModel.Tokenizer.Encode).ToArray();
        var pooled = ShapesTestModel.Run(ShapesTestModel.TextEncoder, ("input_ids", ids, new long[] { prompts.Length, 77 }))["pooler_output"].Data;
        return Enumerable.Range(0, prompts.Length).Select(b => pooled.AsSpan(b * D, D).ToArray()).ToArray();
    }
}
