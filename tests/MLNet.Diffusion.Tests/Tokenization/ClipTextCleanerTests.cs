using System;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Tests.Tokenization;

/// <summary>
/// The clean-up of OpenAI CLIP's simple_tokenizer.py — <c>whitespace_clean(basic_clean(text)).lower()</c> with
/// <c>basic_clean = ftfy.fix_text → html.unescape ×2 → strip</c> — one rule per row. Python-only expectations
/// (html.unescape, str.lower, str.strip) were checked against CPython 3.11's standard library; ftfy rows follow
/// ftfy 6's documented fixes (CLIP-NOTES.md).
/// </summary>
[TestClass]
public sealed class ClipTextCleanerTests
{
    [TestMethod]
    // ftfy uncurl_quotes: U+2018–U+201B and U+02BC → ', U+201C–U+201F → ".
    [DataRow("\u201cHi\u201d it\u2019s \u2018x\u2019 o\u02BCk", "\"hi\" it's 'x' o'k")]
    // ftfy fix_latin_ligatures: ﬁ ﬂ ﬀ ﬃ split; the digraph Ǆ → DŽ (then lower-cased).
    [DataRow("ﬁne ﬂow ﬀ ﬃ Ǆ", "fine flow ff ffi dž")]
    // ftfy fix_character_width: full-width ASCII → ASCII, U+3000 → space, half-width katakana → full width.
    [DataRow("ＡＢＣ１２３！\u3000ｶ", "abc123! カ")]
    // ftfy remove_control_chars: C0 controls (not \t \n), DEL, BOM removed; \t and \n then collapse to spaces.
    [DataRow("\uFEFFa\u0000b\u0007c\u007Fd\te\nf", "abcd e f")]
    // NFC: e + combining acute → é.
    [DataRow("e\u0301te\u0301", "été")]
    // ftfy unescape_html then html.unescape: named, numeric, decimal entities.
    [DataRow("&lt;3 &hearts; &eacute; &#x41;&#66;", "<3 ♥ é ab")]
    // ftfy decodes an upper-cased lower-case entity name (&NTILDE; → Ñ) that html.unescape leaves alone...
    [DataRow("&NTILDE;", "ñ")]
    // ... but not when the text contains '<' (looks like HTML): html.unescape keeps it, lower() folds it.
    [DataRow("<b>&NTILDE;", "<b>&ntilde;")]
    // ftfy turns &#x2019; into ’ and uncurls it; with '<' present only html.unescape runs, after ftfy: ’ stays.
    [DataRow("it&#x2019;s", "it's")]
    [DataRow("<i>it&#x2019;s", "<i>it’s")]
    // html.unescape: legacy names without ';' (HTML5), longest-prefix rule (&notit; → ¬it;).
    [DataRow("&copy 2024 &amp", "© 2024 &")]
    [DataRow("&notit;", "¬it;")]
    // html.unescape numeric rules: 0x80–0x9F as Windows-1252, 0 and > U+10FFFF → U+FFFD, controls dropped, no ';' needed.
    [DataRow("&#128; &#0;x &#x110000; a&#1;b &#65", "€ \uFFFDx \uFFFD ab a")]
    // Nested escapes: ftfy repeats until stable, so three levels reach '&'...
    [DataRow("&amp;amp;amp;", "&")]
    // ... while with '<' only html.unescape's two passes run.
    [DataRow("< &amp;amp;amp;", "< &amp;")]
    // Mojibake: UTF-8 read as Windows-1252 (Ã© → é, â€™ → ’ → '), and as Latin-1 with a C1 control (Ã\x89 → É).
    [DataRow("cafÃ© itâ€™s Ã\u0089t", "café it's ét")]
    // ... left alone when it is plausible text: ë…” are real characters ("Brontë…”"), ” then uncurled.
    [DataRow("Brontë…” naïve", "brontë…\" naïve")]
    // ftfy fix_c1_controls: U+0093/U+0094 read as Windows-1252 curly quotes, then uncurled.
    [DataRow("\u0093quoted\u0094", "\"quoted\"")]
    // ftfy remove_terminal_escapes.
    [DataRow("\u001B[31mred\u001B[0m", "red")]
    // whitespace_clean: any run of str.isspace characters (NBSP, em space, ideographic space) → one space; strip.
    [DataRow("  \u00A0a\u2003\u2003b\u3000c \n", "a b c")]
    // str.lower(): İ → i + U+0307 (SpecialCasing), final sigma at word end only, lone Σ → σ.
    [DataRow("İ ΟΔΟΣ ΣΟΦΟΣ. Σ AΣB", "i\u0307 οδος σοφος. σ aσb")]
    // Astral letters lower-case too: Deseret 𐐀 → 𐐨.
    [DataRow("\U00010400", "\U00010428")]
    public void CleansLikeReference(string input, string expected)
    {
        Assert.AreEqual(expected, ClipTextCleaner.Clean(input));
    }

    [TestMethod]
    public void PlainAsciiIsOnlyCollapsedAndLowerCased()
    {
        Assert.AreEqual("a photo of a cat", ClipTextCleaner.Clean("  A Photo\tof  a CAT \n"));
        Assert.AreEqual(string.Empty, ClipTextCleaner.Clean(" \t\n"));
        Assert.AreEqual(string.Empty, ClipTextCleaner.Clean(string.Empty));
        Assert.ThrowsExactly<ArgumentNullException>(() => ClipTextCleaner.Clean(null!));
    }

    [TestMethod]
    public void LoneSurrogatesBecomeReplacementCharacters()
    {
        // ftfy fix_surrogates. (Not a DataRow: attribute metadata cannot carry a lone surrogate.)
        Assert.AreEqual("a\uFFFDb\uFFFD", ClipTextCleaner.Clean("a\uD800b\uDC00"));
    }

    [TestMethod]
    public void LineBreaksAreUnifiedBeforeCollapsing()
    {
        // ftfy fix_line_breaks: \r\n, \r, U+2028, U+2029 → \n (visible before whitespace_clean).
        Assert.AreEqual("a\nb\nc\nd\ne", ClipTextCleaner.FixText("a\r\nb\rc\u2028d\u2029e"));
    }

    [TestMethod]
    public void PythonStripAlsoStripsInformationSeparators()
    {
        // Python's str.isspace counts U+001C–U+001F (bidi class B/S); char.IsWhiteSpace does not.
        Assert.AreEqual("a b", PythonText.CollapseWhitespaceAndStrip("\u001C a\u001D\u001Eb \u001F"));
        Assert.IsFalse(char.IsWhiteSpace('\u001C'), "the reason this rule needs its own code");
    }

    [TestMethod]
    public void EntityTableIsComplete()
    {
        // Python's html.entities.html5 has 2231 names (with and without ';').
        Assert.AreEqual(2231, PythonHtml.EntityCount);
        Assert.IsTrue(PythonHtml.TryGetEntity("NotNestedGreaterGreater;", out string value));
        Assert.AreEqual("\u2AA2\u0338", value);
    }

    [TestMethod]
    public void MissingNormalizationIsDetected()
    {
        // Under InvariantGlobalization string.Normalize returns its input: the probe must notice.
        Assert.IsFalse(ClipTextCleaner.NormalizationWorks(s => s));
        Assert.IsTrue(ClipTextCleaner.NormalizationWorks(s => s.Normalize()));
        StringAssert.Contains(ClipTextCleaner.NormalizationUnavailable().Message, "InvariantGlobalization");
    }
}
