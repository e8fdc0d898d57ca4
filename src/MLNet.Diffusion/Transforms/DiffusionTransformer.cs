using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>
/// The common ground of the diffusion stages: a lazy, mini-batching <see cref="ITransformer"/>. <see cref="Transform"/>
/// returns a view that runs the model only when a cursor asks for one of the stage's output columns; rows are gathered
/// into mini-batches (one ONNX call for many rows), which is invisible to the user except for speed. It also serves
/// <see cref="IRowToRowMapper"/>, so <c>CreatePredictionEngine</c> works.
/// </summary>
public abstract class DiffusionTransformer : ITransformer
{
    private protected DiffusionTransformer(StableDiffusionModel model, string stageName)
    {
        ArgumentNullException.ThrowIfNull(model);
        model.ThrowIfDisposed();
        Model = model;
        StageName = stageName;
    }

    /// <summary>The model the stage runs.</summary>
    public StableDiffusionModel Model { get; }

    internal string StageName { get; }

    /// <summary>Always true: the stage maps each row to a row.</summary>
    public bool IsRowToRowMapper => true;

    /// <summary>Rows per ONNX call.</summary>
    internal abstract int BatchSize { get; }

    /// <summary>
    /// The stage's input columns (<see cref="InputColumnTable"/>): the one table its estimator-time and transform-time
    /// checks and <see cref="GetInputColumnNames"/> read. <paramref name="inputSchema"/> is null at estimator time; a
    /// stage whose expected sizes follow its input column's shape (DecodeLatents) uses it.
    /// </summary>
    internal abstract InputColumnTable GetInputColumns(DataViewSchema? inputSchema);

    /// <summary>Names of the input columns the stage reads (present ones only).</summary>
    internal IReadOnlyList<string> GetInputColumnNames(DataViewSchema inputSchema) => GetInputColumns(inputSchema).Names;

    /// <summary>Checks the input columns' presence, types and sizes; throws <see cref="ArgumentOutOfRangeException"/> naming the column.</summary>
    internal void ValidateInputSchema(DataViewSchema inputSchema) => GetInputColumns(inputSchema).Validate(inputSchema);

    /// <summary>
    /// The stage's output columns (name, type) for an input schema; with a null schema (estimator-time), types whose
    /// size depends on the input may carry placeholder sizes, since a <see cref="SchemaShape"/> records only the kind.
    /// </summary>
    internal abstract IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema);

    /// <summary>
    /// The output columns at estimator time, for an input <see cref="SchemaShape"/>: by default those of
    /// <see cref="GetOutputColumns(DataViewSchema?)"/> with a null schema; a stage whose output kind (fixed or variable
    /// size) follows its input's overrides it.
    /// </summary>
    internal virtual IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(SchemaShape inputSchema) => GetOutputColumns((DataViewSchema?)null);

    /// <summary>Checks the input columns of a <see cref="SchemaShape"/> (estimator-time check); throws naming the column.</summary>
    internal void ValidateInputShape(SchemaShape inputSchema) => GetInputColumns(null).Validate(inputSchema);

    /// <summary>Creates the per-cursor worker (buffers, scheduler state) reading from <paramref name="input"/>.</summary>
    internal abstract StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs);

    /// <summary>Returns the schema of <see cref="Transform"/>'s result: the input columns, then the stage's outputs.</summary>
    /// <param name="inputSchema">The input schema.</param>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        ValidateInputSchema(inputSchema);
        LastInputSchema = inputSchema;
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var c in GetOutputColumns(inputSchema))
            builder.AddColumn(c.Key, c.Value);
        return builder.ToSchema();
    }

    /// <summary>Returns a lazy view of <paramref name="input"/> with the stage's output columns added. No model work happens here.</summary>
    /// <param name="input">The input data.</param>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        Model.ThrowIfDisposed();
        return new StageDataView(this, input, GetOutputSchema(input.Schema));
    }

    /// <summary>Returns a row-to-row mapper over <paramref name="inputSchema"/> (used by prediction engines; one row per call).</summary>
    /// <param name="inputSchema">The input schema.</param>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return new StageRowMapper(this, inputSchema, GetOutputSchema(inputSchema));
    }

    /// <summary>
    /// Saves the stage in ML.NET's model format as a chain of built-in transforms that carries the stage's configuration
    /// and the model folder's path (never weights) and re-creates the stage when loaded (docs/persistence.md).
    /// </summary>
    void ICanSaveModel.Save(ModelSaveContext ctx) => Persistence.SurrogateChain.Save(this, ctx);

    /// <summary>The last input schema the stage was fitted on or applied to; the saved surrogate is built for it.</summary>
    internal DataViewSchema? LastInputSchema { get; private set; }

    internal IChannel StartChannel() => Model.Host.Start(StageName);

    internal static ArgumentOutOfRangeException SchemaMismatch(string paramName, string column, string expected, string actual) =>
        new(paramName, $"Schema mismatch for input column '{column}': expected {expected}, got {actual}.");

    internal static ArgumentOutOfRangeException ColumnNotFound(string paramName, string column, string expected) =>
        new(paramName, $"Input column '{column}' ({expected}) was not found in the input schema.");
}

/// <summary>
/// One cursor's worth of stage state: reads rows into batch slots, runs a batch, and serves the outputs of a slot.
/// </summary>
internal abstract class StageWorker : IDisposable
{
    /// <summary>Reads the input row the input cursor is on into batch slot <paramref name="slot"/>.</summary>
    public abstract void ReadRow(int slot, long position);

    /// <summary>Runs the model on slots [0, count).</summary>
    public abstract void Process(int count);

    /// <summary>A getter of output <paramref name="outputIndex"/> that serves the slot <paramref name="slot"/> returns.</summary>
    public abstract Delegate MakeGetter(int outputIndex, Func<int> slot);

    public virtual void Dispose()
    {
    }

    /// <summary>Copies <paramref name="source"/> into a vector value, reusing its buffer (the one VBuffer write of all stages).</summary>
    public static void WriteVector(ReadOnlySpan<float> source, ref VBuffer<float> value)
    {
        var editor = VBufferEditor.Create(ref value, source.Length);
        source.CopyTo(editor.Values);
        value = editor.Commit();
    }
}

/// <summary>
/// The estimator side of a diffusion stage: nothing to train, so <see cref="Fit"/> validates the input schema and
/// returns the transformer; <see cref="GetOutputSchema"/> reports the output columns with their exact types.
/// </summary>
/// <typeparam name="TTransformer">The stage's transformer.</typeparam>
public abstract class DiffusionEstimator<TTransformer> : IEstimator<TTransformer>
    where TTransformer : DiffusionTransformer
{
    private readonly TTransformer _transformer;

    private protected DiffusionEstimator(TTransformer transformer)
    {
        _transformer = transformer;
    }

    /// <summary>Checks the input schema and returns the transformer (no training happens).</summary>
    /// <param name="input">The training data; only its schema is read.</param>
    public TTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        _transformer.Model.ThrowIfDisposed();
        _transformer.GetOutputSchema(input.Schema);
        return _transformer;
    }

    /// <summary>The input columns plus the stage's output columns; throws naming a missing or mistyped input column.</summary>
    /// <param name="inputSchema">The input schema shape.</param>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        _transformer.ValidateInputShape(inputSchema);
        var columns = new Dictionary<string, SchemaShape.Column>(StringComparer.Ordinal);
        var order = new List<string>();
        foreach (var c in inputSchema)
        {
            if (!columns.ContainsKey(c.Name))
                order.Add(c.Name);
            columns[c.Name] = c;
        }
        foreach (var o in _transformer.GetOutputColumns(inputSchema))
        {
            if (!columns.ContainsKey(o.Key))
                order.Add(o.Key);
            columns[o.Key] = SchemaShapes.Create(_transformer.Model.MLContext, o.Key, o.Value);
        }
        var result = new SchemaShape.Column[order.Count];
        for (int i = 0; i < result.Length; i++)
            result[i] = columns[order[i]];
        return new SchemaShape(result);
    }
}
