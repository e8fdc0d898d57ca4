using System;
using System.Collections.Generic;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using MLNet.Diffusion.Persistence;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Randomness;
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

    /// <summary>The prompt embeddings column the stage reads; null for an unconditional model's stage, which reads none.</summary>
    public string? InputColumnName { get; init; } = "Embeddings";

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

    /// <summary>
    /// <see cref="DenoiseLatentsOptions.LowResolutionImageColumnName"/> (super-resolution models); null when the stage reads
    /// none. A definition carries it; an ML.NET zip (the saved row has no image slot) refuses it.
    /// </summary>
    public string? LowResolutionImageColumnName { get; init; }

    /// <summary>The pooled prompt column an SDXL stage reads (saved resolved); null for SD 1.x/2.x.</summary>
    public string? PooledEmbeddingsColumnName { get; init; }

    /// <summary>The base seed (saved resolved when the options had none, so results repeat).</summary>
    public int? Seed { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.Noise"/>; records saved before it existed read as <see cref="NoiseOptions.Default"/>.</summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;

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

    /// <summary>
    /// <see cref="DenoiseLatentsOptions.ControlNets"/> (each unit's ControlNet path, image and scale columns, scale and
    /// window); null when the stage has none. A saved stage holds at most <see cref="MaxSavedControlNets"/>.
    /// </summary>
    public IReadOnlyList<ControlNetUnit>? ControlNets { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.ControlNetGuessMode"/>.</summary>
    public bool ControlNetGuessMode { get; init; }

    /// <summary><see cref="DenoiseLatentsOptions.PromptScheduleColumnName"/>; null when the stage reads none (and in records written before it existed).</summary>
    public string? PromptScheduleColumnName { get; init; }

    /// <summary>The ControlNets a saved stage can hold: the saved row (contract v3) has this many control-image and scale slots.</summary>
    public const int MaxSavedControlNets = 4;

    /// <inheritdoc/>
    public override DiffusionStageKind Kind => DiffusionStageKind.DenoiseLatents;

    /// <inheritdoc/>
    public override int CurrentVersion => 1;

    /// <summary>The ML.NET contract of the saved stage (v4 added the prompt-schedule slot <see cref="ScheduleSlot"/>).</summary>
    internal const string ContractName = "MLNet.Diffusion.DenoiseLatents.v4";

    /// <summary>The contract with ControlNet's slots and no prompt-schedule slot: still loaded, its schedule slot empty.</summary>
    internal const string ContractNameV3 = "MLNet.Diffusion.DenoiseLatents.v3";

    /// <summary>The slot of the prompt-schedule column (contract v4).</summary>
    internal const string ScheduleSlot = "__sd_schedule";

    /// <summary>The contract before ControlNet's slots (docs/persistence.md): still loaded, its control slots empty.</summary>
    internal const string ContractNameV2 = "MLNet.Diffusion.DenoiseLatents.v2";

    /// <summary>The slot of unit <paramref name="i"/>'s control image.</summary>
    internal static string ControlSlot(int i) => "__sd_control" + i.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The slot of unit <paramref name="i"/>'s per-row scale (a one-value vector).</summary>
    internal static string ControlScaleSlot(int i) => "__sd_cscale" + i.ToString(System.Globalization.CultureInfo.InvariantCulture);

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
            LowResolutionImageColumnName = o.LowResolutionImageColumnName,
            PooledEmbeddingsColumnName = stage.PooledColumnName,
            Seed = RowSeed.Base(o.Seed, stage.Model),
            Noise = o.Noise,
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
            ControlNets = o.ControlNets is { Count: > 0 } units ? Resolved(units, stage) : null,
            ControlNetGuessMode = o.ControlNetGuessMode,
            PromptScheduleColumnName = o.PromptScheduleColumnName,
        };
    }

    /// <summary>The units with their ControlNet paths made absolute (the saved model references files by absolute path, as its folder).</summary>
    private static ControlNetUnit[] Resolved(IReadOnlyList<ControlNetUnit> units, LatentDenoisingTransformer stage)
    {
        if (units.Count > MaxSavedControlNets)
            throw new NotSupportedException($"A DenoiseLatents stage with {units.Count} ControlNets cannot be saved: the saved row holds at most {MaxSavedControlNets}.");
        var result = new ControlNetUnit[units.Count];
        for (int i = 0; i < units.Count; i++)
            result[i] = units[i].ModelPath is null ? units[i] : units[i] with { ModelPath = stage.ControlNets[i].Path };
        return result;
    }

    private protected override DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken) =>
        new LatentDenoisingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName,
            new DenoiseLatentsOptions
            {
                SeedColumnName = SeedColumnName,
                InitialNoiseColumnName = InitialNoiseColumnName,
                InitialLatentsColumnName = InitialLatentsColumnName,
                MaskColumnName = MaskColumnName,
                MaskedImageLatentsColumnName = MaskedImageLatentsColumnName,
                LowResolutionImageColumnName = LowResolutionImageColumnName,
                PooledEmbeddingsColumnName = PooledEmbeddingsColumnName,
                Seed = Seed,
                Noise = Noise ?? NoiseOptions.Default,
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
                ControlNets = ControlNets,
                ControlNetGuessMode = ControlNetGuessMode,
                PromptScheduleColumnName = PromptScheduleColumnName,
                Progress = progress,
                CancellationToken = cancellationToken,
            });

    internal override DiffusionStageDefinition ForSurrogate() => this with
    {
        OutputColumnName = Slots.Output0,
        InputColumnName = IfSet(InputColumnName, Slots.Embeddings),
        SeedColumnName = IfSet(SeedColumnName, Slots.Seed),
        InitialNoiseColumnName = IfSet(InitialNoiseColumnName, Slots.Noise),
        InitialLatentsColumnName = IfSet(InitialLatentsColumnName, Slots.InitialLatents),
        MaskColumnName = IfSet(MaskColumnName, Slots.Mask),
        MaskedImageLatentsColumnName = IfSet(MaskedImageLatentsColumnName, Slots.MaskedLatents),
        PooledEmbeddingsColumnName = IfSet(PooledEmbeddingsColumnName, Slots.Pooled),
        ControlNets = SurrogateUnits(),
        PromptScheduleColumnName = IfSet(PromptScheduleColumnName, ScheduleSlot),
        BatchSize = 1,
    };

    private ControlNetUnit[]? SurrogateUnits()
    {
        if (ControlNets is not { Count: > 0 } units)
            return null;
        var result = new ControlNetUnit[units.Count];
        for (int i = 0; i < units.Count; i++)
            result[i] = units[i] with { ImageColumnName = ControlSlot(i), ScaleColumnName = IfSet(units[i].ScaleColumnName, ControlScaleSlot(i)) };
        return result;
    }

    internal override string Contract => ContractName;

    // An input the stage does not read carries a copy of the embeddings (any float vector would do; it is never read);
    // an unconditional stage reads no float vector at all, and the chain then feeds those slots a constant.
    // ControlNet unit i's image and scale columns go to __sd_control{i} and __sd_cscale{i} (a Single scale column is
    // concatenated into a one-value vector there).
    internal override IReadOnlyList<SurrogateInput> Inputs
    {
        get
        {
            // The saved row (contract v3) has no image slot: a super-resolution stage is saved as a definition only.
            if (LowResolutionImageColumnName is not null)
                throw new InvalidOperationException($"The DenoiseLatents stage reads the low-resolution image column '{LowResolutionImageColumnName}', which mlContext.Model.Save cannot carry "
                    + "(the saved stage's inputs are tensors and a seed). Save a DiffusionPipelineDefinition instead. See docs/persistence.md.");
            var inputs = new List<SurrogateInput>
            {
                new(Slots.Embeddings, SlotType.Tensor, InputColumnName),
                new(Slots.Noise, SlotType.Tensor, InitialNoiseColumnName, InputColumnName),
                new(Slots.InitialLatents, SlotType.Tensor, InitialLatentsColumnName, InputColumnName),
                new(Slots.Mask, SlotType.Tensor, MaskColumnName, InputColumnName),
                new(Slots.MaskedLatents, SlotType.Tensor, MaskedImageLatentsColumnName, InputColumnName),
                new(Slots.Pooled, SlotType.Tensor, PooledEmbeddingsColumnName, InputColumnName),
                new(Slots.Seed, SlotType.Int64, SeedColumnName),
                new(ScheduleSlot, SlotType.Tensor, PromptScheduleColumnName, InputColumnName),
            };
            for (int i = 0; i < MaxSavedControlNets; i++)
            {
                var unit = ControlNets is { } units && i < units.Count ? units[i] : null;
                inputs.Add(new(ControlSlot(i), SlotType.Tensor, unit?.ImageColumnName, InputColumnName));
                inputs.Add(new(ControlScaleSlot(i), SlotType.Tensor, unit?.ScaleColumnName, InputColumnName));
            }
            return inputs;
        }
    }

    internal override IReadOnlyList<SurrogateOutput> Outputs => new SurrogateOutput[] { new(OutputColumnName, Slots.Output0) };

    internal override string ConfigKey(DataViewSchema schema) => InputColumnName ?? SurrogateChain.ScalarKey(schema, SeedColumnName, "DenoiseLatents");

    internal override bool VectorConfig => true;

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

    public float[] __sd_control0 { get; set; } = Array.Empty<float>();

    public float[] __sd_control1 { get; set; } = Array.Empty<float>();

    public float[] __sd_control2 { get; set; } = Array.Empty<float>();

    public float[] __sd_control3 { get; set; } = Array.Empty<float>();

    public float[] __sd_cscale0 { get; set; } = Array.Empty<float>();

    public float[] __sd_cscale1 { get; set; } = Array.Empty<float>();

    public float[] __sd_cscale2 { get; set; } = Array.Empty<float>();

    public float[] __sd_cscale3 { get; set; } = Array.Empty<float>();

    public float[] __sd_schedule { get; set; } = Array.Empty<float>();
}

/// <summary>The saved row of DenoiseLatents before the prompt schedule (contract <see cref="DenoiseLatentsStageDefinition.ContractNameV3"/>).</summary>
internal sealed class DenoiseLatentsSlotsV3
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_embeddings { get; set; } = Array.Empty<float>();

    public float[] __sd_noise { get; set; } = Array.Empty<float>();

    public float[] __sd_init { get; set; } = Array.Empty<float>();

    public float[] __sd_mask { get; set; } = Array.Empty<float>();

    public float[] __sd_masked { get; set; } = Array.Empty<float>();

    public float[] __sd_pooled { get; set; } = Array.Empty<float>();

    public long[] __sd_seed { get; set; } = Array.Empty<long>();

    public float[] __sd_control0 { get; set; } = Array.Empty<float>();

    public float[] __sd_control1 { get; set; } = Array.Empty<float>();

    public float[] __sd_control2 { get; set; } = Array.Empty<float>();

    public float[] __sd_control3 { get; set; } = Array.Empty<float>();

    public float[] __sd_cscale0 { get; set; } = Array.Empty<float>();

    public float[] __sd_cscale1 { get; set; } = Array.Empty<float>();

    public float[] __sd_cscale2 { get; set; } = Array.Empty<float>();

    public float[] __sd_cscale3 { get; set; } = Array.Empty<float>();
}

/// <summary>The saved row of DenoiseLatents before ControlNet (contract <see cref="DenoiseLatentsStageDefinition.ContractNameV2"/>).</summary>
internal sealed class DenoiseLatentsSlotsV2
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

/// <summary>The v2 contract (saved before ControlNet): the same slots, the control slots left empty (its configuration has no ControlNets).</summary>
[CustomMappingFactoryAttribute(DenoiseLatentsStageDefinition.ContractNameV2)]
internal sealed class DenoiseLatentsMappingV2 : StatefulCustomMappingFactory<DenoiseLatentsSlotsV2, OneOutput, SurrogateState>
{
    public override Action<DenoiseLatentsSlotsV2, OneOutput, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), r =>
        {
            DenoiseLatentsSlotSetter.Inputs(r, src.__sd_embeddings, src.__sd_noise, src.__sd_init, src.__sd_mask, src.__sd_masked, src.__sd_pooled, src.__sd_seed);
            for (int i = 0; i < DenoiseLatentsStageDefinition.MaxSavedControlNets; i++)
            {
                r.Set(DenoiseLatentsStageDefinition.ControlSlot(i), Array.Empty<float>());
                r.Set(DenoiseLatentsStageDefinition.ControlScaleSlot(i), Array.Empty<float>());
            }
            r.Set(DenoiseLatentsStageDefinition.ScheduleSlot, Array.Empty<float>());
        }).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

/// <summary>The v3 contract (saved before the prompt schedule): the same slots, the schedule slot left empty (its configuration reads none).</summary>
[CustomMappingFactoryAttribute(DenoiseLatentsStageDefinition.ContractNameV3)]
internal sealed class DenoiseLatentsMappingV3 : StatefulCustomMappingFactory<DenoiseLatentsSlotsV3, OneOutput, SurrogateState>
{
    public override Action<DenoiseLatentsSlotsV3, OneOutput, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), r =>
        {
            DenoiseLatentsSlotSetter.Inputs(r, src.__sd_embeddings, src.__sd_noise, src.__sd_init, src.__sd_mask, src.__sd_masked, src.__sd_pooled, src.__sd_seed);
            DenoiseLatentsSlotSetter.Controls(r, [src.__sd_control0, src.__sd_control1, src.__sd_control2, src.__sd_control3], [src.__sd_cscale0, src.__sd_cscale1, src.__sd_cscale2, src.__sd_cscale3]);
            r.Set(DenoiseLatentsStageDefinition.ScheduleSlot, Array.Empty<float>());
        }).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(DenoiseLatentsStageDefinition.ContractName)]
internal sealed class DenoiseLatentsMapping : StatefulCustomMappingFactory<DenoiseLatentsSlots, OneOutput, SurrogateState>
{
    public override Action<DenoiseLatentsSlots, OneOutput, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), r =>
        {
            DenoiseLatentsSlotSetter.Inputs(r, src.__sd_embeddings, src.__sd_noise, src.__sd_init, src.__sd_mask, src.__sd_masked, src.__sd_pooled, src.__sd_seed);
            DenoiseLatentsSlotSetter.Controls(r, [src.__sd_control0, src.__sd_control1, src.__sd_control2, src.__sd_control3], [src.__sd_cscale0, src.__sd_cscale1, src.__sd_cscale2, src.__sd_cscale3]);
            r.Set(DenoiseLatentsStageDefinition.ScheduleSlot, src.__sd_schedule);
        }).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

/// <summary>The slots every DenoiseLatents contract (v2, v3, v4) saves, set once for all three mappings.</summary>
internal static class DenoiseLatentsSlotSetter
{
    public static void Inputs(SurrogateRunner r, float[] embeddings, float[] noise, float[] init, float[] mask, float[] masked, float[] pooled, long[] seed)
    {
        r.Set(Slots.Embeddings, embeddings);
        r.Set(Slots.Noise, noise);
        r.Set(Slots.InitialLatents, init);
        r.Set(Slots.Mask, mask);
        r.Set(Slots.MaskedLatents, masked);
        r.Set(Slots.Pooled, pooled);
        r.Set(Slots.Seed, SurrogateState.First(seed));
    }

    /// <summary>The ControlNet slots of v3 and v4: one control image and one scale per saved ControlNet.</summary>
    public static void Controls(SurrogateRunner r, float[][] images, float[][] scales)
    {
        for (int i = 0; i < images.Length; i++)
        {
            r.Set(DenoiseLatentsStageDefinition.ControlSlot(i), images[i]);
            r.Set(DenoiseLatentsStageDefinition.ControlScaleSlot(i), scales[i]);
        }
    }
}
