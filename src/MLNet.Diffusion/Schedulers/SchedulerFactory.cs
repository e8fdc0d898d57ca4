using System;
using System.Collections;
using System.Collections.Generic;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// The registry of schedulers: each by a short name (<c>ddim</c>, <c>euler-a</c>, <c>dpmpp-2m-karras</c>, …) and by the
/// diffusers class it implements (a config's <c>_class_name</c>), with its default <see cref="SchedulerOptions"/>.
/// </summary>
/// <remarks>
/// Adding a scheduler takes its file (the <see cref="DiffusionScheduler"/> subclass and its sealed options record) and one
/// line in the table below; a "-karras" alias of a class that takes <c>use_karras_sigmas</c> is one more line.
/// </remarks>
public static class SchedulerFactory
{
    // name, the diffusers class it implements (null: an alias of a class listed above it), its default options.
    private static readonly Registry s_registry = new()
    {
        { "ddim", "DDIMScheduler", new DdimSchedulerOptions() },
        { "euler", "EulerDiscreteScheduler", new EulerDiscreteSchedulerOptions() },
        { "euler-karras", null, new EulerDiscreteSchedulerOptions { UseKarrasSigmas = true } },
        { "euler-a", "EulerAncestralDiscreteScheduler", new EulerAncestralDiscreteSchedulerOptions() },
        { "dpmpp-2m", "DPMSolverMultistepScheduler", new DpmSolverMultistepSchedulerOptions() },
        { "dpmpp-2m-karras", null, new DpmSolverMultistepSchedulerOptions { UseKarrasSigmas = true } },
        { "ddpm", "DDPMScheduler", new DdpmSchedulerOptions() },
        { "pndm", "PNDMScheduler", new PndmSchedulerOptions() },
        { "lms", "LMSDiscreteScheduler", new LmsDiscreteSchedulerOptions() },
        { "lms-karras", null, new LmsDiscreteSchedulerOptions { UseKarrasSigmas = true } },
        { "heun", "HeunDiscreteScheduler", new HeunDiscreteSchedulerOptions() },
        { "heun-karras", null, new HeunDiscreteSchedulerOptions { UseKarrasSigmas = true } },
        { "lcm", "LCMScheduler", new LcmSchedulerOptions() },
    };

    /// <summary>The scheduler names <see cref="Create(string, SchedulerConfig)"/> accepts, in registration order.</summary>
    public static IReadOnlyCollection<string> Names => s_registry.Names;

    /// <summary>The diffusers scheduler classes implemented (the <c>_class_name</c> values <see cref="CreateDefault"/> accepts).</summary>
    public static IReadOnlyCollection<string> ClassNames => s_registry.ClassNames;

    /// <summary>The default options of a scheduler given by name or by diffusers class name.</summary>
    /// <param name="name">A name from <see cref="Names"/> or a class from <see cref="ClassNames"/> (case-insensitive).</param>
    /// <exception cref="ArgumentException">The name is unknown; the message names it and lists the known names and classes.</exception>
    public static SchedulerOptions GetOptions(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        string key = name.Trim();
        if (s_registry.ByName.TryGetValue(key, out var options) || s_registry.ByClass.TryGetValue(key, out options))
            return options;
        throw new ArgumentException($"Unknown scheduler '{name}'. Known schedulers: {string.Join(", ", Names)}; or a diffusers class: {string.Join(", ", ClassNames)}.", nameof(name));
    }

    /// <summary>Creates the scheduler called <paramref name="name"/> (a name or a diffusers class name), configured from <paramref name="config"/>.</summary>
    /// <param name="name">A name from <see cref="Names"/> or a class from <see cref="ClassNames"/> (case-insensitive).</param>
    /// <param name="config">The model's scheduler config.</param>
    /// <exception cref="ArgumentException">The name is unknown; the message lists the known names.</exception>
    public static DiffusionScheduler Create(string name, SchedulerConfig config) => GetOptions(name).CreateScheduler(config);

    /// <summary>Creates the scheduler that <paramref name="options"/> describe (e.g. <c>new DdimSchedulerOptions { Eta = 1 }</c>).</summary>
    /// <param name="options">The scheduler and its settings.</param>
    /// <param name="config">The model's scheduler config.</param>
    public static DiffusionScheduler Create(SchedulerOptions options, SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(options);
        return options.CreateScheduler(config);
    }

    /// <summary>Creates the scheduler the config's <c>_class_name</c> names, with the config's settings (as diffusers' pipelines load it).</summary>
    /// <param name="config">The model's scheduler config.</param>
    /// <exception cref="ArgumentException">
    /// The config names no class, or one this library does not implement; the message names it and lists the known classes
    /// and names (choose one of them by name instead).
    /// </exception>
    public static DiffusionScheduler CreateDefault(SchedulerConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.ClassName is not { } cls || !s_registry.ByClass.TryGetValue(cls, out var options))
        {
            string given = config.ClassName is null ? "names no scheduler class (no _class_name)" : $"has _class_name '{config.ClassName}', which MLNet.Diffusion does not implement";
            throw new ArgumentException($"The scheduler config {given}. Known classes: {string.Join(", ", ClassNames)}; or choose a scheduler by name: {string.Join(", ", Names)}.", nameof(config));
        }
        return options.CreateScheduler(config);
    }

    /// <summary>The registered name whose default options equal <paramref name="options"/>; null when none does.</summary>
    internal static string? NameOfDefaults(SchedulerOptions options)
    {
        foreach (var (name, defaults) in s_registry.Entries)
            if (defaults.Equals(options))
                return name;
        return null;
    }

    /// <summary>The first name registered with the options' type (the scheduler family's name).</summary>
    /// <exception cref="ArgumentException">The type is not registered.</exception>
    internal static string FamilyName(SchedulerOptions options)
    {
        foreach (var (name, defaults) in s_registry.Entries)
            if (defaults.GetType() == options.GetType())
                return name;
        throw new ArgumentException($"Scheduler options of type {options.GetType().Name} are not registered with SchedulerFactory.", nameof(options));
    }

    /// <summary>The table: names in registration order, and lookups by name and by diffusers class.</summary>
    private sealed class Registry : IEnumerable<KeyValuePair<string, SchedulerOptions>>
    {
        private readonly List<string> _names = new();
        private readonly List<string> _classNames = new();

        public Dictionary<string, SchedulerOptions> ByName { get; } = new(StringComparer.OrdinalIgnoreCase);

        public Dictionary<string, SchedulerOptions> ByClass { get; } = new(StringComparer.OrdinalIgnoreCase);

        public List<(string Name, SchedulerOptions Defaults)> Entries { get; } = new();

        public IReadOnlyCollection<string> Names => _names.AsReadOnly();

        public IReadOnlyCollection<string> ClassNames => _classNames.AsReadOnly();

        public void Add(string name, string? diffusersClass, SchedulerOptions defaults)
        {
            ByName.Add(name, defaults);
            _names.Add(name);
            Entries.Add((name, defaults));
            if (diffusersClass is not null)
            {
                ByClass.Add(diffusersClass, defaults);
                _classNames.Add(diffusersClass);
            }
        }

        public IEnumerator<KeyValuePair<string, SchedulerOptions>> GetEnumerator()
        {
            foreach (var (name, defaults) in Entries)
                yield return new(name, defaults);
        }

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }
}
