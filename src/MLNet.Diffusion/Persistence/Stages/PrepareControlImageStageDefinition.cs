using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Diffusion.Persistence;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion;

/// <summary>
/// The persisted record of a PrepareControlImage stage (<see cref="ControlImagePreparationTransformer"/>): the fields of
/// <see cref="PrepareControlImageOptions"/>. Version 1.
/// </summary>
public sealed record PrepareControlImageStageDefinition : DiffusionStageDefinition
{
    /// <summary><see cref="PrepareControlImageOptions.ImageColumnName"/>.</summary>
    public string ImageColumnName { get; init; } = "Image";

    /// <summary><see cref="PrepareControlImageOptions.OutputColumnName"/>.</summary>
    public string OutputColumnName { get; init; } = "ControlImage";

    /// <summary><see cref="PrepareControlImageOptions.Width"/>.</summary>
    public int Width { get; init; } = 512;

    /// <summary><see cref="PrepareControlImageOptions.Height"/>.</summary>
    public int Height { get; init; } = 512;

    /// <summary><see cref="PrepareControlImageOptions.ResizeMode"/>.</summary>
    public ImageResizeMode ResizeMode { get; init; } = ImageResizeMode.Stretch;

    /// <summary><see cref="PrepareControlImageOptions.Preprocessor"/>.</summary>
    public ControlImagePreprocessor Preprocessor { get; init; }

    /// <summary><see cref="PrepareControlImageOptions.CannyLowThreshold"/>.</summary>
    public double CannyLowThreshold { get; init; } = 100;

    /// <summary><see cref="PrepareControlImageOptions.CannyHighThreshold"/>.</summary>
    public double CannyHighThreshold { get; init; } = 200;

    /// <summary><see cref="PrepareControlImageOptions.CannyL2Gradient"/>.</summary>
    public bool CannyL2Gradient { get; init; }

    /// <summary><see cref="PrepareControlImageOptions.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = 4;

    /// <inheritdoc/>
    public override DiffusionStageKind Kind => DiffusionStageKind.PrepareControlImage;

    /// <inheritdoc/>
    public override int CurrentVersion => 1;

    /// <summary>The ML.NET contract of the saved stage.</summary>
    internal const string ContractName = "MLNet.Diffusion.PrepareControlImage.v2";

    internal static PrepareControlImageStageDefinition From(ControlImagePreparationTransformer stage)
    {
        var o = stage.Options;
        return new()
        {
            ImageColumnName = o.ImageColumnName,
            OutputColumnName = o.OutputColumnName,
            Width = o.Width,
            Height = o.Height,
            ResizeMode = o.ResizeMode,
            Preprocessor = o.Preprocessor,
            CannyLowThreshold = o.CannyLowThreshold,
            CannyHighThreshold = o.CannyHighThreshold,
            CannyL2Gradient = o.CannyL2Gradient,
            BatchSize = o.BatchSize,
        };
    }

    private protected override DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken) =>
        new ControlImagePreparationTransformer(model, new PrepareControlImageOptions
        {
            ImageColumnName = ImageColumnName ?? throw Missing(nameof(ImageColumnName)),
            OutputColumnName = OutputColumnName ?? throw Missing(nameof(OutputColumnName)),
            Width = Width,
            Height = Height,
            ResizeMode = ResizeMode,
            Preprocessor = Preprocessor,
            CannyLowThreshold = CannyLowThreshold,
            CannyHighThreshold = CannyHighThreshold,
            CannyL2Gradient = CannyL2Gradient,
            BatchSize = BatchSize,
        });

    internal override DiffusionStageDefinition ForSurrogate() => this with
    {
        ImageColumnName = Slots.SourceImage,
        OutputColumnName = Slots.Output0,
        BatchSize = 1,
    };

    internal override string Contract => ContractName;

    internal override IReadOnlyList<SurrogateInput> Inputs => new SurrogateInput[] { new(Slots.SourceImage, SlotType.Image, ImageColumnName) };

    internal override IReadOnlyList<SurrogateOutput> Outputs => new SurrogateOutput[] { new(OutputColumnName, Slots.Output0) };

    internal override string ConfigKey(DataViewSchema schema) => SurrogateChain.ScalarKey(schema, null, "PrepareControlImage");

    internal override IEstimator<ITransformer> CreateMapping(MLContext ml) =>
        ml.Transforms.StatefulCustomMapping(new PrepareControlImageMapping().GetMapping(), SurrogateState.Init, ContractName);
}

#pragma warning disable SA1300, IDE1006 // Member names are the surrogate's slot names.

/// <summary>The saved row of PrepareControlImage (contract <see cref="PrepareControlImageStageDefinition.ContractName"/>); the configuration is scalar (its key is).</summary>
internal sealed class PrepareControlImageSlots
{
    public string __sd_config { get; set; } = string.Empty;

    [AnySizeImageType]
    public MLImage? __sd_source { get; set; }
}

#pragma warning restore SA1300, IDE1006

[CustomMappingFactoryAttribute(PrepareControlImageStageDefinition.ContractName)]
internal sealed class PrepareControlImageMapping : StatefulCustomMappingFactory<PrepareControlImageSlots, OneOutput, SurrogateState>
{
    public override Action<PrepareControlImageSlots, OneOutput, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(src.__sd_config, r => r.Set(Slots.SourceImage, src.__sd_source ?? throw SurrogateState.NoImage(r, "PrepareControlImage", "image"))).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}
