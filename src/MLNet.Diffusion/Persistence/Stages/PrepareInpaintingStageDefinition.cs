using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Persistence;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>
/// The persisted record of a PrepareInpainting stage (<see cref="InpaintingPreparationTransformer"/>): the fields of
/// <see cref="PrepareInpaintingOptions"/>, column names included. Version 1.
/// </summary>
public sealed record PrepareInpaintingStageDefinition : DiffusionStageDefinition
{
    /// <summary><see cref="PrepareInpaintingOptions.ImageColumnName"/>.</summary>
    public string ImageColumnName { get; init; } = "Image";

    /// <summary><see cref="PrepareInpaintingOptions.MaskColumnName"/>.</summary>
    public string MaskColumnName { get; init; } = "Mask";

    /// <summary><see cref="PrepareInpaintingOptions.LatentMaskColumnName"/>.</summary>
    public string LatentMaskColumnName { get; init; } = "LatentMask";

    /// <summary><see cref="PrepareInpaintingOptions.MaskedImageLatentsColumnName"/>; null when the stage writes none.</summary>
    public string? MaskedImageLatentsColumnName { get; init; }

    /// <summary><see cref="PrepareInpaintingOptions.SeedColumnName"/>; null when the stage reads none.</summary>
    public string? SeedColumnName { get; init; }

    /// <summary>The base seed (saved resolved when the options had none, so results repeat).</summary>
    public int? Seed { get; init; }

    /// <summary><see cref="PrepareInpaintingOptions.Noise"/>; records saved before it existed read as <see cref="NoiseOptions.Default"/>.</summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;

    /// <summary><see cref="PrepareInpaintingOptions.Width"/>.</summary>
    public int Width { get; init; } = 512;

    /// <summary><see cref="PrepareInpaintingOptions.Height"/>.</summary>
    public int Height { get; init; } = 512;

    /// <summary><see cref="PrepareInpaintingOptions.ResizeMode"/>.</summary>
    public ImageResizeMode ResizeMode { get; init; } = ImageResizeMode.Stretch;

    /// <summary><see cref="PrepareInpaintingOptions.MaskDownsampling"/>.</summary>
    public MaskDownsampling MaskDownsampling { get; init; } = MaskDownsampling.Nearest;

    /// <summary><see cref="PrepareInpaintingOptions.Sampling"/>.</summary>
    public LatentSampling Sampling { get; init; } = LatentSampling.Sample;

    /// <summary><see cref="PrepareInpaintingOptions.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = 4;

    /// <inheritdoc/>
    public override DiffusionStageKind Kind => DiffusionStageKind.PrepareInpainting;

    /// <inheritdoc/>
    public override int CurrentVersion => 1;

    /// <summary>The ML.NET contract of the saved stage.</summary>
    internal const string ContractName = "MLNet.Diffusion.PrepareInpainting.v2";

    internal static PrepareInpaintingStageDefinition From(InpaintingPreparationTransformer stage)
    {
        var o = stage.Options;
        return new()
        {
            ImageColumnName = o.ImageColumnName,
            MaskColumnName = o.MaskColumnName,
            LatentMaskColumnName = o.LatentMaskColumnName,
            MaskedImageLatentsColumnName = o.MaskedImageLatentsColumnName,
            SeedColumnName = o.SeedColumnName,
            Seed = RowSeed.Base(o.Seed, stage.Model),
            Noise = o.Noise,
            Width = o.Width,
            Height = o.Height,
            ResizeMode = o.ResizeMode,
            MaskDownsampling = o.MaskDownsampling,
            Sampling = o.Sampling,
            BatchSize = o.BatchSize,
        };
    }

    private protected override DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken) =>
        new InpaintingPreparationTransformer(model, new PrepareInpaintingOptions
        {
            ImageColumnName = ImageColumnName ?? throw Missing(nameof(ImageColumnName)),
            MaskColumnName = MaskColumnName ?? throw Missing(nameof(MaskColumnName)),
            LatentMaskColumnName = LatentMaskColumnName ?? throw Missing(nameof(LatentMaskColumnName)),
            MaskedImageLatentsColumnName = MaskedImageLatentsColumnName,
            SeedColumnName = SeedColumnName,
            Seed = Seed,
            Noise = Noise ?? NoiseOptions.Default,
            Width = Width,
            Height = Height,
            ResizeMode = ResizeMode,
            MaskDownsampling = MaskDownsampling,
            Sampling = Sampling,
            BatchSize = BatchSize,
        });

    internal override DiffusionStageDefinition ForSurrogate() => this with
    {
        ImageColumnName = Slots.SourceImage,
        MaskColumnName = Slots.MaskImage,
        LatentMaskColumnName = Slots.Output0,
        MaskedImageLatentsColumnName = IfSet(MaskedImageLatentsColumnName, Slots.Output1),
        SeedColumnName = IfSet(SeedColumnName, Slots.Seed),
        BatchSize = 1,
    };

    internal override string Contract => ContractName;

    internal override IReadOnlyList<SurrogateInput> Inputs => new SurrogateInput[]
    {
        new(Slots.SourceImage, SlotType.Image, ImageColumnName),
        new(Slots.MaskImage, SlotType.Image, MaskColumnName),
        new(Slots.Seed, SlotType.Int64, SeedColumnName),
    };

    internal override IReadOnlyList<SurrogateOutput> Outputs => MaskedImageLatentsColumnName is { } masked
        ? new SurrogateOutput[] { new(LatentMaskColumnName, Slots.Output0), new(masked, Slots.Output1) }
        : new SurrogateOutput[] { new(LatentMaskColumnName, Slots.Output0) };

    internal override string ConfigKey(DataViewSchema schema) => SurrogateChain.ScalarKey(schema, SeedColumnName, "PrepareInpainting");

    internal override IEstimator<ITransformer> CreateMapping(MLContext ml) =>
        ml.Transforms.StatefulCustomMapping(new PrepareInpaintingMapping().GetMapping(), SurrogateState.Init, ContractName);
}

#pragma warning disable SA1300, IDE1006 // Member names are the surrogate's slot names.

/// <summary>The saved row of PrepareInpainting (contract <see cref="PrepareInpaintingStageDefinition.ContractName"/>); the configuration is scalar (its key is).</summary>
internal sealed class PrepareInpaintingSlots
{
    public string __sd_config { get; set; } = string.Empty;

    [AnySizeImageType]
    public MLImage? __sd_source { get; set; }

    [AnySizeImageType]
    public MLImage? __sd_mask_image { get; set; }

    public long[] __sd_seed { get; set; } = Array.Empty<long>();
}

#pragma warning restore SA1300, IDE1006

[CustomMappingFactoryAttribute(PrepareInpaintingStageDefinition.ContractName)]
internal sealed class PrepareInpaintingMapping : StatefulCustomMappingFactory<PrepareInpaintingSlots, TwoOutputs, SurrogateState>
{
    public override Action<PrepareInpaintingSlots, TwoOutputs, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(src.__sd_config, r =>
        {
            r.Set(Slots.SourceImage, src.__sd_source ?? throw SurrogateState.NoImage(r, "PrepareInpainting", "image"));
            r.Set(Slots.MaskImage, src.__sd_mask_image ?? throw SurrogateState.NoImage(r, "PrepareInpainting", "mask"));
            r.Set(Slots.Seed, SurrogateState.First(src.__sd_seed));
        }).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}
