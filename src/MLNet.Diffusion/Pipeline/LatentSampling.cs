namespace MLNet.Diffusion;

/// <summary>How EncodeImage turns the VAE encoder's latent distribution into latents (diffusers' retrieve_latents sample_mode).</summary>
public enum LatentSampling
{
    /// <summary>Draw mean + σ·ε with ε from the row's seed ("sample", diffusers' image-to-image default).</summary>
    Sample,

    /// <summary>Take the distribution's mean ("argmax"): deterministic, independent of the seed.</summary>
    Mean,
}
