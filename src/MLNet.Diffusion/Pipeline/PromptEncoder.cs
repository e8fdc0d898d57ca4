using System;
using System.Collections.Generic;
using MLNet.Diffusion.Prompting;

namespace MLNet.Diffusion.Pipeline;

/// <summary>The settings of <see cref="PromptEncoder"/> (the EncodePrompt stage's options less its column names).</summary>
/// <param name="BatchSize">Texts per text-encoder call.</param>
/// <param name="LongPrompt">Encode prompts longer than the model's window in 75-token windows instead of truncating them.</param>
/// <param name="MaxWindows">With <paramref name="LongPrompt"/>, the most windows a row may use.</param>
/// <param name="Pooled">Whether the pooled vectors are written (the model must have them).</param>
/// <param name="Syntax">The prompt syntax; <see cref="PromptSyntax.Plain"/> is the recipe below, the others are
/// <see cref="A1111PromptEncoding"/> and <see cref="CompelPromptEncoding"/>.</param>
/// <param name="Emphasis">With <see cref="PromptSyntax.A1111"/>, how token weights change the states.</param>
/// <param name="MaxChunks">With A1111 or compel syntax, the most 77-token chunks a text may use (1 when the UNet fixes its sequence axis).</param>
/// <param name="ScheduleSteps">With A1111 syntax, the sampling steps prompt editing is scheduled for: AND, part weights and
/// <c>[a:b:n]</c>/<c>[a|b]</c> then give [1 + K, T, D] embeddings and a <see cref="ConditioningSchedule"/>; null: refused.</param>
/// <param name="Pad">With A1111 or compel syntax, pad the shorter of prompt and negative prompt with the empty prompt's
/// chunks (A1111's "Pad prompt/negative prompt"); false: refuse a row whose chunk counts differ.</param>
internal sealed record PromptEncodingSettings(int BatchSize, bool LongPrompt, int MaxWindows, bool Pooled,
    PromptSyntax Syntax = PromptSyntax.Plain, PromptEmphasis Emphasis = PromptEmphasis.Original, int MaxChunks = 1, int? ScheduleSteps = null, bool Pad = true);

/// <summary>
/// The prompt-encoding recipe of diffusers' <c>encode_prompt</c> (StableDiffusionPipeline, StableDiffusionXLPipeline) for a
/// batch of rows, each a prompt and a negative prompt:
/// <list type="number">
/// <item>distinct texts: one encoding per distinct non-empty text of the batch; the empty prompt is encoded once per
/// encoder instance and kept;</item>
/// <item>tokenize with every text encoder's tokenizer (SDXL: tokenizer and tokenizer_2), truncating to the model's window
/// with a logged warning, or in 75-token windows for long prompts;</item>
/// <item>encode in calls of <see cref="PromptEncodingSettings.BatchSize"/> texts (<see cref="TextEncoderRunner"/>);</item>
/// <item>negatives: "no negative prompt" (null) is zeros on folders that set <c>force_zeros_for_empty_prompt</c>
/// (diffusers: <c>zero_out_negative_prompt = negative_prompt is None and force_zeros_for_empty_prompt</c>) and the encoded
/// empty prompt elsewhere; an explicit empty negative prompt is the encoded empty prompt (diffusers: <c>negative_prompt or ""</c>);</item>
/// <item>pooled: the pooled vectors of the negative and the prompt, zeroed with the negative's states.</item>
/// </list>
/// Writes each row's [2, L, D] (negative, then prompt; [2, k·L, D] with k windows for long prompts) and [2, P] into the
/// caller's arrays, reusing them when they have the right length; the recipe's own buffers are reused batch after batch.
/// Knows nothing of ML.NET: texts in, floats out, messages to an <see cref="IPipelineLog"/>.
/// </summary>
internal sealed class PromptEncoder : IDisposable
{
    /// <summary>Text slot of "no negative prompt".</summary>
    private const int NoText = -2;

    /// <summary>Text slot of the empty prompt (the cached encoding).</summary>
    private const int EmptyText = -1;

    private readonly TextEncoderRunner _runner;
    private readonly PromptEncodingSettings _settings;
    private readonly IPipelineLog _log;
    private readonly int _length;
    private readonly int _hidden;
    private readonly int _encoders;
    private readonly int _pooledSize;
    private readonly bool _forceZeros;
    private readonly List<string> _texts = new();
    private readonly Dictionary<string, int> _textIndex = new(StringComparer.Ordinal);
    private readonly List<(int Row, bool Negative)> _firstUse = new();
    private int[] _promptSlots = Array.Empty<int>();
    private int[] _negativeSlots = Array.Empty<int>();
    private float[] _states = Array.Empty<float>();
    private float[] _pooledStates = Array.Empty<float>();
    private int[] _ids = Array.Empty<int>();
    private int[] _windowIds = Array.Empty<int>();
    private float[]? _emptyState;
    private float[]? _emptyPooled;
    private A1111PromptEncoding? _a1111;
    private float[]? _noPooled;
    private CompelPromptEncoding? _compel;

    /// <summary>Creates the recipe on a model's text encoder(s).</summary>
    /// <param name="model">The model.</param>
    /// <param name="settings">Batch size, long prompts, pooled output.</param>
    /// <param name="log">Receives the truncation warnings.</param>
    public PromptEncoder(StableDiffusionModel model, PromptEncodingSettings settings, IPipelineLog log)
    {
        _runner = new TextEncoderRunner(model);
        _settings = settings;
        _log = log;
        _length = _runner.SequenceLength;
        _hidden = _runner.HiddenSize;
        _encoders = _runner.EncoderCount;
        _pooledSize = settings.Pooled ? _runner.PooledSize ?? throw new ArgumentException("The model's text encoder has no pooled output.", nameof(settings)) : 0;
        _forceZeros = model.Info.ForceZerosForEmptyPrompt;
    }

    /// <summary>
    /// Encodes one batch. Row r is <paramref name="prompts"/>[r] and <paramref name="negatives"/>[r] (null: no negative
    /// prompt); <paramref name="rows"/>[r] names it in messages. <paramref name="embeddings"/>[r] receives [2, L, D] and, when
    /// pooled vectors are wanted, <paramref name="pooled"/>[r] receives [2, P]. With
    /// <see cref="PromptEncodingSettings.ScheduleSteps"/>, <paramref name="schedules"/>[r] receives the row's prompt-editing
    /// and AND schedule (null for an ordinary prompt, whose embeddings are then as without it) and a scheduled row's
    /// embeddings are [1 + K, T, D].
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A long prompt needs more windows than <see cref="PromptEncodingSettings.MaxWindows"/>.</exception>
    public void Encode(ReadOnlySpan<string> prompts, ReadOnlySpan<string?> negatives, ReadOnlySpan<long> rows, Span<float[]?> embeddings, Span<float[]?> pooled,
        Span<ConditioningSchedule?> schedules = default)
    {
        int count = prompts.Length;
        if (negatives.Length != count || rows.Length != count || embeddings.Length != count || (_pooledSize > 0 && pooled.Length != count)
            || (_settings.ScheduleSteps is not null && schedules.Length != count))
            throw new ArgumentException($"Expected {count} negatives, row numbers and outputs.", nameof(negatives));
        if (_settings.Syntax == PromptSyntax.A1111)
        {
            _a1111 ??= new A1111PromptEncoding(_runner, _settings.Emphasis, _settings.MaxChunks, _pooledSize, _forceZeros, _settings.BatchSize, _settings.Pad);
            for (int r = 0; r < count; r++)
            {
                var schedule = _a1111.Encode(prompts[r], negatives[r], rows[r], _settings.ScheduleSteps, ref embeddings[r], ref (_pooledSize > 0 ? ref pooled[r] : ref _noPooled));
                if (_settings.ScheduleSteps is not null)
                    schedules[r] = schedule;
            }
            return;
        }
        if (_settings.Syntax == PromptSyntax.Compel)
        {
            _compel ??= new CompelPromptEncoding(_runner, _settings.MaxChunks, _pooledSize, _forceZeros, _settings.Pad);
            for (int r = 0; r < count; r++)
                _compel.Encode(prompts[r], negatives[r], rows[r], ref embeddings[r], ref (_pooledSize > 0 ? ref pooled[r] : ref _noPooled));
            return;
        }
        if (_settings.LongPrompt)
        {
            EncodeWindows(prompts, negatives, rows, embeddings, pooled);
            return;
        }
        // 1. Distinct texts: the batch's non-empty texts once each, in order of first use.
        _texts.Clear();
        _textIndex.Clear();
        _firstUse.Clear();
        Grow(ref _promptSlots, count);
        Grow(ref _negativeSlots, count);
        for (int r = 0; r < count; r++)
        {
            _promptSlots[r] = TextSlot(prompts[r], r, negative: false);
            _negativeSlots[r] = negatives[r] is { } negative ? TextSlot(negative, r, negative: true) : NoText;
        }
        // 2–3. Tokenize and encode: the empty prompt once per instance, first (it encodes into the same buffers), then the texts.
        EnsureEmpty();
        EncodeTexts(_texts, rows);
        // 4–5. Negative and prompt states and pooled vectors, side by side.
        int per = _length * _hidden;
        for (int r = 0; r < count; r++)
        {
            var e = Fit(ref embeddings[r], 2 * per);
            CopyOut(_states, _emptyState!, _negativeSlots[r], per, e.AsSpan(0, per));
            CopyOut(_states, _emptyState!, _promptSlots[r], per, e.AsSpan(per, per));
            if (_pooledSize > 0)
            {
                var p = Fit(ref pooled[r], 2 * _pooledSize);
                CopyOut(_pooledStates, _emptyPooled!, _negativeSlots[r], _pooledSize, p.AsSpan(0, _pooledSize));
                CopyOut(_pooledStates, _emptyPooled!, _promptSlots[r], _pooledSize, p.AsSpan(_pooledSize, _pooledSize));
            }
        }
    }

    /// <summary>The slot of a text among the batch's distinct texts (added when new); <see cref="EmptyText"/> for the empty text.</summary>
    private int TextSlot(string text, int row, bool negative)
    {
        if (text.Length == 0)
            return EmptyText;
        if (!_textIndex.TryGetValue(text, out int i))
        {
            _textIndex[text] = i = _texts.Count;
            _texts.Add(text);
            _firstUse.Add((row, negative));
        }
        return i;
    }

    /// <summary>Copies a slot's n values: a distinct text's, the empty prompt's, or zeros or the empty prompt's for "no negative prompt".</summary>
    private void CopyOut(float[] all, float[] empty, int slot, int n, Span<float> destination)
    {
        if (slot == NoText && _forceZeros)
            destination.Clear();
        else
            (slot < 0 ? empty.AsSpan() : all.AsSpan(slot * n, n)).CopyTo(destination);
    }

    private void EnsureEmpty()
    {
        if (_emptyState is not null)
            return;
        EncodeTexts(new List<string> { string.Empty }, rows: default);
        _emptyState = _states.AsSpan(0, _length * _hidden).ToArray();
        _emptyPooled = _pooledStates.AsSpan(0, _pooledSize).ToArray();
    }

    /// <summary>
    /// Tokenizes (truncating; a warning names the first row that uses a truncated text, unless <paramref name="rows"/> is
    /// empty) and encodes texts in calls of BatchSize into <see cref="_states"/> [n, L, D] and <see cref="_pooledStates"/> [n, P].
    /// </summary>
    private void EncodeTexts(List<string> texts, ReadOnlySpan<long> rows)
    {
        int n = texts.Count, per = _length * _hidden, idsPer = _encoders * _length;
        Grow(ref _states, n * per);
        Grow(ref _pooledStates, n * _pooledSize);
        if (n == 0)
            return;
        // Each encoder gets its own tokenizer's ids (SDXL's tokenizer_2 pads with "!", tokenizer with <|endoftext|>).
        var ids = Grow(ref _ids, n * idsPer);
        for (int i = 0; i < n; i++)
        {
            int dropped = 0;
            for (int e = 0; e < _encoders; e++)
                dropped = Math.Max(dropped, _runner.TokenizerOf(e).EncodeToFixedLength(texts[i], ids.AsSpan((i * _encoders + e) * _length, _length)));
            if (dropped > 0 && !rows.IsEmpty)
            {
                var (row, negative) = _firstUse[i];
                _log.Warning($"Row {rows[row]}: the {(negative ? "negative prompt" : "prompt")} has {dropped} token(s) beyond the model's {_length - 2}-token limit; they were dropped. Set EncodePromptOptions.LongPrompt to keep them.");
            }
        }
        int chunk = Math.Max(1, _settings.BatchSize);
        for (int start = 0; start < n; start += chunk)
        {
            int m = Math.Min(chunk, n - start);
            _runner.Encode(ids.AsSpan(start * idsPer, m * idsPer), m, _states.AsSpan(start * per, m * per),
                _pooledSize > 0 ? _pooledStates.AsSpan(start * _pooledSize, m * _pooledSize) : Span<float>.Empty);
        }
    }

    /// <summary>
    /// Long prompts: per row, as many 75-token windows as the longer of prompt and negative prompt needs (with every
    /// tokenizer, for SDXL's two), encoded in one call; the pooled vector is the first window's.
    /// </summary>
    private void EncodeWindows(ReadOnlySpan<string> prompts, ReadOnlySpan<string?> negatives, ReadOnlySpan<long> rows, Span<float[]?> embeddings, Span<float[]?> pooled)
    {
        int per = _length * _hidden;
        for (int r = 0; r < prompts.Length; r++)
        {
            // 1–2. Tokenize into windows (no dedup: each row is one call of 2·k windows).
            string prompt = prompts[r], negative = negatives[r] ?? string.Empty;
            int windows = 1;
            for (int e = 0; e < _encoders; e++)
                windows = Math.Max(windows, Math.Max(_runner.TokenizerOf(e).CountWindows(prompt), _runner.TokenizerOf(e).CountWindows(negative)));
            if (windows > _settings.MaxWindows)
                throw new ArgumentOutOfRangeException(nameof(PromptEncodingSettings.MaxWindows),
                    $"Row {rows[r]}: the prompt needs {windows} windows of 75 tokens, more than MaxWindows = {_settings.MaxWindows}.");
            // Rows [negative w0..wk, prompt w0..wk], each with one id row per encoder.
            var ids = Grow(ref _ids, 2 * windows * _encoders * _length);
            var block = Grow(ref _windowIds, windows * _length);
            for (int e = 0; e < _encoders; e++)
            {
                for (int side = 0; side < 2; side++)
                {
                    _runner.TokenizerOf(e).EncodeWindows(side == 0 ? negative : prompt, windows, block.AsSpan(0, windows * _length));
                    for (int w = 0; w < windows; w++)
                        block.AsSpan(w * _length, _length).CopyTo(ids.AsSpan(((side * windows + w) * _encoders + e) * _length, _length));
                }
            }
            // 3. Encode; the windows come out in order: [negative w0..wk, prompt w0..wk] = [2, k·L, D].
            var states = Fit(ref embeddings[r], 2 * windows * per);
            var pooledStates = Grow(ref _pooledStates, 2 * windows * _pooledSize).AsSpan(0, 2 * windows * _pooledSize);
            _runner.Encode(ids.AsSpan(0, 2 * windows * _encoders * _length), 2 * windows, states, pooledStates);
            // 4. No negative prompt on a force_zeros_for_empty_prompt folder: every negative window is zeros.
            if (negatives[r] is null && _forceZeros)
            {
                states.AsSpan(0, windows * per).Clear();
                pooledStates.Slice(0, windows * _pooledSize).Clear();
            }
            // 5. Pooled: the first window's of each side.
            if (_pooledSize > 0)
            {
                var p = Fit(ref pooled[r], 2 * _pooledSize);
                pooledStates.Slice(0, _pooledSize).CopyTo(p);
                pooledStates.Slice(windows * _pooledSize, _pooledSize).CopyTo(p.AsSpan(_pooledSize));
            }
        }
    }

    /// <summary>The caller's array when it has <paramref name="length"/> values, else a new one stored in its place.</summary>
    private static float[] Fit(ref float[]? buffer, int length)
    {
        if (buffer is null || buffer.Length != length)
            buffer = new float[length];
        return buffer;
    }

    private static T[] Grow<T>(ref T[] buffer, int length)
    {
        if (buffer.Length < length)
            buffer = new T[length];
        return buffer;
    }

    public void Dispose() => _runner.Dispose();
}
