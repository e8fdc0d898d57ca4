namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Sampling settings that are not part of <c>scheduler_config.json</c> but arguments of diffusers' <c>step</c>
/// (e.g. DDIM's <c>eta</c>); passed to <see cref="SchedulerFactory.Create(string, SchedulerConfig, SchedulerOptions?)"/>.
/// </summary>
public sealed record SchedulerOptions
{
    /// <summary>
    /// DDIM's η (Song et al. 2021, eq. 16): 0 gives the deterministic DDIM sampler, 1 the DDPM-like stochastic one.
    /// Used by <c>ddim</c> only; default 0.
    /// </summary>
    public float Eta { get; init; }
}
