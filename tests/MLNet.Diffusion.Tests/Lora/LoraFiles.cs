using System;
using System.Collections.Generic;
using System.IO;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Tests.SafeTensors;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Lora;

/// <summary>Crafts LoRA files for tests (seeded random matrices) and finds the shared tiny-sd-lora files.</summary>
internal static class LoraFiles
{
    /// <summary>The LoRA graph and weight reader of an ONNX file, through the library's reader (the product path).</summary>
    public static (LoraGraph Graph, Func<LoraGraphInitializer, float[]> ReadWeight) LoadGraph(string modelPath)
    {
        var reader = MLNet.Diffusion.Onnx.OnnxModelReader.Open(modelPath);
        return (LoraGraphReader.Build(reader, modelPath), LoraGraphReader.WeightReader(reader));
    }

    public static string SharedFolder() => Path.Combine(SharedModels.RequireTinySd(), "..", "tiny-sd-lora");

    public static string Shared(string name) => Path.Combine(SharedFolder(), name);

    public static float[] Random(int seed, int count)
    {
        var random = new Random(seed);
        var values = new float[count];
        for (int i = 0; i < count; i++)
            values[i] = (float)(random.NextDouble() * 2 - 1);
        return values;
    }

    public static long Count(long[] shape)
    {
        long count = 1;
        foreach (long dim in shape)
            count *= dim;
        return count;
    }

    /// <summary>Writes <paramref name="tensors"/> to a temporary .safetensors file and reads it as a LoRA.</summary>
    public static LoraFile Read(Dictionary<string, SafeTensorsWriter.Entry> tensors, Dictionary<string, string>? metadata = null, string name = "crafted_lora.safetensors")
    {
        string path = PersistenceRoundTrip.TempFile(name);
        File.WriteAllBytes(path, SafeTensorsWriter.Build(tensors, metadata));
        try
        {
            return LoraFile.Read(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Adds a down/up pair (seeded random) under kohya or diffusers key names.</summary>
    public static void AddPair(Dictionary<string, SafeTensorsWriter.Entry> tensors, string downKey, string upKey, long[] downShape, long[] upShape, int seed)
    {
        tensors[downKey] = SafeTensorsWriter.F32(downShape, Random(seed, (int)Count(downShape)));
        tensors[upKey] = SafeTensorsWriter.F32(upShape, Random(seed + 1, (int)Count(upShape)));
    }
}
