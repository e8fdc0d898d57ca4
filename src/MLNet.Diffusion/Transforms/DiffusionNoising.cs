using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>Settings of the AddDiffusionNoise stage. Set exactly one of <see cref="Timestep"/> and <see cref="TimestepColumnName"/>.</summary>
public sealed class AddDiffusionNoiseOptions
{
    /// <summary>The training timestep t in [0, T − 1] (T = the scheduler's <c>num_train_timesteps</c>) for every row.</summary>
    public int? Timestep { get; init; }

    /// <summary>Name of a column giving each row's timestep t in [0, T − 1] (any integer type, or whole numbers in Single/Double).</summary>
    public string? TimestepColumnName { get; init; }

    /// <summary>
    /// Name of an optional seed column (any integer type, or whole numbers in a Single/Double column) for ε. Rows
    /// without a seed column use <see cref="Seed"/> (or a seed derived from the MLContext) plus the row's position.
    /// A seed gives the same ε as DenoiseLatents' initial noise for that seed.
    /// </summary>
    public string? SeedColumnName { get; init; }

    /// <summary>Base seed for rows without a seed column; null derives it from the MLContext's random source.</summary>
    public int? Seed { get; init; }

    /// <summary>
    /// Where ε comes from: default <see cref="NoiseOptions.Default"/>. A row's ε is the first draw (after
    /// <see cref="NoiseOptions.DrawsBefore"/> skipped ones) of a generator seeded
    /// with its seed (<c>torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))</c> with
    /// <see cref="NoiseGenerator.TorchCpu"/>). The stage works row by row, so every batch policy draws per row.
    /// </summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;

    /// <summary>Name of an optional second output: the noise ε itself (the ε-prediction training target), same shape as the input.</summary>
    public string? NoiseOutputColumnName { get; init; }

    internal void Validate(ModelInfo info)
    {
        int last = info.SchedulerConfig.NumTrainTimesteps - 1;
        if (Timestep is null && TimestepColumnName is null)
            throw new ArgumentException("Set Timestep (one t for every row) or TimestepColumnName (a t per row).", nameof(Timestep));
        if (Timestep is not null && TimestepColumnName is not null)
            throw new ArgumentException($"Set either Timestep ({Timestep}) or TimestepColumnName ('{TimestepColumnName}'), not both.", nameof(TimestepColumnName));
        if (Timestep is int t && (t < 0 || t > last))
            throw new ArgumentOutOfRangeException(nameof(Timestep), t, $"Timestep must be a training timestep in [0, {last}] (num_train_timesteps − 1).");
        if (Noise is null)
            throw new ArgumentNullException(nameof(Noise), "Noise must be set; NoiseOptions.Default is the library's generator.");
        Noise.Validate(nameof(Noise));
    }
}

/// <summary>
/// The forward diffusion process q(x_t | x₀) = N(√ᾱ_t·x₀, (1 − ᾱ_t)·I) (Ho et al. 2020, eq. 4): adds seeded noise to
/// each row's vector, x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε, with ᾱ from the model's scheduler config (<see cref="NoiseSchedule"/>).
/// The transformer of <see cref="DiffusionNoisingEstimator"/>; pure math, no ONNX model runs.
/// </summary>
public sealed class DiffusionNoisingTransformer : DiffusionTransformer
{
    private readonly NoiseSchedule _schedule;

    internal DiffusionNoisingTransformer(StableDiffusionModel model, string outputColumnName, string inputColumnName, AddDiffusionNoiseOptions options)
        : base(model, "AddDiffusionNoise")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputColumnName);
        ArgumentException.ThrowIfNullOrWhiteSpace(inputColumnName);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(model.Info);
        if (options.NoiseOutputColumnName == outputColumnName)
            throw new ArgumentException($"NoiseOutputColumnName '{outputColumnName}' is also the output column; choose another name.", nameof(options));
        OutputColumnName = outputColumnName;
        InputColumnName = inputColumnName;
        Options = options;
        _schedule = new NoiseSchedule(model.Info.SchedulerConfig);
    }

    /// <summary>The noisy output column x_t.</summary>
    public string OutputColumnName { get; }

    /// <summary>The clean input column x₀.</summary>
    public string InputColumnName { get; }

    /// <summary>The stage's settings.</summary>
    public AddDiffusionNoiseOptions Options { get; }

    /// <summary>Rows are independent and cheap: one at a time.</summary>
    internal override int BatchSize => 1;

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema) =>
        Outputs(inputSchema?.GetColumnOrNull(InputColumnName)?.Type as VectorDataViewType ?? new VectorDataViewType(NumberDataViewType.Single, 1));

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(SchemaShape inputSchema) =>
        Outputs(ColumnChecks.Find(inputSchema, InputColumnName)?.Kind == SchemaShape.Column.VectorKind.VariableVector
            ? new VectorDataViewType(NumberDataViewType.Single)
            : new VectorDataViewType(NumberDataViewType.Single, 1));

    /// <summary>The outputs have the input's type: same size and dimensions (placeholders at estimator time, where only the kind counts).</summary>
    private KeyValuePair<string, DataViewType>[] Outputs(VectorDataViewType type) => Options.NoiseOutputColumnName is { } noise
        ? new KeyValuePair<string, DataViewType>[] { new(OutputColumnName, type), new(noise, type) }
        : new KeyValuePair<string, DataViewType>[] { new(OutputColumnName, type) };

    private const string TimestepDescription = "an integer timestep (Int32, Int64, UInt32, UInt64; or whole numbers in Single/Double)";

    internal override InputColumnTable GetInputColumns(DataViewSchema? inputSchema) => new InputColumnTable()
        .Add(InputColumnName, InputColumnKind.FloatVector, "Vector<Single> (x₀)")
        .Add(Options.TimestepColumnName, InputColumnKind.Integer, TimestepDescription)
        .Add(Options.SeedColumnName, InputColumnKind.Integer, ColumnChecks.SeedDescription);

    internal override StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs) => new Worker(this, input);

    private sealed class Worker : StageWorker
    {
        private readonly DiffusionNoisingTransformer _stage;
        private readonly ValueGetter<VBuffer<float>> _inputGetter;
        private readonly Func<long>? _timestepGetter;
        private readonly RowSeeds _rowSeeds;
        private VBuffer<float> _buffer;
        private float[] _clean = Array.Empty<float>();
        private float[] _noise = Array.Empty<float>();
        private float[] _noisy = Array.Empty<float>();
        private int _length;

        public Worker(DiffusionNoisingTransformer stage, DataViewRow input)
        {
            _stage = stage;
            var o = stage.Options;
            _inputGetter = input.GetGetter<VBuffer<float>>(input.Schema[stage.InputColumnName]);
            if (o.TimestepColumnName is { } t)
                _timestepGetter = SeedReader.Create(input, input.Schema[t]);
            _rowSeeds = new RowSeeds(input, o.SeedColumnName, o.Seed, stage.Model);
        }

        public override void ReadRow(int slot, long position)
        {
            var o = _stage.Options;
            _inputGetter(ref _buffer);
            _length = _buffer.Length;
            if (_clean.Length != _length)
            {
                _clean = new float[_length];
                _noise = new float[_length];
                _noisy = new float[_length];
            }
            _buffer.CopyTo(_clean);

            int last = _stage._schedule.Length - 1;
            long t = o.Timestep ?? SeedReader.Read(_timestepGetter!, position, o.TimestepColumnName!, "timestep");
            if (t < 0 || t > last)
                throw new InvalidOperationException($"Row {position}: timestep {t} in column '{o.TimestepColumnName}' is out of range [0, {last}].");
            long seed = _rowSeeds.Read(position);

            // x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε (Ho et al. 2020, eq. 4).
            o.Noise.CreateBatch([seed], _noise.Length).NextGaussian(_noise);
            NoiseScheduleMath.AddNoise(_stage._schedule, (int)t, _clean, _noise, _noisy);
        }

        public override void Process(int count)
        {
        }

        public override Delegate MakeGetter(int outputIndex, Func<int> slot) =>
            (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) =>
            {
                _ = slot();
                WriteVector(outputIndex == 0 ? _noisy : _noise, ref value);
            });
    }
}

/// <summary>
/// Create a <see cref="DiffusionNoisingEstimator"/>, which samples the forward diffusion process
/// x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε for each row: training pairs (x_t, ε) for ε-prediction, or a look at what the UNet sees at t.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// ###  Estimator characteristics
/// |  |  |
/// | -- | -- |
/// | Does this estimator need to look at the data to train its parameters? | No |
/// | Input column data type | Vector of Single (x₀, e.g. EncodeImage's latents); optional timestep and seed (integers) |
/// | Output column data type | Vector of Single of the input's shape (x_t); optionally the noise ε |
/// | Required NuGet in addition to Microsoft.ML | MLNet.Diffusion |
/// ]]></format>
/// </remarks>
public sealed class DiffusionNoisingEstimator : DiffusionEstimator<DiffusionNoisingTransformer>
{
    internal DiffusionNoisingEstimator(StableDiffusionModel model, string outputColumnName, string inputColumnName, AddDiffusionNoiseOptions options)
        : base(new DiffusionNoisingTransformer(model, outputColumnName, inputColumnName, options))
    {
    }
}
