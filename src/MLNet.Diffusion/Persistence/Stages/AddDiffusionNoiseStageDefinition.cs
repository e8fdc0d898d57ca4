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
/// The persisted record of an AddDiffusionNoise stage (<see cref="DiffusionNoisingTransformer"/>): its columns and the
/// fields of <see cref="AddDiffusionNoiseOptions"/>. Version 1.
/// </summary>
public sealed record AddDiffusionNoiseStageDefinition : DiffusionStageDefinition
{
    /// <summary>The noisy latents column the stage writes.</summary>
    public string OutputColumnName { get; init; } = "NoisyLatents";

    /// <summary>The clean latents column the stage reads.</summary>
    public string InputColumnName { get; init; } = "Latents";

    /// <summary><see cref="AddDiffusionNoiseOptions.TimestepColumnName"/>; null when the stage reads none.</summary>
    public string? TimestepColumnName { get; init; }

    /// <summary><see cref="AddDiffusionNoiseOptions.SeedColumnName"/>; null when the stage reads none.</summary>
    public string? SeedColumnName { get; init; }

    /// <summary><see cref="AddDiffusionNoiseOptions.NoiseOutputColumnName"/>; null when the stage writes none.</summary>
    public string? NoiseOutputColumnName { get; init; }

    /// <summary><see cref="AddDiffusionNoiseOptions.Timestep"/>.</summary>
    public int? Timestep { get; init; }

    /// <summary>The base seed (saved resolved when the options had none, so results repeat).</summary>
    public int? Seed { get; init; }

    /// <summary><see cref="AddDiffusionNoiseOptions.Noise"/>; records saved before it existed read as <see cref="NoiseOptions.Default"/>.</summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;

    /// <inheritdoc/>
    public override DiffusionStageKind Kind => DiffusionStageKind.AddDiffusionNoise;

    /// <inheritdoc/>
    public override int CurrentVersion => 1;

    /// <summary>The ML.NET contract of the saved stage.</summary>
    internal const string ContractName = "MLNet.Diffusion.AddDiffusionNoise.v2";

    internal static AddDiffusionNoiseStageDefinition From(DiffusionNoisingTransformer stage)
    {
        var o = stage.Options;
        return new()
        {
            OutputColumnName = stage.OutputColumnName,
            InputColumnName = stage.InputColumnName,
            TimestepColumnName = o.TimestepColumnName,
            SeedColumnName = o.SeedColumnName,
            NoiseOutputColumnName = o.NoiseOutputColumnName,
            Timestep = o.Timestep,
            Seed = RowSeed.Base(o.Seed, stage.Model),
            Noise = o.Noise,
        };
    }

    private protected override DiffusionTransformer Create(StableDiffusionModel model, IProgress<DenoiseProgress>? progress, CancellationToken cancellationToken) =>
        new DiffusionNoisingTransformer(model, OutputColumnName ?? throw Missing(nameof(OutputColumnName)), InputColumnName ?? throw Missing(nameof(InputColumnName)),
            new AddDiffusionNoiseOptions
            {
                TimestepColumnName = TimestepColumnName,
                SeedColumnName = SeedColumnName,
                NoiseOutputColumnName = NoiseOutputColumnName,
                Timestep = Timestep,
                Seed = Seed,
                Noise = Noise ?? NoiseOptions.Default,
            });

    internal override DiffusionStageDefinition ForSurrogate() => this with
    {
        OutputColumnName = Slots.Output0,
        InputColumnName = Slots.Latents,
        TimestepColumnName = IfSet(TimestepColumnName, Slots.Timestep),
        SeedColumnName = IfSet(SeedColumnName, Slots.Seed),
        NoiseOutputColumnName = IfSet(NoiseOutputColumnName, Slots.Output1),
    };

    internal override string Contract => ContractName;

    internal override IReadOnlyList<SurrogateInput> Inputs => new SurrogateInput[]
    {
        new(Slots.Latents, SlotType.Tensor, InputColumnName),
        new(Slots.Seed, SlotType.Int64, SeedColumnName),
        new(Slots.Timestep, SlotType.Int64, TimestepColumnName),
    };

    internal override IReadOnlyList<SurrogateOutput> Outputs => NoiseOutputColumnName is { } noise
        ? new SurrogateOutput[] { new(OutputColumnName, Slots.Output0), new(noise, Slots.Output1) }
        : new SurrogateOutput[] { new(OutputColumnName, Slots.Output0) };

    internal override string ConfigKey(DataViewSchema schema) => InputColumnName;

    internal override IEstimator<ITransformer> CreateMapping(MLContext ml) =>
        ml.Transforms.StatefulCustomMapping(new AddDiffusionNoiseMapping().GetMapping(), SurrogateState.Init, ContractName);
}

#pragma warning disable SA1300, IDE1006 // Member names are the surrogate's slot names.

/// <summary>The saved row of AddDiffusionNoise (contract <see cref="AddDiffusionNoiseStageDefinition.ContractName"/>).</summary>
internal sealed class AddDiffusionNoiseSlots
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_latents { get; set; } = Array.Empty<float>();

    public long[] __sd_seed { get; set; } = Array.Empty<long>();

    public long[] __sd_timestep { get; set; } = Array.Empty<long>();
}

#pragma warning restore SA1300, IDE1006

[CustomMappingFactoryAttribute(AddDiffusionNoiseStageDefinition.ContractName)]
internal sealed class AddDiffusionNoiseMapping : StatefulCustomMappingFactory<AddDiffusionNoiseSlots, TwoOutputs, SurrogateState>
{
    public override Action<AddDiffusionNoiseSlots, TwoOutputs, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), r =>
        {
            r.Set(Slots.Latents, src.__sd_latents);
            r.Set(Slots.Seed, SurrogateState.First(src.__sd_seed));
            r.Set(Slots.Timestep, SurrogateState.First(src.__sd_timestep));
        }).ReadInto(dst);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}
