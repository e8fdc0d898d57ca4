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
/// The persisted record of an EncodePrompt stage (<see cref="PromptEncodingTransformer"/>): the fields of
/// <see cref="EncodePromptOptions"/>. Version 1.
/// </summary>
public sealed record EncodePromptStageDefinition : DiffusionStageDefinition
{
    /// <summary>The prompt embeddings column, [2, 77, D].</summary>
    public string OutputColumnName { get; init; } = "Embeddings";

    /// <summary>The prompt text column.</summary>
    public string InputColumnName { get; init; } = "Prompt";

    /// <summary>The negative prompt text column; null when the stage reads none.</summary>
    public string? NegativePromptColumnName { get; init; }

    /// <summary>The pooled prompt vector column the stage writes; null when it writes none.</summary>
    public string? PooledOutputColumnName { get; init; }

    /// <summary><see cref="EncodePromptOptions.BatchSize"/>.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary><see cref="EncodePromptOptions.LongPrompt"/>.</summary>
    public bool LongPrompt { get; init; }

    /// <summary><see cref="EncodePromptOptions.MaxWindows"/>.</summary>
    public int MaxWindows { get; init; } = 8;

    /// <summary><see cref="EncodePromptOptions.EncodeEmptyNegativePrompt"/> (absent in records written before it existed: false, the behaviour then).</summary>
    public bool EncodeEmptyNegativePrompt { get; init; }

    /// <summary><see cref="EncodePromptOptions.PromptSyntax"/> (absent in records written before it existed: Plain, the behaviour then).</summary>
    public Prompting.PromptSyntax PromptSyntax { get; init; }

    /// <summary><see cref="EncodePromptOptions.Emphasis"/> (absent in older records: Original, the option's default).</summary>
    public Prompting.PromptEmphasis Emphasis { get; init; } = Prompting.PromptEmphasis.Original;

    /// <summary><see cref="EncodePromptOptions.PromptScheduleColumnName"/>; null when the stage writes none (and in records written before it existed).</summary>
    public string? PromptScheduleColumnName { get; init; }

    /// <summary><see cref="EncodePromptOptions.ScheduleSteps"/> (absent in older records: null).</summary>
    public int? ScheduleSteps { get; init; }

    /// <summary><see cref="EncodePromptOptions.PadPromptAndNegativePrompt"/> (absent in older records: true, the behaviour then).</summary>
    public bool PadPromptAndNegativePrompt { get; init; } = true;

    /// <inheritdoc/>
    public override DiffusionStageKind Kind => DiffusionStageKind.EncodePrompt;

    /// <inheritdoc/>
    public override int CurrentVersion => 1;

    /// <summary>The ML.NET contract of the saved stage.</summary>
    internal const string ContractName = "MLNet.Diffusion.EncodePrompt.v2";

    internal static EncodePromptStageDefinition From(PromptEncodingTransformer stage)
    {
        var o = stage.Options;
        // A loaded pipeline opens its model folder with default options, so LoRAs would be silently dropped: refuse
        // until the records carry the LoRA set (issue 16).
        if (o.LoraColumnName is not null || !stage.Model.LoraSet.IsEmpty)
            throw new NotSupportedException($"The EncodePrompt stage uses LoRAs ({(o.LoraColumnName is null ? "the model's" : "EncodePromptOptions.LoraColumnName '" + o.LoraColumnName + "'")}); "
                + "saving a pipeline with LoRAs is not supported yet: a loaded pipeline would run without them.");
        // The same for textual inversions (StableDiffusionModel.WithTextualInversions): the records do not name the files.
        if (stage.Model.TextualInversions.Count > 0)
            throw new NotSupportedException($"The EncodePrompt stage's model carries textual inversions ({string.Join(", ", System.Linq.Enumerable.Select(stage.Model.TextualInversions, t => t.Token))}); "
                + "saving a pipeline with textual inversions is not supported yet: a loaded pipeline would run without them.");
        return new()
        {
            OutputColumnName = o.OutputColumnName,
            InputColumnName = o.InputColumnName,
            NegativePromptColumnName = o.NegativePromptColumnName,
            PooledOutputColumnName = o.PooledOutputColumnName,
            BatchSize = o.BatchSize,
            LongPrompt = o.LongPrompt,
            MaxWindows = o.MaxWindows,
            EncodeEmptyNegativePrompt = o.EncodeEmptyNegativePrompt,
            PromptSyntax = o.PromptSyntax,
            Emphasis = o.Emphasis,
            PromptScheduleColumnName = o.PromptScheduleColumnName,
            ScheduleSteps = o.ScheduleSteps,
            PadPromptAndNegativePrompt = o.PadPromptAndNegativePrompt,
        };
    }

    private protected override DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken) =>
        new PromptEncodingTransformer(model, new EncodePromptOptions
        {
            OutputColumnName = OutputColumnName ?? throw Missing(nameof(OutputColumnName)),
            InputColumnName = InputColumnName ?? throw Missing(nameof(InputColumnName)),
            NegativePromptColumnName = NegativePromptColumnName,
            PooledOutputColumnName = PooledOutputColumnName,
            BatchSize = BatchSize,
            LongPrompt = LongPrompt,
            MaxWindows = MaxWindows,
            EncodeEmptyNegativePrompt = EncodeEmptyNegativePrompt,
            PromptSyntax = PromptSyntax,
            Emphasis = Emphasis,
            PromptScheduleColumnName = PromptScheduleColumnName,
            ScheduleSteps = ScheduleSteps,
            PadPromptAndNegativePrompt = PadPromptAndNegativePrompt,
        });

    internal override DiffusionStageDefinition ForSurrogate() => this with
    {
        OutputColumnName = Slots.Output0,
        InputColumnName = Slots.Prompt,
        NegativePromptColumnName = IfSet(NegativePromptColumnName, Slots.Negative),
        PooledOutputColumnName = IfSet(PooledOutputColumnName, Slots.Output1),
        // A stage with a schedule column writes no pooled vector (SD 1.x/2.x only), so the schedule takes the second output.
        PromptScheduleColumnName = IfSet(PromptScheduleColumnName, Slots.Output1),
        BatchSize = 1,
    };

    internal override string Contract => ContractName;

    internal override IReadOnlyList<SurrogateInput> Inputs => new SurrogateInput[]
    {
        new(Slots.Prompt, SlotType.Text, InputColumnName),
        new(Slots.Negative, SlotType.Text, NegativePromptColumnName, Placeholder: InputColumnName),
    };

    internal override IReadOnlyList<SurrogateOutput> Outputs => (PooledOutputColumnName ?? PromptScheduleColumnName) is { } second
        ? new SurrogateOutput[] { new(OutputColumnName, Slots.Output0), new(second, Slots.Output1) }
        : new SurrogateOutput[] { new(OutputColumnName, Slots.Output0) };

    internal override string ConfigKey(DataViewSchema schema) => InputColumnName;

    internal override IEstimator<ITransformer> CreateMapping(MLContext ml) =>
        ml.Transforms.StatefulCustomMapping(new EncodePromptMapping().GetMapping(), SurrogateState.Init, ContractName);
}

#pragma warning disable SA1300, IDE1006 // Member names are the surrogate's slot names.

/// <summary>The saved row of EncodePrompt (contract <see cref="EncodePromptStageDefinition.ContractName"/>).</summary>
internal sealed class EncodePromptSlots
{
    public string __sd_config { get; set; } = string.Empty;

    public string __sd_prompt { get; set; } = string.Empty;

    public string __sd_negative { get; set; } = string.Empty;
}

#pragma warning restore SA1300, IDE1006

[CustomMappingFactoryAttribute(EncodePromptStageDefinition.ContractName)]
internal sealed class EncodePromptMapping : StatefulCustomMappingFactory<EncodePromptSlots, TwoOutputs, SurrogateState>
{
    public override Action<EncodePromptSlots, TwoOutputs, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(src.__sd_config, r =>
        {
            r.Set(Slots.Prompt, src.__sd_prompt);
            r.Set(Slots.Negative, src.__sd_negative);
        }).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}
