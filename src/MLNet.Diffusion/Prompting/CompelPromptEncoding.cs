using System;
using System.Collections.Generic;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// Encodes one row's prompt and negative prompt in compel's syntax (<see cref="PromptSyntax.Compel"/>) into the
/// [2, T, D] states and [2, P] pooled vectors of the EncodePrompt stage, with compel's maths
/// (compel/embeddings_provider.py and compel/compel.py, <c>truncate_long_prompts=True</c>):
/// <list type="number">
/// <item>a prompt's fragments are tokenized one by one and joined (at most 75 tokens, the rest dropped as compel
/// truncates), framed as <c>[BOS] + tokens + [EOS]</c> and padded with each tokenizer's pad id;</item>
/// <item><c>build_weighted_embedding_tensor</c>: every token state becomes <c>z_empty + (z − z_empty) · w</c>, with
/// <c>z_empty</c> the empty prompt's states at the same position (for every token, weight 1 included, as compel
/// computes it);</item>
/// <item>each fragment of weight <c>w &lt; 1</c> adds the prompt encoded without that fragment, with lerp weight
/// <c>tan((1 − max(w, 1e−5)) · π/2)</c>, the base prompt having weight 1, all divided by their sum
/// (<c>get_embeddings_for_weighted_prompt_fragments</c>, <c>apply_embedding_weights(normalize=True)</c>);</item>
/// <item><c>.blend(…)</c>: the blended prompts' states summed with their weights (divided by their sum unless
/// <c>no_normalize</c>);</item>
/// <item><c>.and(…)</c>: the parts' states concatenated on the token axis (<c>build_conditioning_tensor_for_conjunction</c>),
/// a part of weight <c>w ≠ 1</c> first becoming <c>e + (c − e) · w</c> with <c>e</c> the empty prompt's conditioning;</item>
/// <item>prompt and negative prompt padded to the same length with the empty prompt's conditioning
/// (<c>pad_conditioning_tensors_to_same_length</c>);</item>
/// <item>pooled: the encoder's pooled output of the raw prompt text, truncated to 77 tokens (compel's
/// <c>get_pooled_embeddings([text])</c>).</item>
/// </list>
/// SDXL: each encoder gets its own tokenizer's ids and weights; since every operation above is per element, applying
/// them to the feature-concatenated states equals compel's <c>EmbeddingsProviderMulti</c>. "No negative prompt" on a
/// folder that sets <c>force_zeros_for_empty_prompt</c> is 77 zero states and a zero pooled vector.
/// </summary>
internal sealed class CompelPromptEncoding
{
    private readonly TextEncoderRunner _runner;
    private readonly int _maxChunks;
    private readonly bool _forceZeros;
    private readonly int _length;
    private readonly int _hidden;
    private readonly int _pooledSize;
    private readonly int _encoders;
    private readonly bool _pad;
    private readonly int[] _ids;
    private readonly float[][] _weights;
    private readonly float[] _pooledScratch;
    private float[]? _emptyStates;
    private float[]? _emptyPooled;

    /// <summary>Creates the recipe on a text-encoder runner.</summary>
    /// <param name="runner">The text encoder(s).</param>
    /// <param name="maxChunks">The most 77-token parts a text may use (1 when the UNet fixes its sequence axis).</param>
    /// <param name="pooledSize">The pooled width written (0: none).</param>
    /// <param name="forceZeros">Whether "no negative prompt" is zeros (<c>force_zeros_for_empty_prompt</c>).</param>
    /// <param name="pad">Pad the shorter of prompt and negative prompt with empty chunks; false: refuse the row.</param>
    public CompelPromptEncoding(TextEncoderRunner runner, int maxChunks, int pooledSize, bool forceZeros, bool pad = true)
    {
        _pad = pad;
        _runner = runner;
        _maxChunks = maxChunks;
        _pooledSize = pooledSize;
        _forceZeros = forceZeros;
        _length = runner.SequenceLength;
        _hidden = runner.HiddenSize;
        _encoders = runner.EncoderCount;
        _ids = new int[_encoders * _length];
        _weights = new float[_encoders][];
        for (int e = 0; e < _encoders; e++)
            _weights[e] = new float[_length];
        _pooledScratch = new float[runner.PooledSize ?? 0];
    }

    /// <summary>
    /// Encodes one row: <paramref name="embeddings"/> receives [2, T, D] (negative, then prompt) and, when pooled vectors
    /// are written, <paramref name="pooled"/> receives [2, P]. Both arrays are reused when they have the right length.
    /// </summary>
    /// <exception cref="ArgumentException">compel rejects the text, or it has more <c>.and()</c> parts than allowed.</exception>
    public void Encode(string prompt, string? negative, long row, ref float[]? embeddings, ref float[]? pooled)
    {
        EnsureEmpty();
        float[] cond = Conditioning(prompt, row, "prompt");
        float[] uncond = negative is null && _forceZeros ? new float[_length * _hidden] : Conditioning(negative ?? string.Empty, row, "negative prompt");
        var (addCond, addUncond) = ConditioningPadding.EmptyChunksToAdd(cond.Length / _hidden, uncond.Length / _hidden, _length);
        ConditioningPadding.ThrowIfUnpadded(_pad, cond.Length / _hidden, uncond.Length / _hidden, _length, row);
        int total = cond.Length + (addCond * _length * _hidden);
        if (embeddings is null || embeddings.Length != 2 * total)
            embeddings = new float[2 * total];
        ConditioningPadding.AppendEmptyChunks(uncond, _emptyStates!, addUncond, embeddings.AsSpan(0, total));
        ConditioningPadding.AppendEmptyChunks(cond, _emptyStates!, addCond, embeddings.AsSpan(total, total));
        if (_pooledSize > 0)
        {
            if (pooled is null || pooled.Length != 2 * _pooledSize)
                pooled = new float[2 * _pooledSize];
            if (negative is null && _forceZeros)
                pooled.AsSpan(0, _pooledSize).Clear();
            else
                PooledOf(negative ?? string.Empty, pooled.AsSpan(0, _pooledSize));
            PooledOf(prompt, pooled.AsSpan(_pooledSize, _pooledSize));
        }
    }

    private void EnsureEmpty()
    {
        if (_emptyStates is not null)
            return;
        _emptyStates = new float[_length * _hidden];
        for (int e = 0; e < _encoders; e++)
            _runner.TokenizerOf(e).EncodeToFixedLength(string.Empty, _ids.AsSpan(e * _length, _length));
        _runner.Encode(_ids, 1, _emptyStates, _pooledScratch);
        _emptyPooled = (float[])_pooledScratch.Clone();
    }

    /// <summary><c>build_conditioning_tensor_for_conjunction</c>: the parts' states, weighted, on the token axis.</summary>
    private float[] Conditioning(string text, long row, string side)
    {
        CompelPrompt parsed;
        try
        {
            parsed = CompelPromptParser.Parse(text);
        }
        catch (ArgumentException ex)
        {
            throw new ArgumentException($"Row {row}: the {side} is not valid compel syntax: {ex.Message}", ex);
        }

        int parts = parsed.Parts.Count, per = _length * _hidden;
        if (parts > _maxChunks)
        {
            throw new ArgumentOutOfRangeException(nameof(PromptEncodingSettings.MaxWindows),
                $"Row {row}: the {side} has {parts} .and() parts of 77 tokens, more than the {_maxChunks} allowed (EncodePromptOptions.MaxWindows, "
                + "or 1 when the UNet fixes its encoder_hidden_states sequence axis).");
        }

        var states = new float[parts * per];
        for (int k = 0; k < parts; k++)
        {
            var part = parsed.Parts[k];
            var destination = states.AsSpan(k * per, per);
            if (part.Blend is { } blend)
            {
                var blended = new float[blend.Prompts.Count][];
                for (int i = 0; i < blended.Length; i++)
                    blended[i] = FlattenedPrompt(blend.Prompts[i]);
                WeightedSum(blended, blend.Weights, blend.NormalizeWeights, destination);
            }
            else
            {
                FlattenedPrompt(part.Fragments!).CopyTo(destination);
            }

            // compel: "if len(conjunction.weights) > i and conjunction.weights[i] != 1" → empty + (c − empty) · w.
            if (k < parsed.Weights.Count && parsed.Weights[k] != 1.0)
                WeightFromEmpty(destination, (float)parsed.Weights[k]);
        }

        return states;
    }

    /// <summary>
    /// <c>get_embeddings_for_weighted_prompt_fragments</c>: the weighted prompt, lerped towards the prompt without each
    /// fragment of weight below 1.
    /// </summary>
    private float[] FlattenedPrompt(IReadOnlyList<WeightedText> fragments)
    {
        var embeddings = new List<float[]> { WeightedStates(fragments, skip: -1) };
        var weights = new List<double> { 1.0 };
        for (int i = 0; i < fragments.Count; i++)
        {
            double w = fragments[i].Weight;
            if (w >= 1.0)
                continue;
            embeddings.Add(WeightedStates(fragments, skip: i));
            // tan((1 − w)·π/2): 0 at w = 1, 1 at w = 0.5, → ∞ as w → 0 (clamped at 1e−5, compel's epsilon).
            weights.Add(Math.Tan((1.0 - Math.Max(1e-5, w)) * Math.PI / 2));
        }

        if (embeddings.Count == 1)
            return embeddings[0];
        var result = new float[_length * _hidden];
        WeightedSum(embeddings, weights, normalize: true, result);
        return result;
    }

    /// <summary><c>build_weighted_embedding_tensor</c> over the fragments (one left out when <paramref name="skip"/> ≥ 0).</summary>
    private float[] WeightedStates(IReadOnlyList<WeightedText> fragments, int skip)
    {
        int content = _length - 2;
        for (int e = 0; e < _encoders; e++)
        {
            var tokenizer = _runner.TokenizerOf(e);
            var ids = _ids.AsSpan(e * _length, _length);
            var weights = _weights[e];
            int n = 0;
            for (int f = 0; f < fragments.Count && n < content; f++)
            {
                if (f == skip)
                    continue;
                IReadOnlyList<int> tokens = tokenizer.EncodeToIds(fragments[f].Text);
                for (int t = 0; t < tokens.Count && n < content; t++, n++)
                {
                    ids[1 + n] = tokens[t];
                    weights[1 + n] = (float)fragments[f].Weight;
                }
            }

            ids[0] = tokenizer.StartTokenId;
            weights[0] = 1f;
            ids[1 + n] = tokenizer.EndTokenId;
            ids.Slice(2 + n).Fill(tokenizer.PadTokenId);
            weights.AsSpan(1 + n).Fill(1f);
        }

        var states = new float[_length * _hidden];
        _runner.Encode(_ids, 1, states, _pooledScratch.Length > 0 ? _pooledScratch : Span<float>.Empty);
        var empty = _emptyStates!;
        int offset = 0;
        for (int e = 0; e < _encoders; e++)
        {
            int width = _encoders == 1 ? _hidden : _runner.HiddenSizeOf(e);
            for (int t = 0; t < _length; t++)
            {
                float w = _weights[e][t];
                int at = (t * _hidden) + offset;
                for (int j = at; j < at + width; j++)
                    states[j] = empty[j] + ((states[j] - empty[j]) * w);
            }

            offset += width;
        }

        return states;
    }

    /// <summary><c>empty + (c − empty) · w</c> in place, over every token of one 77-token part.</summary>
    private void WeightFromEmpty(Span<float> states, float w)
    {
        var empty = _emptyStates!;
        for (int j = 0; j < states.Length; j++)
            states[j] = empty[j] + ((states[j] - empty[j]) * w);
    }

    /// <summary>
    /// <c>apply_embedding_weights</c>: Σᵢ wᵢ·eᵢ, the weights first divided by their sum when normalized (in float32, as
    /// compel's <c>torch.tensor</c> of the weights).
    /// </summary>
    private static void WeightedSum(IReadOnlyList<float[]> embeddings, IReadOnlyList<double> weights, bool normalize, Span<float> destination)
    {
        if (weights.Count != embeddings.Count)
            throw new ArgumentException($"{embeddings.Count} prompts to blend but {weights.Count} weights.", nameof(weights));
        var w = new float[weights.Count];
        float sum = 0f;
        for (int i = 0; i < w.Length; i++)
        {
            w[i] = (float)weights[i];
            sum += w[i];
        }

        if (normalize)
        {
            for (int i = 0; i < w.Length; i++)
                w[i] /= sum;
        }

        destination.Clear();
        for (int i = 0; i < embeddings.Count; i++)
        {
            var source = embeddings[i];
            for (int j = 0; j < destination.Length; j++)
                destination[j] += source[j] * w[i];
        }
    }

    /// <summary>compel's <c>get_pooled_embeddings([text])</c>: the pooled output of the raw text's ids, truncated to 77.</summary>
    private void PooledOf(string text, Span<float> destination)
    {
        if (text.Length == 0)
        {
            _emptyPooled.AsSpan().CopyTo(destination);
            return;
        }

        for (int e = 0; e < _encoders; e++)
            _runner.TokenizerOf(e).EncodeToFixedLength(text, _ids.AsSpan(e * _length, _length));
        var states = new float[_length * _hidden];
        _runner.Encode(_ids, 1, states, _pooledScratch);
        _pooledScratch.AsSpan(0, destination.Length).CopyTo(destination);
    }
}
