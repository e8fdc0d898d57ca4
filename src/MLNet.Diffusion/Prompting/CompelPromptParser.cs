using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// compel's prompt syntax (damian0815/compel, <c>src/compel/prompt_parser.py</c>): <c>word+</c> / <c>word-</c>
/// (1.1ⁿ / 0.9ⁿ for n signs), <c>(phrase)1.3</c>, <c>(phrase)++</c>, <c>"phrase"-</c>, <c>x.attend(w)</c>, nesting
/// multiplies, <c>("a", "b").blend(wa, wb[, no_normalize])</c>, <c>("a", "b").and(wa, wb)</c>, and the escapes
/// <c>\( \) \"</c> (plus <c>\, \. \+ \- \=</c> inside words).
/// </summary>
/// <remarks>
/// <para>
/// compel's grammar is a pyparsing PEG; this is the same grammar read the same way: ordered choice without
/// backtracking into a choice once it matched, pyparsing's whitespace skipping before each token (none inside a
/// word), a quoted string re-parsed on its own, and compel's flattening (weights multiplied outer to inner,
/// neighbouring fragments of equal weight joined by a space). compel's quirks come along and are pinned by the
/// fixtures made with compel's own parser (<c>make_compel_fixtures.py</c>): a comma gets a space after it; inside
/// parentheses commas and periods become separate fragments (<c>(a, b)1.2</c> → <c>"a , b"</c>), at the top level
/// they stay attached to the word; <c>(happy camper:0.3)</c> (A1111 syntax) reads as <c>"happy camper:0 . 3"</c>;
/// text after an explicit <c>.and(…)</c> is ignored.
/// </para>
/// <para>
/// Not supported, with a clear <see cref="ArgumentException"/>: <c>.swap(…)</c> (cross-attention control needs
/// hooks inside the UNet's attention, which an ONNX UNet does not expose) and <c>withLora(…)</c> / <c>useLora(…)</c>
/// (LoRA loading is not part of this library). compel's own parse errors (unmatched blend weights, a weight that is
/// not a number, text after a blend) are <see cref="ArgumentException"/>s too.
/// </para>
/// </remarks>
internal static class CompelPromptParser
{
    /// <summary>compel's <c>attention_plus_base</c>.</summary>
    public const double PlusBase = 1.1;

    /// <summary>compel's <c>attention_minus_base</c>.</summary>
    public const double MinusBase = 0.9;

    private const string Syntactic = "()\",.+-=";

    // parse_conjunction: re.sub(r',(\S)', r', \1', prompt)
    private static readonly Regex s_commaSpace = new(@",(\S)", RegexOptions.CultureInvariant);

    // pyparsing QuotedString('"', esc_char=None, esc_quote='\\"'): "(?:(?:\\")|(?:[^"\n\r]))*"
    private static readonly Regex s_quoted = new("\\G\"(?:(?:\\\\\")|(?:[^\"\\n\\r]))*\"", RegexOptions.CultureInvariant);

    /// <summary>Parses and flattens <paramref name="prompt"/> as compel's <c>PromptParser().parse_conjunction</c>.</summary>
    /// <param name="prompt">The prompt.</param>
    /// <returns>The parts, their fragments and weights.</returns>
    /// <exception cref="ArgumentException">compel rejects the prompt, or it uses <c>.swap</c> or LoRA syntax.</exception>
    public static CompelPrompt Parse(string prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        string text = s_commaSpace.Replace(prompt, ", $1");
        if (IsBlank(text))
        {
            return new CompelPrompt(new[] { new CompelPart(new[] { new WeightedText(string.Empty, 1.0) }, null) }, new[] { 1.0 });
        }

        var parser = new Parser(text);
        ConjunctionNode root = parser.ParseConjunction(prompt);

        var parts = new List<CompelPart>();
        var weights = new List<double>();
        for (int i = 0; i < root.Prompts.Count; i++)
        {
            List<object> flattened = Flatten(root.Prompts[i], 1.0, prompt);
            if (flattened.Count == 0)
            {
                continue;
            }

            foreach (object part in flattened)
            {
                parts.Add(part switch
                {
                    FlatPrompt flat => new CompelPart(ToWeighted(flat), null),
                    FlatBlend blend => new CompelPart(null, new CompelBlend(blend.Prompts.ConvertAll(ToWeighted), blend.Weights, blend.Normalize)),
                    _ => throw new InvalidOperationException("unexpected flattened node " + part.GetType().Name),
                });
            }

            weights.Add(root.Weights[i]);
        }

        return new CompelPrompt(parts, weights);
    }

    private static IReadOnlyList<WeightedText> ToWeighted(FlatPrompt flat) =>
        flat.Fragments.ConvertAll(f => new WeightedText(f.Text, f.Weight));

    private static bool IsBlank(string text)
    {
        foreach (char c in text)
        {
            if (!char.IsWhiteSpace(c))
            {
                return false;
            }
        }

        return true;
    }

    // PromptParser.flatten / flatten_internal; weight_scale accumulates outer to inner.
    private static List<object> Flatten(object node, double scale, string prompt)
    {
        var results = new List<object>();
        switch (node)
        {
            case List<object> list:
                foreach (object x in list)
                {
                    results.AddRange(Flatten(x, scale, prompt));
                }

                break;

            case AttentionNode attention:
                foreach (object child in attention.Children)
                {
                    results.AddRange(Flatten(child, scale * attention.Weight, prompt));
                }

                break;

            case FragmentNode fragment:
                results.Add(new FragmentNode(fragment.Text, fragment.Weight * scale));
                break;

            case PromptNode promptNode:
                var unfused = new List<FragmentNode>();
                foreach (object child in promptNode.Children)
                {
                    foreach (object r in Flatten(child, scale, prompt))
                    {
                        unfused.Add((FragmentNode)r);
                    }
                }

                List<FragmentNode> fused = Fuse(unfused);
                if (fused.Count > 0)
                {
                    results.Add(new FlatPrompt(fused));
                }

                break;

            case BlendNode blend:
                var subprompts = new List<FlatPrompt>();
                foreach (PromptNode p in blend.Prompts)
                {
                    foreach (object r in Flatten(p, scale, prompt))
                    {
                        subprompts.Add((FlatPrompt)r);
                    }
                }

                if (subprompts.Count != blend.Weights.Count)
                {
                    throw new ArgumentException(
                        $"compel prompt \"{prompt}\": a .blend() has {subprompts.Count} prompts but {blend.Weights.Count} weights.",
                        nameof(prompt));
                }

                results.Add(new FlatBlend(subprompts, blend.Weights, blend.Normalize));
                break;

            case SwapNode:
                throw new ArgumentException(
                    $"compel prompt \"{prompt}\": .swap() (cross-attention control) is not supported — it needs hooks inside "
                    + "the UNet's attention layers, which an ONNX UNet does not expose.",
                    nameof(prompt));

            case LoraNode lora:
                throw new ArgumentException(
                    $"compel prompt \"{prompt}\": withLora({lora.Model}) / useLora() is not supported; this library does not load LoRA weights.",
                    nameof(prompt));

            default:
                throw new InvalidOperationException("unexpected parse node " + node.GetType().Name);
        }

        return results;
    }

    // fuse_fragments: neighbours of exactly equal weight are joined with a space.
    private static List<FragmentNode> Fuse(List<FragmentNode> items)
    {
        var fused = new List<FragmentNode>(items.Count);
        foreach (FragmentNode x in items)
        {
            if (fused.Count > 0 && fused[^1].Weight == x.Weight)
            {
                fused[^1] = new FragmentNode(fused[^1].Text + " " + x.Text, fused[^1].Weight);
            }
            else
            {
                fused.Add(x);
            }
        }

        return fused;
    }

    /// <summary>compel's <c>Fragment</c>: its constructor turns <c>\( \) \"</c> into the plain characters.</summary>
    private sealed class FragmentNode
    {
        public FragmentNode(string text, double weight = 1.0)
        {
            if (text.Contains("\\\"", StringComparison.Ordinal) || text.Contains("\\(", StringComparison.Ordinal)
                || text.Contains("\\)", StringComparison.Ordinal))
            {
                text = text.Replace("\\(", "(", StringComparison.Ordinal).Replace("\\)", ")", StringComparison.Ordinal)
                    .Replace("\\\"", "\"", StringComparison.Ordinal);
            }

            Text = text;
            Weight = weight;
        }

        public string Text { get; }

        public double Weight { get; }
    }

    private sealed record AttentionNode(double Weight, List<object> Children);

    private sealed record SwapNode(List<object> Original, List<object> Edited);

    private sealed record LoraNode(string Model);

    private sealed record PromptNode(List<object> Children);

    private sealed record BlendNode(List<PromptNode> Prompts, List<double> Weights, bool Normalize);

    private sealed record ConjunctionNode(List<object> Prompts, List<double> Weights);

    private sealed record FlatPrompt(List<FragmentNode> Fragments);

    private sealed record FlatBlend(List<FlatPrompt> Prompts, List<double> Weights, bool Normalize);

    /// <summary>An operator option: <c>key=value</c>, a number, or a flag; <see cref="First"/> is compel's <c>w[0]</c>.</summary>
    private sealed record OptionNode(string First, double? Number);

    /// <summary>build_parser_syntax, element by element (each method: match at pos, advance it, or leave it).</summary>
    private sealed class Parser(string s)
    {
        public ConjunctionNode ParseConjunction(string original)
        {
            // conjunction = explicit_conjunction | implicit_conjunction; parse_string does not require the end of
            // the string, so text after an explicit .and(...) is ignored (as compel does).
            int pos = 0;
            if (TryOperatorList(ref pos, isBlend: false, original, out ConjunctionNode? explicitConjunction, out _))
            {
                return explicitConjunction!;
            }

            // implicit_conjunction = [lora+] (blend | Group(prompt)) [lora+] StringEnd
            pos = 0;
            var parts = new List<object>();
            var loras = new List<object>();
            while (TryLora(ref pos, out LoraNode? lora))
            {
                loras.Add(lora!);
            }

            if (loras.Count > 0)
            {
                parts.Add(new PromptNode(new List<object>(loras)));
            }

            if (TryOperatorList(ref pos, isBlend: true, original, out _, out BlendNode? blend))
            {
                parts.Add(blend!);
            }
            else
            {
                var prompt = new List<object>();
                ParsePrompt(ref pos, prompt);
                parts.Add(new PromptNode(prompt));
            }

            loras.Clear();
            while (TryLora(ref pos, out LoraNode? lora))
            {
                loras.Add(lora!);
            }

            if (loras.Count > 0)
            {
                parts.Add(new PromptNode(new List<object>(loras)));
            }

            int end = Skip(pos);
            if (end != s.Length)
            {
                throw new ArgumentException(
                    $"compel prompt \"{original}\" could not be parsed at character {end} (\"{s.Substring(end)}\"); "
                    + "after a .blend(…) only withLora(…) may follow.",
                    nameof(original));
            }

            var weights = new List<double>(parts.Count);
            for (int i = 0; i < parts.Count; i++)
            {
                weights.Add(1.0);
            }

            return new ConjunctionNode(parts, weights);
        }

        // pyparsing's default whitespace, skipped before every token.
        private static bool IsParserWhite(char c) => c is ' ' or '\n' or '\t' or '\r';

        // Python's string.whitespace (CharsNotIn in free_word and non_syntax_word).
        private static bool IsPythonWhitespace(char c) => c is ' ' or '\t' or '\n' or '\r' or '\v' or '\f';

        private int Skip(int p)
        {
            while (p < s.Length && IsParserWhite(s[p]))
            {
                p++;
            }

            return p;
        }

        private bool TryLiteral(ref int pos, string literal)
        {
            int p = Skip(pos);
            if (p + literal.Length <= s.Length && string.CompareOrdinal(s, p, literal, 0, literal.Length) == 0)
            {
                pos = p + literal.Length;
                return true;
            }

            return false;
        }

        // prompt = ZeroOrMore(swap | lora | attention | quoted | parenthesized | free_word | White().suppress())
        private void ParsePrompt(ref int pos, List<object> output)
        {
            while (true)
            {
                if (TrySwap(ref pos, out SwapNode? swap))
                {
                    output.Add(swap!);
                }
                else if (TryLora(ref pos, out LoraNode? lora))
                {
                    output.Add(lora!);
                }
                else if (TryAttention(ref pos, out AttentionNode? attention))
                {
                    output.Add(attention!);
                }
                else if (TryQuoted(ref pos, prompt: false, out List<object>? quoted))
                {
                    output.Add(quoted!);
                }
                else if (TryParenthesized(ref pos, out List<object>? parenthesized))
                {
                    output.Add(parenthesized!);
                }
                else if (TryFreeWord(ref pos, out FragmentNode? word))
                {
                    output.Add(word!);
                }
                else if (pos < s.Length && IsParserWhite(s[pos]))
                {
                    pos = Skip(pos);
                }
                else
                {
                    return;
                }
            }
        }

        // ZeroOrMore(lora | attention | swap | parenthesized | quoted | non_syntax_word [| ',' | '.'])
        private void ParseFragments(ref int pos, bool includeCommasAndPeriods, List<object> output)
        {
            while (true)
            {
                if (TryLora(ref pos, out LoraNode? lora))
                {
                    output.Add(lora!);
                }
                else if (TryAttention(ref pos, out AttentionNode? attention))
                {
                    output.Add(attention!);
                }
                else if (TrySwap(ref pos, out SwapNode? swap))
                {
                    output.Add(swap!);
                }
                else if (TryParenthesized(ref pos, out List<object>? parenthesized))
                {
                    output.Add(parenthesized!);
                }
                else if (TryQuoted(ref pos, prompt: false, out List<object>? quoted))
                {
                    output.Add(quoted!);
                }
                else if (TryNonSyntaxWord(ref pos, out FragmentNode? word))
                {
                    output.Add(word!);
                }
                else if (includeCommasAndPeriods && (TryLiteral(ref pos, ",") || TryLiteral(ref pos, ".")))
                {
                    output.Add(new FragmentNode(s[pos - 1].ToString()));
                }
                else
                {
                    return;
                }
            }
        }

        // non_syntax_word: Combine(OneOrMore(escaped syntactic | [+-] not before white/syntactic/end | -?digits | other char))
        private bool TryNonSyntaxWord(ref int pos, out FragmentNode? word)
        {
            word = null;
            int p = Skip(pos);
            int start = p;
            var text = new StringBuilder();
            while (p < s.Length)
            {
                char c = s[p];
                if (c == '\\' && p + 1 < s.Length && Syntactic.Contains(s[p + 1], StringComparison.Ordinal))
                {
                    text.Append(c).Append(s[p + 1]);
                    p += 2;
                }
                else if (c is '+' or '-')
                {
                    if (p + 1 < s.Length && !IsParserWhite(s[p + 1]) && !Syntactic.Contains(s[p + 1], StringComparison.Ordinal))
                    {
                        text.Append(c);
                        p++;
                    }
                    else
                    {
                        break;
                    }
                }
                else if (!IsPythonWhitespace(c) && !Syntactic.Contains(c, StringComparison.Ordinal))
                {
                    text.Append(c);
                    p++;
                }
                else
                {
                    break;
                }
            }

            if (p == start)
            {
                return false;
            }

            word = new FragmentNode(text.ToString());
            pos = p;
            return true;
        }

        // free_word = CharsNotIn(string.whitespace)
        private bool TryFreeWord(ref int pos, out FragmentNode? word)
        {
            word = null;
            int p = Skip(pos);
            int start = p;
            while (p < s.Length && !IsPythonWhitespace(s[p]))
            {
                p++;
            }

            if (p == start)
            {
                return false;
            }

            word = new FragmentNode(s.Substring(start, p - start));
            pos = p;
            return true;
        }

        // quoted_fragment / quoted_prompt: the string's content re-parsed with fragment_including_commas_or_periods
        // (or with prompt) up to its end; a content that does not parse makes the alternative fail.
        private bool TryQuoted(ref int pos, bool prompt, out List<object>? result)
        {
            result = null;
            int p = Skip(pos);
            if (p >= s.Length || s[p] != '"')
            {
                return false;
            }

            Match m = s_quoted.Match(s, p);
            if (!m.Success)
            {
                return false;
            }

            string content = m.Value.Substring(1, m.Value.Length - 2);
            if (content.Contains('\\', StringComparison.Ordinal))
            {
                // QuotedString's convertWhitespaceEscapes
                content = content.Replace("\\t", "\t", StringComparison.Ordinal).Replace("\\n", "\n", StringComparison.Ordinal)
                    .Replace("\\f", "\f", StringComparison.Ordinal).Replace("\\r", "\r", StringComparison.Ordinal);
            }

            content = content.Replace("\\\"", "\"", StringComparison.Ordinal);

            // parse_fragment_str(in_quotes=True)
            if (IsBlank(content))
            {
                result = new List<object> { new FragmentNode(string.Empty) };
            }
            else
            {
                content = content.Replace("\"", "\\\"", StringComparison.Ordinal);
                var inner = new Parser(content);
                var parsed = new List<object>();
                int q = 0;
                if (prompt)
                {
                    inner.ParsePrompt(ref q, parsed);
                }
                else
                {
                    inner.ParseFragments(ref q, includeCommasAndPeriods: true, parsed);
                }

                if (inner.Skip(q) != content.Length)
                {
                    return false;
                }

                result = parsed;
            }

            pos = m.Index + m.Length;
            return true;
        }

        // parenthesized_fragment = "(" fragment_including_commas_or_periods ")"
        private bool TryParenthesized(ref int pos, out List<object>? result)
        {
            result = null;
            int p = pos;
            if (!TryLiteral(ref p, "("))
            {
                return false;
            }

            var inner = new List<object>();
            ParseFragments(ref p, includeCommasAndPeriods: true, inner);
            if (!TryLiteral(ref p, ")"))
            {
                return false;
            }

            result = inner;
            pos = p;
            return true;
        }

        // potential_operator_target = quoted_fragment | parenthesized_fragment | non_syntax_word
        private bool TryOperatorTarget(ref int pos, out List<object>? target)
        {
            if (TryQuoted(ref pos, prompt: false, out target) || TryParenthesized(ref pos, out target))
            {
                return true;
            }

            if (TryNonSyntaxWord(ref pos, out FragmentNode? word))
            {
                target = new List<object> { word! };
                return true;
            }

            return false;
        }

        // attention = attention_explicit | attention_implicit
        private bool TryAttention(ref int pos, out AttentionNode? attention)
        {
            attention = null;

            // target ".attend" "(" (Word('+') | Word('-') | number) ")"
            int p = pos;
            if (TryOperatorTarget(ref p, out List<object>? target) && TryLiteral(ref p, ".attend") && TryLiteral(ref p, "(")
                && TryWeightOperator(ref p, signsOnly: false, out double weight) && TryLiteral(ref p, ")"))
            {
                attention = new AttentionNode(weight, target!);
                pos = p;
                return true;
            }

            // (quoted | parenthesized) NotAny(White) (Word('+') | Word('-') | number)
            p = pos;
            if ((TryQuoted(ref p, prompt: false, out target) || TryParenthesized(ref p, out target))
                && !(p < s.Length && IsParserWhite(s[p])) && TryWeightOperator(ref p, signsOnly: false, out weight))
            {
                attention = new AttentionNode(weight, target!);
                pos = p;
                return true;
            }

            // non_syntax_word NotAny(White) (Word('+') | Word('-'))
            p = pos;
            if (TryNonSyntaxWord(ref p, out FragmentNode? word) && !(p < s.Length && IsParserWhite(s[p]))
                && TryWeightOperator(ref p, signsOnly: true, out weight))
            {
                attention = new AttentionNode(weight, new List<object> { word! });
                pos = p;
                return true;
            }

            return false;
        }

        // Word('+') → 1.1ⁿ, Word('-') → 0.9ⁿ (make_operator_object: pow(base, len)), else a number.
        private bool TryWeightOperator(ref int pos, bool signsOnly, out double weight)
        {
            weight = 0;
            int p = Skip(pos);
            if (p < s.Length && s[p] is '+' or '-')
            {
                char sign = s[p];
                int start = p;
                while (p < s.Length && s[p] == sign)
                {
                    p++;
                }

                weight = Math.Pow(sign == '+' ? PlusBase : MinusBase, p - start);
                pos = p;
                return true;
            }

            if (signsOnly)
            {
                return false;
            }

            return TryNumber(ref pos, out weight, out _);
        }

        // number = pyparsing_common.real (r"[+-]?(?:\d+\.\d*|\.\d+)") | Combine(Optional("-") + Word(nums)), as float
        private bool TryNumber(ref int pos, out double value, out string text)
        {
            value = 0;
            text = string.Empty;
            int p = Skip(pos);
            int start = p;

            // real
            int q = p;
            if (q < s.Length && s[q] is '+' or '-')
            {
                q++;
            }

            int intDigits = 0;
            while (q < s.Length && char.IsDigit(s[q]))
            {
                q++;
                intDigits++;
            }

            if (q < s.Length && s[q] == '.')
            {
                int fracStart = q + 1;
                int r = fracStart;
                while (r < s.Length && char.IsDigit(s[r]))
                {
                    r++;
                }

                if (intDigits > 0 || r > fracStart)
                {
                    text = s.Substring(start, r - start);
                    PromptNumbers.TryParsePythonFloat(text, out value);
                    pos = r;
                    return true;
                }
            }

            // Combine(Optional("-") + Word(nums))
            q = p;
            if (q < s.Length && s[q] == '-')
            {
                q++;
            }

            int digitsStart = q;
            while (q < s.Length && char.IsAsciiDigit(s[q]))
            {
                q++;
            }

            if (q == digitsStart)
            {
                return false;
            }

            text = s.Substring(start, q - start);
            value = double.Parse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture);
            pos = q;
            return true;
        }

        // keyword = Word(alphanums + '_' + '-')
        private bool TryKeyword(ref int pos, out string keyword)
        {
            keyword = string.Empty;
            int p = Skip(pos);
            int start = p;
            while (p < s.Length && (char.IsAsciiLetterOrDigit(s[p]) || s[p] is '_' or '-'))
            {
                p++;
            }

            if (p == start)
            {
                return false;
            }

            keyword = s.Substring(start, p - start);
            pos = p;
            return true;
        }

        // option = Group(keyword "=" (number | keyword) | number → str | keyword)
        private bool TryOption(ref int pos, out OptionNode? option)
        {
            option = null;
            int p = pos;
            if (TryKeyword(ref p, out string key) && TryLiteral(ref p, "=")
                && (TryNumber(ref p, out _, out _) || TryKeyword(ref p, out _)))
            {
                option = new OptionNode(key, null);
                pos = p;
                return true;
            }

            p = pos;
            if (TryNumber(ref p, out double number, out _))
            {
                option = new OptionNode(number.ToString("R", CultureInfo.InvariantCulture), number);
                pos = p;
                return true;
            }

            p = pos;
            if (TryKeyword(ref p, out key))
            {
                option = new OptionNode(key, null);
                pos = p;
                return true;
            }

            return false;
        }

        // options = Optional(DelimitedList(option))
        private List<OptionNode> ParseOptions(ref int pos)
        {
            var options = new List<OptionNode>();
            if (!TryOption(ref pos, out OptionNode? option))
            {
                return options;
            }

            options.Add(option!);
            while (true)
            {
                int p = pos;
                if (TryLiteral(ref p, ",") && TryOption(ref p, out option))
                {
                    options.Add(option!);
                    pos = p;
                }
                else
                {
                    return options;
                }
            }
        }

        // cross_attention_substitute = target ".swap" "(" fragment_excluding_commas ["," options] ")"
        private bool TrySwap(ref int pos, out SwapNode? swap)
        {
            swap = null;
            int p = pos;
            if (!TryOperatorTarget(ref p, out List<object>? target) || !TryLiteral(ref p, ".swap") || !TryLiteral(ref p, "("))
            {
                return false;
            }

            var edited = new List<object>();
            ParseFragments(ref p, includeCommasAndPeriods: false, edited);
            int q = p;
            if (TryLiteral(ref q, ","))
            {
                ParseOptions(ref q);
                p = q;
            }

            if (!TryLiteral(ref p, ")"))
            {
                return false;
            }

            swap = new SwapNode(target!, edited);
            pos = p;
            return true;
        }

        // lora_weight = ("useLora" | "withLora") "(" keyword ["," number] ")"
        private bool TryLora(ref int pos, out LoraNode? lora)
        {
            lora = null;
            int p = pos;
            if (!(TryLiteral(ref p, "useLora") || TryLiteral(ref p, "withLora")) || !TryLiteral(ref p, "(")
                || !TryKeyword(ref p, out string model))
            {
                return false;
            }

            int q = p;
            if (TryLiteral(ref q, ",") && TryNumber(ref q, out _, out _))
            {
                p = q;
            }

            if (!TryLiteral(ref p, ")"))
            {
                return false;
            }

            lora = new LoraNode(model);
            pos = p;
            return true;
        }

        // blend / explicit_conjunction = "(" DelimitedList(target | quoted_prompt, min=1) ")" (".blend" | ".and" | ".add") "(" options ")"
        private bool TryOperatorList(ref int pos, bool isBlend, string original, out ConjunctionNode? conjunction, out BlendNode? blend)
        {
            conjunction = null;
            blend = null;
            int p = pos;
            if (!TryLiteral(ref p, "("))
            {
                return false;
            }

            var prompts = new List<PromptNode>();
            while (true)
            {
                if (TryOperatorTarget(ref p, out List<object>? target) || TryQuoted(ref p, prompt: true, out target))
                {
                    prompts.Add(new PromptNode(target!));
                }
                else
                {
                    return false;
                }

                int q = p;
                if (!TryLiteral(ref q, ","))
                {
                    break;
                }

                int r = q;
                if (!TryOperatorTarget(ref r, out _) && !TryQuoted(ref r, prompt: true, out _))
                {
                    break;
                }

                p = q;
            }

            if (!TryLiteral(ref p, ")"))
            {
                return false;
            }

            bool matched = isBlend ? TryLiteral(ref p, ".blend") : TryLiteral(ref p, ".and") || TryLiteral(ref p, ".add");
            if (!matched || !TryLiteral(ref p, "("))
            {
                return false;
            }

            List<OptionNode> options = ParseOptions(ref p);
            if (!TryLiteral(ref p, ")"))
            {
                return false;
            }

            bool normalize = true;
            if (isBlend && options.Count > 0 && options[^1].First == "no_normalize")
            {
                normalize = false;
                options.RemoveAt(options.Count - 1);
            }

            var weights = new List<double>(options.Count);
            foreach (OptionNode option in options)
            {
                if (option.Number is double number)
                {
                    weights.Add(number);
                }
                else if (PromptNumbers.TryParsePythonFloat(option.First, out double parsed))
                {
                    weights.Add(parsed);
                }
                else
                {
                    throw new ArgumentException(
                        $"compel prompt \"{original}\": the {(isBlend ? ".blend" : ".and")} weight '{option.First}' is not a number.",
                        nameof(original));
                }
            }

            if (weights.Count == 0)
            {
                for (int i = 0; i < prompts.Count; i++)
                {
                    weights.Add(1.0);
                }
            }
            else if (weights.Count != prompts.Count)
            {
                throw new ArgumentException(
                    $"compel prompt \"{original}\": {(isBlend ? ".blend" : ".and")}() lists {prompts.Count} prompts but {weights.Count} weights.",
                    nameof(original));
            }

            if (isBlend)
            {
                blend = new BlendNode(prompts, weights, normalize);
            }
            else
            {
                conjunction = new ConjunctionNode(prompts.ConvertAll(x => (object)x), weights);
            }

            pos = p;
            return true;
        }
    }
}
