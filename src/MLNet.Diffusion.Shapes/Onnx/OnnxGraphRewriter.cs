using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using Google.Protobuf;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Onnx;

/// <summary>
/// Rewrites a finished ONNX graph the way export tools turn one model into its variants: an input of another element
/// type or rank behind a Cast/Reshape, float16 weights and I/O around a float32 body (as onnxconverter-common's
/// float16 conversion with <c>keep_io_types=False</c> writes them), extra nodes on an output, and weights moved into an
/// external-data file (ONNX's external data format). Nodes stay in topological order: boundary nodes are inserted
/// first (inputs, weights) or appended last (outputs).
/// </summary>
internal static class OnnxGraphRewriter
{
    /// <summary>
    /// Changes graph input <paramref name="name"/> to <paramref name="type"/> (and to rank 0 when
    /// <paramref name="scalar"/>); its consumers read a float32 value of a shape that broadcasts as the original: a Cast
    /// to float (when the type is not float) and, for a scalar, a Reshape to [1] (which broadcasts as a [batch] does).
    /// </summary>
    public static void RetypeInput(GraphProto graph, string name, DataType type, bool scalar)
    {
        var input = FindInput(graph, name);
        var tensor = input.Type.TensorType;
        tensor.ElemType = (int)type;
        if (scalar)
            tensor.Shape = new TensorShapeProto();
        var boundary = new List<NodeProto>();
        string value = name;
        if (type != DataType.Float)
            boundary.Add(CastNode(graph, value, value = Unique(graph, name + ".float32"), DataType.Float));
        if (tensor.Shape.Dim.Count == 0)
        {
            string shape = AddInt64Initializer(graph, Unique(graph, name + ".shape"), [1L]);
            boundary.Add(NewNode(graph, "Reshape", [value, shape], value = Unique(graph, name + ".rank1")));
        }
        RenameUses(graph, name, value);
        Prepend(graph, boundary);
    }

    /// <summary>
    /// Stores every float32 initializer as float16 and makes every float32 graph input and output float16 (except the
    /// inputs in <paramref name="keepFloat32Inputs"/>). The body still computes in float32: a Cast to float follows each
    /// float16 input and weight (ONNX Runtime folds the weight casts at load), a Cast to float16 precedes each output.
    /// Float16 values are IEEE binary16, rounded to nearest even (<see cref="Half"/>).
    /// </summary>
    public static void ToFloat16(GraphProto graph, ICollection<string> keepFloat32Inputs)
    {
        var head = new List<NodeProto>();
        foreach (var init in graph.Initializer)
        {
            if (init.DataType != (int)DataType.Float)
                continue;
            if (init.RawData.Length != Count(init.Dims) * sizeof(float))
                throw new InvalidOperationException($"Initializer '{init.Name}' of graph '{graph.Name}' does not hold its values in raw_data.");
            ReadOnlySpan<byte> raw = init.RawData.Span;
            var half = new byte[raw.Length / 2];
            for (int i = 0; i < half.Length / 2; i++)
                BinaryPrimitives.WriteHalfLittleEndian(half.AsSpan(2 * i), (Half)BinaryPrimitives.ReadSingleLittleEndian(raw.Slice(4 * i)));
            init.RawData = ByteString.CopyFrom(half);
            init.DataType = (int)DataType.Float16;
            string f32 = Unique(graph, init.Name + ".float32");
            RenameUses(graph, init.Name, f32);
            head.Add(CastNode(graph, init.Name, f32, DataType.Float));
        }
        foreach (var input in graph.Input)
        {
            if (input.Type.TensorType.ElemType != (int)DataType.Float || keepFloat32Inputs.Contains(input.Name))
                continue;
            input.Type.TensorType.ElemType = (int)DataType.Float16;
            string f32 = Unique(graph, input.Name + ".float32");
            RenameUses(graph, input.Name, f32);
            head.Add(CastNode(graph, input.Name, f32, DataType.Float));
        }
        var tail = new List<NodeProto>();
        foreach (var output in graph.Output)
        {
            if (output.Type.TensorType.ElemType != (int)DataType.Float)
                continue;
            output.Type.TensorType.ElemType = (int)DataType.Float16;
            string f32 = Unique(graph, output.Name + ".float32");
            RenameProduced(graph, output.Name, f32);
            tail.Add(CastNode(graph, f32, output.Name, DataType.Float16));
        }
        Prepend(graph, head);
        graph.Node.AddRange(tail);
    }

    /// <summary>
    /// Renames the value that produces graph output <paramref name="output"/> (and its internal uses) to
    /// <paramref name="newName"/>, so that nodes appended after the call can compute a new <paramref name="output"/> from it.
    /// </summary>
    public static void DetachOutput(GraphProto graph, string output, string newName)
    {
        FindOutput(graph, output);
        if (HasValue(graph, newName))
            throw new InvalidOperationException($"Value name '{newName}' is already used in graph '{graph.Name}'.");
        RenameProduced(graph, output, newName);
    }

    /// <summary>Appends a node with one output; returns the output's name.</summary>
    public static string AppendNode(GraphProto graph, string opType, string[] inputs, string output)
    {
        graph.Node.Add(NewNode(graph, opType, inputs, output));
        return output;
    }

    /// <summary>Adds a 1-D int64 initializer; returns its name.</summary>
    public static string AddInt64Initializer(GraphProto graph, string name, long[] values)
    {
        var raw = new byte[values.Length * sizeof(long)];
        for (int i = 0; i < values.Length; i++)
            BinaryPrimitives.WriteInt64LittleEndian(raw.AsSpan(i * sizeof(long)), values[i]);
        var t = new TensorProto { Name = name, DataType = (int)DataType.Int64, RawData = ByteString.CopyFrom(raw) };
        t.Dims.Add(values.Length);
        graph.Initializer.Add(t);
        return name;
    }

    /// <summary>Whether a node output, graph input or initializer of that name exists.</summary>
    public static bool HasValue(GraphProto graph, string name)
    {
        foreach (var node in graph.Node)
            if (node.Output.Contains(name))
                return true;
        foreach (var input in graph.Input)
            if (input.Name == name)
                return true;
        foreach (var init in graph.Initializer)
            if (init.Name == name)
                return true;
        return false;
    }

    /// <summary>
    /// Writes <paramref name="model"/> to <paramref name="onnxPath"/> with the bytes of every initializer of at least
    /// <paramref name="sizeThreshold"/> bytes in <paramref name="dataFileName"/> next to it (ONNX external data:
    /// <c>data_location = EXTERNAL</c> and the <c>location</c>, <c>offset</c>, <c>length</c> entries). Each tensor starts
    /// at a multiple of <paramref name="alignment"/> bytes (4096, a page: ONNX Runtime can map the file instead of
    /// copying it). The threshold is onnx.save_model's default (1024): smaller tensors stay inline, and they must —
    /// ONNX shape inference, which ONNX Runtime runs at load, cannot read shape constants (Slice starts, Pad pads) from
    /// external data and rejects the model.
    /// </summary>
    public static void WriteWithExternalData(ModelProto model, string onnxPath, string dataFileName, int sizeThreshold = 1024, int alignment = 4096)
    {
        string dataPath = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(onnxPath))!, dataFileName);
        using (var data = new FileStream(dataPath, FileMode.Create, FileAccess.Write))
        {
            foreach (var init in model.Graph.Initializer)
            {
                if (init.DataLocation == TensorProto.Types.DataLocation.External)
                    throw new InvalidOperationException($"Initializer '{init.Name}' is already external.");
                if (init.RawData.Length < sizeThreshold)
                    continue;
                long offset = (data.Length + alignment - 1) / alignment * alignment;
                data.SetLength(offset);
                data.Position = offset;
                init.RawData.WriteTo(data);
                long length = init.RawData.Length;
                init.RawData = ByteString.Empty;
                init.DataLocation = TensorProto.Types.DataLocation.External;
                init.ExternalData.Add(Entry("location", dataFileName));
                init.ExternalData.Add(Entry("offset", offset.ToString(CultureInfo.InvariantCulture)));
                init.ExternalData.Add(Entry("length", length.ToString(CultureInfo.InvariantCulture)));
            }
        }
        File.WriteAllBytes(onnxPath, model.ToByteArray());
    }

    /// <summary>Inserts <paramref name="nodes"/>, in order, before the graph's first node.</summary>
    private static void Prepend(GraphProto graph, List<NodeProto> nodes)
    {
        for (int i = nodes.Count - 1; i >= 0; i--)
            graph.Node.Insert(0, nodes[i]);
    }

    private static StringStringEntryProto Entry(string key, string value) => new() { Key = key, Value = value };

    private static ValueInfoProto FindInput(GraphProto graph, string name)
    {
        foreach (var input in graph.Input)
            if (input.Name == name)
                return input;
        throw new InvalidOperationException($"Graph '{graph.Name}' has no input '{name}'.");
    }

    private static ValueInfoProto FindOutput(GraphProto graph, string name)
    {
        foreach (var output in graph.Output)
            if (output.Name == name)
                return output;
        throw new InvalidOperationException($"Graph '{graph.Name}' has no output '{name}'.");
    }

    /// <summary>Every node input reading <paramref name="from"/> reads <paramref name="to"/> instead.</summary>
    private static void RenameUses(GraphProto graph, string from, string to)
    {
        foreach (var node in graph.Node)
            for (int i = 0; i < node.Input.Count; i++)
                if (node.Input[i] == from)
                    node.Input[i] = to;
    }

    /// <summary>The node producing <paramref name="from"/> produces <paramref name="to"/>, and its consumers read that.</summary>
    private static void RenameProduced(GraphProto graph, string from, string to)
    {
        bool found = false;
        foreach (var node in graph.Node)
            for (int i = 0; i < node.Output.Count; i++)
                if (node.Output[i] == from)
                {
                    node.Output[i] = to;
                    found = true;
                }
        if (!found)
            throw new InvalidOperationException($"No node of graph '{graph.Name}' produces '{from}'.");
        RenameUses(graph, from, to);
    }

    private static NodeProto CastNode(GraphProto graph, string input, string output, DataType to)
    {
        var node = NewNode(graph, "Cast", [input], output);
        node.Attribute.Add(new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (long)to });
        return node;
    }

    private static NodeProto NewNode(GraphProto graph, string opType, string[] inputs, string output)
    {
        var node = new NodeProto { OpType = opType, Name = Unique(graph, $"{opType}_{output}") };
        node.Input.AddRange(inputs);
        node.Output.Add(output);
        return node;
    }

    /// <summary><paramref name="name"/>, or with a numeric suffix when a value or node of the graph already has it.</summary>
    private static string Unique(GraphProto graph, string name)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            used.Add(node.Name);
            used.UnionWith(node.Output);
        }
        foreach (var input in graph.Input)
            used.Add(input.Name);
        foreach (var init in graph.Initializer)
            used.Add(init.Name);
        string candidate = name;
        for (int k = 1; used.Contains(candidate); k++)
            candidate = string.Create(CultureInfo.InvariantCulture, $"{name}_{k}");
        return candidate;
    }

    private static long Count(IEnumerable<long> dims)
    {
        long n = 1;
        foreach (long d in dims)
            n *= d;
        return n;
    }
}
