using System;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// A source of standard normal noise. Stochastic schedulers (DDPM, Euler ancestral, DDIM with eta &gt; 0, LCM) draw
/// from the caller's source so that a seed fixes the result. Implementations: <see cref="GaussianNoise"/> (the default),
/// <see cref="Randomness.TorchCpuNoise"/>, <see cref="Randomness.PhiloxNoise"/>, and <see cref="Randomness.BatchNoise"/>
/// for a batch of rows.
/// </summary>
public interface INoiseSource
{
    /// <summary>Fills <paramref name="destination"/> with independent N(0, 1) samples.</summary>
    /// <param name="destination">The span to fill.</param>
    void NextGaussian(Span<float> destination);
}
