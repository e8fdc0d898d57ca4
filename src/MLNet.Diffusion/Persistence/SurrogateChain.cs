using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Persistence;

/// <summary>
/// ML.NET's native model format for our stages. A third-party transformer cannot write its own entry (the save context
/// is internal; MLNET-NOTES.md), so each stage saves a chain of built-in, saveable transforms instead, built here and
/// nowhere else:
/// <list type="number">
/// <item><c>Expression</c>: a constant column whose value is the stage's configuration (a one-stage
/// <see cref="DiffusionPipelineDefinition"/> as JSON: model folder, the stage's record) and whose name is that JSON after
/// <see cref="ConfigPrefix"/>, so the configuration can also be read from the schema alone (<see cref="Walk"/>).</item>
/// <item><c>CopyColumns</c> of the configuration and of each input of the stage's input list
/// (<see cref="DiffusionStageDefinition.Inputs"/>) to its fixed slot; an input the stage does not read gets a placeholder.</item>
/// <item><c>ConvertType</c> to Int64 and <c>Concatenate</c> into a one-value vector for seeds and timesteps.</item>
/// <item><c>StatefulCustomMapping</c> with the stage's contract (<c>MLNet.Diffusion.&lt;Stage&gt;.v2</c>), whose factory
/// re-creates the stage from the configuration and runs it one row at a time (<see cref="SurrogateRunner"/>).</item>
/// <item><c>CopyColumns</c> of the result slots to the stage's output names, then <c>DropColumns</c> of everything else
/// the chain added.</item>
/// </list>
/// No weights are saved: the model folder is referenced by its absolute path.
/// </summary>
internal static class SurrogateChain
{
    public const string ConfigPrefix = "__mlnet_diffusion ";

    /// <summary>Models opened by loaded surrogates, one per folder for the process, and the stages built on them.</summary>
    private static readonly ConcurrentDictionary<string, Lazy<StableDiffusionModel>> s_models = new(StringComparer.Ordinal);
    private static readonly ConcurrentDictionary<string, Lazy<(DiffusionStageDefinition, DiffusionTransformer)>> s_stages = new(StringComparer.Ordinal);

    /// <summary>Saves <paramref name="stage"/> as its surrogate chain.</summary>
    public static void Save(DiffusionTransformer stage, ModelSaveContext ctx)
    {
        var schema = stage.LastInputSchema ?? throw new InvalidOperationException(
            $"The {stage.StageName} stage has not seen its input schema yet; fit the pipeline (or call Transform or GetOutputSchema) before saving it. See docs/persistence.md.");
        var definition = DiffusionStageDefinition.FromTransformer(stage).WithResolvedSchema(schema);
        ((ICanSaveModel)Build(stage.Model.MLContext, definition, stage.Model.Directory, schema)).Save(ctx);
    }

    /// <summary>The surrogate chain of <paramref name="d"/> on <paramref name="modelDirectory"/>, fitted on <paramref name="schema"/>.</summary>
    public static TransformerChain<ITransformer> Build(MLContext ml, DiffusionStageDefinition d, string modelDirectory, DataViewSchema schema)
    {
        string json = new DiffusionPipelineDefinition { ModelDirectory = modelDirectory, Stages = new[] { d } }.ToCompactJson();
        string configColumn = ConfigPrefix + json;
        string literal = "\"" + json.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
        string key = d.ConfigKey(schema);
        bool vectorKey = schema.GetColumnOrNull(key)?.Type is VectorDataViewType;
        var estimators = new List<IEstimator<ITransformer>>
        {
            ml.Transforms.Expression(configColumn, "x => " + literal, key),
        };
        // A stage whose row reads string[] and whose key is scalar (unconditional DenoiseLatents, keyed on the seed): a one-value vector.
        estimators.Add(d.VectorConfig && !vectorKey ? ml.Transforms.Concatenate(Slots.Config, configColumn) : ml.Transforms.CopyColumns(Slots.Config, configColumn));
        foreach (var input in d.Inputs)
        {
            // An input that is not read, or (as version 1 did for masked-image latents) named but absent from the schema,
            // gets the placeholder; the configuration tells the loaded stage which slots it reads.
            string? column = input.Column is { } c && (input.Placeholder is null || schema.GetColumnOrNull(c) is not null) ? c : null;
            if (input.Type == SlotType.Tensor && column is not null && schema.GetColumnOrNull(column)?.Type == NumberDataViewType.Single)
            {
                // A Single scalar (a per-row ControlNet scale): a one-value vector in the tensor slot.
                estimators.Add(ml.Transforms.Concatenate(input.Slot, column));
                continue;
            }
            if (input.Type != SlotType.Int64)
            {
                if (column is null && input.Column is null && input.Placeholder is null)
                {
                    // An optional input not read by a stage that reads no float vector at all (unconditional DenoiseLatents):
                    // a constant vector from the key column fills the slot.
                    string f4 = input.Slot + "_f4", i4 = input.Slot + "_i4";
                    estimators.Add(ml.Transforms.Expression(i4, "x => 0", key));
                    estimators.Add(ml.Transforms.Conversion.ConvertType(f4, i4, DataKind.Single));
                    estimators.Add(ml.Transforms.Concatenate(input.Slot, f4));
                    continue;
                }
                estimators.Add(ml.Transforms.CopyColumns(input.Slot, column ?? input.Placeholder
                    ?? throw new InvalidOperationException($"The {d.Kind} stage has no column for its required input {input.Slot}.")));
                continue;
            }

            // Seeds and timesteps: a vector of Int64 whose first value is read. Absent, a constant 0 computed from the key
            // column (a vector of zeros when the key is a vector: ML.NET's Expression maps each slot).
            string i8 = input.Slot + "_i8";
            if (column is null)
            {
                string i4 = input.Slot + "_i4";
                estimators.Add(ml.Transforms.Expression(i4, "x => 0", key));
                estimators.Add(ml.Transforms.Conversion.ConvertType(vectorKey ? input.Slot : i8, i4, DataKind.Int64));
                if (vectorKey)
                    continue;
            }
            else
            {
                estimators.Add(ml.Transforms.Conversion.ConvertType(i8, column, DataKind.Int64));
            }
            estimators.Add(ml.Transforms.Concatenate(input.Slot, i8));
        }
        estimators.Add(d.CreateMapping(ml));
        foreach (var output in d.Outputs)
            estimators.Add(ml.Transforms.CopyColumns(output.Column, output.Slot));

        // One flat chain, so a loaded model shows the Expression first. Fitted one transform at a time rather than as an
        // EstimatorChain: the chain's SchemaShape check compares image item types exactly (a sized Image<64, 64> column
        // against the surrogate's any-size image member), while the fitted transforms accept any image column.
        var transformers = new List<ITransformer>(estimators.Count + 1);
        IDataView view = new EmptyDataView(schema);
        foreach (var estimator in estimators)
        {
            var t = estimator.Fit(view);
            transformers.Add(t);
            view = t.Transform(view);
        }
        var outputs = new HashSet<string>(d.Outputs.Select(o => o.Column), StringComparer.Ordinal);
        var added = view.Schema.Where(c => !c.IsHidden && !outputs.Contains(c.Name) && schema.GetColumnOrNull(c.Name) is null).Select(c => c.Name).ToArray();
        transformers.Add(ml.Transforms.DropColumns(added).Fit(view));
        return new TransformerChain<ITransformer>(transformers.ToArray());
    }

    /// <summary>Expression's input types (ML.NET's Expression transform reads no other).</summary>
    private static bool IsExpressionScalar(DataViewType t) => t is TextDataViewType || t == NumberDataViewType.Single || t == NumberDataViewType.Double
        || t == NumberDataViewType.Int32 || t == NumberDataViewType.Int64 || t is BooleanDataViewType;

    /// <summary>
    /// The column the configuration constant is computed from, for a stage whose input ML.NET's Expression cannot read
    /// (an image): the seed column when it is of an Expression type, else the first visible one of the input schema.
    /// </summary>
    public static string ScalarKey(DataViewSchema schema, string? preferred, string stage)
    {
        if (preferred is not null && schema.GetColumnOrNull(preferred) is { } p && IsExpressionScalar(p.Type))
            return preferred;
        foreach (var c in schema)
            if (!c.IsHidden && IsExpressionScalar(c.Type))
                return c.Name;
        throw new InvalidOperationException(
            $"The {stage} stage can be saved with mlContext.Model.Save only when its input has a text, Single, Double, Int32, Int64 or Boolean column "
            + "besides the images: the saved configuration is an Expression over such a column (ML.NET's Expression transform reads no images). "
            + "Add one (a prompt or an id), or save a DiffusionPipelineDefinition instead. See docs/persistence.md.");
    }

    /// <summary>
    /// Visits the diffusion stages of a transformer in order: our own stages, and the surrogate chains of a model loaded
    /// with <c>mlContext.Model.Load</c> (recognised by the configuration column their first transform adds; needs the
    /// input schema), with the model folder and the schema the stage reads. Every other transformer goes to <paramref name="other"/>.
    /// </summary>
    public static void Walk(ITransformer transformer, DataViewSchema? schema, Action<DiffusionStageDefinition, string, DataViewSchema?> stage, Action<ITransformer> other)
    {
        Visit(transformer, schema, stage, other);
    }

    private static DataViewSchema? Visit(ITransformer t, DataViewSchema? schema, Action<DiffusionStageDefinition, string, DataViewSchema?> stage, Action<ITransformer> other)
    {
        switch (t)
        {
            case DiffusionTransformer d:
                stage(DiffusionStageDefinition.FromTransformer(d), d.Model.Directory, schema);
                break;
            case TransformerChain<ITransformer> chain when schema is not null && TryReadConfig(chain, schema) is { } loaded:
                var definition = DiffusionPipelineDefinition.FromJson(loaded);
                var saved = definition.Stages[0];
                stage(saved, definition.ModelDirectory, schema);
                // ML.NET saves no image column in a model's input schema, so the schema Load returns lacks EncodeImage's
                // and PrepareInpainting's inputs: their outputs are added by name, typed as the loaded surrogate types them.
                if (saved is EncodeImageStageDefinition e && schema.GetColumnOrNull(e.InputColumnName) is null)
                    return WithVectors(schema, e.OutputColumnName);
                if (saved is PrepareControlImageStageDefinition ci && schema.GetColumnOrNull(ci.ImageColumnName) is null)
                    return WithVectors(schema, ci.OutputColumnName);
                if (saved is PrepareInpaintingStageDefinition p && schema.GetColumnOrNull(p.ImageColumnName) is null)
                    return p.MaskedImageLatentsColumnName is { } masked ? WithVectors(schema, p.LatentMaskColumnName, masked) : WithVectors(schema, p.LatentMaskColumnName);
                break;
            case IEnumerable<ITransformer> chain:
                foreach (var inner in chain)
                    schema = Visit(inner, schema, stage, other);
                return schema;
            default:
                other(t);
                break;
        }
        return schema is null ? null : t.GetOutputSchema(schema);
    }

    /// <summary><paramref name="schema"/> with float vector columns of the given names added (as a loaded surrogate types them).</summary>
    private static DataViewSchema WithVectors(DataViewSchema schema, params string[] names)
    {
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(schema);
        foreach (string name in names)
            builder.AddColumn(name, new VectorDataViewType(NumberDataViewType.Single));
        return builder.ToSchema();
    }

    private static string? TryReadConfig(TransformerChain<ITransformer> chain, DataViewSchema schema)
    {
        var first = chain.FirstOrDefault();
        if (first is null || first is IEnumerable<ITransformer> || first is DiffusionTransformer)
            return null;
        DataViewSchema after;
        try
        {
            after = first.GetOutputSchema(schema);
        }
        catch (ArgumentOutOfRangeException)
        {
            return null;
        }

        foreach (var c in after)
            if (!c.IsHidden && c.Name.StartsWith(ConfigPrefix, StringComparison.Ordinal) && schema.GetColumnOrNull(c.Name) is null)
                return c.Name.Substring(ConfigPrefix.Length);
        return null;
    }

    /// <summary>The stage a saved configuration describes (any contract version), renamed to the surrogate's slots, on a cached model.</summary>
    internal static (DiffusionStageDefinition Definition, DiffusionTransformer Stage) StageFor(string json) =>
        s_stages.GetOrAdd(json, j => new Lazy<(DiffusionStageDefinition, DiffusionTransformer)>(() =>
        {
            var definition = DiffusionPipelineDefinition.FromJson(j);
            var surrogate = definition.Stages[0].ForSurrogate();
            return (surrogate, surrogate.Build(OpenModel(definition.ModelDirectory)));
        })).Value;

    private static StableDiffusionModel OpenModel(string folder)
    {
        if (!Directory.Exists(folder))
            throw new DirectoryNotFoundException(MovedMessage(folder));
        var lazy = s_models.GetOrAdd(folder, f => new Lazy<StableDiffusionModel>(() => StableDiffusionModel.Load(new MLContext(), f)));
        try
        {
            return lazy.Value;
        }
        catch
        {
            s_models.TryRemove(folder, out _);
            throw;
        }
    }

    internal static string MovedMessage(string folder) =>
        $"The Stable Diffusion model folder '{folder}' referenced by the saved pipeline does not exist. A saved pipeline references its model folder "
        + "by absolute path and holds no weights: put the folder back, point the loaded pipeline at its new place with "
        + "DiffusionPipeline.WithModelDirectory, or rebuild the stages on a model loaded from there with DiffusionPipeline.FromLoadedModel "
        + "(see docs/persistence.md).";
}

/// <summary>The surrogate's fixed slot names (column names of the saved rows; changing one breaks saved models).</summary>
internal static class Slots
{
    public const string Config = "__sd_config";
    public const string Prompt = "__sd_prompt";
    public const string Negative = "__sd_negative";
    public const string Embeddings = "__sd_embeddings";
    public const string Seed = "__sd_seed";
    public const string Noise = "__sd_noise";
    public const string Pooled = "__sd_pooled";
    public const string Latents = "__sd_latents";
    public const string Output0 = "__sd_out0";
    public const string Output1 = "__sd_out1";
    public const string Image = "__sd_image";
    public const string InitialLatents = "__sd_init";
    public const string SourceImage = "__sd_source";
    public const string Timestep = "__sd_timestep";
    public const string Mask = "__sd_mask";
    public const string MaskedLatents = "__sd_masked";
    public const string MaskImage = "__sd_mask_image";
}
