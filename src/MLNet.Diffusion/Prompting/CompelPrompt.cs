using System.Collections.Generic;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// A prompt in compel's syntax after parsing and flattening (compel's <c>Conjunction</c> of
/// <c>FlattenedPrompt</c>s and <c>Blend</c>s): one or more parts, each encoded on its own and combined by weight.
/// </summary>
/// <remarks>
/// <para>
/// compel's maths, for the wiring round (compel/embeddings_provider.py, <c>get_embeddings_for_weighted_prompt_fragments</c>
/// and <c>build_weighted_embedding_tensor</c>): a part's fragments are tokenized together and encoded to <c>z</c>; every
/// token of weight <c>w ≠ 1</c> becomes <c>z_empty + (z − z_empty) · w</c>, with <c>z_empty</c> the empty prompt's states
/// at the same position (tokens of weight 1 keep <c>z</c> exactly). Then, for each fragment with <c>w &lt; 1</c>, the
/// part is encoded once more without that fragment (weighted the same way), and the states are summed with weights
/// <c>[1, tan((1 − max(w, 1e−5)) · π/2), …]</c> divided by their sum — the down-weighting by "the prompt without the
/// phrase" (compel's <c>downweight_mode</c> "remove"; its "mask" variant needs an attention mask, which ONNX text
/// encoders do not take). A <see cref="CompelBlend"/> is the weighted sum of its prompts' states (weights divided by
/// their sum unless <c>no_normalize</c>); the parts of a conjunction (<c>.and()</c>) are encoded separately and
/// combined with their weights as compel's <c>build_conditioning_tensor_for_conjunction</c> does.
/// </para>
/// </remarks>
internal sealed class CompelPrompt
{
    internal CompelPrompt(IReadOnlyList<CompelPart> parts, IReadOnlyList<double> weights)
    {
        Parts = parts;
        Weights = weights;
    }

    /// <summary>The parts (one unless <c>.and()</c> was used).</summary>
    public IReadOnlyList<CompelPart> Parts { get; }

    /// <summary>One weight per part (1 unless written in <c>.and(w1, w2, …)</c>).</summary>
    public IReadOnlyList<double> Weights { get; }
}

/// <summary>One part of a <see cref="CompelPrompt"/>: weighted fragments, or a blend of several such prompts.</summary>
internal sealed class CompelPart
{
    internal CompelPart(IReadOnlyList<WeightedText>? fragments, CompelBlend? blend)
    {
        Fragments = fragments;
        Blend = blend;
    }

    /// <summary>The weighted fragments (runs of equal weight joined by a space, as compel fuses them), or null for a blend.</summary>
    public IReadOnlyList<WeightedText>? Fragments { get; }

    /// <summary>The blend, or null.</summary>
    public CompelBlend? Blend { get; }
}

/// <summary>compel's <c>("a", "b").blend(wa, wb)</c>: prompts whose states are summed with weights.</summary>
internal sealed class CompelBlend
{
    internal CompelBlend(IReadOnlyList<IReadOnlyList<WeightedText>> prompts, IReadOnlyList<double> weights, bool normalizeWeights)
    {
        Prompts = prompts;
        Weights = weights;
        NormalizeWeights = normalizeWeights;
    }

    /// <summary>Each blended prompt's weighted fragments.</summary>
    public IReadOnlyList<IReadOnlyList<WeightedText>> Prompts { get; }

    /// <summary>One weight per prompt (1 each when none were written).</summary>
    public IReadOnlyList<double> Weights { get; }

    /// <summary>Whether the weights are divided by their sum (false after <c>no_normalize</c>).</summary>
    public bool NormalizeWeights { get; }
}
