using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Diffusion.Persistence;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>
/// The persisted record of a DecodeLatents stage (<see cref="LatentDecodingTransformer"/>): its columns and the fields of
/// <see cref="DecodeLatentsOptions"/>. Version 1.
/// </summary>
public sealed record DecodeLatentsStageDefinition : DiffusionStageDefinition
{
    /// <summary>The image column the stage writes.</summary>
    public string OutputColumnName { get; init; } = "Image";

    /// <summary>The latents column the stage reads.</summary>
    public string InputColumnName { get; init; } = "Latents";

    /// <summary><see cref="DecodeLatentsOptions.PixelsColumnName"/>; null when the stage writes none.</summary>
    public string? PixelsColumnName { get; init; }

    /// <summary><see cref="DecodeLatentsOptions.LatentWidth"/> (saved resolved from the input column's shape when it has one).</summary>
    public int? LatentWidth { get; init; }

    /// <summary><see cref="DecodeLatentsOptions.LatentHeight"/> (saved resolved from the input column's shape when it has one).</summary>
    public int? LatentHeight { get; init; }

    /// <summary><see cref="DecodeLatentsOptions.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = 2;

    /// <summary>
    /// <see cref="DecodeLatentsOptions.Tiling"/>. Records saved before the option existed lack it and load as <see cref="VaeTiling.Off"/>,
    /// the behaviour they were saved with.
    /// </summary>
    public VaeTiling Tiling { get; init; } = VaeTiling.Off;

    /// <summary><see cref="DecodeLatentsOptions.TileSize"/>.</summary>
    public int? TileSize { get; init; }

    /// <summary><see cref="DecodeLatentsOptions.ForceNotQuantize"/> (VQ autoencoders); absent in older records: false.</summary>
    public bool ForceNotQuantize { get; init; }

    /// <summary><see cref="DecodeLatentsOptions.QuantizeOnHost"/> (VQ autoencoders); absent in older records: false.</summary>
    public bool QuantizeOnHost { get; init; }

    /// <summary>
    /// <see cref="DecodeLatentsOptions.CodebookIndicesColumnName"/>; null when the stage writes none. Saved in a
    /// <see cref="DiffusionPipelineDefinition"/>; an ML.NET zip cannot carry this Int32 output (see docs/persistence.md).
    /// </summary>
    public string? CodebookIndicesColumnName { get; init; }

    /// <inheritdoc/>
    public override DiffusionStageKind Kind => DiffusionStageKind.DecodeLatents;

    /// <inheritdoc/>
    public override int CurrentVersion => 1;

    /// <summary>The ML.NET contract of the saved stage.</summary>
    internal const string ContractName = "MLNet.Diffusion.DecodeLatents.v2";

    internal static DecodeLatentsStageDefinition From(LatentDecodingTransformer stage)
    {
        var o = stage.Options;
        return new()
        {
            OutputColumnName = stage.OutputColumnName,
            InputColumnName = stage.InputColumnName,
            PixelsColumnName = o.PixelsColumnName,
            LatentWidth = o.LatentWidth,
            LatentHeight = o.LatentHeight,
            BatchSize = o.BatchSize,
            Tiling = o.Tiling,
            TileSize = o.TileSize,
            ForceNotQuantize = o.ForceNotQuantize,
            QuantizeOnHost = o.QuantizeOnHost,
            CodebookIndicesColumnName = o.CodebookIndicesColumnName,
        };
    }

    private protected override DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken) =>
        new LatentDecodingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName ?? throw Missing(nameof(InputColumnName)),
            new DecodeLatentsOptions
            {
                PixelsColumnName = PixelsColumnName, LatentWidth = LatentWidth, LatentHeight = LatentHeight, BatchSize = BatchSize,
                Tiling = Tiling, TileSize = TileSize,
                ForceNotQuantize = ForceNotQuantize, QuantizeOnHost = QuantizeOnHost, CodebookIndicesColumnName = CodebookIndicesColumnName,
            });

    internal override DiffusionStageDefinition ForSurrogate() => this with
    {
        OutputColumnName = Slots.Image,
        InputColumnName = Slots.Latents,
        PixelsColumnName = IfSet(PixelsColumnName, Slots.Output1),
        BatchSize = 1,
    };

    internal override string Contract => ContractName;

    internal override IReadOnlyList<SurrogateInput> Inputs => new SurrogateInput[] { new(Slots.Latents, SlotType.Tensor, InputColumnName) };

    // The saved row's outputs are an image and a float vector: the Int32 indices column has no slot, so saving refuses it.
    internal override IReadOnlyList<SurrogateOutput> Outputs => CodebookIndicesColumnName is not null
        ? throw new InvalidOperationException($"The DecodeLatents stage writes the codebook indices column '{CodebookIndicesColumnName}', which mlContext.Model.Save cannot carry "
            + "(the saved stage's outputs are an image and a float vector). Save a DiffusionPipelineDefinition instead, or drop the indices column. See docs/persistence.md.")
        : PixelsColumnName is { } pixels
        ? new SurrogateOutput[] { new(OutputColumnName, Slots.Image), new(pixels, Slots.Output1) }
        : new SurrogateOutput[] { new(OutputColumnName, Slots.Image) };

    internal override string ConfigKey(DataViewSchema schema) => InputColumnName;

    internal override IEstimator<ITransformer> CreateMapping(MLContext ml) =>
        ml.Transforms.StatefulCustomMapping(new DecodeLatentsMapping().GetMapping(), SurrogateState.Init, ContractName);

    /// <summary>
    /// Latent sizes left to the input column get the size that column has in <paramref name="inputSchema"/>: a loaded
    /// ML.NET model's vector columns have no fixed shape, so the saved stage must know it.
    /// </summary>
    internal override DiffusionStageDefinition WithResolvedSchema(DataViewSchema inputSchema) =>
        LatentHeight is null && inputSchema.GetColumnOrNull(InputColumnName)?.Type is VectorDataViewType { Dimensions.Length: 3 } v
            ? this with { LatentWidth = LatentWidth ?? v.Dimensions[2], LatentHeight = v.Dimensions[1] }
            : this;
}

#pragma warning disable SA1300, IDE1006 // Member names are the surrogate's slot names.

/// <summary>The saved row of DecodeLatents (contract <see cref="DecodeLatentsStageDefinition.ContractName"/>).</summary>
internal sealed class DecodeLatentsSlots
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_latents { get; set; } = Array.Empty<float>();
}

#pragma warning restore SA1300, IDE1006

[CustomMappingFactoryAttribute(DecodeLatentsStageDefinition.ContractName)]
internal sealed class DecodeLatentsMapping : StatefulCustomMappingFactory<DecodeLatentsSlots, ImageOutputs, SurrogateState>
{
    public override Action<DecodeLatentsSlots, ImageOutputs, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), r => r.Set(Slots.Latents, src.__sd_latents)).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}
