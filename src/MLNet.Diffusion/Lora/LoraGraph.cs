using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Lora;

/// <summary>ONNX tensor element types a LoRA can patch (values of ONNX <c>TensorProto.DataType</c>).</summary>
internal enum LoraWeightType
{
    /// <summary>Any type a LoRA cannot patch (integers, doubles, …).</summary>
    Other = 0,

    /// <summary>float32 (<c>FLOAT</c> = 1).</summary>
    Float32 = 1,

    /// <summary>IEEE float16 (<c>FLOAT16</c> = 10).</summary>
    Float16 = 10,

    /// <summary>bfloat16 (<c>BFLOAT16</c> = 16).</summary>
    BFloat16 = 16,
}

/// <summary>One node of an ONNX graph, as far as LoRA mapping needs it.</summary>
/// <param name="Name">The node name (TorchScript exports: <c>/down_blocks.1/attentions.0/…/to_q/MatMul</c>).</param>
/// <param name="OpType">The operator (<c>MatMul</c>, <c>Gemm</c>, <c>Conv</c>, <c>Cast</c>, <c>Transpose</c>, …).</param>
/// <param name="Domain">The operator domain (empty for the ONNX domain, <c>com.microsoft</c> for contrib ops).</param>
/// <param name="Inputs">Input value names in order (empty strings for omitted optional inputs).</param>
/// <param name="Outputs">Output value names.</param>
/// <param name="IntAttributes">The node's integer attributes (<c>transB</c>, <c>to</c>); others are not needed.</param>
/// <param name="IntListAttributes">The node's integer-list attributes (<c>perm</c>).</param>
internal sealed record LoraGraphNode(
    string Name,
    string OpType,
    string Domain,
    IReadOnlyList<string> Inputs,
    IReadOnlyList<string> Outputs,
    IReadOnlyDictionary<string, long> IntAttributes,
    IReadOnlyDictionary<string, long[]> IntListAttributes);

/// <summary>One initializer of an ONNX graph: its name, dimensions and element type (not its data).</summary>
/// <param name="Name">The initializer name (anonymous <c>onnx::MatMul_3668</c> or named <c>…conv1.weight</c>).</param>
/// <param name="Dims">The dimensions.</param>
/// <param name="DataType">The element type.</param>
internal sealed record LoraGraphInitializer(string Name, long[] Dims, LoraWeightType DataType)
{
    /// <summary>The number of elements.</summary>
    public long ElementCount
    {
        get
        {
            long count = 1;
            foreach (long dim in Dims)
                count = checked(count * dim);
            return count;
        }
    }
}

/// <summary>
/// The structure of an ONNX graph that LoRA mapping reads: nodes and initializers (no weight data). Built by the
/// library's ONNX model reader from a model file; tests build small ones by hand.
/// </summary>
/// <param name="Name">A name for messages (the model file or component).</param>
/// <param name="Nodes">The graph's nodes.</param>
/// <param name="Initializers">The graph's initializers.</param>
internal sealed record LoraGraph(string Name, IReadOnlyList<LoraGraphNode> Nodes, IReadOnlyList<LoraGraphInitializer> Initializers)
{
    /// <summary>A node with no attributes in the ONNX domain (for tests and simple builders).</summary>
    public static LoraGraphNode Node(string name, string opType, string[] inputs, string[] outputs,
        IReadOnlyDictionary<string, long>? intAttributes = null, IReadOnlyDictionary<string, long[]>? intListAttributes = null, string domain = "") =>
        new(name, opType, domain, inputs, outputs,
            intAttributes ?? new Dictionary<string, long>(StringComparer.Ordinal),
            intListAttributes ?? new Dictionary<string, long[]>(StringComparer.Ordinal));
}
