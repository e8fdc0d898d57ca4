using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Diffusion.Persistence;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>
/// The persisted record of an EncodeImage stage (<see cref="ImageEncodingTransformer"/>): its columns and the fields of
/// <see cref="EncodeImageOptions"/>. Version 1.
/// </summary>
public sealed record EncodeImageStageDefinition : DiffusionStageDefinition
{
    /// <summary>The latents column the stage writes.</summary>
    public string OutputColumnName { get; init; } = "InitialLatents";

    /// <summary>The image column the stage reads.</summary>
    public string InputColumnName { get; init; } = "Image";

    /// <summary><see cref="EncodeImageOptions.SeedColumnName"/>; null when the stage reads none.</summary>
    public string? SeedColumnName { get; init; }

    /// <summary>The base seed (saved resolved when the options had none, so results repeat).</summary>
    public int? Seed { get; init; }

    /// <summary><see cref="EncodeImageOptions.Noise"/>; records saved before it existed read as <see cref="NoiseOptions.Default"/>.</summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;

    /// <summary><see cref="EncodeImageOptions.Width"/>.</summary>
    public int Width { get; init; } = 512;

    /// <summary><see cref="EncodeImageOptions.Height"/>.</summary>
    public int Height { get; init; } = 512;

    /// <summary><see cref="EncodeImageOptions.ResizeMode"/>.</summary>
    public ImageResizeMode ResizeMode { get; init; } = ImageResizeMode.Stretch;

    /// <summary><see cref="EncodeImageOptions.Sampling"/>.</summary>
    public LatentSampling Sampling { get; init; } = LatentSampling.Sample;

    /// <summary><see cref="EncodeImageOptions.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>
    /// <see cref="EncodeImageOptions.Tiling"/>. Records saved before the option existed lack it and load as <see cref="VaeTiling.Off"/>,
    /// the behaviour they were saved with.
    /// </summary>
    public VaeTiling Tiling { get; init; } = VaeTiling.Off;

    /// <summary><see cref="EncodeImageOptions.TileSize"/>.</summary>
    public int? TileSize { get; init; }

    /// <inheritdoc/>
    public override DiffusionStageKind Kind => DiffusionStageKind.EncodeImage;

    /// <inheritdoc/>
    public override int CurrentVersion => 1;

    /// <summary>The ML.NET contract of the saved stage.</summary>
    internal const string ContractName = "MLNet.Diffusion.EncodeImage.v2";

    internal static EncodeImageStageDefinition From(ImageEncodingTransformer stage)
    {
        var o = stage.Options;
        return new()
        {
            OutputColumnName = stage.OutputColumnName,
            InputColumnName = stage.InputColumnName,
            SeedColumnName = o.SeedColumnName,
            Seed = RowSeed.Base(o.Seed, stage.Model),
            Noise = o.Noise,
            Width = o.Width,
            Height = o.Height,
            ResizeMode = o.ResizeMode,
            Sampling = o.Sampling,
            BatchSize = o.BatchSize,
            Tiling = o.Tiling,
            TileSize = o.TileSize,
        };
    }

    private protected override DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken) =>
        new ImageEncodingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName ?? throw Missing(nameof(InputColumnName)),
            new EncodeImageOptions { SeedColumnName = SeedColumnName, Seed = Seed, Noise = Noise ?? NoiseOptions.Default, Width = Width, Height = Height, ResizeMode = ResizeMode, Sampling = Sampling, BatchSize = BatchSize, Tiling = Tiling, TileSize = TileSize });

    internal override DiffusionStageDefinition ForSurrogate() => this with
    {
        OutputColumnName = Slots.Output0,
        InputColumnName = Slots.SourceImage,
        SeedColumnName = IfSet(SeedColumnName, Slots.Seed),
        BatchSize = 1,
    };

    internal override string Contract => ContractName;

    internal override IReadOnlyList<SurrogateInput> Inputs => new SurrogateInput[]
    {
        new(Slots.SourceImage, SlotType.Image, InputColumnName),
        new(Slots.Seed, SlotType.Int64, SeedColumnName),
    };

    internal override IReadOnlyList<SurrogateOutput> Outputs => new SurrogateOutput[] { new(OutputColumnName, Slots.Output0) };

    internal override string ConfigKey(DataViewSchema schema) => SurrogateChain.ScalarKey(schema, SeedColumnName, "EncodeImage");

    internal override IEstimator<ITransformer> CreateMapping(MLContext ml) =>
        ml.Transforms.StatefulCustomMapping(new EncodeImageMapping().GetMapping(), SurrogateState.Init, ContractName);
}

#pragma warning disable SA1300, IDE1006 // Member names are the surrogate's slot names.

/// <summary>The saved row of EncodeImage (contract <see cref="EncodeImageStageDefinition.ContractName"/>); the configuration is scalar (its key is).</summary>
internal sealed class EncodeImageSlots
{
    public string __sd_config { get; set; } = string.Empty;

    [AnySizeImageType]
    public MLImage? __sd_source { get; set; }

    public long[] __sd_seed { get; set; } = Array.Empty<long>();
}

#pragma warning restore SA1300, IDE1006

[CustomMappingFactoryAttribute(EncodeImageStageDefinition.ContractName)]
internal sealed class EncodeImageMapping : StatefulCustomMappingFactory<EncodeImageSlots, OneOutput, SurrogateState>
{
    public override Action<EncodeImageSlots, OneOutput, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(src.__sd_config, r =>
        {
            r.Set(Slots.SourceImage, src.__sd_source ?? throw SurrogateState.NoImage(r, "EncodeImage", "image"));
            r.Set(Slots.Seed, SurrogateState.First(src.__sd_seed));
        }).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}
