using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Schedulers;

/// <summary>Creates schedulers by name (<c>ddim</c>, <c>euler-a</c>, <c>dpmpp-2m-karras</c>, …) or by a config's <c>_class_name</c>.</summary>
public static class SchedulerFactory
{
    private static readonly Dictionary<string, Func<SchedulerConfig, SchedulerOptions, DiffusionScheduler>> s_byName = new(StringComparer.OrdinalIgnoreCase)
    {
        ["ddim"] = (c, o) => new DdimScheduler(c) { Eta = o.Eta },
        ["euler"] = (c, _) => new EulerDiscreteScheduler(c),
        ["euler-karras"] = (c, _) => new EulerDiscreteScheduler(c with { UseKarrasSigmas = true }),
        ["euler-a"] = (c, _) => new EulerAncestralDiscreteScheduler(c),
        ["dpmpp-2m"] = (c, _) => new DpmSolverMultistepScheduler(c),
        ["dpmpp-2m-karras"] = (c, _) => new DpmSolverMultistepScheduler(c with { UseKarrasSigmas = true }),
        ["ddpm"] = (c, _) => new DdpmScheduler(c),
        ["pndm"] = (c, _) => new PndmScheduler(c),
        ["lms"] = (c, _) => new LmsDiscreteScheduler(c),
        ["lms-karras"] = (c, _) => new LmsDiscreteScheduler(c with { UseKarrasSigmas = true }),
        ["heun"] = (c, _) => new HeunDiscreteScheduler(c),
        ["heun-karras"] = (c, _) => new HeunDiscreteScheduler(c with { UseKarrasSigmas = true }),
        ["lcm"] = (c, _) => new LcmScheduler(c),
    };

    private static readonly Dictionary<string, string> s_byClassName = new(StringComparer.Ordinal)
    {
        ["DDIMScheduler"] = "ddim",
        ["EulerDiscreteScheduler"] = "euler",
        ["EulerAncestralDiscreteScheduler"] = "euler-a",
        ["DPMSolverMultistepScheduler"] = "dpmpp-2m",
        ["DDPMScheduler"] = "ddpm",
        ["PNDMScheduler"] = "pndm",
        ["LMSDiscreteScheduler"] = "lms",
        ["HeunDiscreteScheduler"] = "heun",
        ["LCMScheduler"] = "lcm",
    };

    /// <summary>The scheduler names <see cref="Create(string, SchedulerConfig)"/> accepts.</summary>
    public static IReadOnlyCollection<string> Names => s_byName.Keys;

    /// <summary>Creates the scheduler called <paramref name="name"/>, configured from <paramref name="config"/>.</summary>
    /// <param name="name">A name from <see cref="Names"/> (case-insensitive).</param>
    /// <param name="config">The model's scheduler config.</param>
    /// <exception cref="ArgumentException">The name is unknown; the message lists the known names.</exception>
    public static DiffusionScheduler Create(string name, SchedulerConfig config) => Create(name, config, null);

    /// <summary>Creates the scheduler called <paramref name="name"/> with sampling options (e.g. DDIM's η).</summary>
    /// <param name="name">A name from <see cref="Names"/> (case-insensitive).</param>
    /// <param name="config">The model's scheduler config.</param>
    /// <param name="options">Sampling options; null for the defaults.</param>
    /// <exception cref="ArgumentException">The name is unknown; the message lists the known names.</exception>
    public static DiffusionScheduler Create(string name, SchedulerConfig config, SchedulerOptions? options)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentNullException.ThrowIfNull(config);
        if (!s_byName.TryGetValue(name.Trim(), out var create))
            throw new ArgumentException($"Unknown scheduler '{name}'. Known schedulers: {string.Join(", ", s_byName.Keys)}.", nameof(name));
        return create(config, options ?? new SchedulerOptions());
    }

    /// <summary>
    /// Creates the scheduler the config's <c>_class_name</c> names (with its <c>use_karras_sigmas</c>); DDIM when it
    /// names none this library implements.
    /// </summary>
    /// <param name="config">The model's scheduler config.</param>
    public static DiffusionScheduler CreateDefault(SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        string name = config.ClassName is { } cls && s_byClassName.TryGetValue(cls, out var n) ? n : "ddim";
        return Create(name, config);
    }
}
