using System;
using System.Collections.Generic;
using System.IO;
using System.Text.Json.Serialization;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Persistence;
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

    /// <summary>A <see cref="ControlImagePreparationTransformer"/> (PrepareControlImage).</summary>
    PrepareControlImage,
}

/// <summary>
/// The persisted configuration of one diffusion stage: a versioned record per stage kind (its column names and options,
/// without the model). In JSON, the <c>kind</c> property tells the kind and comes first; an optional input the stage
/// does not read is written as a null column name. Runtime-only settings (<see cref="DenoiseLatentsOptions.Progress"/>,
/// <see cref="DenoiseLatentsOptions.CancellationToken"/>) are not part of it. See docs/persistence.md.
/// </summary>
[JsonPolymorphic(TypeDiscriminatorPropertyName = "kind", UnknownDerivedTypeHandling = JsonUnknownDerivedTypeHandling.FailSerialization)]
[JsonDerivedType(typeof(EncodePromptStageDefinition), nameof(DiffusionStageKind.EncodePrompt))]
[JsonDerivedType(typeof(DenoiseLatentsStageDefinition), nameof(DiffusionStageKind.DenoiseLatents))]
[JsonDerivedType(typeof(DecodeLatentsStageDefinition), nameof(DiffusionStageKind.DecodeLatents))]
[JsonDerivedType(typeof(EncodeImageStageDefinition), nameof(DiffusionStageKind.EncodeImage))]
[JsonDerivedType(typeof(AddDiffusionNoiseStageDefinition), nameof(DiffusionStageKind.AddDiffusionNoise))]
[JsonDerivedType(typeof(PrepareInpaintingStageDefinition), nameof(DiffusionStageKind.PrepareInpainting))]
[JsonDerivedType(typeof(PrepareControlImageStageDefinition), nameof(DiffusionStageKind.PrepareControlImage))]
public abstract record DiffusionStageDefinition
{
    private protected DiffusionStageDefinition()
    {
    }

    /// <summary>Which stage this is (written as the JSON's <c>kind</c>).</summary>
    [JsonIgnore]
    public abstract DiffusionStageKind Kind { get; }

    /// <summary>The version of this stage's record; this library writes <see cref="CurrentVersion"/> and reads up to it.</summary>
    public int Version { get; init; } = 1;

    /// <summary>The record version this library writes for its kind.</summary>
    [JsonIgnore]
    public abstract int CurrentVersion { get; }

    /// <summary>
    /// The definition of a fitted stage. A stage without a base seed gets the seed it actually uses, an SDXL DenoiseLatents
    /// stage the name of the pooled column it reads, and an SDXL EncodePrompt stage the name of the pooled column it writes.
    /// </summary>
    /// <param name="stage">The stage.</param>
    public static DiffusionStageDefinition FromTransformer(DiffusionTransformer stage)
    {
        ArgumentNullException.ThrowIfNull(stage);
        DiffusionStageDefinition definition = stage switch
        {
            PromptEncodingTransformer e => EncodePromptStageDefinition.From(e),
            LatentDenoisingTransformer d => DenoiseLatentsStageDefinition.From(d),
            LatentDecodingTransformer c => DecodeLatentsStageDefinition.From(c),
            ImageEncodingTransformer i => EncodeImageStageDefinition.From(i),
            DiffusionNoisingTransformer n => AddDiffusionNoiseStageDefinition.From(n),
            InpaintingPreparationTransformer p => PrepareInpaintingStageDefinition.From(p),
            ControlImagePreparationTransformer c => PrepareControlImageStageDefinition.From(c),
            _ => throw new ArgumentException($"Unknown diffusion stage type {stage.GetType().Name}.", nameof(stage)),
        };

        // What this library writes is always its current record version (the property's default is the first one).
        return definition with { Version = definition.CurrentVersion };
    }

    /// <summary>Creates the stage on <paramref name="model"/>.</summary>
    /// <param name="model">The loaded model.</param>
    /// <param name="progress">For DenoiseLatents: receives a report after every step (runtime-only, never saved).</param>
    /// <param name="cancellationToken">For DenoiseLatents: cancels between steps (runtime-only, never saved).</param>
    public DiffusionTransformer Build(StableDiffusionModel model, IProgress<DenoiseProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (Version < 1 || Version > CurrentVersion)
            throw new InvalidDataException($"The {Kind} stage definition has version {Version}; this library reads versions 1 to {CurrentVersion}.");
        return Create(model, progress, cancellationToken);
    }

    /// <summary>Creates the stage (the version is checked).</summary>
    private protected abstract DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken);

    /// <summary>
    /// The same stage reading and writing the surrogate's fixed slot names, one row per call: every input of
    /// <see cref="Inputs"/> that is present reads its slot, every output its slot.
    /// </summary>
    internal abstract DiffusionStageDefinition ForSurrogate();

    /// <summary>The ML.NET contract this library saves the stage with (one per stage kind).</summary>
    internal abstract string Contract { get; }

    /// <summary>
    /// The stage's inputs in the surrogate, in order: each slot, its type and the column it reads (null when the stage does
    /// not read that input). A new optional input of a stage is one more entry here and one field in its record.
    /// </summary>
    internal abstract IReadOnlyList<SurrogateInput> Inputs { get; }

    /// <summary>The stage's outputs in the surrogate: each output column and the slot it is copied from.</summary>
    internal abstract IReadOnlyList<SurrogateOutput> Outputs { get; }

    /// <summary>
    /// The column the configuration constant is computed from: ML.NET's Expression transform reads text, numbers and
    /// vectors of them, so stages that read only images name a scalar column (<see cref="SurrogateChain.ScalarKey"/>).
    /// </summary>
    internal abstract string ConfigKey(DataViewSchema schema);

    /// <summary>
    /// Whether the saved row reads the configuration as a vector (<c>string[] __sd_config</c>, the stages keyed on a vector
    /// column); a scalar key's configuration is then made a one-value vector.
    /// </summary>
    internal virtual bool VectorConfig => false;

    /// <summary>The <c>StatefulCustomMapping</c> of the stage's contract.</summary>
    internal abstract IEstimator<ITransformer> CreateMapping(MLContext ml);

    /// <summary>The definition with the size facts only the input schema knows resolved (DecodeLatents' latent size).</summary>
    internal virtual DiffusionStageDefinition WithResolvedSchema(DataViewSchema inputSchema) => this;

    /// <summary>The surrogate's fixed slot name for an optional column that is set, null for one that is not.</summary>
    private protected static string? IfSet(string? column, string slot) => column is null ? null : slot;

    /// <summary>The exception for a definition that lacks a required value.</summary>
    private protected InvalidDataException Missing(string what) => new($"The {Kind} stage definition has no {what}.");
}

/// <summary>How a surrogate slot is typed.</summary>
internal enum SlotType
{
    /// <summary>Text.</summary>
    Text,

    /// <summary>A float vector (variable size in the saved row).</summary>
    Tensor,

    /// <summary>An image of any size.</summary>
    Image,

    /// <summary>An integer converted to Int64 (a seed, a timestep), saved as a one-value vector.</summary>
    Int64,
}

/// <summary>
/// One input of a saved stage: the surrogate's fixed slot, its type, and the stage's column it reads (null: the stage does
/// not read that input; the slot then holds a placeholder the stage ignores — a copy of <paramref name="Placeholder"/> for
/// text and tensors, zero for integers).
/// </summary>
internal readonly record struct SurrogateInput(string Slot, SlotType Type, string? Column, string? Placeholder = null);

/// <summary>One output of a saved stage: the stage's column and the surrogate slot it is copied from.</summary>
internal readonly record struct SurrogateOutput(string Column, string Slot);
