using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// Which of a row's conditionings each AND part uses at each denoiser call, and the parts' weights: what the denoising
/// loop needs for A1111's prompt editing, alternation and <c>AND</c> (composable diffusion). The row's embeddings then
/// hold <c>[1 + ConditioningCount, S, D]</c>: the unconditional states, then every distinct conditioning.
/// </summary>
/// <remarks>
/// <para>A1111: <c>reconstruct_multicond_batch(cond, self.step)</c> picks, for every part, the schedule entry of the
/// current call (<see cref="A1111PromptSchedule.IndexAtStep"/>), and <c>CFGDenoiser.combine_denoised</c> sums
/// <c>uncond + Σ_k (cond_k − uncond) · weight_k · cfg_scale</c>.</para>
/// <para>The call is A1111's <c>CFGDenoiser.step</c>: set to 0 by <c>Sampler.initialize</c> before the first call the run
/// executes (image-to-image too) and incremented at the end of every <c>forward</c>, so it counts UNet calls, not sampler
/// steps. <see cref="Steps"/> is the step count the schedule was computed for, A1111's <c>total_steps</c>
/// (<see cref="A1111SamplerSteps.TotalSteps"/>). The schedule holds the entries of calls 0 … <see cref="Steps"/>
/// (<c>current_step &lt;= end_at_step</c> still holds for the last entry at call <c>Steps</c>, which PLMS/PNDM reach with
/// their N + 1 calls); a later call matches no entry and <c>reconstruct_cond_batch</c> keeps its <c>target_index = 0</c>,
/// the entry of call 0.</para>
/// </remarks>
internal sealed class ConditioningSchedule
{
    private readonly int[] _indexes;
    private readonly float[] _weights;

    /// <summary>Creates a schedule.</summary>
    /// <param name="steps">The step count the schedule was computed for (A1111's <c>total_steps</c>).</param>
    /// <param name="conditionings">How many conditional states the row holds.</param>
    /// <param name="weights">One weight per part.</param>
    /// <param name="indexes">[steps + 1, parts]: the 0-based conditioning of part k at denoiser call s = 0 … steps.</param>
    /// <exception cref="ArgumentException">The arrays do not match or an index is out of range.</exception>
    public ConditioningSchedule(int steps, int conditionings, float[] weights, int[] indexes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(conditionings, 1);
        ArgumentNullException.ThrowIfNull(weights);
        ArgumentNullException.ThrowIfNull(indexes);
        if (weights.Length == 0 || indexes.Length != (steps + 1L) * weights.Length)
            throw new ArgumentException($"Expected ({steps} + 1)×{weights.Length} conditioning indexes (calls 0 … {steps}) for {weights.Length} parts, got {indexes.Length}.", nameof(indexes));
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

    /// <summary>The step count the schedule was computed for (A1111's <c>total_steps</c>); it covers calls 0 … Steps.</summary>
    public int Steps { get; }

    /// <summary>How many conditional states the row holds (after the unconditional one).</summary>
    public int ConditioningCount { get; }

    /// <summary>AND parts (1 without AND).</summary>
    public int Parts => _weights.Length;

    /// <summary>The weight of part <paramref name="part"/>.</summary>
    public float Weight(int part) => _weights[part];

    /// <summary>
    /// The conditioning part <paramref name="part"/> uses at denoiser call <paramref name="call"/>: A1111's
    /// <c>CFGDenoiser.step</c>, 0 at the first call the run executes. A call after <see cref="Steps"/> uses call 0's, as
    /// <c>reconstruct_cond_batch</c> falls back to entry 0 when no entry's <c>end_at_step</c> reaches the call.
    /// </summary>
    public int IndexAt(int call, int part) => _indexes[((call <= Steps ? call : 0) * _weights.Length) + part];

    /// <summary>
    /// The schedule of an A1111 prompt plan for <paramref name="steps"/> calls: conditionings numbered text by text,
    /// entry by entry (the order the encoder writes them).
    /// </summary>
    /// <param name="plan">The plan.</param>
    /// <param name="steps">The step count the plan was made for (A1111's <c>total_steps</c>).</param>
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
        var indexes = new int[(steps + 1) * parts];
        for (int k = 0; k < parts; k++)
        {
            ConjunctionPart part = plan.Parts[k];
            weights[k] = (float)part.Weight;
            A1111PlannedText text = plan.Texts[part.TextIndex];
            for (int s = 0; s <= steps; s++)
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

    /// <summary>An ordinary prompt's schedule for <paramref name="steps"/> steps: one conditioning, one part of weight 1.</summary>
    /// <param name="steps">The step count (A1111's <c>total_steps</c>).</param>
    /// <returns>The schedule (<see cref="IsPlain"/>).</returns>
    public static ConditioningSchedule Plain(int steps) => new(steps, 1, new[] { 1f }, new int[steps + 1]);

    /// <summary>Values <see cref="WriteTo"/> writes: <c>[steps, K, parts, weights…, indexes ((steps + 1) × parts)…]</c>.</summary>
    public int SerializedLength => 3 + _weights.Length + _indexes.Length;

    /// <summary>
    /// Writes the schedule as the EncodePrompt stage's schedule column holds it, <c>[steps, K, parts, w_1 … w_parts,
    /// index(call 0, part 1) …, index(call steps, part parts)]</c> (call-major); every count and index is a whole number below 2^24, exact in a Single.
    /// </summary>
    /// <param name="destination">Exactly <see cref="SerializedLength"/> values.</param>
    public void WriteTo(Span<float> destination)
    {
        if (destination.Length != SerializedLength)
            throw new ArgumentException($"A schedule of {Steps} calls and {Parts} parts takes {SerializedLength} values, not {destination.Length}.", nameof(destination));
        destination[0] = Steps;
        destination[1] = ConditioningCount;
        destination[2] = _weights.Length;
        _weights.CopyTo(destination.Slice(3));
        var indexes = destination.Slice(3 + _weights.Length);
        for (int i = 0; i < _indexes.Length; i++)
            indexes[i] = _indexes[i];
    }

    /// <summary>Reads what <see cref="WriteTo"/> wrote.</summary>
    /// <param name="values">The values of one row's schedule column.</param>
    /// <param name="error">Why the values are not a schedule (null when they are).</param>
    /// <returns>The schedule, or null with <paramref name="error"/> set.</returns>
    public static ConditioningSchedule? TryRead(ReadOnlySpan<float> values, out string? error)
    {
        error = null;
        if (values.Length < 4 || !IsCount(values[0], 1) || !IsCount(values[1], 1) || !IsCount(values[2], 1))
        {
            error = $"it holds {values.Length} values that do not start with [steps ≥ 1, conditionings ≥ 1, parts ≥ 1]";
            return null;
        }

        int steps = (int)values[0], conditionings = (int)values[1], parts = (int)values[2];
        if (values.Length != 3L + parts + ((steps + 1L) * parts))
        {
            error = $"a schedule of {steps} steps and {parts} parts takes {3L + parts + ((steps + 1L) * parts)} values, not {values.Length}";
            return null;
        }

        var weights = values.Slice(3, parts).ToArray();
        var indexes = new int[(steps + 1) * parts];
        var written = values.Slice(3 + parts);
        for (int i = 0; i < indexes.Length; i++)
        {
            if (!IsCount(written[i], 0) || written[i] >= conditionings)
            {
                error = $"conditioning index {written[i]} is not one of the row's {conditionings} conditionings";
                return null;
            }

            indexes[i] = (int)written[i];
        }

        foreach (float w in weights)
        {
            if (!float.IsFinite(w))
            {
                error = $"an AND part weight is {w}";
                return null;
            }
        }

        return new ConditioningSchedule(steps, conditionings, weights, indexes);
    }

    private static bool IsCount(float value, int min) => value >= min && value < (1 << 24) && value == MathF.Floor(value);

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
