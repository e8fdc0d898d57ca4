using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Globalization;
using Google.Protobuf;

namespace MLNet.Diffusion.Shapes.Onnx;

/// <summary>
/// A small helper for writing ONNX graphs with the generated protobuf classes: typed graph inputs/outputs with named
/// dynamic dimensions, initializers stored as little-endian <c>raw_data</c>, and one call per node. Node outputs get
/// readable generated names (<c>op_3</c>) unless named explicitly.
/// </summary>
internal sealed class OnnxGraphBuilder
{
    /// <summary>ONNX IR version written (8: ONNX 1.10+, read by every ONNX Runtime since 1.10).</summary>
    public const long IrVersion = 8;

    /// <summary>Default-domain opset written.</summary>
    public const long Opset = 17;

    private readonly GraphProto _graph;
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private int _next;

    public OnnxGraphBuilder(string name)
    {
        _graph = new GraphProto { Name = name };
    }

    /// <summary>Declares a graph input. Each dimension is a <see cref="long"/> (fixed) or a <see cref="string"/> (named, dynamic).</summary>
    public string Input(string name, TensorProto.Types.DataType type, params object[] dims)
    {
        _graph.Input.Add(ValueInfo(Reserve(name), type, dims));
        return name;
    }

    /// <summary>Declares a graph output; a node must produce <paramref name="name"/>.</summary>
    public void Output(string name, TensorProto.Types.DataType type, params object[] dims) =>
        _graph.Output.Add(ValueInfo(name, type, dims));

    /// <summary>Adds a float initializer.</summary>
    public string Initializer(string name, ReadOnlySpan<float> values, params long[] dims)
    {
        CheckCount(values.Length, dims);
        var bytes = new byte[values.Length * sizeof(float)];
        for (int i = 0; i < values.Length; i++)
            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(i * sizeof(float)), values[i]);
        return AddInitializer(name, TensorProto.Types.DataType.Float, bytes, dims);
    }

    /// <summary>Adds an int64 initializer.</summary>
    public string Initializer(string name, ReadOnlySpan<long> values, params long[] dims)
    {
        CheckCount(values.Length, dims);
        var bytes = new byte[values.Length * sizeof(long)];
        for (int i = 0; i < values.Length; i++)
            BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(i * sizeof(long)), values[i]);
        return AddInitializer(name, TensorProto.Types.DataType.Int64, bytes, dims);
    }

    /// <summary>Adds a prepared initializer (float16 data, or data in an external file); returns its name.</summary>
    public string Initializer(TensorProto tensor)
    {
        Reserve(tensor.Name);
        _graph.Initializer.Add(tensor);
        return tensor.Name;
    }

    /// <summary>A float scalar (rank 0) constant.</summary>
    public string Scalar(string name, float value) => Initializer(name, [value]);

    /// <summary>A 1-D int64 constant (axes, shapes, pads, slice bounds).</summary>
    public string Ints(string name, params long[] values) => Initializer(name, values, values.Length);

    /// <summary>Adds a node with one output, named <paramref name="output"/> or generated; returns the output name.</summary>
    /// <param name="opType">The ONNX operator.</param>
    /// <param name="inputs">Input value names; "" for an omitted optional input.</param>
    /// <param name="output">The output's name, or null for a generated one.</param>
    /// <param name="attributes">Attributes made with the <c>Attr</c> helpers.</param>
    public string Node(string opType, string[] inputs, string? output = null, params AttributeProto[] attributes)
    {
        string o = Reserve(output ?? $"{opType.ToLowerInvariant()}_{_next++}");
        var node = new NodeProto { OpType = opType, Name = $"{opType}_{_graph.Node.Count}" };
        node.Input.AddRange(inputs);
        node.Output.Add(o);
        node.Attribute.AddRange(attributes);
        _graph.Node.Add(node);
        return o;
    }

    public string Add(string a, string b, string? output = null) => Node("Add", [a, b], output);

    public string Sub(string a, string b, string? output = null) => Node("Sub", [a, b], output);

    public string Mul(string a, string b, string? output = null) => Node("Mul", [a, b], output);

    public string Div(string a, string b, string? output = null) => Node("Div", [a, b], output);

    public static AttributeProto Attr(string name, long value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

    public static AttributeProto Attr(string name, float value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.Float, F = value };

    public static AttributeProto Attr(string name, string value) =>
        new() { Name = name, Type = AttributeProto.Types.AttributeType.String, S = ByteString.CopyFromUtf8(value) };

    public static AttributeProto Attr(string name, long[] values)
    {
        var a = new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Ints };
        a.Ints.AddRange(values);
        return a;
    }

    /// <summary>Serializes the model (IR 8, opset 17). Protobuf serialization of these messages is deterministic.</summary>
    public byte[] ToModelBytes(string docString)
    {
        var model = new ModelProto
        {
            IrVersion = IrVersion,
            ProducerName = "MLNet.Diffusion.Shapes",
            ProducerVersion = ShapesModel.BuilderVersion,
            ModelVersion = 1,
            DocString = docString,
            Graph = _graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = string.Empty, Version = Opset });
        return model.ToByteArray();
    }

    private string AddInitializer(string name, TensorProto.Types.DataType type, byte[] raw, long[] dims)
    {
        var t = new TensorProto { Name = Reserve(name), DataType = (int)type, RawData = ByteString.CopyFrom(raw) };
        t.Dims.AddRange(dims);
        _graph.Initializer.Add(t);
        return name;
    }

    private string Reserve(string name)
    {
        if (!_names.Add(name))
            throw new InvalidOperationException($"Value name '{name}' is used twice in graph '{_graph.Name}'.");
        return name;
    }

    private static void CheckCount(int count, long[] dims)
    {
        long expected = 1;
        foreach (long d in dims)
            expected *= d;
        if (expected != count)
            throw new ArgumentException($"{count} values do not fill shape [{string.Join(",", dims)}].", nameof(dims));
    }

    private static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType type, object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (object d in dims)
        {
            shape.Dim.Add(d switch
            {
                string s => new TensorShapeProto.Types.Dimension { DimParam = s },
                long v => new TensorShapeProto.Types.Dimension { DimValue = v },
                int v => new TensorShapeProto.Types.Dimension { DimValue = v },
                _ => throw new ArgumentException(string.Create(CultureInfo.InvariantCulture, $"Dimension '{d}' must be a long or a string."), nameof(dims)),
            });
        }
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } },
        };
    }
}
