using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>Options of the EncodePrompt stage (<see cref="Microsoft.ML.DiffusionCatalog.EncodePrompt(TransformsCatalog, StableDiffusionModel, string, string?, string?)"/>).</summary>
public sealed class EncodePromptOptions
{
    /// <summary>The pooled output column SDXL models get when <see cref="PooledOutputColumnName"/> is null (DenoiseLatents reads it by default).</summary>
    public const string DefaultPooledColumnName = "PooledEmbeddings";

    private string? _pooledOutputColumnName;

    /// <summary>
    /// Name of the embeddings output column: float vector [2, S, D] (negative/unconditional states, then the prompt's). For
    /// SDXL, D is both text encoders' penultimate hidden states side by side (768 + 1280 = 2048), and an empty negative
    /// prompt gives zeros when the folder sets <c>force_zeros_for_empty_prompt</c> (<see cref="ModelInfo.ForceZerosForEmptyPrompt"/>).
    /// </summary>
    public string OutputColumnName { get; init; } = "Embeddings";

    /// <summary>Name of the prompt input column (text).</summary>
    public string InputColumnName { get; init; } = "Prompt";

    /// <summary>Name of an optional negative-prompt column (text); when null, the unconditional prompt is the empty string.</summary>
    public string? NegativePromptColumnName { get; init; }

    /// <summary>
    /// Name of an output column for the pooled prompt vector, [2, P] (unconditional, conditional): the text encoder's
    /// <c>pooler_output</c> for SD 1.x/2.x, text_encoder_2's <c>text_embeds</c> for SDXL. Null gives none for SD 1.x/2.x
    /// and <see cref="DefaultPooledColumnName"/> for SDXL, whose UNet needs it (DenoiseLatents reads that name by default).
    /// </summary>
    public string? PooledOutputColumnName { get => _pooledOutputColumnName; init => _pooledOutputColumnName = value; }

    /// <summary>Prompts per ONNX call (each row encodes its prompt and, when not empty, its negative prompt).</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>
    /// Long prompts: when false (default), prompts are truncated to the model's 77 tokens with a warning in the MLContext
    /// log naming the row. When true, a prompt is split into 75-token windows, each encoded with start/end tokens, and the
    /// hidden states are concatenated along the sequence axis (the negative prompt padded to the same number of windows),
    /// as widely used Stable Diffusion front ends do; the output column is then a variable-size vector. For SDXL every
    /// window runs through both text encoders, and the pooled vector is the first window's.
    /// </summary>
    public bool LongPrompt { get; init; }

    /// <summary>With <see cref="LongPrompt"/>, the most windows a prompt may use (each 75 tokens).</summary>
    public int MaxWindows { get; init; } = 8;

    /// <summary>A copy with the pooled column's name set (the model-dependent default, resolved by the stage).</summary>
    internal EncodePromptOptions WithPooledOutputColumnName(string name)
    {
        var copy = (EncodePromptOptions)MemberwiseClone();
        copy._pooledOutputColumnName = name;
        return copy;
    }

    internal void Validate()
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(OutputColumnName, nameof(OutputColumnName));
        ArgumentException.ThrowIfNullOrWhiteSpace(InputColumnName, nameof(InputColumnName));
        if (BatchSize < 1 || BatchSize > 1024)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be in [1, 1024].");
        if (MaxWindows < 1 || MaxWindows > 64)
            throw new ArgumentOutOfRangeException(nameof(MaxWindows), MaxWindows, "MaxWindows must be in [1, 64].");
    }
}

/// <summary>
/// Tokenizes prompts with the model's CLIP tokenizer and runs the text encoder: the <see cref="ITransformer"/> of
/// <see cref="PromptEncodingEstimator"/>. Lazy: the text encoder runs only when a cursor reads the output column.
/// </summary>
public sealed class PromptEncodingTransformer : DiffusionTransformer
{
    private readonly KeyValuePair<string, DataViewType>[] _outputs;

    internal PromptEncodingTransformer(StableDiffusionModel model, EncodePromptOptions options)
        : base(model, "EncodePrompt")
    {
        options.Validate();
        var info = model.Info;
        if (options.PooledOutputColumnName is null && info.Kind != ModelKind.StableDiffusion)
            options = options.WithPooledOutputColumnName(EncodePromptOptions.DefaultPooledColumnName);
        Options = options;
        if (options.LongPrompt && Onnx.OnnxComponent.StaticDim(model.Unet.Input("encoder_hidden_states"), 1) is int fixedLength)
            throw new ArgumentException($"LongPrompt needs a UNet whose encoder_hidden_states sequence axis is dynamic; '{model.Directory}' unet/model.onnx fixes it to {fixedLength} tokens.", nameof(options));
        var outputs = new List<KeyValuePair<string, DataViewType>>
        {
            new(options.OutputColumnName, options.LongPrompt
                ? new VectorDataViewType(NumberDataViewType.Single)
                : new VectorDataViewType(NumberDataViewType.Single, 2, info.SequenceLength, info.HiddenSize)),
        };
        if (options.PooledOutputColumnName is { } pooledName)
        {
            int p = info.PooledSize ?? throw new ArgumentException($"The text encoder of '{model.Directory}' has no pooler_output, so PooledOutputColumnName cannot be set.", nameof(options));
            outputs.Add(new(pooledName, new VectorDataViewType(NumberDataViewType.Single, 2, p)));
        }
        _outputs = outputs.ToArray();
    }

    /// <summary>The stage's options (for SDXL models, with the pooled column's default name filled in).</summary>
    public EncodePromptOptions Options { get; }

    internal override int BatchSize => Options.BatchSize;

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema) => _outputs;

    internal override InputColumnTable GetInputColumns(DataViewSchema? inputSchema) => new InputColumnTable()
        .Add(Options.InputColumnName, InputColumnKind.Text, "String")
        .Add(Options.NegativePromptColumnName, InputColumnKind.Text, "String");

    internal override StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs) => new Worker(this, input);

    private sealed class Worker : StageWorker
    {
        private readonly PromptEncodingTransformer _stage;
        private readonly PromptEncoder _encoder;
        private readonly ValueGetter<ReadOnlyMemory<char>> _prompt;
        private readonly ValueGetter<ReadOnlyMemory<char>>? _negative;
        private readonly IChannel _channel;
        private readonly string[] _prompts;
        private readonly string[] _negatives;
        private readonly long[] _positions;
        private readonly float[][] _embeddings;
        private readonly float[][] _pooled;
        private readonly int _length;
        private readonly int _hidden;
        private readonly int _encoders;
        private readonly bool _forceZeros;
        private readonly List<string> _texts = new();
        private readonly Dictionary<string, int> _textIndex = new(StringComparer.Ordinal);
        private readonly int[] _promptSlots;
        private readonly int[] _negativeSlots;
        private float[] _states = Array.Empty<float>();
        private float[] _pooledStates = Array.Empty<float>();
        private int[] _ids = Array.Empty<int>();
        private float[]? _emptyState;
        private float[]? _emptyPooled;

        public Worker(PromptEncodingTransformer stage, DataViewRow input)
        {
            _stage = stage;
            _encoder = new PromptEncoder(stage.Model);
            _prompt = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[stage.Options.InputColumnName]);
            if (stage.Options.NegativePromptColumnName is { } n)
                _negative = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[n]);
            _channel = stage.StartChannel();
            int b = stage.BatchSize;
            _prompts = new string[b];
            _negatives = new string[b];
            _positions = new long[b];
            _promptSlots = new int[b];
            _negativeSlots = new int[b];
            _embeddings = new float[b][];
            _pooled = new float[b][];
            _length = _encoder.SequenceLength;
            _hidden = _encoder.HiddenSize;
            _encoders = _encoder.EncoderCount;
            _forceZeros = stage.Model.Info.ForceZerosForEmptyPrompt;
        }

        public override void ReadRow(int slot, long position)
        {
            ReadOnlyMemory<char> text = default;
            _prompt(ref text);
            _prompts[slot] = text.ToString();
            ReadOnlyMemory<char> negative = default;
            _negative?.Invoke(ref negative);
            _negatives[slot] = negative.ToString();
            _positions[slot] = position;
        }

        public override void Process(int count)
        {
            if (_stage.Options.LongPrompt)
            {
                ProcessLong(count);
                return;
            }
            // One ONNX call for every distinct non-empty text of the batch; the empty prompt is encoded once per cursor.
            // The texts, their index and the id/state buffers are the worker's, reused batch after batch.
            _texts.Clear();
            _textIndex.Clear();
            for (int r = 0; r < count; r++)
            {
                _promptSlots[r] = TextSlot(_prompts[r]);
                _negativeSlots[r] = TextSlot(_negatives[r]);
            }
            int per = _length * _hidden;
            int pooledSize = _encoder.PooledSize ?? 0;
            EnsureEmpty(pooledSize); // first: it encodes into the same buffers
            Encode(_texts, pooledSize, log: true);
            float[] states = _states, pooled = _pooledStates;
            for (int r = 0; r < count; r++)
            {
                var e = _embeddings[r] ??= new float[2 * per];
                CopyState(states, _negativeSlots[r], per, e.AsSpan(0, per), negative: true);
                CopyState(states, _promptSlots[r], per, e.AsSpan(per, per), negative: false);
                if (_stage.Options.PooledOutputColumnName is not null)
                {
                    var p = _pooled[r] ??= new float[2 * pooledSize];
                    CopyPooled(pooled, _negativeSlots[r], pooledSize, p.AsSpan(0, pooledSize), negative: true);
                    CopyPooled(pooled, _promptSlots[r], pooledSize, p.AsSpan(pooledSize, pooledSize), negative: false);
                }
            }
        }

        /// <summary>The index of a non-empty text among the batch's distinct texts (added when new); −1 for the empty text.</summary>
        private int TextSlot(string t)
        {
            if (t.Length == 0)
                return -1;
            if (!_textIndex.TryGetValue(t, out int i))
            {
                _textIndex[t] = i = _texts.Count;
                _texts.Add(t);
            }
            return i;
        }

        private void CopyPooled(float[] all, int slot, int n, Span<float> dst, bool negative)
        {
            if (slot < 0 && negative && _forceZeros)
                dst.Clear();
            else
                (slot < 0 ? _emptyPooled.AsSpan() : all.AsSpan(slot * n, n)).CopyTo(dst);
        }

        // An empty prompt is the encoded empty string; an empty negative prompt is too, or zeros when the folder sets
        // force_zeros_for_empty_prompt (diffusers StableDiffusionXLPipeline.encode_prompt: negative_prompt_embeds and
        // negative_pooled_prompt_embeds = torch.zeros_like(...)).
        private void CopyState(float[] all, int slot, int n, Span<float> dst, bool negative)
        {
            if (slot < 0 && negative && _forceZeros)
                dst.Clear();
            else
                (slot < 0 ? _emptyState.AsSpan() : all.AsSpan(slot * n, n)).CopyTo(dst);
        }

        private void EnsureEmpty(int pooledSize)
        {
            if (_emptyState is not null)
                return;
            var empty = new List<string> { string.Empty };
            Encode(empty, pooledSize, log: false);
            _emptyState = _states.AsSpan(0, _length * _hidden).ToArray();
            _emptyPooled = _pooledStates.AsSpan(0, pooledSize).ToArray();
        }

        /// <summary>
        /// Tokenizes (truncating with a logged warning) and encodes texts in chunks of BatchSize into
        /// <see cref="_states"/> [n, L, D] and <see cref="_pooledStates"/> [n, P] (the worker's buffers, grown when needed).
        /// </summary>
        private void Encode(List<string> texts, int pooledSize, bool log)
        {
            int n = texts.Count, per = _length * _hidden, idsPer = _encoders * _length;
            Grow(ref _states, n * per);
            Grow(ref _pooledStates, n * pooledSize);
            if (n == 0)
                return;
            // Each encoder gets its own tokenizer's ids (SDXL's tokenizer_2 pads with "!", tokenizer with <|endoftext|>).
            var ids = Grow(ref _ids, n * idsPer);
            for (int i = 0; i < n; i++)
            {
                int dropped = 0;
                for (int e = 0; e < _encoders; e++)
                    dropped = Math.Max(dropped, _encoder.TokenizerOf(e).EncodeToFixedLength(texts[i], ids.AsSpan((i * _encoders + e) * _length, _length)));
                if (dropped > 0 && log)
                    WarnTruncated(texts[i], dropped);
            }
            int chunk = Math.Max(1, _stage.BatchSize);
            for (int start = 0; start < n; start += chunk)
            {
                int m = Math.Min(chunk, n - start);
                _encoder.Encode(ids.AsSpan(start * idsPer, m * idsPer), m, _states.AsSpan(start * per, m * per),
                    pooledSize > 0 ? _pooledStates.AsSpan(start * pooledSize, m * pooledSize) : Span<float>.Empty);
            }
        }

        private static T[] Grow<T>(ref T[] buffer, int length)
        {
            if (buffer.Length < length)
                buffer = new T[length];
            return buffer;
        }

        private void WarnTruncated(string text, int dropped)
        {
            for (int r = 0; r < _prompts.Length; r++)
            {
                if (ReferenceEquals(_prompts[r], text) || _prompts[r] == text || _negatives[r] == text)
                {
                    string which = _prompts[r] == text ? "prompt" : "negative prompt";
                    _channel.Warning(MessageSensitivity.None, $"Row {_positions[r]}: the {which} has {dropped} token(s) beyond the model's {_length - 2}-token limit; they were dropped. Set EncodePromptOptions.LongPrompt to keep them.");
                    return;
                }
            }
        }

        /// <summary>
        /// LongPrompt: per row, as many 75-token windows as the longer of prompt and negative prompt needs (with every
        /// tokenizer, for SDXL's two); the pooled vector, when wanted, is the first window's.
        /// </summary>
        private void ProcessLong(int count)
        {
            int per = _length * _hidden;
            int pooledSize = _stage.Options.PooledOutputColumnName is null ? 0 : _encoder.PooledSize ?? 0;
            for (int r = 0; r < count; r++)
            {
                int windows = 1;
                for (int e = 0; e < _encoders; e++)
                    windows = Math.Max(windows, Math.Max(_encoder.TokenizerOf(e).CountWindows(_prompts[r]), _encoder.TokenizerOf(e).CountWindows(_negatives[r])));
                if (windows > _stage.Options.MaxWindows)
                    throw new ArgumentOutOfRangeException(nameof(EncodePromptOptions.MaxWindows),
                        $"Row {_positions[r]}: the prompt needs {windows} windows of 75 tokens, more than MaxWindows = {_stage.Options.MaxWindows}.");
                // Rows [negative w0..wk, prompt w0..wk], each with one id row per encoder.
                var ids = new int[2 * windows * _encoders * _length];
                var block = new int[windows * _length];
                for (int e = 0; e < _encoders; e++)
                {
                    for (int side = 0; side < 2; side++)
                    {
                        _encoder.TokenizerOf(e).EncodeWindows(side == 0 ? _negatives[r] : _prompts[r], windows, block);
                        for (int w = 0; w < windows; w++)
                            block.AsSpan(w * _length, _length).CopyTo(ids.AsSpan(((side * windows + w) * _encoders + e) * _length, _length));
                    }
                }
                var states = new float[2 * windows * per];
                var pooled = new float[2 * windows * pooledSize];
                _encoder.Encode(ids, 2 * windows, states, pooled);
                bool zeroNegative = _forceZeros && _negatives[r].Length == 0;
                if (zeroNegative)
                {
                    states.AsSpan(0, windows * per).Clear();
                    pooled.AsSpan(0, windows * pooledSize).Clear();
                }
                // Windows are already in order: [negative w0..wk, prompt w0..wk] = [2, k·L, D].
                _embeddings[r] = states;
                if (pooledSize > 0)
                {
                    var p = _pooled[r] ??= new float[2 * pooledSize];
                    pooled.AsSpan(0, pooledSize).CopyTo(p);
                    pooled.AsSpan(windows * pooledSize, pooledSize).CopyTo(p.AsSpan(pooledSize));
                }
            }
        }

        public override Delegate MakeGetter(int outputIndex, Func<int> slot)
        {
            if (outputIndex == 0)
                return (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) => WriteVector(_embeddings[slot()], ref value));
            return (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) => WriteVector(_pooled[slot()], ref value));
        }


        public override void Dispose()
        {
            _encoder.Dispose();
            _channel.Dispose();
        }
    }
}

/// <summary>
/// Create a <see cref="PromptEncodingEstimator"/>, which tokenizes a text column with the model's CLIP tokenizer and
/// encodes it with the model's text encoder into the conditioning states that DenoiseLatents consumes.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// ###  Estimator characteristics
/// |  |  |
/// | -- | -- |
/// | Does this estimator need to look at the data to train its parameters? | No |
/// | Input column data type | Text (prompt), optional Text (negative prompt) |
/// | Output column data type | Vector of Single [2, 77, D] (unconditional, conditional); SDXL also the pooled Vector of Single [2, P] |
/// | Required NuGet in addition to Microsoft.ML | MLNet.Diffusion, an ONNX Runtime native package |
/// ]]></format>
/// </remarks>
public sealed class PromptEncodingEstimator : DiffusionEstimator<PromptEncodingTransformer>
{
    internal PromptEncodingEstimator(StableDiffusionModel model, EncodePromptOptions options)
        : base(new PromptEncodingTransformer(model, options))
    {
    }
}
