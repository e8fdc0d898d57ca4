using System;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// The rows of one run of the denoising loop (<see cref="LatentDenoiser.Run"/>): their prompt embeddings, seeds or given
/// noise, image-to-image start latents, and the buffer the result lands in. The per-row inputs of the UNet
/// conditionings (pooled vectors, masks…) are in the conditionings themselves.
/// </summary>
/// <param name="Count">Rows in the batch.</param>
/// <param name="FirstRow">Position of the first row in the data view (for messages and reports).</param>
/// <param name="Embeddings">Per row [2, S, D]: the unconditional (negative prompt) states, then the prompt's.</param>
/// <param name="SequenceLength">S, the embeddings' sequence length.</param>
/// <param name="Seeds">Per row, the seed of its noise (<see cref="RowSeed"/>).</param>
/// <param name="Latents">Room for the result, per row [C, h, w].</param>
internal sealed record DenoiseBatch(int Count, long FirstRow, ReadOnlyMemory<float> Embeddings, int SequenceLength, ReadOnlyMemory<long> Seeds, Memory<float> Latents)
{
    /// <summary>Per row, the N(0, I) noise [C, h, w] that replaces its seeded noise, or null; empty: seeded noise for every row.</summary>
    public ReadOnlyMemory<float[]?> InitialNoise { get; init; }

    /// <summary>
    /// Per row, the AND parts and prompt-editing schedule of its conditionings (A1111 syntax), or null for an ordinary
    /// row; empty: every row is ordinary. With schedules, row r's embeddings are [1 + K_r, S, D] (the unconditional
    /// states, then its K_r = <see cref="Prompting.ConditioningSchedule.ConditioningCount"/> conditionings; K_r = 1 for a
    /// null schedule), the rows' blocks back to back.
    /// </summary>
    public ReadOnlyMemory<Prompting.ConditioningSchedule?> Schedules { get; init; }

    /// <summary>Per row [C, h, w], where image-to-image starts (and what an ordinary UNet keeps outside an inpainting mask); empty: none.</summary>
    public ReadOnlyMemory<float> InitialLatents { get; init; }
}
