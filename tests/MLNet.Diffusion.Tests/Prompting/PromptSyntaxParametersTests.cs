using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Prompting;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// How the PNG parameters record the prompt syntax: AUTOMATIC1111's <c>Emphasis</c> key (an option with
/// <c>infotext="Emphasis"</c> in its <c>shared_options.py</c>, written when not its default "Original", with the names of
/// <c>modules/sd_emphasis.py</c>) and this library's <c>Prompt syntax</c> key, written only when the prompt was not plain.
/// </summary>
[TestClass]
public sealed class PromptSyntaxParametersTests
{
    [TestMethod]
    public void A1111SyntaxAndNoNormEmphasisAreWrittenAndReadBack()
    {
        var p = new GenerationParameters
        {
            Prompt = "a (red:1.3) circle", Steps = 20, Seed = 3, Emphasis = PromptEmphasis.NoNorm, PromptSyntax = PromptSyntax.A1111,
            Extra = new[] { new System.Collections.Generic.KeyValuePair<string, string>("Pad conds", "True") },
        };
        string text = p.ToInfotext();
        Assert.AreEqual("a (red:1.3) circle\nSteps: 20, Seed: 3, Emphasis: No norm, Prompt syntax: a1111, Pad conds: True", text);
        var back = GenerationParameters.Parse(text);
        Assert.AreEqual(p, back);
        Assert.AreEqual(PromptEmphasis.NoNorm, back.Emphasis);
        Assert.AreEqual(PromptSyntax.A1111, back.PromptSyntax);
    }

    [TestMethod]
    public void PlainSyntaxAndOriginalEmphasisWriteNothing()
    {
        var p = new GenerationParameters { Prompt = "a red circle", Steps = 20, Seed = 3, Emphasis = PromptEmphasis.Original, PromptSyntax = PromptSyntax.Plain };
        Assert.AreEqual("a red circle\nSteps: 20, Seed: 3", p.ToInfotext());
        var compel = p with { PromptSyntax = PromptSyntax.Compel, Emphasis = null };
        StringAssert.EndsWith(compel.ToInfotext(), "Seed: 3, Prompt syntax: compel");
        // An A1111 infotext with its other emphasis names; an unknown value stays an extra pair, as A1111 keeps every value.
        Assert.AreEqual(PromptEmphasis.Ignore, GenerationParameters.Parse("x\nSteps: 2, Seed: 1, Emphasis: Ignore").Emphasis);
        var odd = GenerationParameters.Parse("x\nSteps: 2, Seed: 1, Prompt syntax: lisp");
        Assert.IsNull(odd.PromptSyntax);
        Assert.AreEqual("Prompt syntax=lisp", odd.Extra.Select(kv => $"{kv.Key}={kv.Value}").Single());
    }
}
