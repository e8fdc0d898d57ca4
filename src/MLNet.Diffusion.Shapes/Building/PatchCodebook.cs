using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// The codebook of the Shapes VQ autoencoder: k-means over the PCA latent vectors (one 4-vector per 8×8 patch, unscaled)
/// of every patch of every dataset item, so that a latent pixel snaps to the nearest of a few hundred patch prototypes
/// (the role of VQ-VAE's learned codebook: van den Oord et al. 2017, "Neural Discrete Representation Learning", §3.1;
/// VQGAN learns it by gradient descent, k-means gives the same fixed point of the codebook loss for a frozen encoder).
/// </summary>
/// <remarks>
/// Determinism: identical vectors are counted once with a weight; the centres start by k-means++ seeding (Arthur &amp;
/// Vassilvitskii 2007, "k-means++: The Advantages of Careful Seeding", §2.2, with each point's probability proportional
/// to weight × squared distance) drawn from SplitMix64 with a fixed seed, then Lloyd iterations in double precision in
/// a fixed order until no assignment changes. Only +, −, ×, ÷ are used, so every machine gets the same bits.
/// </remarks>
internal static class PatchCodebook
{
    /// <summary>The seed of the k-means++ draws.</summary>
    public const ulong Seed = 0x5EED_C0DE_B00C;

    /// <summary>The most Lloyd iterations run (the Shapes data converges far sooner).</summary>
    public const int MaxIterations = 200;

    /// <summary>
    /// Learns a codebook of <paramref name="size"/> vectors from scaled item latents [items, C, s, s]: each latent pixel's
    /// C-vector divided by <paramref name="scalingFactor"/> is one sample. Returns the codebook [size, C] row-major.
    /// </summary>
    /// <exception cref="ArgumentException">The latents have fewer distinct vectors than <paramref name="size"/>.</exception>
    public static float[] Learn(float[] latents, int itemCount, int channels, int latentSize, float scalingFactor, int size)
    {
        int plane = latentSize * latentSize;
        // 1. Distinct vectors (exact bits of the unscaled float32 values) with their counts, in first-seen order.
        var index = new Dictionary<(int, int, int, int), int>();
        var points = new List<double>();
        var weights = new List<double>();
        Span<float> v = stackalloc float[4];
        if (channels != 4)
            throw new ArgumentOutOfRangeException(nameof(channels), channels, "The Shapes latents have 4 channels.");
        for (int k = 0; k < itemCount; k++)
        {
            for (int p = 0; p < plane; p++)
            {
                for (int c = 0; c < 4; c++)
                    v[c] = (float)(latents[(k * 4 + c) * plane + p] / (double)scalingFactor);
                var key = (BitConverter.SingleToInt32Bits(v[0]), BitConverter.SingleToInt32Bits(v[1]),
                    BitConverter.SingleToInt32Bits(v[2]), BitConverter.SingleToInt32Bits(v[3]));
                if (index.TryGetValue(key, out int i))
                {
                    weights[i] += 1;
                }
                else
                {
                    index.Add(key, weights.Count);
                    for (int c = 0; c < 4; c++)
                        points.Add(v[c]);
                    weights.Add(1);
                }
            }
        }
        int n = weights.Count;
        if (n < size)
            throw new ArgumentException($"The latents have {n} distinct vectors, fewer than the {size} codebook vectors asked for.", nameof(latents));
        var x = points.ToArray();
        var w = weights.ToArray();

        // 2. k-means++ seeding: the first centre drawn ∝ weight, each next one ∝ weight × squared distance to the nearest centre.
        var centres = new double[size * 4];
        var nearest = new double[n];
        var rng = new SplitMix64(Seed);
        int first = Draw(w, null, rng.NextDouble());
        Array.Copy(x, first * 4, centres, 0, 4);
        for (int i = 0; i < n; i++)
            nearest[i] = Distance(x, i, centres, 0);
        for (int c = 1; c < size; c++)
        {
            int chosen = Draw(w, nearest, rng.NextDouble());
            Array.Copy(x, chosen * 4, centres, c * 4, 4);
            for (int i = 0; i < n; i++)
            {
                double d = Distance(x, i, centres, c);
                if (d < nearest[i])
                    nearest[i] = d;
            }
        }

        // 3. Lloyd: assign each vector to its nearest centre (ties to the lowest index), move each centre to its weighted mean.
        var assignment = new int[n];
        Array.Fill(assignment, -1);
        var sums = new double[size * 4];
        var mass = new double[size];
        for (int iteration = 0; iteration < MaxIterations; iteration++)
        {
            bool changed = false;
            for (int i = 0; i < n; i++)
            {
                int best = 0;
                double bestDistance = double.PositiveInfinity;
                for (int c = 0; c < size; c++)
                {
                    double d = Distance(x, i, centres, c);
                    if (d < bestDistance)
                    {
                        bestDistance = d;
                        best = c;
                    }
                }
                if (assignment[i] != best)
                {
                    assignment[i] = best;
                    changed = true;
                }
            }
            if (!changed)
                break;
            Array.Clear(sums);
            Array.Clear(mass);
            for (int i = 0; i < n; i++)
            {
                int c = assignment[i];
                mass[c] += w[i];
                for (int j = 0; j < 4; j++)
                    sums[c * 4 + j] += w[i] * x[i * 4 + j];
            }
            for (int c = 0; c < size; c++)
            {
                // A centre that lost every vector stays where it was (it can win some back at the next assignment).
                if (mass[c] > 0)
                {
                    for (int j = 0; j < 4; j++)
                        centres[c * 4 + j] = sums[c * 4 + j] / mass[c];
                }
            }
        }
        return Array.ConvertAll(centres, c => (float)c);
    }

    /// <summary>Writes a float32 [rows, columns] array as a NumPy .npy file (format 1.0, little-endian, C order).</summary>
    public static void WriteNpy(string path, float[] values, int rows, int columns)
    {
        // numpy.lib.format: magic, version 1.0, header length (uint16), then the header dict padded with spaces and ended by
        // '\n' so that the data starts at a multiple of 64 bytes.
        string dict = string.Create(CultureInfo.InvariantCulture, $"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {columns}), }}");
        int unpadded = 10 + dict.Length + 1;
        string header = dict + new string(' ', (64 - unpadded % 64) % 64) + "\n";
        using var stream = new MemoryStream();
        stream.Write([0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', 1, 0]);
        stream.Write(BitConverter.GetBytes((ushort)header.Length));
        stream.Write(Encoding.ASCII.GetBytes(header));
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("Writing .npy files needs a little-endian machine.");
        stream.Write(MemoryMarshal.AsBytes(values.AsSpan()));
        File.WriteAllBytes(path, stream.ToArray());
    }

    private static double Distance(double[] x, int i, double[] centres, int c)
    {
        double d = 0;
        for (int j = 0; j < 4; j++)
        {
            double diff = x[i * 4 + j] - centres[c * 4 + j];
            d += diff * diff;
        }
        return d;
    }

    /// <summary>The index i drawn with probability ∝ w_i·f_i (f = 1 when null) for a uniform <paramref name="u"/> in [0, 1).</summary>
    private static int Draw(double[] w, double[]? f, double u)
    {
        double total = 0;
        for (int i = 0; i < w.Length; i++)
            total += f is null ? w[i] : w[i] * f[i];
        double target = u * total, acc = 0;
        int last = 0;
        for (int i = 0; i < w.Length; i++)
        {
            double m = f is null ? w[i] : w[i] * f[i];
            if (m <= 0)
                continue;
            last = i;
            acc += m;
            if (acc > target)
                return i;
        }
        return last;
    }

    /// <summary>SplitMix64 (Steele, Lea &amp; Flood 2014, "Fast splittable pseudorandom number generators").</summary>
    private struct SplitMix64(ulong state)
    {
        private ulong _state = state;

        public ulong Next()
        {
            ulong z = _state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>A double in [0, 1) from the top 53 bits.</summary>
        public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));
    }
}
