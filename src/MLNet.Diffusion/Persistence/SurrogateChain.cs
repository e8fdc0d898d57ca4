using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using Microsoft.ML.Transforms.Image;

namespace MLNet.Diffusion.Transforms;

/// <summary>
/// ML.NET's native model format for our stages. A third-party transformer cannot write its own entry (the save context
/// is internal; MLNET-NOTES.md), so each stage saves a chain of built-in, saveable transforms instead:
/// <list type="number">
/// <item><c>Expression</c>: a constant column whose value is the stage's configuration (JSON: model folder, columns,
/// options) and whose name is that JSON after <see cref="ConfigPrefix"/>, so the configuration can also be read from the
/// schema alone (<see cref="Walk"/>).</item>
/// <item><c>CopyColumns</c> of the configuration and of the stage's inputs to fixed names.</item>
/// <item><c>StatefulCustomMapping</c> with a contract name (<see cref="CustomMappingFactoryAttributeAttribute"/> below), whose
/// factory re-creates the stage from the configuration and runs it one row at a time.</item>
/// <item><c>CopyColumns</c> of the results to the stage's output names, then <c>DropColumns</c> of the fixed names.</item>
/// </list>
/// No weights are saved: the model folder is referenced by its absolute path.
/// </summary>
internal static class PersistenceSurrogate
{
    public const string ConfigPrefix = "__mlnet_diffusion ";
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

    public const string EncodeContract = "MLNet.Diffusion.EncodePrompt.v1";
    public const string DenoiseContract = "MLNet.Diffusion.DenoiseLatents.v1";
    public const string SeededDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Seeded.v1";
    public const string SdxlDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Sdxl.v1";
    public const string SeededSdxlDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Sdxl.Seeded.v1";
    public const string DecodeContract = "MLNet.Diffusion.DecodeLatents.v1";
    public const string ImageDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Image.v1";
    public const string SeededImageDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Image.Seeded.v1";
    public const string SdxlImageDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Sdxl.Image.v1";
    public const string SeededSdxlImageDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Sdxl.Image.Seeded.v1";
    public const string EncodeImageContract = "MLNet.Diffusion.EncodeImage.v1";
    public const string SeededEncodeImageContract = "MLNet.Diffusion.EncodeImage.Seeded.v1";
    public const string NoiseContract = "MLNet.Diffusion.AddDiffusionNoise.v1";
    public const string SeededNoiseContract = "MLNet.Diffusion.AddDiffusionNoise.Seeded.v1";
    public const string TimedNoiseContract = "MLNet.Diffusion.AddDiffusionNoise.Timed.v1";
    public const string SeededTimedNoiseContract = "MLNet.Diffusion.AddDiffusionNoise.Seeded.Timed.v1";
    public const string InpaintDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Inpaint.v1";
    public const string SeededInpaintDenoiseContract = "MLNet.Diffusion.DenoiseLatents.Inpaint.Seeded.v1";
    public const string PrepareInpaintingContract = "MLNet.Diffusion.PrepareInpainting.v1";
    public const string SeededPrepareInpaintingContract = "MLNet.Diffusion.PrepareInpainting.Seeded.v1";

    private static readonly string[] s_fixed = { Config, Prompt, Negative, Embeddings, Seed, Noise, Pooled, Latents, Output0, Output1, Image, InitialLatents, SourceImage, Timestep, Mask, MaskedLatents, MaskImage };

    /// <summary>Saves <paramref name="stage"/> as its surrogate chain.</summary>
    public static void Save(DiffusionTransformer stage, ModelSaveContext ctx)
    {
        var schema = stage.LastInputSchema ?? throw new InvalidOperationException(
            $"The {stage.StageName} stage has not seen its input schema yet; fit the pipeline (or call Transform or GetOutputSchema) before saving it. See docs/persistence.md.");
        var definition = DiffusionStageDefinition.FromTransformer(stage).WithResolvedLatentSize(schema);
        string json = new DiffusionPipelineDefinition { ModelDirectory = stage.Model.Directory, Stages = new[] { definition } }.ToCompactJson();
        var chain = BuildChain(stage.Model.MLContext, definition, json, schema);
        ((ICanSaveModel)chain).Save(ctx);
    }

    private static TransformerChain<ITransformer> BuildChain(MLContext ml, DiffusionStageDefinition d, string json, DataViewSchema schema)
    {
        string configColumn = ConfigPrefix + json;
        string literal = "\"" + json.Replace("\\", "\\\\", StringComparison.Ordinal).Replace("\"", "\\\"", StringComparison.Ordinal) + "\"";
        var copies = new List<InputOutputColumnPair> { new(Config, configColumn) };
        var outputs = new List<InputOutputColumnPair>();
        var mapping = new List<IEstimator<ITransformer>>();
        string key;
        switch (d.Kind)
        {
            case DiffusionStageKind.EncodePrompt:
                var e = d.EncodePromptOptions!;
                key = e.InputColumnName;
                copies.Add(new(Prompt, e.InputColumnName));
                copies.Add(new(Negative, e.NegativePromptColumnName ?? e.InputColumnName));
                mapping.Add(ml.Transforms.StatefulCustomMapping(new EncodeMappingFactory().GetMapping(), SurrogateState.Init, EncodeContract));
                outputs.Add(new(e.OutputColumnName, Output0));
                if (e.PooledOutputColumnName is { } pooled)
                    outputs.Add(new(pooled, Output1));
                break;
            case DiffusionStageKind.DenoiseLatents:
                var o = d.DenoiseOptions!;
                key = d.InputColumnName!;
                copies.Add(new(Embeddings, d.InputColumnName!));
                copies.Add(new(Noise, o.InitialNoiseColumnName ?? d.InputColumnName!));
                // SDXL stages also read the pooled prompt column (saved resolved by DiffusionStageDefinition.FromTransformer).
                if (o.PooledEmbeddingsColumnName is { } pooledColumn)
                    copies.Add(new(Pooled, pooledColumn));
                if (o.SeedColumnName is { } seed)
                    mapping.Add(ml.Transforms.Conversion.ConvertType(Seed, seed, DataKind.Int64));
                // Each combination of the optional inputs has its own contract, so models saved before a combination existed keep theirs.
                if (o.MaskColumnName is { } mask)
                {
                    // Inpainting: one layout for both UNet kinds and SD/SDXL; an input the stage does not use carries the embeddings.
                    copies.Add(new(InitialLatents, o.InitialLatentsColumnName ?? d.InputColumnName!));
                    copies.Add(new(Mask, mask));
                    copies.Add(new(MaskedLatents, schema.GetColumnOrNull(o.MaskedImageLatentsColumnName ?? string.Empty) is null ? d.InputColumnName! : o.MaskedImageLatentsColumnName!));
                    if (o.PooledEmbeddingsColumnName is null)
                        copies.Add(new(Pooled, d.InputColumnName!));
                    mapping.Add(o.SeedColumnName is null
                        ? ml.Transforms.StatefulCustomMapping(new InpaintDenoiseMappingFactory().GetMapping(), SurrogateState.Init, InpaintDenoiseContract)
                        : ml.Transforms.StatefulCustomMapping(new SeededInpaintDenoiseMappingFactory().GetMapping(), SurrogateState.Init, SeededInpaintDenoiseContract));
                    outputs.Add(new(d.OutputColumnName!, Output0));
                    break;
                }
                if (o.InitialLatentsColumnName is { } initial)
                    copies.Add(new(InitialLatents, initial));
                mapping.Add((o.SeedColumnName is not null, o.PooledEmbeddingsColumnName is not null, o.InitialLatentsColumnName is not null) switch
                {
                    (false, false, false) => ml.Transforms.StatefulCustomMapping(new DenoiseMappingFactory().GetMapping(), SurrogateState.Init, DenoiseContract),
                    (true, false, false) => ml.Transforms.StatefulCustomMapping(new SeededDenoiseMappingFactory().GetMapping(), SurrogateState.Init, SeededDenoiseContract),
                    (false, true, false) => ml.Transforms.StatefulCustomMapping(new SdxlDenoiseMappingFactory().GetMapping(), SurrogateState.Init, SdxlDenoiseContract),
                    (true, true, false) => ml.Transforms.StatefulCustomMapping(new SeededSdxlDenoiseMappingFactory().GetMapping(), SurrogateState.Init, SeededSdxlDenoiseContract),
                    (false, false, true) => ml.Transforms.StatefulCustomMapping(new ImageDenoiseMappingFactory().GetMapping(), SurrogateState.Init, ImageDenoiseContract),
                    (true, false, true) => ml.Transforms.StatefulCustomMapping(new SeededImageDenoiseMappingFactory().GetMapping(), SurrogateState.Init, SeededImageDenoiseContract),
                    (false, true, true) => ml.Transforms.StatefulCustomMapping(new SdxlImageDenoiseMappingFactory().GetMapping(), SurrogateState.Init, SdxlImageDenoiseContract),
                    (true, true, true) => ml.Transforms.StatefulCustomMapping(new SeededSdxlImageDenoiseMappingFactory().GetMapping(), SurrogateState.Init, SeededSdxlImageDenoiseContract),
                });
                outputs.Add(new(d.OutputColumnName!, Output0));
                break;
            case DiffusionStageKind.EncodeImage:
                var i = d.EncodeImageOptions!;
                key = ScalarKey(schema, i.SeedColumnName);
                copies.Add(new(SourceImage, d.InputColumnName!));
                if (i.SeedColumnName is { } imageSeed)
                {
                    mapping.Add(ml.Transforms.Conversion.ConvertType(Seed, imageSeed, DataKind.Int64));
                    mapping.Add(ml.Transforms.StatefulCustomMapping(new SeededEncodeImageMappingFactory().GetMapping(), SurrogateState.Init, SeededEncodeImageContract));
                }
                else
                {
                    mapping.Add(ml.Transforms.StatefulCustomMapping(new EncodeImageMappingFactory().GetMapping(), SurrogateState.Init, EncodeImageContract));
                }
                outputs.Add(new(d.OutputColumnName!, Output0));
                break;
            case DiffusionStageKind.PrepareInpainting:
                var p = d.PrepareInpaintingOptions!;
                key = ScalarKey(schema, p.SeedColumnName, "PrepareInpainting");
                copies.Add(new(SourceImage, p.ImageColumnName));
                copies.Add(new(MaskImage, p.MaskColumnName));
                if (p.SeedColumnName is { } inpaintSeed)
                {
                    mapping.Add(ml.Transforms.Conversion.ConvertType(Seed, inpaintSeed, DataKind.Int64));
                    mapping.Add(ml.Transforms.StatefulCustomMapping(new SeededPrepareInpaintingMappingFactory().GetMapping(), SurrogateState.Init, SeededPrepareInpaintingContract));
                }
                else
                {
                    mapping.Add(ml.Transforms.StatefulCustomMapping(new PrepareInpaintingMappingFactory().GetMapping(), SurrogateState.Init, PrepareInpaintingContract));
                }
                outputs.Add(new(p.LatentMaskColumnName, Output0));
                if (p.MaskedImageLatentsColumnName is { } masked)
                    outputs.Add(new(masked, Output1));
                break;
            case DiffusionStageKind.AddDiffusionNoise:
                var n = d.AddNoiseOptions!;
                key = d.InputColumnName!;
                copies.Add(new(Latents, d.InputColumnName!));
                if (n.SeedColumnName is { } noiseSeed)
                    mapping.Add(ml.Transforms.Conversion.ConvertType(Seed, noiseSeed, DataKind.Int64));
                if (n.TimestepColumnName is { } timestep)
                    mapping.Add(ml.Transforms.Conversion.ConvertType(Timestep, timestep, DataKind.Int64));
                mapping.Add((n.SeedColumnName, n.TimestepColumnName) switch
                {
                    (null, null) => ml.Transforms.StatefulCustomMapping(new NoiseMappingFactory().GetMapping(), SurrogateState.Init, NoiseContract),
                    (_, null) => ml.Transforms.StatefulCustomMapping(new SeededNoiseMappingFactory().GetMapping(), SurrogateState.Init, SeededNoiseContract),
                    (null, _) => ml.Transforms.StatefulCustomMapping(new TimedNoiseMappingFactory().GetMapping(), SurrogateState.Init, TimedNoiseContract),
                    _ => ml.Transforms.StatefulCustomMapping(new SeededTimedNoiseMappingFactory().GetMapping(), SurrogateState.Init, SeededTimedNoiseContract),
                });
                outputs.Add(new(d.OutputColumnName!, Output0));
                if (n.NoiseOutputColumnName is { } noiseOutput)
                    outputs.Add(new(noiseOutput, Output1));
                break;
            default:
                var c = d.DecodeLatentsOptions!;
                key = d.InputColumnName!;
                copies.Add(new(Latents, d.InputColumnName!));
                mapping.Add(ml.Transforms.StatefulCustomMapping(new DecodeMappingFactory().GetMapping(), SurrogateState.Init, DecodeContract));
                outputs.Add(new(d.OutputColumnName!, Image));
                if (c.PixelsColumnName is { } pixels)
                    outputs.Add(new(pixels, Output1));
                break;
        }
        var drop = new List<string> { configColumn };
        foreach (var f in s_fixed)
            if (!outputs.Any(p => p.OutputColumnName == f))
                drop.Add(f);
        // One flat chain, so a loaded model shows the Expression first. Fitted one transform at a time rather than as an
        // EstimatorChain: the chain's SchemaShape check compares image item types exactly (a sized Image<64, 64> column
        // against the surrogate's any-size image member), while the fitted transforms accept any image column.
        var estimators = new List<IEstimator<ITransformer>> { ml.Transforms.Expression(configColumn, "x => " + literal, key) };
        foreach (var p in copies)
            estimators.Add(ml.Transforms.CopyColumns(p.OutputColumnName, p.InputColumnName));
        estimators.AddRange(mapping);
        foreach (var p in outputs)
            estimators.Add(ml.Transforms.CopyColumns(p.OutputColumnName, p.InputColumnName));
        estimators.Add(ml.Transforms.DropColumns(drop.Where(n => n == configColumn || IsProduced(n, d)).ToArray()));
        var transformers = new ITransformer[estimators.Count];
        IDataView view = new EmptyDataView(schema);
        for (int i = 0; i < transformers.Length; i++)
        {
            transformers[i] = estimators[i].Fit(view);
            view = transformers[i].Transform(view);
        }
        return new TransformerChain<ITransformer>(transformers);
    }

    /// <summary>Whether the surrogate of <paramref name="d"/> creates the fixed column <paramref name="name"/> (DropColumns fails on absent columns).</summary>
    private static bool IsProduced(string name, DiffusionStageDefinition d) => d.Kind switch
    {
        DiffusionStageKind.EncodePrompt => name is Config or Prompt or Negative or Output0 or Output1,
        DiffusionStageKind.DenoiseLatents => name is Config or Embeddings or Noise or Output0 || (name == Seed && d.DenoiseOptions!.SeedColumnName is not null)
            || (name == Pooled && d.DenoiseOptions!.PooledEmbeddingsColumnName is not null)
            || (name == InitialLatents && d.DenoiseOptions!.InitialLatentsColumnName is not null)
            || (name is InitialLatents or Pooled or Mask or MaskedLatents && d.DenoiseOptions!.MaskColumnName is not null),
        DiffusionStageKind.PrepareInpainting => name is Config or SourceImage or MaskImage or Output0 or Output1 || (name == Seed && d.PrepareInpaintingOptions!.SeedColumnName is not null),
        DiffusionStageKind.EncodeImage => name is Config or SourceImage or Output0 || (name == Seed && d.EncodeImageOptions!.SeedColumnName is not null),
        DiffusionStageKind.AddDiffusionNoise => name is Config or Latents or Output0 or Output1 || (name == Seed && d.AddNoiseOptions!.SeedColumnName is not null)
            || (name == Timestep && d.AddNoiseOptions!.TimestepColumnName is not null),
        _ => name is Config or Latents or Image or Output1,
    };

    /// <summary>Expression's input types (ML.NET's Expression transform reads no other).</summary>
    private static bool IsExpressionScalar(DataViewType t) => t is TextDataViewType || t == NumberDataViewType.Single || t == NumberDataViewType.Double
        || t == NumberDataViewType.Int32 || t == NumberDataViewType.Int64 || t is BooleanDataViewType;

    /// <summary>
    /// The column the configuration constant is computed from, for a stage whose input ML.NET's Expression cannot read
    /// (an image): the seed column when it is of an Expression type, else the first visible one of the input schema.
    /// </summary>
    private static string ScalarKey(DataViewSchema schema, string? preferred, string stage = "EncodeImage")
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
    /// input schema). Every other transformer goes to <paramref name="other"/>.
    /// </summary>
    public static void Walk(ITransformer transformer, DataViewSchema? schema, Action<DiffusionStageDefinition, string, ITransformer> stage, Action<ITransformer> other)
    {
        Visit(transformer, schema, stage, other);
    }

    private static DataViewSchema? Visit(ITransformer t, DataViewSchema? schema, Action<DiffusionStageDefinition, string, ITransformer> stage, Action<ITransformer> other)
    {
        switch (t)
        {
            case DiffusionTransformer d:
                stage(DiffusionStageDefinition.FromTransformer(d), d.Model.Directory, d);
                break;
            case TransformerChain<ITransformer> chain when schema is not null && TryReadConfig(chain, schema) is { } loaded:
                var definition = DiffusionPipelineDefinition.FromJson(loaded);
                var saved = definition.Stages[0];
                stage(saved, definition.ModelDirectory, chain);
                // ML.NET saves no image column in a model's input schema, so the schema Load returns lacks EncodeImage's
                // input: its output is added by name, typed as the loaded surrogate types it.
                if (saved.Kind == DiffusionStageKind.EncodeImage && schema.GetColumnOrNull(saved.InputColumnName!) is null)
                    return WithVectors(schema, saved.OutputColumnName!);
                if (saved.PrepareInpaintingOptions is { } p && schema.GetColumnOrNull(p.ImageColumnName) is null)
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

    /// <summary>Models opened by loaded surrogates, one per folder for the process, and the stages built on them.</summary>
    private static readonly ConcurrentDictionary<string, Lazy<StableDiffusionModel>> s_models = new(StringComparer.Ordinal);
    private static readonly ConcurrentDictionary<string, Lazy<DiffusionTransformer>> s_stages = new(StringComparer.Ordinal);

    /// <summary>The stage a saved configuration describes, renamed to the surrogate's fixed columns, on a cached model.</summary>
    internal static DiffusionTransformer StageFor(string json) => s_stages.GetOrAdd(json, j => new Lazy<DiffusionTransformer>(() =>
    {
        var definition = DiffusionPipelineDefinition.FromJson(j);
        var model = OpenModel(definition.ModelDirectory);
        return definition.Stages[0].ForSurrogate().Build(model);
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
        + "by absolute path and holds no weights: put the folder back, or rebuild the stages on a model loaded from its new place with "
        + "DiffusionPipeline.FromLoadedModel (see docs/persistence.md).";
}

/// <summary>Per-cursor state of a loaded surrogate: the row counter (positions for rows without a seed column) and the runner.</summary>
internal sealed class SurrogateState
{
    public static readonly Action<SurrogateState> Init = _ => { };

    public long Count;
    public SurrogateRunner? Runner;

    public SurrogateRunner RunnerFor(string json) => Runner is { } r && r.Json == json ? r : Runner = new SurrogateRunner(json);
}

/// <summary>Runs a stage on one row at a time through its <see cref="IRowToRowMapper"/>, over a row whose values are set per call.</summary>
internal sealed class SurrogateRunner
{
    private readonly SettableRow _row;
    private readonly DataViewRow _mapped;
    private readonly DataViewSchema _outputSchema;

    public SurrogateRunner(string json)
    {
        Json = json;
        var stage = PersistenceSurrogate.StageFor(json);
        var columns = new List<(string, DataViewType)>();
        switch (stage)
        {
            case PromptEncodingTransformer:
                columns.Add((PersistenceSurrogate.Prompt, TextDataViewType.Instance));
                columns.Add((PersistenceSurrogate.Negative, TextDataViewType.Instance));
                break;
            case LatentDenoisingTransformer denoise:
                columns.Add((PersistenceSurrogate.Embeddings, new VectorDataViewType(NumberDataViewType.Single)));
                columns.Add((PersistenceSurrogate.Noise, new VectorDataViewType(NumberDataViewType.Single)));
                columns.Add((PersistenceSurrogate.InitialLatents, new VectorDataViewType(NumberDataViewType.Single)));
                columns.Add((PersistenceSurrogate.Mask, new VectorDataViewType(NumberDataViewType.Single)));
                columns.Add((PersistenceSurrogate.MaskedLatents, new VectorDataViewType(NumberDataViewType.Single)));
                columns.Add((PersistenceSurrogate.Seed, NumberDataViewType.Int64));
                // The inpainting contracts always carry a pooled slot; only an SDXL stage reads it.
                if (denoise.PooledColumnName is not null || denoise.Options.MaskColumnName is not null)
                    columns.Add((PersistenceSurrogate.Pooled, new VectorDataViewType(NumberDataViewType.Single)));
                break;
            case InpaintingPreparationTransformer:
                columns.Add((PersistenceSurrogate.SourceImage, new ImageDataViewType()));
                columns.Add((PersistenceSurrogate.MaskImage, new ImageDataViewType()));
                columns.Add((PersistenceSurrogate.Seed, NumberDataViewType.Int64));
                break;
            case ImageEncodingTransformer:
                columns.Add((PersistenceSurrogate.SourceImage, new ImageDataViewType()));
                columns.Add((PersistenceSurrogate.Seed, NumberDataViewType.Int64));
                break;
            case DiffusionNoisingTransformer:
                columns.Add((PersistenceSurrogate.Latents, new VectorDataViewType(NumberDataViewType.Single)));
                columns.Add((PersistenceSurrogate.Seed, NumberDataViewType.Int64));
                columns.Add((PersistenceSurrogate.Timestep, NumberDataViewType.Int64));
                break;
            default:
                var decode = (LatentDecodingTransformer)stage;
                int c = stage.Model.Info.LatentChannels;
                columns.Add((PersistenceSurrogate.Latents, new VectorDataViewType(NumberDataViewType.Single, c, decode.Options.LatentHeight ?? 0, decode.Options.LatentWidth ?? 0)));
                break;
        }
        _row = new SettableRow(columns);
        var mapper = stage.GetRowToRowMapper(_row.Schema);
        _outputSchema = mapper.OutputSchema;
        var active = _outputSchema.Where(col => col.Index >= _row.Schema.Count).ToArray();
        _mapped = mapper.GetRow(_row, active);
    }

    public string Json { get; }

    public void Set(string column, object value) => _row.Set(column, value);

    public void Advance(long position) => _row.PositionValue = position;

    public float[] ReadVector(string column)
    {
        VBuffer<float> value = default;
        _mapped.GetGetter<VBuffer<float>>(_outputSchema[column])(ref value);
        return value.DenseValues().ToArray();
    }

    public MLImage ReadImage(string column)
    {
        MLImage value = null!;
        _mapped.GetGetter<MLImage>(_outputSchema[column])(ref value);
        return value;
    }

    public bool Has(string column) => _outputSchema.GetColumnOrNull(column) is not null;
}

/// <summary>A one-row <see cref="DataViewRow"/> whose values are set from outside before each read.</summary>
internal sealed class SettableRow : DataViewRow
{
    private readonly object?[] _values;

    public SettableRow(IReadOnlyList<(string Name, DataViewType Type)> columns)
    {
        var builder = new DataViewSchema.Builder();
        foreach (var (name, type) in columns)
            builder.AddColumn(name, type);
        Schema = builder.ToSchema();
        _values = new object?[columns.Count];
    }

    public override DataViewSchema Schema { get; }

    public override long Position => PositionValue;

    public long PositionValue;

    public override long Batch => 0;

    public void Set(string column, object value) => _values[Schema[column].Index] = value;

    public override bool IsColumnActive(DataViewSchema.Column column) => true;

    public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
    {
        int i = column.Index;
        if (typeof(TValue) == typeof(ReadOnlyMemory<char>))
            return (ValueGetter<TValue>)(Delegate)(ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = ((string?)_values[i] ?? string.Empty).AsMemory());
        if (typeof(TValue) == typeof(VBuffer<float>))
            return (ValueGetter<TValue>)(Delegate)(ValueGetter<VBuffer<float>>)((ref VBuffer<float> v) =>
                StageWorker.WriteVector((float[]?)_values[i] ?? Array.Empty<float>(), ref v));
        if (typeof(TValue) == typeof(long))
            return (ValueGetter<TValue>)(Delegate)(ValueGetter<long>)((ref long v) => v = (long)(_values[i] ?? 0L));
        if (typeof(TValue) == typeof(MLImage))
            return (ValueGetter<TValue>)(Delegate)(ValueGetter<MLImage>)((ref MLImage v) => v = (MLImage)_values[i]!);
        throw new InvalidOperationException($"Column '{column.Name}' cannot be read as {typeof(TValue).Name}.");
    }

    public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId v) => v = new DataViewRowId((ulong)PositionValue, 0);
}

/// <summary>An empty data view of a given schema: fits the surrogate chain on the schema the stage was used with.</summary>
internal sealed class EmptyDataView : IDataView
{
    public EmptyDataView(DataViewSchema schema) => Schema = schema;

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => 0;

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => new Cursor(Schema);

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => new DataViewRowCursor[] { new Cursor(Schema) };

    private sealed class Cursor : DataViewRowCursor
    {
        public Cursor(DataViewSchema schema) => Schema = schema;

        public override DataViewSchema Schema { get; }

        public override long Position => -1;

        public override long Batch => 0;

        public override bool MoveNext() => false;

        public override bool IsColumnActive(DataViewSchema.Column column) => true;

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column) =>
            throw new InvalidOperationException("An empty data view has no rows.");

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId v) => v = default;
    }
}
