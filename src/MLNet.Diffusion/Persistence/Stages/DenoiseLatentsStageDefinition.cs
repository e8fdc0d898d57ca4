using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Diffusion.Persistence;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>
/// The persisted record of a DenoiseLatents stage (<see cref="LatentDenoisingTransformer"/>): its columns and the
/// persistent fields of <see cref="DenoiseLatentsOptions"/>. Each optional input is a column name, null when the stage
/// does not read it. Version 1.
/// </summary>
public sealed record DenoiseLatentsStageDefinition : DiffusionStageDefinition
{
    /// <summary>The latents column the stage writes.</summary>
    public string OutputColumnName { get; init; } = "Latents";

    /// <summary>The prompt embeddings column the stage reads.</summary>
    public string InputColumnName { get; init; } = "Embeddings";

    /// <summary><see cref="DenoiseLatentsOptions.SeedColumnName"/>; null when the stage reads none.</summary>
    public string? SeedColumnName { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.InitialNoiseColumnName"/>; null when the stage reads none.</summary>
    public string? InitialNoiseColumnName { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.InitialLatentsColumnName"/>; null when the stage reads none.</summary>
    public string? InitialLatentsColumnName { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.MaskColumnName"/>; null when the stage reads none.</summary>
    public string? MaskColumnName { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.MaskedImageLatentsColumnName"/>; null when the stage reads none.</summary>
    public string? MaskedImageLatentsColumnName { get; init; }

    /// <summary>The pooled prompt column an SDXL stage reads (saved resolved); null for SD 1.x/2.x.</summary>
    public string? PooledEmbeddingsColumnName { get; init; }

    /// <summary>The base seed (saved resolved when the options had none, so results repeat).</summary>
    public int? Seed { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.Steps"/>.</summary>
    public int Steps { get; init; } = 20;

    /// <summary><see cref="DenoiseLatentsOptions.GuidanceScale"/>.</summary>
    public float GuidanceScale { get; init; } = 7.5f;

    /// <summary><see cref="DenoiseLatentsOptions.Width"/>.</summary>
    public int Width { get; init; } = 512;

    /// <summary><see cref="DenoiseLatentsOptions.Height"/>.</summary>
    public int Height { get; init; } = 512;

    /// <summary><see cref="DenoiseLatentsOptions.Scheduler"/>.</summary>
    public SchedulerOptions? Scheduler { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.Strength"/>.</summary>
    public float Strength { get; init; } = 1f;

    /// <summary><see cref="DenoiseLatentsOptions.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary><see cref="DenoiseLatentsOptions.OriginalWidth"/>.</summary>
    public int? OriginalWidth { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.OriginalHeight"/>.</summary>
    public int? OriginalHeight { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.CropTop"/>.</summary>
    public int? CropTop { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.CropLeft"/>.</summary>
    public int? CropLeft { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.TargetWidth"/>.</summary>
    public int? TargetWidth { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.TargetHeight"/>.</summary>
    public int? TargetHeight { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.AestheticScore"/>.</summary>
    public float? AestheticScore { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.NegativeAestheticScore"/>.</summary>
    public float? NegativeAestheticScore { get; init; }

    /// <inheritdoc/>
    public override DiffusionStageKind Kind => DiffusionStageKind.DenoiseLatents;

    /// <inheritdoc/>
    public override int CurrentVersion => 1;

    /// <summary>The ML.NET contract of the saved stage.</summary>
    internal const string ContractName = "MLNet.Diffusion.DenoiseLatents.v2";

    internal static DenoiseLatentsStageDefinition From(LatentDenoisingTransformer stage)
    {
        var o = stage.Options;
        // A loaded pipeline opens its model folder with default options, so LoRAs would be silently dropped: refuse
        // until the records carry the LoRA set (issue 16).
        if (o.LoraColumnName is not null || !stage.Model.LoraSet.IsEmpty)
            throw new NotSupportedException($"The DenoiseLatents stage uses LoRAs ({(o.LoraColumnName is null ? "the model's" : "DenoiseLatentsOptions.LoraColumnName '" + o.LoraColumnName + "'")}); "
                + "saving a pipeline with LoRAs is not supported yet: a loaded pipeline would run without them.");
        return new()
        {
            OutputColumnName = stage.OutputColumnName,
            InputColumnName = stage.InputColumnName,
            SeedColumnName = o.SeedColumnName,
            InitialNoiseColumnName = o.InitialNoiseColumnName,
            InitialLatentsColumnName = o.InitialLatentsColumnName,
            MaskColumnName = o.MaskColumnName,
            MaskedImageLatentsColumnName = o.MaskedImageLatentsColumnName,
            PooledEmbeddingsColumnName = stage.PooledColumnName,
            Seed = RowSeed.Base(o.Seed, stage.Model),
            Steps = o.Steps,
            GuidanceScale = o.GuidanceScale,
            Width = o.Width,
            Height = o.Height,
            Scheduler = o.Scheduler,
            Strength = o.Strength,
            BatchSize = o.BatchSize,
            OriginalWidth = o.OriginalWidth,
            OriginalHeight = o.OriginalHeight,
            CropTop = o.CropTop,
            CropLeft = o.CropLeft,
            TargetWidth = o.TargetWidth,
            TargetHeight = o.TargetHeight,
            AestheticScore = o.AestheticScore,
            NegativeAestheticScore = o.NegativeAestheticScore,
        };
    }

    private protected override DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken) =>
        new LatentDenoisingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName ?? throw Missing(nameof(InputColumnName)),
            new DenoiseLatentsOptions
            {
                SeedColumnName = SeedColumnName,
                InitialNoiseColumnName = InitialNoiseColumnName,
                InitialLatentsColumnName = InitialLatentsColumnName,
                MaskColumnName = MaskColumnName,
                MaskedImageLatentsColumnName = MaskedImageLatentsColumnName,
                PooledEmbeddingsColumnName = PooledEmbeddingsColumnName,
                Seed = Seed,
                Steps = Steps,
                GuidanceScale = GuidanceScale,
                Width = Width,
                Height = Height,
                Scheduler = Scheduler,
                Strength = Strength,
                BatchSize = BatchSize,
                OriginalWidth = OriginalWidth,
                OriginalHeight = OriginalHeight,
                CropTop = CropTop,
                CropLeft = CropLeft,
                TargetWidth = TargetWidth,
                TargetHeight = TargetHeight,
                AestheticScore = AestheticScore,
                NegativeAestheticScore = NegativeAestheticScore,
                Progress = progress,
                CancellationToken = cancellationToken,
            });

    internal override DiffusionStageDefinition ForSurrogate() => this with
    {
        OutputColumnName = Slots.Output0,
        InputColumnName = Slots.Embeddings,
        SeedColumnName = IfSet(SeedColumnName, Slots.Seed),
        InitialNoiseColumnName = IfSet(InitialNoiseColumnName, Slots.Noise),
        InitialLatentsColumnName = IfSet(InitialLatentsColumnName, Slots.InitialLatents),
        MaskColumnName = IfSet(MaskColumnName, Slots.Mask),
        MaskedImageLatentsColumnName = IfSet(MaskedImageLatentsColumnName, Slots.MaskedLatents),
        PooledEmbeddingsColumnName = IfSet(PooledEmbeddingsColumnName, Slots.Pooled),
        BatchSize = 1,
    };

    internal override string Contract => ContractName;

    // An input the stage does not read carries a copy of the embeddings (any float vector would do; it is never read).
    internal override IReadOnlyList<SurrogateInput> Inputs => new SurrogateInput[]
    {
        new(Slots.Embeddings, SlotType.Tensor, InputColumnName),
        new(Slots.Noise, SlotType.Tensor, InitialNoiseColumnName, InputColumnName),
        new(Slots.InitialLatents, SlotType.Tensor, InitialLatentsColumnName, InputColumnName),
        new(Slots.Mask, SlotType.Tensor, MaskColumnName, InputColumnName),
        new(Slots.MaskedLatents, SlotType.Tensor, MaskedImageLatentsColumnName, InputColumnName),
        new(Slots.Pooled, SlotType.Tensor, PooledEmbeddingsColumnName, InputColumnName),
        new(Slots.Seed, SlotType.Int64, SeedColumnName),
    };

    internal override IReadOnlyList<SurrogateOutput> Outputs => new SurrogateOutput[] { new(OutputColumnName, Slots.Output0) };

    internal override string ConfigKey(DataViewSchema schema) => InputColumnName;

    internal override IEstimator<ITransformer> CreateMapping(MLContext ml) =>
        ml.Transforms.StatefulCustomMapping(new DenoiseLatentsMapping().GetMapping(), SurrogateState.Init, ContractName);
}

#pragma warning disable SA1300, IDE1006 // Member names are the surrogate's slot names.

/// <summary>The saved row of DenoiseLatents (contract <see cref="DenoiseLatentsStageDefinition.ContractName"/>).</summary>
internal sealed class DenoiseLatentsSlots
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_embeddings { get; set; } = Array.Empty<float>();

    public float[] __sd_noise { get; set; } = Array.Empty<float>();

    public float[] __sd_init { get; set; } = Array.Empty<float>();

    public float[] __sd_mask { get; set; } = Array.Empty<float>();

    public float[] __sd_masked { get; set; } = Array.Empty<float>();

    public float[] __sd_pooled { get; set; } = Array.Empty<float>();

    public long[] __sd_seed { get; set; } = Array.Empty<long>();
}

#pragma warning restore SA1300, IDE1006

[CustomMappingFactoryAttribute(DenoiseLatentsStageDefinition.ContractName)]
internal sealed class DenoiseLatentsMapping : StatefulCustomMappingFactory<DenoiseLatentsSlots, OneOutput, SurrogateState>
{
    public override Action<DenoiseLatentsSlots, OneOutput, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), r =>
        {
            r.Set(Slots.Embeddings, src.__sd_embeddings);
            r.Set(Slots.Noise, src.__sd_noise);
            r.Set(Slots.InitialLatents, src.__sd_init);
            r.Set(Slots.Mask, src.__sd_mask);
            r.Set(Slots.MaskedLatents, src.__sd_masked);
            r.Set(Slots.Pooled, src.__sd_pooled);
            r.Set(Slots.Seed, SurrogateState.First(src.__sd_seed));
        }).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}
