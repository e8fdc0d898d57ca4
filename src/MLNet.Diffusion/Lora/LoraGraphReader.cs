using System;
using System.Collections.Generic;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Onnx.Protobuf;

namespace MLNet.Diffusion.Lora;

/// <summary>
/// Builds the <see cref="LoraGraph"/> of an ONNX model from the library's <see cref="OnnxModelReader"/>: node domains and
/// integer attributes (<c>transB</c>, <c>perm</c>) come from the parsed model, weights are read through the reader
/// (inline or external data, float16 widened).
/// </summary>
internal static class LoraGraphReader
{
    /// <summary>The graph of <paramref name="reader"/>'s model, named <paramref name="name"/> in messages.</summary>
    public static LoraGraph Build(OnnxModelReader reader, string name)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var graph = reader.Model.Graph;
        var nodes = new List<LoraGraphNode>(graph.Node.Count);
        foreach (var node in graph.Node)
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
        var initializers = new List<LoraGraphInitializer>(reader.Initializers.Count);
        foreach (var initializer in reader.Initializers)
        {
            var type = initializer.ElementType switch
            {
                TensorElementType.Float => LoraWeightType.Float32,
                TensorElementType.Float16 => LoraWeightType.Float16,
                TensorElementType.BFloat16 => LoraWeightType.BFloat16,
                _ => LoraWeightType.Other,
            };
            initializers.Add(new LoraGraphInitializer(initializer.Name, [.. initializer.Dims], type));
        }
        return new LoraGraph(name, nodes, initializers);
    }

    /// <summary>A weight reader for <see cref="LoraMergeTarget"/> over <paramref name="reader"/>.</summary>
    public static Func<LoraGraphInitializer, float[]> WeightReader(OnnxModelReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        return initializer =>
        {
            if (initializer.DataType == LoraWeightType.BFloat16)
                throw new NotSupportedException($"Initializer '{initializer.Name}' of '{reader.ModelPath}' is bfloat16; ONNX Runtime weight replacement here supports float32 and float16 models.");
            return reader.ReadSingles(initializer.Name);
        };
    }

    /// <summary>The bytes the initializers of <paramref name="reader"/>'s model take (what a session over it holds).</summary>
    public static long WeightBytes(OnnxModelReader reader)
    {
        long total = 0;
        foreach (var initializer in reader.Initializers)
            total += initializer.ElementType switch
            {
                TensorElementType.Float16 or TensorElementType.BFloat16 => initializer.ElementCount * 2,
                TensorElementType.Double or TensorElementType.Int64 => initializer.ElementCount * 8,
                _ => initializer.ElementCount * 4,
            };
        return total;
    }
}
