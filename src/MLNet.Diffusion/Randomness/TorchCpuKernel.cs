namespace MLNet.Diffusion.Randomness;

/// <summary>
/// Which of PyTorch's CPU kernels <see cref="TorchCpuNoise"/> reproduces for draws of 16 values or more (smaller draws
/// take the same double-precision path in both).
/// </summary>
public enum TorchCpuKernel
{
    /// <summary>
    /// <c>normal_fill_AVX2</c>: what <c>torch.randn</c> runs on x86-64 CPUs where PyTorch reports the capability
    /// <c>AVX2</c> (<c>torch.backends.cpu.get_cpu_capability()</c>). Bit-exact on every machine.
    /// </summary>
    Avx2,

    /// <summary>
    /// The portable <c>normal_fill</c> (C library <c>logf</c>/<c>cosf</c>/<c>sinf</c>): what PyTorch builds without an
    /// AVX2 kernel run (reported capability <c>DEFAULT</c>/<c>NO AVX</c>, e.g. <c>ATEN_CPU_CAPABILITY=default</c>).
    /// Bit-exact where .NET uses the same C library as that PyTorch (glibc on Linux); otherwise within an ulp or two.
    /// </summary>
    Portable,
}
