using System;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json.Serialization;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// How to build a scheduler: which diffusers scheduler class, and the settings of it that are sampling choices (the
/// constructor keys a user overrides in diffusers' <c>Scheduler.from_config(pipe.scheduler.config, key=…)</c>, and
/// step arguments such as DDIM's η). Each scheduler file declares its own sealed options record next to the scheduler,
/// as diffusers' <c>@register_to_config</c> lets each scheduler own its keys; <see cref="SchedulerFactory"/> registers
/// one default record per name.
/// </summary>
/// <remarks>
/// <para>
/// A property left null keeps the model folder's <c>scheduler_config.json</c> value, or the class default when the file
/// does not give the key; a property that is set overrides the file. The training keys (<c>num_train_timesteps</c>, the
/// betas) are not options: they describe how the model was trained and always come from its folder.
/// </para>
/// <para>
/// Why options rather than a scheduler instance: a scheduler holds per-run state and is built for one model's noise
/// schedule, whereas a stage clones one per cursor and is saved with its pipeline. An options record is immutable,
/// independent of the model, compares by value and is saved as JSON: a string for a registered name's defaults
/// (<c>"euler-a"</c>, as files written before options existed), an object with the name and the set keys otherwise.
/// A string converts implicitly (<c>Scheduler = "euler-a"</c>), so a name or diffusers class name can be used wherever
/// options are expected; an unknown one fails at the conversion, listing the known names.
/// </para>
/// </remarks>
[JsonConverter(typeof(SchedulerOptionsJsonConverter))]
public abstract record SchedulerOptions
{
    /// <summary>Only this library's scheduler files derive options (each registered with <see cref="SchedulerFactory"/>).</summary>
    private protected SchedulerOptions()
    {
    }

    /// <summary>
    /// <c>timestep_spacing</c>: <c>leading</c>, <c>linspace</c> or <c>trailing</c> (Lin et al. 2023, Table 2); null keeps
    /// the folder's value or the class default. LCM draws its timesteps from its distillation schedule and ignores it.
    /// </summary>
    public string? TimestepSpacing { get; init; }

    /// <summary><c>steps_offset</c>: the offset added to every timestep under <c>leading</c> spacing; null keeps the folder's.</summary>
    public int? StepsOffset { get; init; }

    /// <summary>
    /// <c>prediction_type</c>: <c>epsilon</c>, <c>v_prediction</c> or <c>sample</c>; null keeps the folder's. Set it only for
    /// a folder whose config misstates what its UNet predicts.
    /// </summary>
    public string? PredictionType { get; init; }

    /// <summary>Creates the scheduler these options describe for a model's scheduler config.</summary>
    /// <param name="config">The model folder's <c>scheduler_config.json</c> (<see cref="ModelInfo.SchedulerConfig"/>).</param>
    /// <returns>A new scheduler; a value that no scheduler accepts fails with an exception naming its key.</returns>
    public DiffusionScheduler CreateScheduler(SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return Create(ApplyTo(config));
    }

    /// <summary>The config with the keys these options set replaced (keys left null keep the config's value, given or not).</summary>
    /// <param name="config">The folder's config.</param>
    public virtual SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (TimestepSpacing is { } spacing)
            config = config with { TimestepSpacing = spacing };
        if (StepsOffset is { } offset)
            config = config with { StepsOffset = offset };
        if (PredictionType is { } prediction)
            config = config with { PredictionType = prediction };
        return config;
    }

    /// <summary>Creates the scheduler on a config that already holds these options.</summary>
    /// <param name="config">The config after <see cref="ApplyTo"/>.</param>
    private protected abstract DiffusionScheduler Create(SchedulerConfig config);

    /// <summary>The default options of a registered scheduler name or diffusers class name (<see cref="SchedulerFactory.GetOptions"/>).</summary>
    /// <param name="name">A name such as <c>euler-a</c> or a class name such as <c>EulerAncestralDiscreteScheduler</c>; null gives null.</param>
    /// <exception cref="ArgumentException">The name is unknown; the message lists the known names.</exception>
    [return: NotNullIfNotNull(nameof(name))]
    public static implicit operator SchedulerOptions?(string? name) => name is null ? null : SchedulerFactory.GetOptions(name);
}
