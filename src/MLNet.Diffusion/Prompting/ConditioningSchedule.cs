using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// Which of a row's conditionings each AND part uses at each denoiser call, and the parts' weights: what the denoising
/// loop needs for A1111's prompt editing, alternation and <c>AND</c> (composable diffusion). The row's embeddings then
/// hold <c>[1 + ConditioningCount, S, D]</c>: the unconditional states, then every distinct conditioning.
/// </summary>
/// <remarks>
/// A1111: <c>reconstruct_multicond_batch</c> picks, for every part, the schedule entry of the current call
/// (<see cref="A1111PromptSchedule.IndexAtStep"/>), and <c>CFGDenoiser.combine_denoised</c> sums
/// <c>uncond + Σ_k (cond_k − uncond) · weight_k · cfg_scale</c>.
/// </remarks>
internal sealed class ConditioningSchedule
{
    private readonly int[] _indexes;
    private readonly float[] _weights;

    /// <summary>Creates a schedule.</summary>
    /// <param name="steps">Denoiser calls covered.</param>
    /// <param name="conditionings">How many conditional states the row holds.</param>
    /// <param name="weights">One weight per part.</param>
    /// <param name="indexes">[steps, parts]: the 0-based conditioning of part k at call s.</param>
    /// <exception cref="ArgumentException">The arrays do not match or an index is out of range.</exception>
    public ConditioningSchedule(int steps, int conditionings, float[] weights, int[] indexes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(conditionings, 1);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(indexes);
        if (weights.Length == 0 || indexes.Length != steps * weights.Length)
            throw new ArgumentException($"Expected {steps}×{weights.Length} conditioning indexes for {weights.Length} parts, got {indexes.Length}.", nameof(indexes));
        foreach (int i in indexes)
        {
            if ((uint)i >= (uint)conditionings)
                throw new ArgumentException($"Conditioning index {i} is outside the row's {conditionings} conditionings.", nameof(indexes));
        }

        Steps = steps;
        ConditioningCount = conditionings;
        _weights = weights;
        _indexes = indexes;
    }

    /// <summary>Denoiser calls covered; later calls use the last call's conditionings.</summary>
    public int Steps { get; }

    /// <summary>How many conditional states the row holds (after the unconditional one).</summary>
    public int ConditioningCount { get; }

    /// <summary>AND parts (1 without AND).</summary>
    public int Parts => _weights.Length;

    /// <summary>The weight of part <paramref name="part"/>.</summary>
    public float Weight(int part) => _weights[part];

    /// <summary>The conditioning part <paramref name="part"/> uses at denoiser call <paramref name="call"/> (0-based).</summary>
    public int IndexAt(int call, int part) => _indexes[(Math.Min(call, Steps - 1) * _weights.Length) + part];

    /// <summary>
    /// The schedule of an A1111 prompt plan for <paramref name="steps"/> calls: conditionings numbered text by text,
    /// entry by entry (the order the encoder writes them).
    /// </summary>
    /// <param name="plan">The plan.</param>
    /// <param name="steps">The denoiser calls.</param>
    /// <returns>The schedule.</returns>
    public static ConditioningSchedule FromPlan(A1111PromptPlan plan, int steps)
    {
        ArgumentNullException.ThrowIfNull(plan);
        var offsets = new int[plan.Texts.Count];
        int total = 0;
        for (int t = 0; t < offsets.Length; t++)
        {
            offsets[t] = total;
            total += plan.Texts[t].Schedule.Count;
        }

        int parts = plan.Parts.Count;
        var weights = new float[parts];
        var indexes = new int[steps * parts];
        for (int k = 0; k < parts; k++)
        {
            ConjunctionPart part = plan.Parts[k];
            weights[k] = (float)part.Weight;
            A1111PlannedText text = plan.Texts[part.TextIndex];
            for (int s = 0; s < steps; s++)
                indexes[(s * parts) + k] = offsets[part.TextIndex] + text.EntryAt(s);
        }

        return new ConditioningSchedule(steps, total, weights, indexes);
    }

    /// <summary>Whether this is one part of weight 1 that never switches (an ordinary prompt).</summary>
    public bool IsPlain
    {
        get
        {
            if (Parts != 1 || _weights[0] != 1f || ConditioningCount != 1)
                return false;
            return true;
        }
    }

    /// <summary>The distinct conditionings in the order <see cref="FromPlan"/> numbers them: (text index, schedule entry).</summary>
    /// <param name="plan">The plan.</param>
    /// <returns>The pairs.</returns>
    public static IReadOnlyList<(int Text, int Entry)> Conditionings(A1111PromptPlan plan)
    {
        var list = new List<(int, int)>();
        for (int t = 0; t < plan.Texts.Count; t++)
        {
            for (int e = 0; e < plan.Texts[t].Schedule.Count; e++)
                list.Add((t, e));
        }

        return list;
    }
}
