using System;
using System.Collections.Generic;
using System.IO;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.Json.Serialization.Metadata;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>The kind of a diffusion stage in a <see cref="DiffusionStageDefinition"/>.</summary>
public enum DiffusionStageKind
{
    /// <summary>A <see cref="PromptEncodingTransformer"/> (EncodePrompt).</summary>
    EncodePrompt,

    /// <summary>A <see cref="LatentDenoisingTransformer"/> (DenoiseLatents).</summary>
    DenoiseLatents,

    /// <summary>A <see cref="LatentDecodingTransformer"/> (DecodeLatents).</summary>
    DecodeLatents,

    /// <summary>An <see cref="ImageEncodingTransformer"/> (EncodeImage).</summary>
    EncodeImage,

    /// <summary>A <see cref="DiffusionNoisingTransformer"/> (AddDiffusionNoise).</summary>
    AddDiffusionNoise,

    /// <summary>An <see cref="InpaintingPreparationTransformer"/> (PrepareInpainting).</summary>
    PrepareInpainting,
}

/// <summary>
/// The configuration of one diffusion stage: its kind, column names and options, without the model. Runtime-only
/// settings (<see cref="DenoiseLatentsOptions.Progress"/>, <see cref="DenoiseLatentsOptions.CancellationToken"/>) are not part of it.
/// </summary>
public sealed class DiffusionStageDefinition
{
    /// <summary>Which stage this is.</summary>
    public DiffusionStageKind Kind { get; init; }

    /// <summary>The options of an EncodePrompt stage (column names included); null for other kinds.</summary>
    public EncodePromptOptions? EncodePromptOptions { get; init; }

    /// <summary>The options of a DenoiseLatents stage; null for other kinds. A null seed is saved resolved, so results repeat.</summary>
    public DenoiseLatentsOptions? DenoiseOptions { get; init; }

    /// <summary>The options of a DecodeLatents stage; null for other kinds.</summary>
    public DecodeLatentsOptions? DecodeLatentsOptions { get; init; }

    /// <summary>The options of an EncodeImage stage; null for other kinds. A null seed is saved resolved, so results repeat.</summary>
    public EncodeImageOptions? EncodeImageOptions { get; init; }

    /// <summary>The options of an AddDiffusionNoise stage; null for other kinds. A null seed is saved resolved, so results repeat.</summary>
    public AddDiffusionNoiseOptions? AddNoiseOptions { get; init; }

    /// <summary>The options of a PrepareInpainting stage (column names included); null for other kinds. A null seed is saved resolved.</summary>
    public PrepareInpaintingOptions? PrepareInpaintingOptions { get; init; }

    /// <summary>The output column (every kind but EncodePrompt and PrepareInpainting, which keep their names in their options).</summary>
    public string? OutputColumnName { get; init; }

    /// <summary>The input column (every kind but EncodePrompt and PrepareInpainting).</summary>
    public string? InputColumnName { get; init; }

    /// <summary>
    /// The definition of a fitted stage. A DenoiseLatents stage without a base seed gets the seed it actually uses, and an
    /// SDXL one the name of the pooled column it reads; an SDXL EncodePrompt stage the name of the pooled column it writes.
    /// </summary>
    /// <param name="stage">The stage.</param>
    public static DiffusionStageDefinition FromTransformer(DiffusionTransformer stage)
    {
        ArgumentNullException.ThrowIfNull(stage);
        return stage switch
        {
            PromptEncodingTransformer e => new DiffusionStageDefinition { Kind = DiffusionStageKind.EncodePrompt, EncodePromptOptions = e.Options },
            LatentDenoisingTransformer d => new DiffusionStageDefinition
            {
                Kind = DiffusionStageKind.DenoiseLatents,
                OutputColumnName = d.OutputColumnName,
                InputColumnName = d.InputColumnName,
                DenoiseOptions = CopyPersistent(d.Options, d.Options.Seed ?? d.Model.DefaultSeed, pooledColumn: d.PooledColumnName),
            },
            LatentDecodingTransformer c => new DiffusionStageDefinition
            {
                Kind = DiffusionStageKind.DecodeLatents,
                OutputColumnName = c.OutputColumnName,
                InputColumnName = c.InputColumnName,
                DecodeLatentsOptions = c.Options,
            },
            ImageEncodingTransformer i => new DiffusionStageDefinition
            {
                Kind = DiffusionStageKind.EncodeImage,
                OutputColumnName = i.OutputColumnName,
                InputColumnName = i.InputColumnName,
                EncodeImageOptions = Copy(i.Options, i.Options.Seed ?? i.Model.DefaultSeed),
            },
            DiffusionNoisingTransformer n => new DiffusionStageDefinition
            {
                Kind = DiffusionStageKind.AddDiffusionNoise,
                OutputColumnName = n.OutputColumnName,
                InputColumnName = n.InputColumnName,
                AddNoiseOptions = Copy(n.Options, n.Options.Seed ?? n.Model.DefaultSeed),
            },
            InpaintingPreparationTransformer p => new DiffusionStageDefinition
            {
                Kind = DiffusionStageKind.PrepareInpainting,
                PrepareInpaintingOptions = Copy(p.Options, p.Options.Seed ?? p.Model.DefaultSeed),
            },
            _ => throw new ArgumentException($"Unknown diffusion stage type {stage.GetType().Name}.", nameof(stage)),
        };
    }

    /// <summary>Creates the stage on <paramref name="model"/>.</summary>
    /// <param name="model">The loaded model.</param>
    /// <param name="progress">For DenoiseLatents: receives a report after every step (runtime-only, never saved).</param>
    /// <param name="cancellationToken">For DenoiseLatents: cancels between steps (runtime-only, never saved).</param>
    public DiffusionTransformer Build(StableDiffusionModel model, IProgress<DenoiseProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        switch (Kind)
        {
            case DiffusionStageKind.EncodePrompt:
                return new PromptEncodingTransformer(model, EncodePromptOptions ?? throw Missing(nameof(EncodePromptOptions)));
            case DiffusionStageKind.DenoiseLatents:
                var d = DenoiseOptions ?? throw Missing(nameof(DenoiseOptions));
                var runtime = CopyPersistent(d, d.Seed, progress, cancellationToken);
                return new LatentDenoisingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName ?? throw Missing(nameof(InputColumnName)), runtime);
            case DiffusionStageKind.DecodeLatents:
                return new LatentDecodingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName ?? throw Missing(nameof(InputColumnName)),
                    DecodeLatentsOptions ?? throw Missing(nameof(DecodeLatentsOptions)));
            case DiffusionStageKind.EncodeImage:
                return new ImageEncodingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName ?? throw Missing(nameof(InputColumnName)),
                    EncodeImageOptions ?? throw Missing(nameof(EncodeImageOptions)));
            case DiffusionStageKind.AddDiffusionNoise:
                return new DiffusionNoisingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName ?? throw Missing(nameof(InputColumnName)),
                    AddNoiseOptions ?? throw Missing(nameof(AddNoiseOptions)));
            case DiffusionStageKind.PrepareInpainting:
                return new InpaintingPreparationTransformer(model, PrepareInpaintingOptions ?? throw Missing(nameof(PrepareInpaintingOptions)));
            default:
                throw new InvalidDataException($"Unknown diffusion stage kind {Kind}.");
        }
    }

    /// <summary>
    /// A DecodeLatents stage whose options leave the latent size to its input column gets the size that column has in
    /// <paramref name="inputSchema"/>: a loaded ML.NET model's vector columns have no fixed shape.
    /// </summary>
    internal DiffusionStageDefinition WithResolvedLatentSize(DataViewSchema inputSchema)
    {
        if (Kind != DiffusionStageKind.DecodeLatents || DecodeLatentsOptions!.LatentHeight is not null
            || inputSchema.GetColumnOrNull(InputColumnName!)?.Type is not VectorDataViewType { Dimensions.Length: 3 } v)
            return this;
        var c = DecodeLatentsOptions;
        return new DiffusionStageDefinition
        {
            Kind = Kind,
            OutputColumnName = OutputColumnName,
            InputColumnName = InputColumnName,
            DecodeLatentsOptions = Copy(c, latentWidth: v.Dimensions[2], latentHeight: v.Dimensions[1]),
        };
    }

    /// <summary>The same stage reading and writing the surrogate's fixed column names, one row per call (<see cref="PersistenceSurrogate"/>).</summary>
    internal DiffusionStageDefinition ForSurrogate()
    {
        switch (Kind)
        {
            case DiffusionStageKind.EncodePrompt:
                var e = EncodePromptOptions!;
                return new DiffusionStageDefinition
                {
                    Kind = Kind,
                    EncodePromptOptions = new EncodePromptOptions
                    {
                        OutputColumnName = PersistenceSurrogate.Output0,
                        InputColumnName = PersistenceSurrogate.Prompt,
                        NegativePromptColumnName = IfSet(e.NegativePromptColumnName, PersistenceSurrogate.Negative),
                        PooledOutputColumnName = IfSet(e.PooledOutputColumnName, PersistenceSurrogate.Output1),
                        BatchSize = 1,
                        LongPrompt = e.LongPrompt,
                        MaxWindows = e.MaxWindows,
                        EncodeEmptyNegativePrompt = e.EncodeEmptyNegativePrompt,
                    },
                };
            case DiffusionStageKind.DenoiseLatents:
                var d = DenoiseOptions!;
                return new DiffusionStageDefinition
                {
                    Kind = Kind,
                    OutputColumnName = PersistenceSurrogate.Output0,
                    InputColumnName = PersistenceSurrogate.Embeddings,
                    DenoiseOptions = CopyPersistent(d, d.Seed, seedColumn: IfSet(d.SeedColumnName, PersistenceSurrogate.Seed),
                        noiseColumn: IfSet(d.InitialNoiseColumnName, PersistenceSurrogate.Noise), batchSize: 1,
                        pooledColumn: IfSet(d.PooledEmbeddingsColumnName, PersistenceSurrogate.Pooled),
                        initialLatentsColumn: IfSet(d.InitialLatentsColumnName, PersistenceSurrogate.InitialLatents),
                        maskColumn: IfSet(d.MaskColumnName, PersistenceSurrogate.Mask),
                        maskedLatentsColumn: IfSet(d.MaskedImageLatentsColumnName, PersistenceSurrogate.MaskedLatents)),
                };
            case DiffusionStageKind.PrepareInpainting:
                var p = PrepareInpaintingOptions!;
                return new DiffusionStageDefinition
                {
                    Kind = Kind,
                    PrepareInpaintingOptions = Copy(p, p.Seed, batchSize: 1, columns: new PrepareInpaintingOptions
                    {
                        ImageColumnName = PersistenceSurrogate.SourceImage,
                        MaskColumnName = PersistenceSurrogate.MaskImage,
                        LatentMaskColumnName = PersistenceSurrogate.Output0,
                        MaskedImageLatentsColumnName = IfSet(p.MaskedImageLatentsColumnName, PersistenceSurrogate.Output1),
                        SeedColumnName = IfSet(p.SeedColumnName, PersistenceSurrogate.Seed),
                    }),
                };
            case DiffusionStageKind.EncodeImage:
                var i = EncodeImageOptions!;
                return new DiffusionStageDefinition
                {
                    Kind = Kind,
                    OutputColumnName = PersistenceSurrogate.Output0,
                    InputColumnName = PersistenceSurrogate.SourceImage,
                    EncodeImageOptions = Copy(i, i.Seed, seedColumn: IfSet(i.SeedColumnName, PersistenceSurrogate.Seed), batchSize: 1),
                };
            case DiffusionStageKind.AddDiffusionNoise:
                var n = AddNoiseOptions!;
                return new DiffusionStageDefinition
                {
                    Kind = Kind,
                    OutputColumnName = PersistenceSurrogate.Output0,
                    InputColumnName = PersistenceSurrogate.Latents,
                    AddNoiseOptions = Copy(n, n.Seed, timestepColumn: IfSet(n.TimestepColumnName, PersistenceSurrogate.Timestep),
                        seedColumn: IfSet(n.SeedColumnName, PersistenceSurrogate.Seed), noiseOutputColumn: IfSet(n.NoiseOutputColumnName, PersistenceSurrogate.Output1)),
                };
            default:
                var c = DecodeLatentsOptions!;
                return new DiffusionStageDefinition
                {
                    Kind = Kind,
                    OutputColumnName = PersistenceSurrogate.Image,
                    InputColumnName = PersistenceSurrogate.Latents,
                    DecodeLatentsOptions = Copy(c, pixelsColumn: IfSet(c.PixelsColumnName, PersistenceSurrogate.Output1), batchSize: 1),
                };
        }
    }

    private static DenoiseLatentsOptions CopyPersistent(DenoiseLatentsOptions o, int? seed, IProgress<DenoiseProgress>? progress = null, CancellationToken cancellationToken = default,
        string? seedColumn = null, string? noiseColumn = null, int? batchSize = null, string? pooledColumn = null,
        string? initialLatentsColumn = null, string? maskColumn = null, string? maskedLatentsColumn = null) => new()
    {
        Steps = o.Steps,
        GuidanceScale = o.GuidanceScale,
        Width = o.Width,
        Height = o.Height,
        Scheduler = o.Scheduler,
        SeedColumnName = seedColumn ?? o.SeedColumnName,
        Seed = seed,
        InitialNoiseColumnName = noiseColumn ?? o.InitialNoiseColumnName,
        InitialLatentsColumnName = initialLatentsColumn ?? o.InitialLatentsColumnName,
        Strength = o.Strength,
        MaskColumnName = maskColumn ?? o.MaskColumnName,
        MaskedImageLatentsColumnName = maskedLatentsColumn ?? o.MaskedImageLatentsColumnName,
        BatchSize = batchSize ?? o.BatchSize,
        PooledEmbeddingsColumnName = pooledColumn ?? o.PooledEmbeddingsColumnName,
        OriginalWidth = o.OriginalWidth,
        OriginalHeight = o.OriginalHeight,
        CropTop = o.CropTop,
        CropLeft = o.CropLeft,
        TargetWidth = o.TargetWidth,
        TargetHeight = o.TargetHeight,
        AestheticScore = o.AestheticScore,
        NegativeAestheticScore = o.NegativeAestheticScore,
        Progress = progress,
        CancellationToken = cancellationToken,
    };

    private static EncodeImageOptions Copy(EncodeImageOptions o, int? seed, string? seedColumn = null, int? batchSize = null) => new()
    {
        Width = o.Width,
        Height = o.Height,
        ResizeMode = o.ResizeMode,
        Sampling = o.Sampling,
        SeedColumnName = seedColumn ?? o.SeedColumnName,
        Seed = seed,
        BatchSize = batchSize ?? o.BatchSize,
    };

    /// <summary>A copy of PrepareInpainting's options with the seed (and optionally the batch size and the column names of <paramref name="columns"/>) replaced.</summary>
    private static PrepareInpaintingOptions Copy(PrepareInpaintingOptions o, int? seed, int? batchSize = null, PrepareInpaintingOptions? columns = null) => new()
    {
        ImageColumnName = (columns ?? o).ImageColumnName,
        MaskColumnName = (columns ?? o).MaskColumnName,
        LatentMaskColumnName = (columns ?? o).LatentMaskColumnName,
        MaskedImageLatentsColumnName = (columns ?? o).MaskedImageLatentsColumnName,
        SeedColumnName = (columns ?? o).SeedColumnName,
        Width = o.Width,
        Height = o.Height,
        ResizeMode = o.ResizeMode,
        MaskDownsampling = o.MaskDownsampling,
        Sampling = o.Sampling,
        Seed = seed,
        BatchSize = batchSize ?? o.BatchSize,
    };

    private static AddDiffusionNoiseOptions Copy(AddDiffusionNoiseOptions o, int? seed, string? timestepColumn = null, string? seedColumn = null, string? noiseOutputColumn = null) => new()
    {
        Timestep = o.Timestep,
        TimestepColumnName = timestepColumn ?? o.TimestepColumnName,
        SeedColumnName = seedColumn ?? o.SeedColumnName,
        Seed = seed,
        NoiseOutputColumnName = noiseOutputColumn ?? o.NoiseOutputColumnName,
    };

    private static DecodeLatentsOptions Copy(DecodeLatentsOptions o, int? latentWidth = null, int? latentHeight = null, string? pixelsColumn = null, int? batchSize = null) => new()
    {
        LatentWidth = latentWidth ?? o.LatentWidth,
        LatentHeight = latentHeight ?? o.LatentHeight,
        PixelsColumnName = pixelsColumn ?? o.PixelsColumnName,
        BatchSize = batchSize ?? o.BatchSize,
    };

    /// <summary>The surrogate's fixed <paramref name="name"/> for an optional column that is set, null for one that is not.</summary>
    private static string? IfSet(string? column, string name) => column is null ? null : name;

    private InvalidDataException Missing(string what) => new($"The {Kind} stage definition has no {what}.");
}

/// <summary>
/// A diffusion pipeline as data: the model folder (absolute path) and the stages' configuration, saved as JSON. It
/// holds no weights. Save it with <see cref="Save"/>, read it with <see cref="Load"/>, and turn it back into the
/// exact stage types with <see cref="Build"/>. It can also be read from a fitted chain or from a model loaded with
/// <c>mlContext.Model.Load</c> (<see cref="FromTransformer"/>); see docs/persistence.md.
/// </summary>
public sealed class DiffusionPipelineDefinition
{
    /// <summary>The current format version written to the JSON.</summary>
    public const int CurrentFormatVersion = 1;

    private static readonly JsonSerializerOptions s_json = CreateJsonOptions(indented: true);
    private static readonly JsonSerializerOptions s_compactJson = CreateJsonOptions(indented: false);

    /// <summary>The format version of the JSON this definition was read from (or <see cref="CurrentFormatVersion"/>).</summary>
    public int FormatVersion { get; init; } = CurrentFormatVersion;

    /// <summary>The model folder's absolute path.</summary>
    public string ModelDirectory { get; init; } = string.Empty;

    /// <summary>The diffusion stages in pipeline order.</summary>
    public IReadOnlyList<DiffusionStageDefinition> Stages { get; init; } = Array.Empty<DiffusionStageDefinition>();

    /// <summary>
    /// Reads the diffusion stages of a transformer: one of our stages, a <see cref="TransformerChain{TLastTransformer}"/>
    /// holding them (other transformers in the chain are skipped), or a model loaded with <c>mlContext.Model.Load</c>,
    /// whose stages are found through the configuration they saved (pass the input schema Load returned).
    /// </summary>
    /// <param name="transformer">The fitted or loaded pipeline.</param>
    /// <param name="inputSchema">The pipeline's input schema; required for a model loaded with <c>mlContext.Model.Load</c>.</param>
    /// <exception cref="ArgumentException">No diffusion stage was found, or the stages use different model folders.</exception>
    public static DiffusionPipelineDefinition FromTransformer(ITransformer transformer, DataViewSchema? inputSchema = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        var found = new List<(DiffusionStageDefinition Stage, string Folder)>();
        PersistenceSurrogate.Walk(transformer, inputSchema, (stage, folder, _) => found.Add((stage, folder)), _ => { });
        if (found.Count == 0)
            throw new ArgumentException("The transformer holds no diffusion stage (EncodePrompt, DenoiseLatents, DecodeLatents, EncodeImage, AddDiffusionNoise, PrepareInpainting)"
                + (inputSchema is null ? "; for a model loaded with mlContext.Model.Load, pass the input schema Load returned." : "."), nameof(transformer));
        string folder = found[0].Folder;
        foreach (var f in found)
            if (!string.Equals(f.Folder, folder, StringComparison.Ordinal))
                throw new ArgumentException($"The stages use different model folders ('{folder}' and '{f.Folder}'); a definition holds one.", nameof(transformer));
        var stages = new DiffusionStageDefinition[found.Count];
        for (int i = 0; i < stages.Length; i++)
            stages[i] = found[i].Stage;
        return new DiffusionPipelineDefinition { ModelDirectory = folder, Stages = stages };
    }

    /// <summary>
    /// Builds the stages on <paramref name="model"/> as a chain of <see cref="PromptEncodingTransformer"/>,
    /// <see cref="LatentDenoisingTransformer"/>, <see cref="LatentDecodingTransformer"/>, <see cref="ImageEncodingTransformer"/>,
    /// <see cref="DiffusionNoisingTransformer"/> and <see cref="InpaintingPreparationTransformer"/>, in the saved order.
    /// </summary>
    /// <param name="model">The loaded model (normally loaded from <see cref="ModelDirectory"/>; a different folder with the same layout works too).</param>
    /// <param name="progress">Runtime-only: receives DenoiseLatents' step reports.</param>
    /// <param name="cancellationToken">Runtime-only: cancels DenoiseLatents between steps.</param>
    public TransformerChain<ITransformer> Build(StableDiffusionModel model, IProgress<DenoiseProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        var stages = new ITransformer[Stages.Count];
        for (int i = 0; i < stages.Length; i++)
            stages[i] = Stages[i].Build(model, progress, cancellationToken);
        return new TransformerChain<ITransformer>(stages);
    }

    /// <summary>The definition as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, s_json);

    /// <summary>The definition as one line of JSON (the surrogate's configuration column).</summary>
    internal string ToCompactJson() => JsonSerializer.Serialize(this, s_compactJson);

    /// <summary>Reads a definition from JSON.</summary>
    /// <param name="json">The JSON text.</param>
    /// <exception cref="InvalidDataException">The JSON is malformed or of an unknown format version.</exception>
    public static DiffusionPipelineDefinition FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        DiffusionPipelineDefinition? d;
        try
        {
            d = JsonSerializer.Deserialize<DiffusionPipelineDefinition>(json, s_json);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Not a diffusion pipeline definition: {e.Message}", e);
        }
        if (d is null || d.FormatVersion < 1 || d.FormatVersion > CurrentFormatVersion)
            throw new InvalidDataException($"Unknown diffusion pipeline definition format version {d?.FormatVersion}; this library reads up to {CurrentFormatVersion}.");
        return d;
    }

    /// <summary>Writes the definition as JSON to <paramref name="path"/>.</summary>
    /// <param name="path">The file to write.</param>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        File.WriteAllText(path, ToJson());
    }

    /// <summary>Reads a definition from a JSON file written by <see cref="Save"/>.</summary>
    /// <param name="path">The file to read.</param>
    public static DiffusionPipelineDefinition Load(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return FromJson(File.ReadAllText(path));
    }

    private static JsonSerializerOptions CreateJsonOptions(bool indented)
    {
        var resolver = new DefaultJsonTypeInfoResolver();
        // Progress and CancellationToken are runtime-only: never written, never read.
        resolver.Modifiers.Add(info =>
        {
            for (int i = info.Properties.Count - 1; i >= 0; i--)
            {
                var t = info.Properties[i].PropertyType;
                if (t == typeof(CancellationToken) || t == typeof(IProgress<DenoiseProgress>))
                    info.Properties.RemoveAt(i);
            }
        });
        return new JsonSerializerOptions
        {
            WriteIndented = indented,
            TypeInfoResolver = resolver,
            DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
            Converters = { new JsonStringEnumConverter() },
        };
    }
}
