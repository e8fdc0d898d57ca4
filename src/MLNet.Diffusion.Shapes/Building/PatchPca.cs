using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// The Shapes VAE: principal component analysis of the 8×8×3 pixel patches of all items. A patch is the vector
/// p ∈ ℝ¹⁹² in [c, i, j] order (channel, row, column — the layout of a Conv weight [out, 3, 8, 8] and of
/// DepthToSpace's CRD channels) with pixels scaled to [-1, 1]. Encoding is z = W (p − μ), decoding p̂ = μ + Wᵀ z, with
/// W the top 4 eigenvectors of the patch covariance.
/// </summary>
/// <remarks>
/// Determinism: the covariance is accumulated exactly in 64-bit integers on the pixel bytes (identical patches are
/// counted once with a multiplicity, which also makes it fast: most patches are flat), then diagonalised with cyclic
/// Jacobi rotations, which use only +, −, ×, ÷ and √ — all correctly rounded in IEEE arithmetic — so every machine gets
/// the same bits. Eigenvector signs are fixed: the entry of largest magnitude is positive.
/// </remarks>
internal sealed class PatchPca
{
    public const int Patch = 8;
    public const int Channels = 3;
    public const int Length = Channels * Patch * Patch; // 192
    public const int Components = 4;

    private PatchPca(double[] mean, double[] components, double[] eigenvalues)
    {
        Mean = mean;
        ComponentsMatrix = components;
        Eigenvalues = eigenvalues;
    }

    /// <summary>μ, the mean patch in [-1, 1] units, length 192.</summary>
    public double[] Mean { get; }

    /// <summary>W as row-major [4, 192]; rows are orthonormal.</summary>
    public double[] ComponentsMatrix { get; }

    /// <summary>The 4 largest eigenvalues (variance captured per component), descending.</summary>
    public double[] Eigenvalues { get; }

    /// <summary>
    /// The same mean with every component multiplied by <paramref name="factor"/> (rows then no longer unit length): a VAE
    /// encoder built from it outputs latents × factor, a VAE decoder built from it expects latents ÷ factor. This folds a
    /// scaling factor other than the data's own into the VAE graphs (the SDXL-shaped folder's 0.13025).
    /// </summary>
    public PatchPca Scaled(double factor) => new(Mean, Array.ConvertAll(ComponentsMatrix, v => v * factor), Eigenvalues);

    /// <summary>Fits the PCA to the patches of RGB (HWC) images of size × size pixels.</summary>
    public static PatchPca Fit(IReadOnlyList<byte[]> images, int size)
    {
        if (size % Patch != 0)
            throw new ArgumentException($"Image size {size} is not a multiple of {Patch}.", nameof(size));

        // 1. Distinct patches (as bytes, [c, i, j]) with their counts, in first-seen order.
        var index = new Dictionary<byte[], int>(ByteArrayComparer.Instance);
        var patches = new List<byte[]>();
        var counts = new List<long>();
        int blocks = size / Patch;
        foreach (byte[] rgb in images)
        {
            for (int by = 0; by < blocks; by++)
            {
                for (int bx = 0; bx < blocks; bx++)
                {
                    byte[] p = ExtractPatch(rgb, size, by, bx);
                    if (index.TryGetValue(p, out int k))
                    {
                        counts[k]++;
                    }
                    else
                    {
                        index.Add(p, patches.Count);
                        patches.Add(p);
                        counts.Add(1);
                    }
                }
            }
        }

        // 2. Exact sums Σ n·b_i and Σ n·b_i·b_j (upper triangle) in integers.
        long total = 0;
        var sum = new long[Length];
        var prod = new long[Length * Length];
        for (int k = 0; k < patches.Count; k++)
        {
            byte[] p = patches[k];
            long n = counts[k];
            total += n;
            for (int i = 0; i < Length; i++)
            {
                long ni = n * p[i];
                sum[i] += ni;
                int row = i * Length;
                for (int j = i; j < Length; j++)
                    prod[row + j] += ni * p[j];
            }
        }

        // 3. Covariance in [-1, 1] units: cov_ij = (N·Σb_ib_j − Σb_i·Σb_j) / N² / 127.5² (the numerator is exact:
        //    N·Σb_ib_j < 2⁶³ for fewer than ~10⁷ patches of 255-valued bytes).
        if (total > 10_000_000)
            throw new ArgumentException("Too many patches for exact integer accumulation.", nameof(images));
        var cov = new double[Length * Length];
        double scale = 1.0 / ((double)total * total * 127.5 * 127.5);
        for (int i = 0; i < Length; i++)
        {
            for (int j = i; j < Length; j++)
            {
                long numerator = total * prod[i * Length + j] - sum[i] * sum[j];
                cov[i * Length + j] = cov[j * Length + i] = numerator * scale;
            }
        }
        var mean = new double[Length];
        for (int i = 0; i < Length; i++)
            mean[i] = sum[i] / (127.5 * total) - 1.0;

        // 4. Eigenvectors; keep the 4 largest.
        var (values, vectors) = Jacobi(cov, Length);
        var order = new int[Length];
        for (int i = 0; i < Length; i++)
            order[i] = i;
        Array.Sort(order, (a, b) => values[b].CompareTo(values[a]) != 0 ? values[b].CompareTo(values[a]) : a.CompareTo(b));
        var w = new double[Components * Length];
        var top = new double[Components];
        for (int c = 0; c < Components; c++)
        {
            int e = order[c];
            top[c] = values[e];
            int argMax = 0;
            for (int i = 1; i < Length; i++)
                if (Math.Abs(vectors[i * Length + e]) > Math.Abs(vectors[argMax * Length + e]))
                    argMax = i;
            double sign = vectors[argMax * Length + e] < 0 ? -1.0 : 1.0;
            for (int i = 0; i < Length; i++)
                w[c * Length + i] = sign * vectors[i * Length + e];
        }
        return new PatchPca(mean, w, top);
    }

    /// <summary>Encodes an RGB (HWC) image into latents [4, size/8, size/8] (unscaled), in double then rounded to float.</summary>
    public float[] Encode(byte[] rgb, int size)
    {
        int blocks = size / Patch;
        var z = new float[Components * blocks * blocks];
        var centred = new double[Length];
        for (int by = 0; by < blocks; by++)
        {
            for (int bx = 0; bx < blocks; bx++)
            {
                byte[] p = ExtractPatch(rgb, size, by, bx);
                for (int i = 0; i < Length; i++)
                    centred[i] = p[i] / 127.5 - 1.0 - Mean[i];
                for (int c = 0; c < Components; c++)
                {
                    double acc = 0;
                    for (int i = 0; i < Length; i++)
                        acc += ComponentsMatrix[c * Length + i] * centred[i];
                    z[(c * blocks + by) * blocks + bx] = (float)acc;
                }
            }
        }
        return z;
    }

    /// <summary>The patch of block (by, bx) as bytes in [c, i, j] order.</summary>
    private static byte[] ExtractPatch(byte[] rgb, int size, int by, int bx)
    {
        var p = new byte[Length];
        for (int c = 0; c < Channels; c++)
            for (int i = 0; i < Patch; i++)
                for (int j = 0; j < Patch; j++)
                    p[(c * Patch + i) * Patch + j] = rgb[((by * Patch + i) * size + bx * Patch + j) * 3 + c];
        return p;
    }

    /// <summary>
    /// Cyclic Jacobi eigenvalue algorithm for a symmetric matrix (Golub &amp; Van Loan, Matrix Computations, §8.5):
    /// sweeps of plane rotations that zero each off-diagonal entry in turn until the off-diagonal mass is negligible.
    /// Returns the eigenvalues and the eigenvectors as the columns of a row-major n×n matrix.
    /// </summary>
    internal static (double[] Values, double[] Vectors) Jacobi(double[] symmetric, int n)
    {
        var a = (double[])symmetric.Clone();
        var v = new double[n * n];
        for (int i = 0; i < n; i++)
            v[i * n + i] = 1.0;
        double norm = 0;
        for (int i = 0; i < n * n; i++)
            norm += a[i] * a[i];
        for (int sweep = 0; sweep < 100; sweep++)
        {
            double off = 0;
            for (int p = 0; p < n; p++)
                for (int q = p + 1; q < n; q++)
                    off += a[p * n + q] * a[p * n + q];
            if (off <= norm * 1e-30)
                break;
            for (int p = 0; p < n; p++)
            {
                for (int q = p + 1; q < n; q++)
                {
                    double apq = a[p * n + q];
                    if (apq == 0)
                        continue;
                    // Rotation angle from θ = (a_qq − a_pp) / (2 a_pq); t = tan φ, the smaller root (stable form).
                    double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                    double t = (theta >= 0 ? 1.0 : -1.0) / (Math.Abs(theta) + Math.Sqrt(theta * theta + 1));
                    double c = 1 / Math.Sqrt(t * t + 1), s = t * c;
                    for (int k = 0; k < n; k++)
                    {
                        // A ← A·J (columns p, q).
                        double akp = a[k * n + p], akq = a[k * n + q];
                        a[k * n + p] = c * akp - s * akq;
                        a[k * n + q] = s * akp + c * akq;
                    }
                    for (int k = 0; k < n; k++)
                    {
                        // A ← Jᵀ·A (rows p, q).
                        double apk = a[p * n + k], aqk = a[q * n + k];
                        a[p * n + k] = c * apk - s * aqk;
                        a[q * n + k] = s * apk + c * aqk;
                    }
                    for (int k = 0; k < n; k++)
                    {
                        double vkp = v[k * n + p], vkq = v[k * n + q];
                        v[k * n + p] = c * vkp - s * vkq;
                        v[k * n + q] = s * vkp + c * vkq;
                    }
                }
            }
        }
        var values = new double[n];
        for (int i = 0; i < n; i++)
            values[i] = a[i * n + i];
        return (values, v);
    }

    private sealed class ByteArrayComparer : IEqualityComparer<byte[]>
    {
        public static readonly ByteArrayComparer Instance = new();

        public bool Equals(byte[]? x, byte[]? y) => x.AsSpan().SequenceEqual(y);

        public int GetHashCode(byte[] obj)
        {
            var h = new HashCode();
            h.AddBytes(obj);
            return h.ToHashCode();
        }
    }
}
