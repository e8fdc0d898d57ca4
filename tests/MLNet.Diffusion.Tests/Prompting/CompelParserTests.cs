using System;
using System.Collections.Generic;
using System.Linq;
using System.Text.Json;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Prompting;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// <see cref="CompelPromptParser"/> against compel's own parser (damian0815/compel src/compel/prompt_parser.py @
/// c60b9fb): every prompt its published parser tests (test/test_prompt_parser.py, which pass against that parser)
/// parse, and ours, with the structure compel produced; <c>.swap</c> and LoRA prompts must be refused clearly.
/// </summary>
[TestClass]
public sealed class CompelParserTests
{
    [TestMethod]
    public void PublishedExamplesGiveCompelsWeights()
    {
        // test_prompt_parser.py: test_attention, test_no_parens_attention_runon, test_nested, test_blend.
        AssertSingle("(flames)0.5", ("flames", 0.5));
        AssertSingle("flames+", ("flames", 1.1));
        AssertSingle("(flames)--", ("flames", Math.Pow(0.9, 2)));
        AssertSingle("(flowers)--- flames+++", ("flowers", Math.Pow(0.9, 3)), ("flames", Math.Pow(1.1, 3)));
        AssertSingle("flowers fire++ flames", ("flowers", 1.0), ("fire", Math.Pow(1.1, 2)), ("flames", 1.0));
        AssertSingle("fire (flames (trees)1.5)2.0", ("fire", 1.0), ("flames", 2.0), ("trees", 3.0));
        AssertSingle("middle age,fantasy++ style", ("middle age,", 1.0), ("fantasy", Math.Pow(1.1, 2)), ("style", 1.0));
        AssertSingle("(happy camper:0.3)", ("happy camper:0 . 3", 1.0));

        CompelPrompt blend = CompelPromptParser.Parse("(\"fire\", \"fire flames\").blend(0.7, 0.3)");
        Assert.AreEqual(1, blend.Parts.Count);
        CollectionAssert.AreEqual(new[] { 0.7, 0.3 }, blend.Parts[0].Blend!.Weights.ToArray());
        Assert.IsTrue(blend.Parts[0].Blend!.NormalizeWeights);

        CompelPrompt and = CompelPromptParser.Parse("(\"fire\", \"flames\").and(2,1)");
        CollectionAssert.AreEqual(new[] { 2.0, 1.0 }, and.Weights.ToArray());
    }

    [TestMethod]
    public void SwapAndLoraAreRefusedClearly()
    {
        var swap = Assert.ThrowsExactly<ArgumentException>(() => CompelPromptParser.Parse("a cat.swap(dog)"));
        StringAssert.Contains(swap.Message, ".swap()");
        var lora = Assert.ThrowsExactly<ArgumentException>(() => CompelPromptParser.Parse("mountain man withLora(hairy, 0.5)"));
        StringAssert.Contains(lora.Message, "withLora(hairy)");
    }

    [TestMethod]
    public void EveryFixturePromptParsesAsCompelDid()
    {
        var failures = new List<string>();
        int count = 0;
        foreach (string section in new[] { "published", "ours" })
        {
            foreach (JsonElement item in PromptFixtures.Compel.GetProperty(section).EnumerateArray())
            {
                count++;
                string prompt = item.GetProperty("prompt").GetString()!;
                bool unsupported = item.TryGetProperty("loras", out JsonElement loras) && loras.GetArrayLength() > 0
                    || item.GetRawText().Contains("\"swap\"", StringComparison.Ordinal);
                if (item.TryGetProperty("error", out _) || unsupported)
                {
                    try
                    {
                        CompelPromptParser.Parse(prompt);
                        failures.Add($"{prompt}: expected an ArgumentException");
                    }
                    catch (ArgumentException)
                    {
                    }

                    continue;
                }

                try
                {
                    string actual = Describe(CompelPromptParser.Parse(prompt));
                    string expected = Describe(item);
                    if (actual != expected)
                    {
                        failures.Add($"{prompt}:\n  compel {expected}\n  ours   {actual}");
                    }
                }
                catch (ArgumentException e)
                {
                    failures.Add($"{prompt}: threw {e.Message}");
                }
            }
        }

        Assert.IsTrue(count > 200);
        Assert.AreEqual(0, failures.Count, string.Join("\n", failures));
    }

    private static void AssertSingle(string prompt, params (string Text, double Weight)[] expected)
    {
        CompelPrompt parsed = CompelPromptParser.Parse(prompt);
        Assert.AreEqual(1, parsed.Parts.Count, prompt);
        CollectionAssert.AreEqual(
            expected.Select(e => new WeightedText(e.Text, e.Weight)).ToArray(), parsed.Parts[0].Fragments!.ToArray(), prompt);
    }

    private static string Describe(CompelPrompt prompt) =>
        "[" + string.Join(", ", prompt.Parts.Select(p => p.Blend is { } b
            ? "blend(" + string.Join(" | ", b.Prompts.Select(Describe)) + "; " + string.Join(",", b.Weights.Select(Number)) + (b.NormalizeWeights ? "" : " no_normalize") + ")"
            : Describe(p.Fragments!))) + "] weights " + string.Join(",", prompt.Weights.Select(Number));

    private static string Describe(JsonElement item) =>
        "[" + string.Join(", ", item.GetProperty("prompts").EnumerateArray().Select(p => p.TryGetProperty("blend", out JsonElement b)
            ? "blend(" + string.Join(" | ", b.EnumerateArray().Select(q => Describe(Fragments(q)))) + "; "
              + string.Join(",", p.GetProperty("weights").EnumerateArray().Select(w => Number(w.GetDouble())))
              + (p.GetProperty("normalize").GetBoolean() ? "" : " no_normalize") + ")"
            : Describe(Fragments(p)))) + "] weights "
        + string.Join(",", item.GetProperty("weights").EnumerateArray().Select(w => Number(w.GetDouble())));

    private static WeightedText[] Fragments(JsonElement prompt) =>
        prompt.GetProperty("fragments").EnumerateArray().Select(f => new WeightedText(f[0].GetString()!, f[1].GetDouble())).ToArray();

    private static string Describe(IEnumerable<WeightedText> fragments) =>
        string.Join(" ", fragments.Select(f => $"'{f.Text}'@{Number(f.Weight)}"));

    private static string Number(double value) => value.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
}
