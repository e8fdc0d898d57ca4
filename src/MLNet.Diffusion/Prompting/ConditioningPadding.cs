using System;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// How A1111 lines up conditionings of different token lengths (multiples of 77), as pure functions over row-major
/// <c>[tokens, D]</c> spans. There are three rules, for three situations:
/// <list type="number">
/// <item>Texts encoded together (the schedule texts of one prompt): a shorter text gets A1111's
/// <c>empty_chunk()</c> token ids (<see cref="A1111PromptChunker.EmptyChunk"/>) before encoding
/// (<c>FrozenCLIPEmbedderWithCustomWordsBase.forward</c>).</item>
/// <item>Prompt versus negative prompt (<c>CFGDenoiser.pad_cond_uncond</c>, the "pad prompt/negative prompt"
/// setting): the shorter one gets the empty prompt's encoded 77 states appended until the token counts match —
/// <see cref="EmptyChunksToAdd"/> and <see cref="AppendEmptyChunks"/>.</item>
/// <item>AND parts of different lengths (<c>prompt_parser.stack_conds</c>): the shorter part repeats its last
/// token state — <see cref="RepeatLastToken"/>.</item>
/// </list>
/// </summary>
internal static class ConditioningPadding
{
    /// <summary>
    /// <c>pad_cond_uncond</c>: how many empty-prompt chunks to append to the prompt's and to the negative prompt's
    /// states so their token counts match (one of the two is always 0).
    /// </summary>
    /// <param name="condTokens">The prompt's token count (a multiple of <paramref name="chunkTokens"/>).</param>
    /// <param name="uncondTokens">The negative prompt's token count.</param>
    /// <param name="chunkTokens">The empty prompt's token count (77).</param>
    /// <returns>Chunks to append to each.</returns>
    public static (int Cond, int Uncond) EmptyChunksToAdd(int condTokens, int uncondTokens, int chunkTokens)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(condTokens);
        ArgumentOutOfRangeException.ThrowIfNegative(uncondTokens);
        ArgumentOutOfRangeException.ThrowIfLessThan(chunkTokens, 1);

        // num_repeats = (cond.shape[1] - uncond.shape[1]) // empty.shape[1], Python's floor division.
        int numRepeats = (int)Math.Floor((condTokens - uncondTokens) / (double)chunkTokens);
        return numRepeats < 0 ? (-numRepeats, 0) : (0, numRepeats);
    }

    /// <summary>
    /// With padding off (A1111's default <c>pad_cond_uncond = False</c>), A1111 runs a prompt and a negative prompt of
    /// different token counts in separate UNet calls; the stages' [2, T, D] layout cannot, so such a row is refused.
    /// </summary>
    /// <param name="pad">Whether padding is on (then nothing is checked).</param>
    /// <param name="condTokens">The prompt's token count.</param>
    /// <param name="uncondTokens">The negative prompt's token count.</param>
    /// <param name="chunkTokens">Tokens per chunk (77).</param>
    /// <param name="row">The row, for the message.</param>
    /// <exception cref="NotSupportedException">Padding is off and the counts differ.</exception>
    public static void ThrowIfUnpadded(bool pad, int condTokens, int uncondTokens, int chunkTokens, long row)
    {
        if (pad || condTokens == uncondTokens)
            return;
        throw new NotSupportedException(
            $"Row {row}: the prompt makes {condTokens / chunkTokens} chunk(s) of 75 tokens and the negative prompt {uncondTokens / chunkTokens}. With "
            + "EncodePromptOptions.PadPromptAndNegativePrompt off (A1111's default) A1111 runs them in separate UNet calls at their own lengths, which "
            + "this library does not; turn it on to pad the shorter with the empty prompt's chunks (A1111's \"Pad prompt/negative prompt\").");
    }

    /// <summary>
    /// <c>pad_cond</c>: writes <paramref name="states"/> followed by <paramref name="count"/> copies of
    /// <paramref name="emptyChunkStates"/> into <paramref name="destination"/>.
    /// </summary>
    /// <param name="states">The states to extend, <c>[tokens, D]</c>.</param>
    /// <param name="emptyChunkStates">The empty prompt's encoded states, <c>[77, D]</c>.</param>
    /// <param name="count">How many copies to append.</param>
    /// <param name="destination">Exactly <c>states.Length + count × emptyChunkStates.Length</c> values.</param>
    /// <exception cref="ArgumentException">The destination has another length.</exception>
    public static void AppendEmptyChunks(ReadOnlySpan<float> states, ReadOnlySpan<float> emptyChunkStates, int count, Span<float> destination)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        long expected = states.Length + ((long)count * emptyChunkStates.Length);
        if (destination.Length != expected)
        {
            throw new ArgumentException(
                $"The destination holds {destination.Length} values; {states.Length} states plus {count} empty chunks of "
                + $"{emptyChunkStates.Length} need {expected}.",
                nameof(destination));
        }

        states.CopyTo(destination);
        for (int i = 0; i < count; i++)
        {
            emptyChunkStates.CopyTo(destination.Slice(states.Length + (i * emptyChunkStates.Length)));
        }
    }

    /// <summary>
    /// <c>stack_conds</c>: writes <paramref name="states"/> and then its last token row repeated until
    /// <paramref name="destination"/> is full (<paramref name="destination"/>'s rows ≥ the states' rows).
    /// </summary>
    /// <param name="states">The states, <c>[tokens, D]</c>, at least one row.</param>
    /// <param name="dimension">D.</param>
    /// <param name="destination">A whole number of rows, at least as many as <paramref name="states"/>.</param>
    /// <exception cref="ArgumentException">The lengths are not whole rows, or the destination is shorter.</exception>
    public static void RepeatLastToken(ReadOnlySpan<float> states, int dimension, Span<float> destination)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(dimension, 1);
        if (states.Length == 0 || states.Length % dimension != 0 || destination.Length % dimension != 0
            || destination.Length < states.Length)
        {
            throw new ArgumentException(
                $"The states ({states.Length} values) and the destination ({destination.Length}) must be whole rows of "
                + $"{dimension}, the states at least one row and the destination no shorter.",
                nameof(destination));
        }

        states.CopyTo(destination);
        ReadOnlySpan<float> last = states.Slice(states.Length - dimension);
        for (int offset = states.Length; offset < destination.Length; offset += dimension)
        {
            last.CopyTo(destination.Slice(offset, dimension));
        }
    }
}
