namespace MLNet.Diffusion.Randomness;

/// <summary>The algorithm that turns a row's seed into Gaussian noise.</summary>
public enum NoiseGenerator
{
    /// <summary>
    /// This library's own generator (<see cref="Schedulers.GaussianNoise"/>: xoshiro256** and a double Box–Muller), the
    /// same on every machine and .NET version; a seed means nothing to other tools.
    /// </summary>
    Library,

    /// <summary>
    /// PyTorch's CPU generator, <c>torch.randn(…, generator=torch.Generator("cpu").manual_seed(seed))</c>
    /// (<see cref="TorchCpuNoise"/>): diffusers scripts with a CPU generator, ComfyUI, AUTOMATIC1111 with "RNG: CPU".
    /// </summary>
    TorchCpu,

    /// <summary>
    /// AUTOMATIC1111's "NV" Philox generator (<see cref="PhiloxNoise"/>), its emulation of <c>torch.randn</c> on a CUDA
    /// device: AUTOMATIC1111 with "RNG: NV", and, to within that emulation, "RNG: GPU" on NVIDIA cards.
    /// </summary>
    Philox,
}
