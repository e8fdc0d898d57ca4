using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Lora;
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
    /// SDXL, D is both text encoders' penultimate hidden states side by side (768 + 1280 = 2048), and "no negative prompt"
    /// gives zeros when the folder sets <c>force_zeros_for_empty_prompt</c> (<see cref="ModelInfo.ForceZerosForEmptyPrompt"/>;
    /// see <see cref="EncodeEmptyNegativePrompt"/>).
    /// </summary>
    public string OutputColumnName { get; init; } = "Embeddings";

    /// <summary>Name of the prompt input column (text).</summary>
    public string InputColumnName { get; init; } = "Prompt";

    /// <summary>
    /// Name of an optional negative-prompt column (text). Without one, or where its value is empty, a row has no negative
    /// prompt (diffusers' <c>negative_prompt=None</c>; see <see cref="EncodeEmptyNegativePrompt"/> for the empty string).
    /// </summary>
    public string? NegativePromptColumnName { get; init; }

    /// <summary>
    /// What an empty negative prompt means; it matters only on folders that set <c>force_zeros_for_empty_prompt</c> (SDXL
    /// base), where diffusers tells "no negative prompt" from the empty string (StableDiffusionXLPipeline.encode_prompt:
    /// <c>zero_out_negative_prompt = negative_prompt is None and force_zeros_for_empty_prompt</c>, else
    /// <c>negative_prompt or ""</c> is encoded). False (default): an empty value in <see cref="NegativePromptColumnName"/>,
    /// and every row of a stage without that column, has no negative prompt, as <c>negative_prompt=None</c>: zeros on those
    /// folders, the encoded empty string on others. True: it is the explicit empty string <c>""</c>, encoded on every folder.
    /// </summary>
    /// <remarks>
    /// The choice is per stage, not per row: an ML.NET text column has no missing value apart from the empty one (a null
    /// string loads as an empty value, and empty CSV fields read as empty), so no value can mean None in one row and "" in
    /// the next. Put rows that need the other meaning through a second stage.
    /// </remarks>
    public bool EncodeEmptyNegativePrompt { get; init; }

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

    /// <summary>With <see cref="LongPrompt"/>, the most windows a prompt may use (each 75 tokens); with A1111 or compel syntax, the most chunks.</summary>
    public int MaxWindows { get; init; } = 8;

    /// <summary>
    /// The prompt syntax (docs/prompt-syntax.md). <see cref="Prompting.PromptSyntax.Plain"/> (default): the text as written,
    /// diffusers' encoding. <see cref="Prompting.PromptSyntax.A1111"/>: AUTOMATIC1111's weights <c>(x:1.3)</c>, <c>[x]</c>,
    /// <c>BREAK</c>, its 75-token chunks and <see cref="Emphasis"/>. <see cref="Prompting.PromptSyntax.Compel"/>: compel's
    /// <c>word++</c>, <c>(phrase)0.8</c>, <c>.blend()</c>, <c>.and()</c>. With either of the latter the output column is a
    /// variable-size vector [2, k·77, D] (k chunks, the negative prompt and the prompt padded to the same k with the empty
    /// prompt's states), <see cref="LongPrompt"/> is not used, and k &gt; 1 needs a UNet with a dynamic sequence axis.
    /// A1111's <c>AND</c>, part weights and prompt editing (<c>[a:b:n]</c>, <c>[a|b]</c>) need <see cref="PromptScheduleColumnName"/>;
    /// without it they are refused with an error naming the row.
    /// </summary>
    public Prompting.PromptSyntax PromptSyntax { get; init; } = Prompting.PromptSyntax.Plain;

    /// <summary>With <see cref="Prompting.PromptSyntax.A1111"/>, how token weights change the states (A1111's "Emphasis mode"; default Original).</summary>
    public Prompting.PromptEmphasis Emphasis { get; init; } = Prompting.PromptEmphasis.Original;

    /// <summary>
    /// With <see cref="Prompting.PromptSyntax.A1111"/>: name of an output column that carries each row's prompt-editing and
    /// <c>AND</c> schedule to DenoiseLatents (<see cref="DenoiseLatentsOptions.PromptScheduleColumnName"/>), so that
    /// <c>[red:blue:0.5]</c>, <c>[red|blue]</c> and <c>a AND b :0.5</c> work from a prompt column. Needs
    /// <see cref="ScheduleSteps"/>. A scheduled row's embeddings are then [1 + K, T, D] (the negative prompt's states, then its
    /// K distinct conditionings); an ordinary row's stay [2, T, D], bit for bit what they are without this column. The
    /// column is a variable-size Single vector <c>[steps, K, parts, weights…, conditioning of each part at each step…]</c>.
    /// Models with one text encoder and no pooled output (SD 1.x/2.x) only; the negative prompt may not use prompt editing.
    /// Null (default): no schedule column, and such prompts are refused with an error naming the row.
    /// </summary>
    public string? PromptScheduleColumnName { get; init; }

    /// <summary>
    /// With <see cref="PromptScheduleColumnName"/>: the step count the schedule is computed for, as A1111 computes
    /// <c>[a:b:0.5]</c>'s switch from its <c>total_steps</c>: the DenoiseLatents stage's
    /// <see cref="DenoiseLatentsOptions.Steps"/>, or twice that with a second-order sampler (Heun), whose two UNet calls per
    /// step A1111 counts one by one (<see cref="Prompting.A1111SamplerSteps.ScheduleSteps"/> computes it). DenoiseLatents
    /// refuses a schedule made for another count.
    /// </summary>
    public int? ScheduleSteps { get; init; }

    /// <summary>
    /// With A1111 or compel syntax, when the prompt and the negative prompt make different numbers of 77-token chunks:
    /// true (default) appends the empty prompt's encoded chunk to the shorter until they match, as A1111 does with its
    /// "Pad prompt/negative prompt" setting on (<c>pad_cond_uncond</c>, written "Pad conds: True" in its parameters;
    /// compel's <c>pad_conditioning_tensors_to_same_length</c> is the same rule). A1111's own default is off: it then runs
    /// the prompt and the negative prompt in separate UNet calls, each at its own length, which the stage's [2, T, D]
    /// column cannot hold. False refuses such a row (naming it and both chunk counts) instead of padding, so that a run
    /// never silently differs from A1111 with the setting off; rows whose chunk counts match are the same either way.
    /// </summary>
    public bool PadPromptAndNegativePrompt { get; init; } = true;

    /// <summary>
    /// Name of an output text column that receives each row's LoRA tags (A1111's <c>&lt;lora:name:scale&gt;</c>, taken out of
    /// the prompt and negative prompt before tokenizing, in a canonical form; empty for a row without tags). The row's text
    /// is encoded with those LoRAs merged into the text encoder (on top of the model's own), and DenoiseLatents applies
    /// them to the UNet when its <see cref="DenoiseLatentsOptions.LoraColumnName"/> names this column. Names are looked up
    /// in <see cref="StableDiffusionModelOptions.LoraDirectory"/>. Null (default): a prompt with a LoRA tag is an error
    /// naming the row, so that no LoRA is applied to the text encoder only.
    /// </summary>
    public string? LoraColumnName { get; init; }

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
        if (!Enum.IsDefined(PromptSyntax))
            throw new ArgumentOutOfRangeException(nameof(PromptSyntax), PromptSyntax, "PromptSyntax must be Plain, A1111 or Compel.");
        if (!Enum.IsDefined(Emphasis))
            throw new ArgumentOutOfRangeException(nameof(Emphasis), Emphasis, "Emphasis must be None, Ignore, Original or NoNorm.");
        if (LongPrompt && PromptSyntax != Prompting.PromptSyntax.Plain)
            throw new ArgumentException($"LongPrompt applies to plain prompts; {PromptSyntax} syntax cuts prompts into chunks itself (MaxWindows bounds them).", nameof(LongPrompt));
        if (PromptScheduleColumnName is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(PromptScheduleColumnName, nameof(PromptScheduleColumnName));
            if (PromptSyntax != Prompting.PromptSyntax.A1111)
                throw new ArgumentException($"PromptScheduleColumnName carries A1111's prompt editing and AND; it needs PromptSyntax = A1111, not {PromptSyntax}.", nameof(PromptScheduleColumnName));
            if (ScheduleSteps is null)
                throw new ArgumentException("PromptScheduleColumnName needs ScheduleSteps: A1111 computes [a:b:0.5]'s switch from the number of sampling steps (set it to DenoiseLatentsOptions.Steps).", nameof(ScheduleSteps));
        }
        if (!PadPromptAndNegativePrompt && PromptSyntax == Prompting.PromptSyntax.Plain)
            throw new ArgumentException("PadPromptAndNegativePrompt applies to A1111 and compel syntax (their chunks); plain prompts are one window, or LongPrompt's windows.", nameof(PadPromptAndNegativePrompt));
        if (ScheduleSteps is int steps)
        {
            if (PromptScheduleColumnName is null)
                throw new ArgumentException("ScheduleSteps applies with PromptScheduleColumnName (the column that carries the schedule to DenoiseLatents).", nameof(ScheduleSteps));
            if (steps < 1 || steps > 10000)
                throw new ArgumentOutOfRangeException(nameof(ScheduleSteps), steps, "ScheduleSteps must be in [1, 10000].");
        }
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
        if (!info.IsConditional)
            throw new InvalidOperationException($"The model '{model.Directory}' is unconditional ({info.Kind}): it has no text encoder, and its UNet takes no prompt. "
                + "Run DenoiseLatents(model, outputColumnName, options) without an EncodePrompt stage.");
        if (options.PooledOutputColumnName is null && info.Kind != ModelKind.StableDiffusion)
            options = options.WithPooledOutputColumnName(EncodePromptOptions.DefaultPooledColumnName);
        Options = options;
        if (options.LongPrompt && Onnx.OnnxComponent.StaticDim(model.Unet.Input("encoder_hidden_states"), 1) is int fixedLength)
            throw new ArgumentException($"LongPrompt needs a UNet whose encoder_hidden_states sequence axis is dynamic; '{model.Directory}' unet/model.onnx fixes it to {fixedLength} tokens.", nameof(options));
        bool weighted = options.PromptSyntax != Prompting.PromptSyntax.Plain;
        // A UNet with a fixed sequence axis takes one 77-token chunk; the encoder refuses longer texts naming the row.
        MaxChunks = weighted && Onnx.OnnxComponent.StaticDim(model.Unet.Input("encoder_hidden_states"), 1) is not null ? 1 : options.MaxWindows;
        var outputs = new List<KeyValuePair<string, DataViewType>>
        {
            new(options.OutputColumnName, options.LongPrompt || weighted
                ? new VectorDataViewType(NumberDataViewType.Single)
                : new VectorDataViewType(NumberDataViewType.Single, 2, info.SequenceLength, info.HiddenSize)),
        };
        if (options.PooledOutputColumnName is { } pooledName)
        {
            int p = info.PooledSize ?? throw new ArgumentException($"The text encoder of '{model.Directory}' has no pooler_output, so PooledOutputColumnName cannot be set.", nameof(options));
            outputs.Add(new(pooledName, new VectorDataViewType(NumberDataViewType.Single, 2, p)));
        }
        if (options.LoraColumnName is { } loraColumn)
            outputs.Add(new(loraColumn, TextDataViewType.Instance));
        if (options.PromptScheduleColumnName is { } scheduleColumn)
        {
            if (model.TextEncoder2 is not null || options.PooledOutputColumnName is not null)
                throw new ArgumentException($"PromptScheduleColumnName: '{model.Directory}' writes pooled prompt vectors (or has two text encoders); the denoiser would have to "
                    + "switch SDXL's pooled text_embeds with each conditioning, which it does not. Prompt editing and AND run on SD 1.x/2.x models.", nameof(options));
            outputs.Add(new(scheduleColumn, new VectorDataViewType(NumberDataViewType.Single)));
        }
        _outputs = outputs.ToArray();
    }

    /// <summary>The stage's options (for SDXL models, with the pooled column's default name filled in).</summary>
    public EncodePromptOptions Options { get; }

    internal override int BatchSize => Options.BatchSize;

    /// <summary>With A1111 or compel syntax, the most 77-token chunks a text may use.</summary>
    internal int MaxChunks { get; }

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema) => _outputs;

    internal override InputColumnTable GetInputColumns(DataViewSchema? inputSchema) => new InputColumnTable()
        .Add(Options.InputColumnName, InputColumnKind.Text, "String")
        .Add(Options.NegativePromptColumnName, InputColumnKind.Text, "String");

    internal override StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs) => new Worker(this, input);

    private sealed class Worker : StageWorker
    {
        private readonly PromptEncoder _encoder;
        private readonly ValueGetter<ReadOnlyMemory<char>> _prompt;
        private readonly ValueGetter<ReadOnlyMemory<char>>? _negative;
        private readonly string? _emptyNegative;
        private readonly IChannel _channel;
        private readonly string[] _prompts;
        private readonly string?[] _negatives;
        private readonly long[] _positions;
        private readonly float[]?[] _embeddings;
        private readonly float[]?[] _pooled;
        private readonly RowLoras<PromptEncoder> _loras;
        private readonly Prompting.ConditioningSchedule?[] _schedules;
        private readonly int _pooledIndex;
        private readonly int _loraIndex;
        private readonly int _scheduleIndex;
        private readonly int? _scheduleSteps;

        public Worker(PromptEncodingTransformer stage, DataViewRow input)
        {
            var options = stage.Options;
            _channel = stage.StartChannel();
            var settings = new PromptEncodingSettings(stage.BatchSize, options.LongPrompt, options.MaxWindows, Pooled: options.PooledOutputColumnName is not null,
                options.PromptSyntax, options.Emphasis, stage.MaxChunks, options.ScheduleSteps, options.PadPromptAndNegativePrompt);
            _encoder = new PromptEncoder(stage.Model, settings, new ChannelLog(_channel));
            // Output order: embeddings, then pooled, LoRA tags and schedule, each when the options ask for it.
            int next = 1;
            _pooledIndex = options.PooledOutputColumnName is null ? -1 : next++;
            _loraIndex = options.LoraColumnName is null ? -1 : next++;
            _scheduleIndex = options.PromptScheduleColumnName is null ? -1 : next;
            _scheduleSteps = options.ScheduleSteps;
            _prompt = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[options.InputColumnName]);
            if (options.NegativePromptColumnName is { } n)
                _negative = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[n]);
            // An ML.NET text value has no missing state apart from empty: an empty value, like a stage without a
            // negative-prompt column, is "no negative prompt" unless the options make it the explicit empty string.
            _emptyNegative = options.EncodeEmptyNegativePrompt ? string.Empty : null;
            int b = stage.BatchSize;
            _prompts = new string[b];
            _negatives = new string?[b];
            _positions = new long[b];
            _embeddings = new float[]?[b];
            _pooled = new float[]?[b];
            _schedules = new Prompting.ConditioningSchedule?[b];
            // A LoRA group's encoder reads the prompt with the same syntax and schedule settings as the stage's.
            _loras = new RowLoras<PromptEncoder>(stage.Model, options.LoraColumnName, b,
                model => new PromptEncoder(model, settings, new ChannelLog(_channel)));
        }

        public override void ReadRow(int slot, long position)
        {
            ReadOnlyMemory<char> text = default;
            _prompt(ref text);
            _prompts[slot] = text.ToString();
            ReadOnlyMemory<char> negative = default;
            _negative?.Invoke(ref negative);
            _negatives[slot] = negative.IsEmpty ? _emptyNegative : negative.ToString();
            _positions[slot] = position;
            _loras.ReadPrompt(slot, position, ref _prompts[slot]);
        }

        public override void Process(int count)
        {
            if (!_loras.AnyTagged(count))
            {
                _encoder.Encode(_prompts.AsSpan(0, count), _negatives.AsSpan(0, count), _positions.AsSpan(0, count), _embeddings.AsSpan(0, count), _pooled.AsSpan(0, count),
                    _scheduleSteps is null ? default : _schedules.AsSpan(0, count));
                return;
            }
            // Rows grouped by LoRA set: each group through the text encoder with its set merged.
            foreach (var (encoder, rows) in _loras.Groups(count, _encoder))
            {
                int n = rows.Count;
                var prompts = new string[n];
                var negatives = new string?[n];
                var positions = new long[n];
                var embeddings = new float[]?[n];
                var pooled = new float[]?[n];
                var schedules = new Prompting.ConditioningSchedule?[n];
                for (int i = 0; i < n; i++)
                    (prompts[i], negatives[i], positions[i], embeddings[i], pooled[i]) = (_prompts[rows[i]], _negatives[rows[i]], _positions[rows[i]], _embeddings[rows[i]], _pooled[rows[i]]);
                encoder.Encode(prompts, negatives, positions, embeddings, pooled, _scheduleSteps is null ? default : schedules);
                for (int i = 0; i < n; i++)
                    (_embeddings[rows[i]], _pooled[rows[i]], _schedules[rows[i]]) = (embeddings[i], pooled[i], schedules[i]);
            }
        }

        public override Delegate MakeGetter(int outputIndex, Func<int> slot)
        {
            if (outputIndex == 0)
                return (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) => WriteVector(_embeddings[slot()]!, ref value));
            if (outputIndex == _loraIndex)
                return (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> value) => value = _loras.Tags(slot()).AsMemory());
            if (outputIndex == _scheduleIndex)
                return (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) => WriteSchedule(_schedules[slot()], ref value));
            return (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) => WriteVector(_pooled[slot()]!, ref value));
        }

        /// <summary>A row's schedule as the column holds it; an ordinary row's is the plain schedule (one conditioning, weight 1).</summary>
        private void WriteSchedule(Prompting.ConditioningSchedule? schedule, ref VBuffer<float> value)
        {
            schedule ??= Prompting.ConditioningSchedule.Plain(_scheduleSteps!.Value);
            var editor = VBufferEditor.Create(ref value, schedule.SerializedLength);
            schedule.WriteTo(editor.Values);
            value = editor.Commit();
        }

        public override void Dispose()
        {
            _loras.Dispose();
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
/// | Output column data type | Vector of Single [2, 77, D] (unconditional, conditional); SDXL also the pooled Vector of Single [2, P]; optional Text LoRA tags; optional Vector of Single prompt schedule (A1111 prompt editing and AND, with [1 + K, T, D] embeddings) |
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
