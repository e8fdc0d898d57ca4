using System;
using System.Collections.Generic;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// Encodes one row's prompt and negative prompt in A1111's syntax (<see cref="PromptSyntax.A1111"/>) into the
/// [2, T, D] states and [2, P] pooled vectors of the EncodePrompt stage, as A1111's
/// <c>FrozenCLIPEmbedderWithCustomWordsBase.forward</c> and <c>CFGDenoiser.pad_cond_uncond</c> do:
/// <list type="number">
/// <item>each text is cut into chunks with each encoder's own tokenizer (<see cref="A1111PromptChunker"/>; an encoder
/// whose pad id differs from EOS gets <see cref="A1111PromptChunker.ApplyPadToken"/>, A1111's <c>process_tokens</c>);</item>
/// <item>every chunk is encoded on its own (the chunks of one text in one ONNX call) and the states are concatenated on
/// the token axis;</item>
/// <item>the emphasis (<see cref="PromptWeighting.Apply"/>) is applied per chunk and per encoder — A1111's SDXL
/// conditioner runs one custom-words embedder per text encoder, each applying emphasis to its own states before the
/// feature-axis concatenation;</item>
/// <item>the pooled vector is the first chunk's, unweighted (A1111 returns <c>zs[0].pooled</c>, kept from before the
/// emphasis);</item>
/// <item>the shorter of prompt and negative prompt gets the empty prompt's encoded chunk appended until the token
/// counts match (<see cref="ConditioningPadding.EmptyChunksToAdd"/>, A1111's "pad prompt/negative prompt" option;
/// with it off A1111 runs the two in separate UNet calls, which the stage's [2, T, D] layout does not express).</item>
/// </list>
/// "No negative prompt" on a folder that sets <c>force_zeros_for_empty_prompt</c> is one chunk of zeros and a zero
/// pooled vector, as A1111's SDXL <c>get_learned_conditioning</c> zeroes the text embedders for an all-empty negative
/// batch; elsewhere it is the empty prompt, which A1111 encodes as one chunk.
/// </summary>
internal sealed class A1111PromptEncoding
{
    /// <summary>
    /// The step count the schedule is probed at: the stage does not know the denoiser's step count, so a text whose
    /// schedule has more than one entry at this many steps uses prompt editing or alternation, which needs the denoiser
    /// to switch conditionings (not wired: the stage reports it instead of encoding one entry silently).
    /// </summary>
    private const int ScheduleProbeSteps = 1000;

    private readonly TextEncoderRunner _runner;
    private readonly A1111PromptChunker[] _chunkers;
    private readonly PromptEmphasis _emphasis;
    private readonly int _maxChunks;
    private readonly bool _forceZeros;
    private readonly int _length;
    private readonly int _hidden;
    private readonly int _pooledSize;
    private readonly int _batchSize;
    private readonly bool _pad;
    private float[]? _emptyStates;
    private float[]? _emptyPooled;
    private bool _emptyFinite;
    private int[] _ids = Array.Empty<int>();
    private float[] _chunkPooled = Array.Empty<float>();
    private float[] _scratch = Array.Empty<float>();

    /// <summary>Creates the recipe on a text-encoder runner.</summary>
    /// <param name="runner">The text encoder(s).</param>
    /// <param name="emphasis">The emphasis mode.</param>
    /// <param name="maxChunks">The most chunks a text may use (1 when the UNet fixes the sequence axis to 77).</param>
    /// <param name="pooledSize">The pooled width written (0: none).</param>
    /// <param name="forceZeros">Whether "no negative prompt" is zeros (<c>force_zeros_for_empty_prompt</c>).</param>
    /// <param name="batchSize">Chunks per text-encoder call.</param>
    /// <param name="pad">Pad the shorter of prompt and negative prompt with empty chunks (<c>pad_cond_uncond</c>); false: refuse the row.</param>
    public A1111PromptEncoding(TextEncoderRunner runner, PromptEmphasis emphasis, int maxChunks, int pooledSize, bool forceZeros, int batchSize, bool pad = true)
    {
        _pad = pad;
        _runner = runner;
        _emphasis = emphasis;
        _maxChunks = maxChunks;
        _pooledSize = pooledSize;
        _forceZeros = forceZeros;
        _batchSize = Math.Max(1, batchSize);
        _length = runner.SequenceLength;
        _hidden = runner.HiddenSize;
        _chunkers = new A1111PromptChunker[runner.EncoderCount];
        for (int e = 0; e < _chunkers.Length; e++)
            _chunkers[e] = new A1111PromptChunker(runner.TokenizerOf(e));
    }

    /// <summary>
    /// Encodes one row: <paramref name="embeddings"/> receives [2, T, D] (negative, then prompt; T a multiple of 77) and,
    /// when pooled vectors are written, <paramref name="pooled"/> receives [2, P]. Both arrays are reused when they have
    /// the right length.
    /// </summary>
    /// <param name="prompt">The prompt.</param>
    /// <param name="negative">The negative prompt; null: none.</param>
    /// <param name="row">The row, for messages.</param>
    /// <param name="steps">The sampling steps the prompt-editing schedule is computed for (A1111's steps setting); null:
    /// AND, part weights and prompt editing are refused, as the stage has no schedule column to carry them.</param>
    /// <param name="embeddings">Receives [2, T, D], or with a schedule [1 + K, T, D]: the negative prompt's states, then
    /// the K conditionings the schedule numbers (<see cref="ConditioningSchedule.FromPlan"/>).</param>
    /// <param name="pooled">Receives [2, P] when pooled vectors are written.</param>
    /// <returns>Null for an ordinary prompt (the output is then exactly what it is without <paramref name="steps"/>); else the
    /// schedule the denoiser follows.</returns>
    /// <exception cref="ArgumentException">A weight in the text is not a number, or the text needs more chunks than allowed.</exception>
    /// <exception cref="NotSupportedException">The text uses <c>AND</c>, a part weight or prompt editing and no step count
    /// is given, or the negative prompt uses prompt editing.</exception>
    public ConditioningSchedule? Encode(string prompt, string? negative, long row, int? steps, ref float[]? embeddings, ref float[]? pooled)
    {
        EnsureEmpty();
        if (steps is int n && PlanScheduled(prompt, row, n) is { } plan)
        {
            EncodeScheduled(plan, negative, row, n, ref embeddings);
            return ConditioningSchedule.FromPlan(plan, n);
        }

        var (condStates, condPooled) = EncodeText(prompt, negative: false, row, steps: steps ?? ScheduleProbeSteps);
        var (uncondStates, uncondPooled) = EncodeNegative(negative, row, steps);

        int per = _length * _hidden;
        var (addCond, addUncond) = ConditioningPadding.EmptyChunksToAdd(condStates.Length / _hidden, uncondStates.Length / _hidden, _length);
        ConditioningPadding.ThrowIfUnpadded(_pad, condStates.Length / _hidden, uncondStates.Length / _hidden, _length, row);
        if (addCond + addUncond > 0 && !_emptyFinite)
            ThrowIfNotFinite(_emptyStates, row, "empty prompt that pads the shorter side", 0);
        int total = condStates.Length + (addCond * per);
        if (embeddings is null || embeddings.Length != 2 * total)
            embeddings = new float[2 * total];
        ConditioningPadding.AppendEmptyChunks(uncondStates, _emptyStates!, addUncond, embeddings.AsSpan(0, total));
        ConditioningPadding.AppendEmptyChunks(condStates, _emptyStates!, addCond, embeddings.AsSpan(total, total));
        if (_pooledSize > 0)
        {
            if (pooled is null || pooled.Length != 2 * _pooledSize)
                pooled = new float[2 * _pooledSize];
            uncondPooled.CopyTo(pooled, 0);
            condPooled.CopyTo(pooled, _pooledSize);
        }

        return null;
    }

    /// <summary>"No negative prompt" (zeros on a <c>force_zeros_for_empty_prompt</c> folder) or the negative prompt's states.</summary>
    private (float[] States, float[] Pooled) EncodeNegative(string? negative, long row, int? steps)
    {
        if (negative is null && _forceZeros)
            return (new float[_length * _hidden], new float[_pooledSize]);
        return EncodeText(negative ?? string.Empty, negative: true, row, steps: steps ?? ScheduleProbeSteps);
    }

    /// <summary>The prompt's plan for <paramref name="steps"/> when it needs the denoiser to switch or sum conditionings; null for an ordinary prompt.</summary>
    private A1111PromptPlan? PlanScheduled(string prompt, long row, int steps)
    {
        A1111PromptPlan plan;
        try
        {
            plan = A1111PromptPlan.ForPrompt(prompt, steps, _chunkers[0], _emphasis);
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"Row {row}: the prompt is not valid A1111 syntax: {ex.Message}", ex);
        }

        if (plan.Parts.Count == 1 && plan.Parts[0].Weight == 1.0 && plan.Texts[0].Schedule.Count == 1)
            return null;
        if (_chunkers.Length != 1 || _pooledSize > 0)
        {
            throw new NotSupportedException(
                $"Row {row}: the prompt uses AND, a part weight or prompt editing, which this library runs for models with one text encoder "
                + "and no pooled output only (SDXL's pooled text_embeds would have to switch with each conditioning).");
        }

        return plan;
    }

    /// <summary>
    /// A scheduled prompt (AND parts, part weights, <c>[a:b:n]</c>, <c>[a|b]</c>) into [1 + K, T, D], as A1111 prepares what
    /// <c>CFGDenoiser.forward</c> reads: every distinct text's schedule entries encoded together chunk by chunk (the
    /// "Original" emphasis mean taken over that batch, <c>FrozenCLIPEmbedderWithCustomWordsBase.forward</c>), the texts
    /// stacked to the longest by repeating their last token state (<c>stack_conds</c>), then the conditionings and the
    /// negative prompt lined up with the empty prompt's chunks (<c>pad_cond_uncond</c>). The step never changes T: every
    /// part is present at every call and a text's entries share its chunk count.
    /// </summary>
    private void EncodeScheduled(A1111PromptPlan plan, string? negative, long row, int steps, ref float[]? embeddings)
    {
        var (uncondStates, _) = EncodeNegative(negative, row, steps);
        int per = _length * _hidden;
        var texts = new float[plan.Texts.Count][];
        int condTokens = 0, conditionings = 0;
        for (int t = 0; t < texts.Length; t++)
        {
            A1111PlannedText text = plan.Texts[t];
            if (text.ChunkCount > _maxChunks)
            {
                throw new ArgumentOutOfRangeException(nameof(PromptEncodingSettings.MaxWindows),
                    $"Row {row}: the prompt's text '{text.Text}' needs {text.ChunkCount} chunks of 75 tokens, more than the {_maxChunks} allowed (EncodePromptOptions.MaxWindows, "
                    + "or 1 when the UNet fixes its encoder_hidden_states sequence axis).");
            }

            texts[t] = EncodeEntries(text, row);
            condTokens = Math.Max(condTokens, text.ChunkCount * _length);
            conditionings += text.Schedule.Count;
        }

        var (addCond, addUncond) = ConditioningPadding.EmptyChunksToAdd(condTokens, uncondStates.Length / _hidden, _length);
        ConditioningPadding.ThrowIfUnpadded(_pad, condTokens, uncondStates.Length / _hidden, _length, row);
        if (addCond + addUncond > 0 && !_emptyFinite)
            ThrowIfNotFinite(_emptyStates, row, "empty prompt that pads the shorter side", 0);
        int total = (condTokens + (addCond * _length)) * _hidden;
        if (embeddings is null || embeddings.Length != (1 + conditionings) * total)
            embeddings = new float[(1 + conditionings) * total];
        ConditioningPadding.AppendEmptyChunks(uncondStates, _emptyStates!, addUncond, embeddings.AsSpan(0, total));
        var stacked = new float[condTokens * _hidden];
        int k = 1;
        for (int t = 0; t < texts.Length; t++)
        {
            A1111PlannedText text = plan.Texts[t];
            int entryLength = text.ChunkCount * per;
            for (int e = 0; e < text.Schedule.Count; e++, k++)
            {
                ReadOnlySpan<float> states = texts[t].AsSpan(e * entryLength, entryLength);
                if (entryLength < stacked.Length)
                {
                    ConditioningPadding.RepeatLastToken(states, _hidden, stacked);
                    states = stacked;
                }

                ConditioningPadding.AppendEmptyChunks(states, _emptyStates!, addCond, embeddings.AsSpan(k * total, total));
            }
        }
    }

    /// <summary>
    /// One text's schedule entries, [entries, chunks·77, D]: chunk c of every entry in one batch, weighted over that batch
    /// (A1111's <c>z.mean()</c> is over the batch of texts encoded together).
    /// </summary>
    private float[] EncodeEntries(A1111PlannedText text, long row)
    {
        int entries = text.Schedule.Count, chunks = text.ChunkCount, per = _length * _hidden;
        var result = new float[entries * chunks * per];
        var ids = new int[entries * _length];
        var multipliers = new float[entries * _length];
        var batch = new float[entries * per];
        var tokenizer = _runner.TokenizerOf(0);
        for (int c = 0; c < chunks; c++)
        {
            for (int e = 0; e < entries; e++)
            {
                PromptChunk chunk = text.Chunks[e][c];
                var chunkIds = ids.AsSpan(e * _length, _length);
                chunk.Tokens.CopyTo(chunkIds);
                A1111PromptChunker.ApplyPadToken(chunkIds, tokenizer.EndTokenId, tokenizer.PadTokenId);
                chunk.Multipliers.CopyTo(multipliers.AsSpan(e * _length, _length));
            }

            for (int start = 0; start < entries; start += _batchSize)
            {
                int m = Math.Min(_batchSize, entries - start);
                _runner.Encode(ids.AsSpan(start * _length, m * _length), m, batch.AsSpan(start * per, m * per), Span<float>.Empty);
            }

            PromptWeighting.Apply(batch, _hidden, multipliers, _emphasis);
            ThrowIfNotFinite(batch, row, "prompt", c);
            for (int e = 0; e < entries; e++)
                batch.AsSpan(e * per, per).CopyTo(result.AsSpan(((e * chunks) + c) * per, per));
        }

        return result;
    }

    /// <summary>The empty prompt's chunk (A1111's <c>cond_stage_model_empty_prompt</c>): what pads the shorter side.</summary>
    private void EnsureEmpty()
    {
        if (_emptyStates is not null)
            return;
        (_emptyStates, _emptyPooled) = EncodeText(string.Empty, negative: false, row: -1, check: false);
        _emptyFinite = Array.TrueForAll(_emptyStates, float.IsFinite);
    }

    /// <summary>Plans, chunks, encodes and weights one text: states [chunks·77, D] and the first chunk's pooled vector.</summary>
    private (float[] States, float[] Pooled) EncodeText(string text, bool negative, long row, bool check = true, int steps = ScheduleProbeSteps)
    {
        string side = negative ? "negative prompt" : "prompt";
        int encoders = _chunkers.Length;
        var chunks = new IReadOnlyList<PromptChunk>[encoders];
        for (int e = 0; e < encoders; e++)
        {
            A1111PromptPlan plan;
            try
            {
                plan = negative
                    ? A1111PromptPlan.ForNegativePrompt(text, steps, _chunkers[e], _emphasis)
                    : A1111PromptPlan.ForPrompt(text, steps, _chunkers[e], _emphasis);
            }
            catch (ArgumentException ex)
            {
                throw new ArgumentException($"Row {row}: the {side} is not valid A1111 syntax: {ex.Message}", ex);
            }

            if (plan.Parts.Count != 1 || plan.Parts[0].Weight != 1.0 || plan.Texts[0].Schedule.Count != 1)
            {
                throw new NotSupportedException(negative
                    ? $"Row {row}: the negative prompt uses prompt editing ([a:b:n], [a|b]); the denoiser switches the prompt's conditionings "
                        + "only, so such a negative prompt is refused rather than encoded as one text."
                    : $"Row {row}: the prompt uses AND, a part weight (text :w) or prompt editing ([a:b:n], [a|b]); set "
                        + "EncodePromptOptions.PromptScheduleColumnName and ScheduleSteps (and DenoiseLatentsOptions.PromptScheduleColumnName) "
                        + "so that the denoiser switches and sums conditionings, else such prompts are refused rather than encoded as one text.");
            }

            chunks[e] = plan.Texts[0].Chunks[0];
        }

        int count = chunks[0].Count;
        for (int e = 1; e < encoders; e++)
        {
            if (chunks[e].Count != count)
            {
                throw new ArgumentException(
                    $"Row {row}: the {side} makes {count} chunks with the first tokenizer and {chunks[e].Count} with tokenizer {e + 1}; "
                    + "A1111 concatenates the encoders' states per token, so the tokenizers must cut it alike.");
            }
        }

        if (count > _maxChunks)
        {
            throw new ArgumentOutOfRangeException(nameof(PromptEncodingSettings.MaxWindows),
                $"Row {row}: the {side} needs {count} chunks of 75 tokens, more than the {_maxChunks} allowed (EncodePromptOptions.MaxWindows, "
                + "or 1 when the UNet fixes its encoder_hidden_states sequence axis).");
        }

        var states = new float[count * _length * _hidden];
        var pooled = new float[_pooledSize];
        EncodeChunks(chunks, count, states, pooled, row, check ? side : null);
        return (states, pooled);
    }

    /// <summary>Ids per chunk and encoder, the ONNX calls, the emphasis per chunk and encoder, the first chunk's pooled vector.</summary>
    private void EncodeChunks(IReadOnlyList<PromptChunk>[] chunks, int count, float[] states, float[] pooled, long row, string? side)
    {
        int encoders = _chunkers.Length, per = _length * _hidden, idsPer = encoders * _length;
        if (_ids.Length < count * idsPer)
            _ids = new int[count * idsPer];
        for (int c = 0; c < count; c++)
        {
            for (int e = 0; e < encoders; e++)
            {
                var ids = _ids.AsSpan(((c * encoders) + e) * _length, _length);
                chunks[e][c].Tokens.CopyTo(ids);
                var tokenizer = _runner.TokenizerOf(e);
                A1111PromptChunker.ApplyPadToken(ids, tokenizer.EndTokenId, tokenizer.PadTokenId);
            }
        }

        int pooledWidth = _runner.PooledSize ?? 0;
        if (_chunkPooled.Length < _batchSize * pooledWidth)
            _chunkPooled = new float[_batchSize * pooledWidth];
        for (int start = 0; start < count; start += _batchSize)
        {
            int m = Math.Min(_batchSize, count - start);
            _runner.Encode(_ids.AsSpan(start * idsPer, m * idsPer), m, states.AsSpan(start * per, m * per),
                pooled.Length > 0 ? _chunkPooled.AsSpan(0, m * pooledWidth) : Span<float>.Empty);
            if (start == 0 && pooled.Length > 0)
                _chunkPooled.AsSpan(0, pooled.Length).CopyTo(pooled);
        }

        for (int c = 0; c < count; c++)
        {
            var chunkStates = states.AsSpan(c * per, per);
            if (encoders == 1)
            {
                PromptWeighting.Apply(chunkStates, _hidden, chunks[0][c].Multipliers, _emphasis);
                ThrowIfNotFinite(chunkStates, row, side, c);
                continue;
            }

            // Each encoder's features of the chunk, gathered into a [77, D_e] block, weighted, and put back.
            int offset = 0;
            for (int e = 0; e < encoders; e++)
            {
                int width = _runner.HiddenSizeOf(e);
                if (_scratch.Length < _length * width)
                    _scratch = new float[_length * width];
                var block = _scratch.AsSpan(0, _length * width);
                for (int t = 0; t < _length; t++)
                    chunkStates.Slice((t * _hidden) + offset, width).CopyTo(block.Slice(t * width, width));
                PromptWeighting.Apply(block, width, chunks[e][c].Multipliers, _emphasis);
                ThrowIfNotFinite(block, row, side, c);
                for (int t = 0; t < _length; t++)
                    block.Slice(t * width, width).CopyTo(chunkStates.Slice((t * _hidden) + offset, width));
                offset += width;
            }
        }
    }

    /// <summary>
    /// "Original" rescales a chunk by mean-before ÷ mean-after; a text encoder whose states average to exactly 0 (the
    /// Shapes model's attribute table) makes that 0/0 — NaN in A1111 too. Said here, naming the row, instead of as a
    /// non-finite UNet result steps later.
    /// </summary>
    private void ThrowIfNotFinite(ReadOnlySpan<float> values, long row, string? side, int chunk)
    {
        if (side is null)
            return;
        foreach (float v in values)
        {
            if (!float.IsFinite(v))
            {
                throw new InvalidOperationException(
                    $"Row {row}: A1111's {_emphasis} emphasis made chunk {chunk + 1} of the {side} non-finite: it rescales by the chunk's "
                    + "mean before ÷ after weighting, and this text encoder's states average to 0 (as A1111 would, it divides by zero). "
                    + "Use PromptEmphasis.NoNorm or Ignore with this model.");
            }
        }
    }
}
