using System;
using System.Collections.Generic;
using System.Linq;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// The correspondence between AUTOMATIC1111's sampler names (with its <c>Schedule type</c>), diffusers' scheduler
/// classes and this library's scheduler names (<see cref="Schedulers.SchedulerFactory"/>).
/// </summary>
/// <remarks>
/// <list type="table">
/// <listheader><term>this library</term><description>diffusers class / AUTOMATIC1111 sampler, schedule type</description></listheader>
/// <item><term>ddim</term><description>DDIMScheduler / DDIM</description></item>
/// <item><term>euler</term><description>EulerDiscreteScheduler / Euler</description></item>
/// <item><term>euler-karras</term><description>EulerDiscreteScheduler, use_karras_sigmas / Euler, Karras</description></item>
/// <item><term>euler-a</term><description>EulerAncestralDiscreteScheduler / Euler a</description></item>
/// <item><term>dpmpp-2m</term><description>DPMSolverMultistepScheduler / DPM++ 2M</description></item>
/// <item><term>dpmpp-2m-karras</term><description>DPMSolverMultistepScheduler, use_karras_sigmas / DPM++ 2M, Karras</description></item>
/// <item><term>lms</term><description>LMSDiscreteScheduler / LMS</description></item>
/// <item><term>lms-karras</term><description>LMSDiscreteScheduler, use_karras_sigmas / LMS, Karras</description></item>
/// <item><term>heun</term><description>HeunDiscreteScheduler / Heun</description></item>
/// <item><term>heun-karras</term><description>HeunDiscreteScheduler, use_karras_sigmas / Heun, Karras</description></item>
/// <item><term>pndm</term><description>PNDMScheduler / PLMS (diffusers' PNDM with skip_prk_steps is the PLMS of latent diffusion)</description></item>
/// <item><term>lcm</term><description>LCMScheduler / LCM</description></item>
/// <item><term>ddpm</term><description>DDPMScheduler / none</description></item>
/// </list>
/// The names fix the algorithm. Where the timesteps sit is a separate setting: for its k-diffusion samplers,
/// AUTOMATIC1111's default schedule takes the model's sigmas at timesteps linspace(999, 0, N) (k-diffusion's
/// <c>DiscreteSchedule.get_sigmas</c>, interpolating log σ), which is diffusers' <c>timestep_spacing="linspace"</c>
/// rather than the <c>leading</c> spacing of SD 1.x scheduler configs; see docs/reproducing.md.
/// Older infotexts put the schedule in the sampler name (<c>DPM++ 2M Karras</c>); <see cref="ToScheduler"/> reads both.
/// </remarks>
public static class A1111Samplers
{
    private static readonly (string Scheduler, string DiffusersClass, string? Sampler, string? ScheduleType)[] s_table =
    {
        ("ddim", "DDIMScheduler", "DDIM", null),
        ("euler", "EulerDiscreteScheduler", "Euler", null),
        ("euler-karras", "EulerDiscreteScheduler", "Euler", "Karras"),
        ("euler-a", "EulerAncestralDiscreteScheduler", "Euler a", null),
        ("dpmpp-2m", "DPMSolverMultistepScheduler", "DPM++ 2M", null),
        ("dpmpp-2m-karras", "DPMSolverMultistepScheduler", "DPM++ 2M", "Karras"),
        ("lms", "LMSDiscreteScheduler", "LMS", null),
        ("lms-karras", "LMSDiscreteScheduler", "LMS", "Karras"),
        ("heun", "HeunDiscreteScheduler", "Heun", null),
        ("heun-karras", "HeunDiscreteScheduler", "Heun", "Karras"),
        ("pndm", "PNDMScheduler", "PLMS", null),
        ("lcm", "LCMScheduler", "LCM", null),
        ("ddpm", "DDPMScheduler", null, null),
    };

    /// <summary>The scheduler names of this library that have an AUTOMATIC1111 sampler.</summary>
    public static IReadOnlyList<string> SchedulerNames { get; } = s_table.Where(r => r.Sampler is not null).Select(r => r.Scheduler).ToArray();

    /// <summary>The diffusers class of one of this library's scheduler names (<c>euler-a</c> → <c>EulerAncestralDiscreteScheduler</c>).</summary>
    /// <param name="scheduler">A scheduler name of <see cref="Schedulers.SchedulerFactory"/>.</param>
    /// <returns>The class name, or null for a name not in the table.</returns>
    public static string? ToDiffusersClass(string scheduler)
        => s_table.FirstOrDefault(r => string.Equals(r.Scheduler, scheduler?.Trim(), StringComparison.OrdinalIgnoreCase)).DiffusersClass;

    /// <summary>AUTOMATIC1111's sampler and schedule type for one of this library's scheduler names.</summary>
    /// <param name="scheduler">A scheduler name of <see cref="Schedulers.SchedulerFactory"/>.</param>
    /// <param name="sampler">The sampler (<c>Euler a</c>, <c>DPM++ 2M</c>, …).</param>
    /// <param name="scheduleType">The schedule type: <c>Karras</c>, or <c>Automatic</c> for the sampler's default.</param>
    /// <returns>False when AUTOMATIC1111 has no such sampler (<c>ddpm</c>) or the name is unknown.</returns>
    public static bool TryGetSampler(string scheduler, out string sampler, out string scheduleType)
    {
        var row = s_table.FirstOrDefault(r => string.Equals(r.Scheduler, scheduler?.Trim(), StringComparison.OrdinalIgnoreCase));
        sampler = row.Sampler ?? string.Empty;
        scheduleType = row.ScheduleType ?? "Automatic";
        return row.Sampler is not null;
    }

    /// <summary>This library's scheduler name for AUTOMATIC1111's sampler and schedule type.</summary>
    /// <param name="sampler">The infotext's <c>Sampler</c>; old names with the schedule in them (<c>DPM++ 2M Karras</c>) too.</param>
    /// <param name="scheduleType">The infotext's <c>Schedule type</c>; null or <c>Automatic</c> for the sampler's default.</param>
    /// <returns>The scheduler name, or null when this library has no equivalent (e.g. <c>DPM++ 2M SDE</c>, <c>Euler a</c> with Karras).</returns>
    public static string? ToScheduler(string sampler, string? scheduleType = null)
    {
        ArgumentNullException.ThrowIfNull(sampler);
        string name = sampler.Trim();
        string schedule = string.IsNullOrWhiteSpace(scheduleType) ? "Automatic" : scheduleType.Trim();
        if (name.EndsWith(" Karras", StringComparison.Ordinal))
        {
            name = name[..^" Karras".Length];
            schedule = "Karras";
        }
        foreach (var row in s_table)
        {
            if (row.Sampler != name)
                continue;
            if (schedule == "Automatic" && row.ScheduleType is null || schedule == row.ScheduleType)
                return row.Scheduler;
        }
        return null;
    }
}
