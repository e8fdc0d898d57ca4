using System;
using System.Collections.Generic;
using System.Text;

namespace MLNet.Diffusion.Prompting;

/// <summary>One entry of a prompt schedule: the text to encode, used up to and including step <see cref="EndAtStep"/>.</summary>
/// <param name="EndAtStep">The last step (1-based, as A1111 counts in the schedule) that uses <paramref name="Text"/>.</param>
/// <param name="Text">The prompt with every <c>[a:b:n]</c> and <c>[a|b]</c> resolved for those steps.</param>
internal readonly record struct ScheduledPrompt(int EndAtStep, string Text);

/// <summary>
/// A1111's prompt editing <c>[from:to:when]</c>, <c>[to:when]</c>, <c>[from::when]</c> and alternation
/// <c>[a|b|c]</c>, as <c>get_learned_conditioning_prompt_schedules</c> (modules/prompt_parser.py) computes them for
/// a run of N steps (no hires pass): the grammar of its lark parser, the steps each edit switches at, and the
/// text used in each span.
/// </summary>
/// <remarks>
/// <para>
/// The grammar (A1111's lark <c>schedule_parser</c>): <c>start: (prompt | /[][():]/+)*</c>;
/// <c>prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)*</c>; emphasized is <c>( prompt )</c>,
/// <c>( prompt : prompt )</c> or <c>[ prompt ]</c> and keeps its brackets in the text (weights are read later by
/// <see cref="A1111Attention"/>); <c>scheduled: "[" [prompt ":"] prompt ":" [WS] NUMBER [WS] "]"</c>;
/// <c>alternate: "[" prompt ("|" [prompt])+ "]"</c>; plain is any run without <c>\ [ ] ( ) : |</c>, or a backslash
/// and the next character (kept as written). Brackets and colons may be literal only at the top level; inside a
/// bracket construct everything must parse. A prompt that does not parse at all (a stray <c>|</c>, a trailing lone
/// backslash) is used as written for every step, as A1111 does (its <c>except lark.exceptions.LarkError</c>).
/// </para>
/// <para>
/// When: a number written with a point is a fraction of the steps (<c>0.25</c> of 20 is step 5, truncated), one
/// without is a step; either is capped at N. So <c>[a:b:5.0]</c> means 5 × N, i.e. "a" for the whole run — A1111's
/// rule since 1.6, pinned by the fixtures. A switch at a step below 1 never happens (<c>[a:b:0]</c> and
/// <c>[a:b:-1]</c> are "b" throughout). Alternation switches every step. One decision of ours: A1111 crashes on
/// an infinite number (<c>[a:b:1e999]</c>: Python's <c>int(inf)</c> raises); here +∞ counts as N and −∞ as 0.
/// </para>
/// <para>
/// One difference from the doctest published in A1111 itself: for <c>a [{b|d{:.5] c</c> its docstring expects an
/// edit at step 5, which lark 1.1.2 produced; lark 1.1.5 (Debian's, which made the fixtures) and this grammar reject
/// the prompt (<c>|</c> outside an alternation), so it is used as written — the grammar-correct answer.
/// </para>
/// </remarks>
internal static class A1111PromptSchedule
{
    /// <summary>The schedule of <paramref name="prompt"/> for <paramref name="steps"/> steps.</summary>
    /// <param name="prompt">One prompt (one AND part).</param>
    /// <param name="steps">The number of sampling steps, at least 1.</param>
    /// <returns>Entries sorted by <see cref="ScheduledPrompt.EndAtStep"/>; the last ends at <paramref name="steps"/>.</returns>
    public static IReadOnlyList<ScheduledPrompt> Get(string prompt, int steps)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);

        var root = new List<Node>();
        if (!new Parser(prompt).TryParseStart(root))
        {
            return new[] { new ScheduledPrompt(steps, prompt) };
        }

        var switchSteps = new SortedSet<int> { steps };
        foreach (Node node in root)
        {
            node.CollectSteps(steps, switchSteps);
        }

        var schedule = new ScheduledPrompt[switchSteps.Count];
        int index = 0;
        var text = new StringBuilder(prompt.Length);
        foreach (int step in switchSteps)
        {
            text.Clear();
            foreach (Node node in root)
            {
                node.AppendAt(step, text);
            }

            schedule[index++] = new ScheduledPrompt(step, text.ToString());
        }

        return schedule;
    }

    /// <summary>
    /// The entry used at <paramref name="currentStep"/>, A1111's <c>reconstruct_cond_batch</c> rule: the first entry
    /// with <c>currentStep &lt;= EndAtStep</c>, else the first.
    /// </summary>
    /// <param name="schedule">A schedule from <see cref="Get"/>.</param>
    /// <param name="currentStep">The 0-based index of the denoiser call (A1111's <c>CFGDenoiser.step</c>). Because
    /// it is 0-based and the schedule's steps are compared with <c>&lt;=</c>, <c>[a:b:3]</c> uses "a" for calls 0–3.</param>
    /// <returns>The index into <paramref name="schedule"/>.</returns>
    public static int IndexAtStep(IReadOnlyList<ScheduledPrompt> schedule, int currentStep)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        for (int i = 0; i < schedule.Count; i++)
        {
            if (currentStep <= schedule[i].EndAtStep)
            {
                return i;
            }
        }

        return 0;
    }

    private abstract class Node
    {
        public abstract void CollectSteps(int steps, SortedSet<int> switchSteps);

        public abstract void AppendAt(int step, StringBuilder text);
    }

    private sealed class TextNode(string value) : Node
    {
        public override void CollectSteps(int steps, SortedSet<int> switchSteps)
        {
        }

        public override void AppendAt(int step, StringBuilder text) => text.Append(value);
    }

    private sealed class SequenceNode(List<Node> children) : Node
    {
        public override void CollectSteps(int steps, SortedSet<int> switchSteps)
        {
            foreach (Node child in children)
            {
                child.CollectSteps(steps, switchSteps);
            }
        }

        public override void AppendAt(int step, StringBuilder text)
        {
            foreach (Node child in children)
            {
                child.AppendAt(step, text);
            }
        }
    }

    private sealed class ScheduledNode(Node? before, Node after, string number) : Node
    {
        private int _when;

        public override void CollectSteps(int steps, SortedSet<int> switchSteps)
        {
            before?.CollectSteps(steps, switchSteps);
            after.CollectSteps(steps, switchSteps);

            // CollectSteps.scheduled: a number with a point is a fraction of the steps; int() truncates; min(steps, ·).
            PromptNumbers.TryParsePythonFloat(number, out double v);
            if (number.Contains('.', StringComparison.Ordinal))
            {
                v *= steps;
            }

            double truncated = Math.Truncate(v);
            _when = truncated >= steps ? steps : truncated <= 0 ? 0 : (int)truncated;
            if (_when >= 1)
            {
                switchSteps.Add(_when);
            }
        }

        public override void AppendAt(int step, StringBuilder text)
        {
            if (step <= _when)
            {
                before?.AppendAt(step, text);
            }
            else
            {
                after.AppendAt(step, text);
            }
        }
    }

    private sealed class AlternateNode(List<Node> options) : Node
    {
        public override void CollectSteps(int steps, SortedSet<int> switchSteps)
        {
            for (int s = 1; s <= steps; s++)
            {
                switchSteps.Add(s);
            }

            foreach (Node option in options)
            {
                option.CollectSteps(steps, switchSteps);
            }
        }

        public override void AppendAt(int step, StringBuilder text) => options[(step - 1) % options.Count].AppendAt(step, text);
    }

    /// <summary>
    /// A recursive-descent reading of A1111's grammar. Inside brackets it is deterministic (the character after the
    /// first inner prompt decides: <c>]</c> emphasis, <c>|</c> alternation, <c>:</c> an edit); at the top level a
    /// bracket that does not close as a construct is a literal character — the reading lark's Earley parser chose
    /// on every fixture.
    /// </summary>
    private sealed class Parser(string s)
    {
        public bool TryParseStart(List<Node> nodes)
        {
            int i = 0;
            while (true)
            {
                i = ParsePrompt(i, nodes);
                if (i == s.Length)
                {
                    return true;
                }

                char c = s[i];
                if (c is '[' or ']' or '(' or ')' or ':')
                {
                    nodes.Add(new TextNode(c.ToString()));
                    i++;
                }
                else
                {
                    // '|' outside an alternation, or a backslash that escapes nothing: lark raises.
                    return false;
                }
            }
        }

        // prompt: (emphasized | scheduled | alternate | plain | WHITESPACE)* — greedy; returns where it stopped.
        private int ParsePrompt(int i, List<Node> nodes)
        {
            int textStart = i;
            while (i < s.Length)
            {
                char c = s[i];
                if (c == '\\')
                {
                    // plain's "\\." — '.' matches anything but a newline.
                    if (i + 1 < s.Length && s[i + 1] != '\n')
                    {
                        i += 2;
                        continue;
                    }

                    break;
                }

                if (c is '[' or '(')
                {
                    Flush(textStart, i, nodes);
                    if (!TryParseBracket(i, out Node? node, out int end))
                    {
                        return i;
                    }

                    nodes.Add(node!);
                    i = end;
                    textStart = i;
                    continue;
                }

                if (c is ']' or ')' or ':' or '|')
                {
                    break;
                }

                i++;
            }

            Flush(textStart, i, nodes);
            return i;
        }

        private void Flush(int start, int end, List<Node> nodes)
        {
            if (end > start)
            {
                nodes.Add(new TextNode(s.Substring(start, end - start)));
            }
        }

        private bool TryParseBracket(int i, out Node? node, out int end)
        {
            node = null;
            end = i;
            var first = new List<Node>();
            int j = ParsePrompt(i + 1, first);
            if (j >= s.Length)
            {
                return false;
            }

            if (s[i] == '(')
            {
                if (s[j] == ')')
                {
                    node = Emphasized("(", first, null, ")");
                    end = j + 1;
                    return true;
                }

                if (s[j] == ':')
                {
                    var second = new List<Node>();
                    int k = ParsePrompt(j + 1, second);
                    if (k < s.Length && s[k] == ')')
                    {
                        node = Emphasized("(", first, second, ")");
                        end = k + 1;
                        return true;
                    }
                }

                return false;
            }

            switch (s[j])
            {
                case ']':
                    node = Emphasized("[", first, null, "]");
                    end = j + 1;
                    return true;

                case '|':
                    var options = new List<Node> { new SequenceNode(first) };
                    while (j < s.Length && s[j] == '|')
                    {
                        var option = new List<Node>();
                        j = ParsePrompt(j + 1, option);
                        options.Add(new SequenceNode(option));
                    }

                    if (j < s.Length && s[j] == ']')
                    {
                        node = new AlternateNode(options);
                        end = j + 1;
                        return true;
                    }

                    return false;

                case ':':
                    // "[" prompt ":" prompt ":" [WS] NUMBER [WS] "]" — from, to, when
                    var to = new List<Node>();
                    int k = ParsePrompt(j + 1, to);
                    if (k < s.Length && s[k] == ':' && TryParseWhen(k + 1, out string? number, out end))
                    {
                        node = new ScheduledNode(new SequenceNode(first), new SequenceNode(to), number!);
                        return true;
                    }

                    // "[" prompt ":" [WS] NUMBER [WS] "]" — to, when
                    if (TryParseWhen(j + 1, out number, out end))
                    {
                        node = new ScheduledNode(null, new SequenceNode(first), number!);
                        return true;
                    }

                    return false;

                default:
                    return false;
            }
        }

        private static SequenceNode Emphasized(string open, List<Node> first, List<Node>? second, string close)
        {
            var children = new List<Node> { new TextNode(open) };
            children.AddRange(first);
            if (second is not null)
            {
                children.Add(new TextNode(":"));
                children.AddRange(second);
            }

            children.Add(new TextNode(close));
            return new SequenceNode(children);
        }

        // [WHITESPACE] SIGNED_NUMBER [WHITESPACE] "]" (lark common: ["+"|"-"] (FLOAT | INT), FLOAT = INT _EXP |
        // DECIMAL _EXP?, DECIMAL = INT "." INT? | "." INT, digits 0-9).
        private bool TryParseWhen(int i, out string? number, out int end)
        {
            number = null;
            end = i;
            i = SkipWhitespace(i);
            int start = i;
            if (i < s.Length && s[i] is '+' or '-')
            {
                i++;
            }

            int digits = 0;
            while (i < s.Length && char.IsAsciiDigit(s[i]))
            {
                i++;
                digits++;
            }

            if (i < s.Length && s[i] == '.')
            {
                i++;
                while (i < s.Length && char.IsAsciiDigit(s[i]))
                {
                    i++;
                    digits++;
                }
            }

            if (digits == 0)
            {
                return false;
            }

            if (i < s.Length && s[i] is 'e' or 'E')
            {
                int e = i + 1;
                if (e < s.Length && s[e] is '+' or '-')
                {
                    e++;
                }

                if (e < s.Length && char.IsAsciiDigit(s[e]))
                {
                    while (e < s.Length && char.IsAsciiDigit(s[e]))
                    {
                        e++;
                    }

                    i = e;
                }
            }

            int numberEnd = i;
            i = SkipWhitespace(i);
            if (i >= s.Length || s[i] != ']')
            {
                return false;
            }

            number = s.Substring(start, numberEnd - start);
            end = i + 1;
            return true;
        }

        private int SkipWhitespace(int i)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i]))
            {
                i++;
            }

            return i;
        }
    }
}
