using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// One distinct text of an A1111 prompt (one AND part) with its prompt-editing schedule and, for every schedule
/// entry, its chunks — all entries padded to the same chunk count with <see cref="A1111PromptChunker.EmptyChunk"/>,
/// because A1111 encodes the schedule texts of one part together (<c>FrozenCLIPEmbedderWithCustomWordsBase.forward</c>).
/// </summary>
internal sealed class A1111PlannedText
{
    internal A1111PlannedText(string text, IReadOnlyList<ScheduledPrompt> schedule, IReadOnlyList<IReadOnlyList<PromptChunk>> chunks, int chunkCount)
    {
        Text = text;
        Schedule = schedule;
        Chunks = chunks;
        ChunkCount = chunkCount;
    }

    /// <summary>The part's text before scheduling.</summary>
    public string Text { get; }

    /// <summary>The schedule (one entry when the text has no <c>[a:b:n]</c> or <c>[a|b]</c>).</summary>
    public IReadOnlyList<ScheduledPrompt> Schedule { get; }

    /// <summary><c>Chunks[entry][chunk]</c>: every entry has <see cref="ChunkCount"/> chunks.</summary>
    public IReadOnlyList<IReadOnlyList<PromptChunk>> Chunks { get; }

    /// <summary>Chunks per entry; the states of an entry are <c>ChunkCount × 77</c> tokens long.</summary>
    public int ChunkCount { get; }

    /// <summary>The schedule entry used at a denoiser call (0-based), A1111's <c>reconstruct_cond_batch</c> rule.</summary>
    /// <param name="denoiserCall">The 0-based call index.</param>
    /// <returns>The index into <see cref="Schedule"/> and <see cref="Chunks"/>.</returns>
    public int EntryAt(int denoiserCall) => A1111PromptSchedule.IndexAtStep(Schedule, denoiserCall);
}

/// <summary>
/// Everything the encoding recipe needs to encode one prompt (or negative prompt) in A1111's syntax and the denoiser
/// needs to pick its conditioning at each call — the single entry point of the wiring round for
/// <see cref="PromptSyntax.A1111"/>.
/// </summary>
/// <remarks>
/// <para>The recipe, step by step (each step is A1111's, cited where it is implemented):</para>
/// <list type="number">
/// <item>For each <see cref="Texts"/> entry and each chunk index <i>c</i>: encode the rows <c>Chunks[e][c]</c> of all
/// schedule entries <i>e</i> as one batch (after <see cref="A1111PromptChunker.ApplyPadToken"/> for encoders whose pad
/// differs from EOS), then <see cref="PromptWeighting.Apply"/> over that batch's states with the rows' multipliers
/// (A1111 takes the "Original" mean over that batch). Concatenate the chunks of an entry on the token axis.</item>
/// <item>At denoiser call <i>s</i>: each part <see cref="Parts"/>[k] uses entry <c>Texts[TextIndex].EntryAt(s)</c>;
/// parts of different lengths are stacked with <see cref="ConditioningPadding.RepeatLastToken"/>.</item>
/// <item>The negative prompt (planned with <see cref="ForNegativePrompt"/>: no AND) and the prompt are lined up with
/// <see cref="ConditioningPadding.EmptyChunksToAdd"/> and <see cref="ConditioningPadding.AppendEmptyChunks"/>, using the
/// encoded states of the empty prompt (one chunk, from <c>TokenizeLine("")</c>).</item>
/// <item>Guidance with AND: <c>uncond + Σ_k (cond_k − uncond) · weight_k · cfg_scale</c> (<c>combine_denoised</c>);
/// with one part of weight 1 this is ordinary classifier-free guidance.</item>
/// </list>
/// <para>SDXL: both text encoders get the same chunks (the second with its own pad id); the pooled output is the
/// first chunk's (A1111 returns <c>zs[0].pooled</c>).</para>
/// </remarks>
internal sealed class A1111PromptPlan
{
    private A1111PromptPlan(IReadOnlyList<A1111PlannedText> texts, IReadOnlyList<ConjunctionPart> parts, PromptEmphasis emphasis)
    {
        Texts = texts;
        Parts = parts;
        Emphasis = emphasis;
    }

    /// <summary>The distinct texts to encode.</summary>
    public IReadOnlyList<A1111PlannedText> Texts { get; }

    /// <summary>The AND parts in order, each naming its text and weight (one part of weight 1 without AND).</summary>
    public IReadOnlyList<ConjunctionPart> Parts { get; }

    /// <summary>The emphasis mode the chunks were made for (and that <see cref="PromptWeighting.Apply"/> should use).</summary>
    public PromptEmphasis Emphasis { get; }

    /// <summary>Plans a prompt: split at <c>AND</c>, each part scheduled for <paramref name="steps"/> and chunked.</summary>
    /// <param name="prompt">The prompt.</param>
    /// <param name="steps">The sampling steps the schedule is computed for (A1111 uses the steps setting).</param>
    /// <param name="chunker">The chunker over the encoder's tokenizer.</param>
    /// <param name="emphasis">The emphasis mode.</param>
    /// <returns>The plan.</returns>
    /// <exception cref="ArgumentException">An attention weight is not a number.</exception>
    public static A1111PromptPlan ForPrompt(string prompt, int steps, A1111PromptChunker chunker, PromptEmphasis emphasis)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        A1111Conjunction conjunction = A1111Conjunction.Split(prompt);
        return Create(conjunction.Texts, conjunction.Parts, steps, chunker, emphasis);
    }

    /// <summary>
    /// Plans a negative prompt: scheduled and chunked but not split at <c>AND</c> (A1111 encodes the negative prompt with
    /// <c>get_learned_conditioning</c>, where <c>AND</c> is ordinary text).
    /// </summary>
    /// <param name="negativePrompt">The negative prompt (empty for none).</param>
    /// <param name="steps">The sampling steps.</param>
    /// <param name="chunker">The chunker.</param>
    /// <param name="emphasis">The emphasis mode.</param>
    /// <returns>The plan, with one part of weight 1.</returns>
    /// <exception cref="ArgumentException">An attention weight is not a number.</exception>
    public static A1111PromptPlan ForNegativePrompt(string negativePrompt, int steps, A1111PromptChunker chunker, PromptEmphasis emphasis)
    {
        ArgumentNullException.ThrowIfNull(negativePrompt);
        return Create(new[] { negativePrompt }, new[] { new ConjunctionPart(0, 1.0) }, steps, chunker, emphasis);
    }

    private static A1111PromptPlan Create(
        IReadOnlyList<string> texts, IReadOnlyList<ConjunctionPart> parts, int steps, A1111PromptChunker chunker, PromptEmphasis emphasis)
    {
        ArgumentNullException.ThrowIfNull(chunker);
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        var planned = new A1111PlannedText[texts.Count];
        for (int t = 0; t < texts.Count; t++)
        {
            IReadOnlyList<ScheduledPrompt> schedule = A1111PromptSchedule.Get(texts[t], steps);
            var entries = new List<PromptChunk>[schedule.Count];
            int chunkCount = 0;
            for (int e = 0; e < schedule.Count; e++)
            {
                entries[e] = new List<PromptChunk>(chunker.TokenizeLine(schedule[e].Text, emphasis).Chunks);
                chunkCount = Math.Max(chunkCount, entries[e].Count);
            }

            foreach (List<PromptChunk> entry in entries)
            {
                while (entry.Count < chunkCount)
                {
                    entry.Add(chunker.EmptyChunk());
                }
            }

            planned[t] = new A1111PlannedText(texts[t], schedule, entries, chunkCount);
        }

        return new A1111PromptPlan(planned, parts, emphasis);
    }
}
