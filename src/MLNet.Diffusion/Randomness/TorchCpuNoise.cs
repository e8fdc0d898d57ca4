using System;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Randomness;

/// <summary>
/// Reproduces <c>torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))</c> in float32, bit for bit:
/// each <see cref="NextGaussian"/> call is one <c>torch.randn</c> call of <c>destination.Length</c> values on the same
/// generator, so a sequence of calls continues the stream as a diffusers pipeline does (initial latents, then one
/// <c>randn_tensor(model_output.shape, generator=…)</c> per stochastic step).
/// </summary>
/// <remarks>
/// <para>
/// What PyTorch does (<c>aten/src/ATen/native/cpu/DistributionTemplates.h</c>, <c>aten/src/ATen/core/DistributionsHelper.h</c>,
/// <c>aten/src/ATen/core/TransformationHelper.h</c>): <c>manual_seed</c> keeps the low 32 bits of the seed for its
/// MT19937 (−1 acts as 2³² − 1, 2³² as 0) and clears the cached normal sample. A draw of 16 values or more fills the
/// tensor with float uniforms, each the low 24 bits of one 32-bit output times 2⁻²⁴, then turns each block of 16 into
/// normals (<see cref="TorchCpuKernel"/>); when the size is not a multiple of 16, the last 16 values are recomputed from
/// 16 fresh uniforms. A draw of fewer than 16 values takes the scalar path: Box–Muller in double from two 53-bit
/// uniforms (each from two 32-bit outputs, the first in the high word), returning the cosine sample and caching the sine
/// sample for the next scalar draw — the cache survives larger draws in between.
/// </para>
/// <para>
/// Only float32 draws are reproduced. <c>torch.randn(…, dtype=torch.float16)</c> on the CPU (diffusers' <c>randn_tensor</c>
/// with a CPU generator and an fp16 pipeline) draws 11-bit half-precision uniforms and is a different sequence, not the
/// float32 one rounded; CUDA generators are a different algorithm altogether (see <see cref="PhiloxNoise"/>).
/// </para>
/// </remarks>
public sealed class TorchCpuNoise : INoiseSource
{
    private const int BlockSize = 16;
    private const float FloatUnit = 1f / (1 << 24);
    private const double DoubleUnit = 1.0 / (1UL << 53);

    private readonly Mt19937 _engine;
    private readonly TorchCpuKernel _kernel;
    private double _cachedNormal;
    private bool _hasCachedNormal;

    /// <summary>Creates the generator <c>torch.Generator("cpu").manual_seed(seed)</c>.</summary>
    /// <param name="seed">The seed as given to <c>manual_seed</c>; every value is valid and only its low 32 bits matter.</param>
    /// <param name="kernel">The PyTorch CPU kernel to reproduce for draws of 16 values or more.</param>
    public TorchCpuNoise(long seed, TorchCpuKernel kernel = TorchCpuKernel.Avx2)
    {
        if (kernel is not (TorchCpuKernel.Avx2 or TorchCpuKernel.Portable))
            throw new ArgumentOutOfRangeException(nameof(kernel), kernel, "Unknown PyTorch CPU kernel.");
        Seed = seed;
        _kernel = kernel;
        _engine = new Mt19937((ulong)seed);
    }

    /// <summary>The seed this generator was created with.</summary>
    public long Seed { get; }

    /// <summary>The PyTorch CPU kernel this generator reproduces.</summary>
    public TorchCpuKernel Kernel => _kernel;

    /// <summary>Fills <paramref name="destination"/> as one <c>torch.randn(destination.Length, generator=g)</c> call.</summary>
    /// <param name="destination">The span to fill; empty spans draw nothing.</param>
    public void NextGaussian(Span<float> destination)
    {
        int size = destination.Length;
        if (size >= BlockSize)
        {
            FillBlocks(destination);
            return;
        }
        for (int i = 0; i < size; i++)
            destination[i] = (float)NextScalarNormal();
    }

    /// <summary>
    /// Moves the generator past one <c>torch.randn</c> call of <paramref name="count"/> values without computing them: for
    /// 16 values or more the call takes one 32-bit output per value, plus 16 for the recomputed tail when the count is not
    /// a multiple of 16, and leaves the cached scalar sample alone; fewer than 16 values take the scalar path, drawn.
    /// </summary>
    /// <param name="count">The values of the skipped call.</param>
    internal void Skip(int count)
    {
        if (count >= BlockSize)
        {
            _engine.Discard(count % BlockSize == 0 ? count : (long)count + BlockSize);
            return;
        }
        for (int i = 0; i < count; i++)
            NextScalarNormal();
    }

    private void FillBlocks(Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++)
            destination[i] = NextFloatUniform();
        int whole = destination.Length - destination.Length % BlockSize;
        for (int i = 0; i < whole; i += BlockSize)
            Transform(destination.Slice(i, BlockSize));
        if (whole != destination.Length)
        {
            // PyTorch recomputes the last 16 values from 16 fresh uniforms, overwriting the tail and part of the block before.
            var tail = destination[^BlockSize..];
            for (int i = 0; i < BlockSize; i++)
                tail[i] = NextFloatUniform();
            Transform(tail);
        }
    }

    private void Transform(Span<float> block)
    {
        if (_kernel == TorchCpuKernel.Avx2)
            TorchBoxMuller.Avx2Block(block);
        else
            TorchBoxMuller.PortableBlock(block);
    }

    private float NextFloatUniform() => (_engine.NextUInt32() & 0xFFFFFF) * FloatUnit;

    private double NextDoubleUniform()
    {
        ulong high = _engine.NextUInt32();
        ulong low = _engine.NextUInt32();
        return (((high << 32) | low) & ((1UL << 53) - 1)) * DoubleUnit;
    }

    /// <summary><c>at::normal_distribution&lt;double&gt;</c> with mean 0 and standard deviation 1.</summary>
    private double NextScalarNormal()
    {
        if (_hasCachedNormal)
        {
            _hasCachedNormal = false;
            return _cachedNormal + 0.0;
        }
        double u1 = NextDoubleUniform();
        double u2 = NextDoubleUniform();
        // PyTorch 1.13 writes log(1 − u2), newer releases log1p(−u2): 1 − u2 is exact for a 53-bit uniform, so both are the
        // same logarithm up to the C library's last-ulp rounding in double, which the float32 result does not see.
        double radius = Math.Sqrt(-2.0 * Math.Log(1.0 - u2));
        double theta = 2.0 * Math.PI * u1;
        _cachedNormal = radius * Math.Sin(theta);
        _hasCachedNormal = true;
        return radius * Math.Cos(theta) + 0.0;
    }
}
