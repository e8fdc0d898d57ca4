using System;
using System.IO;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text.Json;

namespace MLNet.Diffusion.Tests.Randomness;

/// <summary>Reads the committed fixtures of <c>Fixtures/Noise</c> (made by the Python scripts next to them).</summary>
internal static class NoiseFixtures
{
    public static string Folder([CallerFilePath] string here = "")
        => Path.GetFullPath(Path.Combine(Path.GetDirectoryName(here)!, "..", "Fixtures", "Noise"));

    public static JsonDocument Load(string name)
    {
        string path = Path.Combine(Folder(), name);
        if (!File.Exists(path))
            throw new FileNotFoundException($"Noise fixture '{path}' is missing; it is committed with the test sources.", path);
        return JsonDocument.Parse(File.ReadAllBytes(path));
    }

    public static float[] Floats(JsonElement bits)
    {
        var values = new float[bits.GetArrayLength()];
        int i = 0;
        foreach (var b in bits.EnumerateArray())
            values[i++] = BitConverter.UInt32BitsToSingle(b.GetUInt32());
        return values;
    }

    public static string Sha256(ReadOnlySpan<float> values)
    {
        var bytes = new byte[values.Length * sizeof(float)];
        for (int i = 0; i < values.Length; i++)
            BitConverter.TryWriteBytes(bytes.AsSpan(i * sizeof(float)), values[i]);
        return Convert.ToHexString(SHA256.HashData(bytes)).ToLowerInvariant();
    }

    public static int Count(JsonElement shape)
    {
        int n = 1;
        foreach (var d in shape.EnumerateArray())
            n *= d.GetInt32();
        return n;
    }

    /// <summary>The index and values of the first difference, for messages; null when the spans are bit-equal.</summary>
    public static string? FirstDifference(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        if (expected.Length != actual.Length)
            return $"lengths {expected.Length} and {actual.Length}";
        int count = 0, first = -1;
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToUInt32Bits(expected[i]) != BitConverter.SingleToUInt32Bits(actual[i]))
            {
                if (first < 0)
                    first = i;
                count++;
            }
        }
        return first < 0 ? null : $"{count} of {expected.Length} differ; first at {first}: expected {expected[first]:R}, got {actual[first]:R}";
    }
}
