using System;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace MLNet.Diffusion.Randomness;

/// <summary>
/// The 16-value Box–Muller blocks of PyTorch's CPU <c>normal_fill</c> (<c>aten/src/ATen/native/cpu/DistributionTemplates.h</c>):
/// values j and j + 8 of a block of uniforms become radius·cos θ and radius·sin θ with radius = √(−2 log(1 − u_j)) and
/// θ = 2π·u_{j+8}.
/// </summary>
/// <remarks>
/// <para>
/// The AVX2 kernel (<c>normal_fill_16_AVX2</c>) evaluates log, sin and cos with the Cephes single-precision polynomials
/// of <c>avx_mathfun.h</c> (J. Pommier's <c>sse_mathfun</c> ported to AVX), compiled by GCC with its default
/// <c>-ffp-contract=fast</c>: every multiply whose only use is an add or a subtract becomes a fused multiply-add, the
/// first such multiply in statement order winning when an add has two. The code below writes those FMAs out, in float32,
/// so the results are bit-identical to PyTorch (pinned by the fixtures in <c>Fixtures/Noise</c>). Measured on 2²⁰ values
/// (seed 1): a plain double-precision Box–Muller lands within 1.9e-6 of it; the same polynomials without the FMAs
/// differ in the last bits for about one value in a hundred; the portable kernel below differs for 38 % of the values,
/// by at most 2.3e-6.
/// </para>
/// <para>
/// The portable kernel (<c>normal_fill_16</c>, used where PyTorch has no AVX2 kernel) calls the C library's
/// <c>logf</c>, <c>cosf</c> and <c>sinf</c>, as <see cref="MathF"/> does; it is exact where .NET and PyTorch use the same
/// C library (glibc on Linux) and within an ulp or two elsewhere.
/// </para>
/// </remarks>
internal static class TorchBoxMuller
{
    // avx_mathfun.h's constants, written as float literals (its tables are float arrays initialised from these decimals).
    private const float SqrtHalf = 0.707106781186547524f;
    private const float LogP0 = 7.0376836292E-2f;
    private const float LogP1 = -1.1514610310E-1f;
    private const float LogP2 = 1.1676998740E-1f;
    private const float LogP3 = -1.2420140846E-1f;
    private const float LogP4 = +1.4249322787E-1f;
    private const float LogP5 = -1.6668057665E-1f;
    private const float LogP6 = +2.0000714765E-1f;
    private const float LogP7 = -2.4999993993E-1f;
    private const float LogP8 = +3.3333331174E-1f;
    private const float LogQ1 = -2.12194440e-4f;
    private const float LogQ2 = 0.693359375f;
    private const float MinusDp1 = -0.78515625f;
    private const float MinusDp2 = -2.4187564849853515625e-4f;
    private const float MinusDp3 = -3.77489497744594108e-8f;
    private const float SinP0 = -1.9515295891E-4f;
    private const float SinP1 = 8.3321608736E-3f;
    private const float SinP2 = -1.6666654611E-1f;
    private const float CosP0 = 2.443315711809948E-005f;
    private const float CosP1 = -1.388731625493765E-003f;
    private const float CosP2 = 4.166664568298827E-002f;
    private const float FourOverPi = 1.27323954473516f;
    private const int MinNormPosBits = 0x00800000;
    private const int ExponentMask = 0x7F800000;
    private const int HalfBits = 0x3F000000;

    /// <summary><c>_mm256_set1_ps(2.0f * c10::pi&lt;double&gt;)</c>: 2π in double, rounded to float.</summary>
    private const float TwoPi = (float)(2.0 * Math.PI);

    /// <summary>True when the vector path runs (AVX2 and FMA); the scalar path gives the same bits.</summary>
    public static bool IsVectorized => Avx2.IsSupported && Fma.IsSupported;

    /// <summary>Transforms 16 uniforms in [0, 1) in place with PyTorch's AVX2 kernel.</summary>
    public static void Avx2Block(Span<float> block)
    {
        if (block.Length != 16)
            throw new ArgumentException($"A Box–Muller block holds 16 values, got {block.Length}.", nameof(block));
        if (IsVectorized)
            Avx2BlockVector(block);
        else
            Avx2BlockScalar(block);
    }

    /// <summary>The scalar form of <see cref="Avx2Block"/>, one lane at a time with the same roundings.</summary>
    internal static void Avx2BlockScalar(Span<float> block)
    {
        for (int j = 0; j < 8; j++)
        {
            float u1 = 1f - block[j];
            float u2 = block[j + 8];
            float radius = MathF.Sqrt(-2f * CephesLog(u1));
            CephesSinCos(TwoPi * u2, out float sin, out float cos);
            // _mm256_fmadd_ps(n, std = 1, mean = 0): exact, except that it turns −0 into +0.
            block[j] = radius * cos + 0f;
            block[j + 8] = radius * sin + 0f;
        }
    }

    /// <summary>Transforms 16 uniforms in [0, 1) in place with PyTorch's portable kernel (C library log, cos, sin).</summary>
    public static void PortableBlock(Span<float> block)
    {
        if (block.Length != 16)
            throw new ArgumentException($"A Box–Muller block holds 16 values, got {block.Length}.", nameof(block));
        for (int j = 0; j < 8; j++)
        {
            float u1 = 1f - block[j];
            float u2 = block[j + 8];
            float radius = MathF.Sqrt(-2f * MathF.Log(u1));
            // `2.0f * c10::pi<double> * u2` is evaluated in double and stored as float.
            float theta = (float)(2.0 * Math.PI * u2);
            block[j] = radius * MathF.Cos(theta) + 0f;
            block[j + 8] = radius * MathF.Sin(theta) + 0f;
        }
    }

    internal static float CephesLog(float x)
    {
        x = MathF.Max(x, BitConverter.Int32BitsToSingle(MinNormPosBits));
        int bits = BitConverter.SingleToInt32Bits(x);
        int exponent = (int)((uint)bits >> 23);
        x = BitConverter.Int32BitsToSingle((bits & ~ExponentMask) | HalfBits);
        float e = (float)(exponent - 0x7F);
        e += 1f;
        bool below = x < SqrtHalf;
        float tmp = below ? x : 0f;
        x -= 1f;
        e -= below ? 1f : 0f;
        x += tmp;
        float z = x * x;
        float y = MathF.FusedMultiplyAdd(LogP0, x, LogP1);
        y = MathF.FusedMultiplyAdd(y, x, LogP2);
        y = MathF.FusedMultiplyAdd(y, x, LogP3);
        y = MathF.FusedMultiplyAdd(y, x, LogP4);
        y = MathF.FusedMultiplyAdd(y, x, LogP5);
        y = MathF.FusedMultiplyAdd(y, x, LogP6);
        y = MathF.FusedMultiplyAdd(y, x, LogP7);
        y = MathF.FusedMultiplyAdd(y, x, LogP8);
        y *= x;
        y = MathF.FusedMultiplyAdd(y, z, e * LogQ1);
        y = MathF.FusedMultiplyAdd(-z, 0.5f, y);
        x += y;
        return MathF.FusedMultiplyAdd(e, LogQ2, x);
    }

    internal static void CephesSinCos(float x, out float sin, out float cos)
    {
        int signSin = BitConverter.SingleToInt32Bits(x) & int.MinValue;
        x = MathF.Abs(x);
        int j = (int)(x * FourOverPi);
        j = (j + 1) & ~1;
        float y = j;
        int swapSin = (j & 4) << 29;
        bool sinPolynomial = (j & 2) == 0;
        x = MathF.FusedMultiplyAdd(y, MinusDp1, x);
        x = MathF.FusedMultiplyAdd(y, MinusDp2, x);
        x = MathF.FusedMultiplyAdd(y, MinusDp3, x);
        int signCos = (~(j - 2) & 4) << 29;
        signSin ^= swapSin;

        float z = x * x;
        float yc = MathF.FusedMultiplyAdd(CosP0, z, CosP1);
        yc = MathF.FusedMultiplyAdd(yc, z, CosP2);
        yc *= z;
        yc = MathF.FusedMultiplyAdd(yc, z, -(z * 0.5f));
        yc += 1f;

        float ys = MathF.FusedMultiplyAdd(SinP0, z, SinP1);
        ys = MathF.FusedMultiplyAdd(ys, z, SinP2);
        ys *= z;
        ys = MathF.FusedMultiplyAdd(ys, x, x);

        // The selection of avx_mathfun.h is arithmetic (masked values subtracted and added), which turns −0 into +0.
        float sinPart2 = sinPolynomial ? ys : 0f;
        float sinPart1 = sinPolynomial ? 0f : yc;
        ys -= sinPart2;
        yc -= sinPart1;
        sin = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(sinPart1 + sinPart2) ^ signSin);
        cos = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(yc + ys) ^ signCos);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Avx2BlockVector(Span<float> block)
    {
        ref float first = ref block[0];
        var one = Vector256.Create(1f);
        var u1 = Avx.Subtract(one, Vector256.LoadUnsafe(ref first));
        var u2 = Vector256.LoadUnsafe(ref first, 8);
        var radius = Avx.Sqrt(Avx.Multiply(Vector256.Create(-2f), LogVector(u1)));
        SinCosVector(Avx.Multiply(Vector256.Create(TwoPi), u2), out var sin, out var cos);
        Avx.Add(Avx.Multiply(radius, cos), Vector256<float>.Zero).StoreUnsafe(ref first);
        Avx.Add(Avx.Multiply(radius, sin), Vector256<float>.Zero).StoreUnsafe(ref first, 8);
    }

    private static Vector256<float> LogVector(Vector256<float> x)
    {
        var one = Vector256.Create(1f);
        x = Avx.Max(x, Vector256.Create(MinNormPosBits).AsSingle());
        var exponent = Avx2.ShiftRightLogical(x.AsInt32(), 23);
        x = Avx2.Or(Avx2.And(x.AsInt32(), Vector256.Create(~ExponentMask)), Vector256.Create(HalfBits)).AsSingle();
        exponent = Avx2.Subtract(exponent, Vector256.Create(0x7F));
        var e = Avx.Add(Avx.ConvertToVector256Single(exponent), one);
        var below = Avx.Compare(x, Vector256.Create(SqrtHalf), FloatComparisonMode.OrderedLessThanSignaling);
        var tmp = Avx.And(x, below);
        x = Avx.Subtract(x, one);
        e = Avx.Subtract(e, Avx.And(one, below));
        x = Avx.Add(x, tmp);
        var z = Avx.Multiply(x, x);
        var y = Fma.MultiplyAdd(Vector256.Create(LogP0), x, Vector256.Create(LogP1));
        y = Fma.MultiplyAdd(y, x, Vector256.Create(LogP2));
        y = Fma.MultiplyAdd(y, x, Vector256.Create(LogP3));
        y = Fma.MultiplyAdd(y, x, Vector256.Create(LogP4));
        y = Fma.MultiplyAdd(y, x, Vector256.Create(LogP5));
        y = Fma.MultiplyAdd(y, x, Vector256.Create(LogP6));
        y = Fma.MultiplyAdd(y, x, Vector256.Create(LogP7));
        y = Fma.MultiplyAdd(y, x, Vector256.Create(LogP8));
        y = Avx.Multiply(y, x);
        y = Fma.MultiplyAdd(y, z, Avx.Multiply(e, Vector256.Create(LogQ1)));
        y = Fma.MultiplyAddNegated(z, Vector256.Create(0.5f), y);
        x = Avx.Add(x, y);
        return Fma.MultiplyAdd(e, Vector256.Create(LogQ2), x);
    }

    private static void SinCosVector(Vector256<float> x, out Vector256<float> sin, out Vector256<float> cos)
    {
        var signMask = Vector256.Create(int.MinValue).AsSingle();
        var signSin = Avx.And(x, signMask);
        x = Avx.AndNot(signMask, x);
        var j = Avx.ConvertToVector256Int32WithTruncation(Avx.Multiply(x, Vector256.Create(FourOverPi)));
        j = Avx2.And(Avx2.Add(j, Vector256.Create(1)), Vector256.Create(~1));
        var y = Avx.ConvertToVector256Single(j);
        var four = Vector256.Create(4);
        var swapSin = Avx2.ShiftLeftLogical(Avx2.And(j, four), 29).AsSingle();
        var sinPolynomial = Avx2.CompareEqual(Avx2.And(j, Vector256.Create(2)), Vector256<int>.Zero).AsSingle();
        x = Fma.MultiplyAdd(y, Vector256.Create(MinusDp1), x);
        x = Fma.MultiplyAdd(y, Vector256.Create(MinusDp2), x);
        x = Fma.MultiplyAdd(y, Vector256.Create(MinusDp3), x);
        var signCos = Avx2.ShiftLeftLogical(Avx2.AndNot(Avx2.Subtract(j, Vector256.Create(2)), four), 29).AsSingle();
        signSin = Avx.Xor(signSin, swapSin);

        var z = Avx.Multiply(x, x);
        var yc = Fma.MultiplyAdd(Vector256.Create(CosP0), z, Vector256.Create(CosP1));
        yc = Fma.MultiplyAdd(yc, z, Vector256.Create(CosP2));
        yc = Avx.Multiply(yc, z);
        yc = Fma.MultiplySubtract(yc, z, Avx.Multiply(z, Vector256.Create(0.5f)));
        yc = Avx.Add(yc, Vector256.Create(1f));

        var ys = Fma.MultiplyAdd(Vector256.Create(SinP0), z, Vector256.Create(SinP1));
        ys = Fma.MultiplyAdd(ys, z, Vector256.Create(SinP2));
        ys = Avx.Multiply(ys, z);
        ys = Fma.MultiplyAdd(ys, x, x);

        var sinPart2 = Avx.And(sinPolynomial, ys);
        var sinPart1 = Avx.AndNot(sinPolynomial, yc);
        ys = Avx.Subtract(ys, sinPart2);
        yc = Avx.Subtract(yc, sinPart1);
        sin = Avx.Xor(Avx.Add(sinPart1, sinPart2), signSin);
        cos = Avx.Xor(Avx.Add(yc, ys), signCos);
    }
}
