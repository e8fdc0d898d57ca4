using System;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Prompting;

/// <summary>
/// The step count A1111 computes prompt-editing schedules with for a sampler, its <c>total_steps</c>: what
/// <see cref="EncodePromptOptions.ScheduleSteps"/> must be for a DenoiseLatents stage with given steps and scheduler.
/// </summary>
/// <remarks>
/// <para>A1111 (modules/processing.py, <c>StableDiffusionProcessing.setup_conds</c>):
/// <c>total_steps = sampler_config.total_steps(self.steps)</c>, then <c>get_multicond_learned_conditioning(…, prompts,
/// total_steps, …)</c> (and the negative prompt's <c>get_learned_conditioning</c> with the same count). In
/// modules/sd_samplers_common.py, <c>SamplerData.total_steps</c> returns <c>steps * 2</c> when the sampler's options
/// hold <c>"second_order": True</c> — in modules/sd_samplers_kdiffusion.py Heun, DPM2, DPM2 a, DPM++ 2S a and DPM++ SDE
/// — and <c>steps</c> otherwise. Of those samplers this library has Heun (<see cref="HeunDiscreteScheduler"/>, the
/// same 2N − 1 UNet calls as k-diffusion's <c>sample_heun</c>). The denoiser then counts UNet calls
/// (<c>CFGDenoiser.step</c>), so with Heun at 20 steps <c>[a:b:0.5]</c> switches after call int(0.5 × 40) = 20 of 39.</para>
/// <para>Image-to-image uses the same count: <c>setup_conds</c> runs with <c>p.steps</c> whatever the strength
/// (<c>img2img_fix_steps</c> is off by default, so <c>setup_img2img_steps</c> returns <c>steps = p.steps</c> and runs
/// <c>t_enc = int(min(strength, 0.999) · steps)</c> of them), and <c>Sampler.initialize</c> sets <c>step = 0</c> before the
/// first executed call.</para>
/// </remarks>
public static class A1111SamplerSteps
{
    /// <summary>
    /// The <see cref="EncodePromptOptions.ScheduleSteps"/> that matches a DenoiseLatents stage: A1111's <c>total_steps</c>,
    /// <paramref name="steps"/> or, for a second-order sampler (Heun), twice that.
    /// </summary>
    /// <param name="scheduler">The stage's <see cref="DenoiseLatentsOptions.Scheduler"/>; null: the model's default scheduler.</param>
    /// <param name="config">The model's scheduler configuration (<see cref="ModelInfo.SchedulerConfig"/>).</param>
    /// <param name="steps">The stage's <see cref="DenoiseLatentsOptions.Steps"/>.</param>
    /// <returns>The step count to compute the prompt schedules with.</returns>
    public static int ScheduleSteps(SchedulerOptions? scheduler, SchedulerConfig config, int steps)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        return TotalSteps(scheduler is null ? SchedulerFactory.CreateDefault(config) : scheduler.CreateScheduler(config), steps);
    }

    /// <summary>A1111's <c>total_steps</c> for <paramref name="steps"/> sampling steps of <paramref name="scheduler"/>.</summary>
    /// <param name="scheduler">The run's scheduler.</param>
    /// <param name="steps">The sampling steps (DenoiseLatents' <c>Steps</c>).</param>
    /// <returns><c>2 × steps</c> for a second-order sampler (Heun), else <paramref name="steps"/>.</returns>
    internal static int TotalSteps(DiffusionScheduler scheduler, int steps)
    {
        ArgumentNullException.ThrowIfNull(scheduler);
        return IsSecondOrder(scheduler) ? checked(2 * steps) : steps;
    }

    /// <summary>Whether A1111 marks the sampler <c>"second_order": True</c> (of this library's schedulers: Heun).</summary>
    /// <param name="scheduler">The scheduler.</param>
    /// <returns>True for <see cref="HeunDiscreteScheduler"/>.</returns>
    internal static bool IsSecondOrder(DiffusionScheduler scheduler) => scheduler is HeunDiscreteScheduler;
}
