using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.InteropServices;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Onnx.Protobuf;

namespace MLNet.Diffusion.Tests.Lora;

/// <summary>
/// Builds a <see cref="LoraGraph"/> and a weight reader from an ONNX file with the protobuf classes generated in the
/// Shapes project. A stand-in for the tests only: the library's own ONNX model reader (issue 16's wiring) feeds
/// <see cref="LoraTargetIndex"/> in the product and replaces this adapter.
/// </summary>
internal static class OnnxLoraGraphs
{
    public static (LoraGraph Graph, Func<LoraGraphInitializer, float[]> ReadWeight) Load(string modelPath)
    {
        ModelProto model;
        using (var stream = File.OpenRead(modelPath))
            model = ModelProto.Parser.ParseFrom(stream);
        var nodes = new List<LoraGraphNode>(model.Graph.Node.Count);
        foreach (var node in model.Graph.Node)
        {
            var ints = new Dictionary<string, long>(StringComparer.Ordinal);
            var lists = new Dictionary<string, long[]>(StringComparer.Ordinal);
            foreach (var attribute in node.Attribute)
            {
                if (attribute.Type == AttributeProto.Types.AttributeType.Int)
                    ints[attribute.Name] = attribute.I;
                else if (attribute.Type == AttributeProto.Types.AttributeType.Ints)
                    lists[attribute.Name] = [.. attribute.Ints];
            }
            nodes.Add(new LoraGraphNode(node.Name, node.OpType, node.Domain, [.. node.Input], [.. node.Output], ints, lists));
        }
        var tensors = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        var initializers = new List<LoraGraphInitializer>(model.Graph.Initializer.Count);
        foreach (var tensor in model.Graph.Initializer)
        {
            tensors[tensor.Name] = tensor;
            var type = tensor.DataType switch
            {
                1 => LoraWeightType.Float32,
                10 => LoraWeightType.Float16,
                16 => LoraWeightType.BFloat16,
                _ => LoraWeightType.Other,
            };
            initializers.Add(new LoraGraphInitializer(tensor.Name, [.. tensor.Dims], type));
        }
        string folder = Path.GetDirectoryName(Path.GetFullPath(modelPath))!;
        return (new LoraGraph(modelPath, nodes, initializers), initializer => ReadFloat32(tensors[initializer.Name], folder));
    }

    public static float[] ReadFloat32(TensorProto tensor, string folder)
    {
        byte[] raw;
        if (tensor.DataLocation == TensorProto.Types.DataLocation.External)
        {
            string location = "";
            long offset = 0, length = -1;
            foreach (var entry in tensor.ExternalData)
            {
                if (entry.Key == "location")
                    location = entry.Value;
                else if (entry.Key == "offset")
                    offset = long.Parse(entry.Value, System.Globalization.CultureInfo.InvariantCulture);
                else if (entry.Key == "length")
                    length = long.Parse(entry.Value, System.Globalization.CultureInfo.InvariantCulture);
            }
            using var stream = File.OpenRead(Path.Combine(folder, location));
            stream.Position = offset;
            raw = new byte[length];
            stream.ReadExactly(raw);
        }
        else if (tensor.FloatData.Count > 0)
        {
            return [.. tensor.FloatData];
        }
        else
        {
            raw = tensor.RawData.ToByteArray();
        }
        if (tensor.DataType == 1)
            return MemoryMarshal.Cast<byte, float>(raw).ToArray();
        if (tensor.DataType == 10)
        {
            var half = MemoryMarshal.Cast<byte, Half>(raw);
            var values = new float[half.Length];
            for (int i = 0; i < half.Length; i++)
                values[i] = (float)half[i];
            return values;
        }
        throw new InvalidDataException($"Initializer '{tensor.Name}' has data type {tensor.DataType}.");
    }
}
