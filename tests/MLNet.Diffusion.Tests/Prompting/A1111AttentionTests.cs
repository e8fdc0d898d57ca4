using System;
using System.Collections.Generic;
using System.Text.Json;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Prompting;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// <see cref="A1111Attention"/> against AUTOMATIC1111's <c>parse_prompt_attention</c>: its published doctests
/// (modules/prompt_parser.py @ 28bd8e1), then every prompt of the fixture corpus that A1111's code was run on.
/// </summary>
[TestClass]
public sealed class A1111AttentionTests
{
    [TestMethod]
    public void PublishedDoctestsHold()
    {
        AssertParsed("normal text", ("normal text", 1.0));
        AssertParsed("an (important) word", ("an ", 1.0), ("important", 1.1), (" word", 1.0));
        AssertParsed("(unbalanced", ("unbalanced", 1.1));
        AssertParsed("\\(literal\\]", ("(literal]", 1.0));
        AssertParsed("(unnecessary)(parens)", ("unnecessaryparens", 1.1));
        AssertParsed(
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            ("a ", 1.0),
            ("house", 1.5730000000000004),
            (" ", 1.1),
            ("on", 1.0),
            (" a ", 1.1),
            ("hill", 0.55),
            (", sun, ", 1.1),
            ("sky", 1.4641000000000006),
            (".", 1.1));
    }

    [TestMethod]
    public void BreakIsAMarkerOutsideBracketsAndAWeightedWordInside()
    {
        List<WeightedText> plain = A1111Attention.Parse("a BREAK b");
        Assert.IsTrue(plain[1].IsBreak);

        // A1111 multiplies the marker's -1 by the bracket (-1.1), after which tokenize_line no longer sees a break.
        List<WeightedText> bracketed = A1111Attention.Parse("(a BREAK b)");
        Assert.AreEqual(new WeightedText("BREAK", -1.1), bracketed[1]);
        Assert.IsFalse(bracketed[1].IsBreak);
    }

    [TestMethod]
    public void WeightThatIsNotANumberInsideRoundBracketsIsAClearError()
    {
        // A1111 raises ValueError from float('1.2.3'); we name the weight and its position instead.
        var error = Assert.ThrowsExactly<ArgumentException>(() => A1111Attention.Parse("(x:1.2.3)"));
        StringAssert.Contains(error.Message, "'1.2.3'");
        StringAssert.Contains(error.Message, "index 3");

        // Without an open round bracket A1111 keeps it as text, and so do we.
        Assert.AreEqual(new WeightedText("x:1.2.3)", 1.0), A1111Attention.Parse("x:1.2.3)")[0]);
    }

    [TestMethod]
    public void EveryFixturePromptParsesAsA1111Did()
    {
        int checkedCount = 0;
        foreach (JsonElement item in PromptFixtures.A1111.GetProperty("attention").EnumerateArray())
        {
            string prompt = item.GetProperty("prompt").GetString()!;
            if (item.TryGetProperty("error", out JsonElement error))
            {
                Assert.ThrowsExactly<ArgumentException>(() => A1111Attention.Parse(prompt), $"{prompt} ({error.GetString()})");
            }
            else
            {
                List<WeightedText> actual = A1111Attention.Parse(prompt);
                JsonElement expected = item.GetProperty("result");
                Assert.AreEqual(expected.GetArrayLength(), actual.Count, prompt);
                int i = 0;
                foreach (JsonElement pair in expected.EnumerateArray())
                {
                    Assert.AreEqual(pair[0].GetString(), actual[i].Text, $"{prompt} piece {i}");
                    Assert.AreEqual(pair[1].GetDouble(), actual[i].Weight, 0.0, $"{prompt} piece {i}");
                    i++;
                }
            }

            checkedCount++;
        }

        Assert.IsTrue(checkedCount >= 60, "the fixture corpus has at least 60 prompts");
    }

    private static void AssertParsed(string prompt, params (string Text, double Weight)[] expected)
    {
        List<WeightedText> actual = A1111Attention.Parse(prompt);
        Assert.AreEqual(expected.Length, actual.Count, prompt);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.AreEqual(expected[i].Text, actual[i].Text, $"{prompt} piece {i}");
            Assert.AreEqual(expected[i].Weight, actual[i].Weight, 0.0, $"{prompt} piece {i}");
        }
    }
}
