using System;
using System.Collections.Generic;
using System.IO;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx.Protobuf;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// The token-embedding table of a CLIP text encoder graph (<c>token_embedding.weight</c> [V, D], whatever the exporter
/// named it) and a copy of the graph with rows appended to it, for textual inversion.
/// </summary>
/// <remarks>
/// The table is found by tracing, not by name: from the <c>input_ids</c> graph input through value-preserving ops (Cast,
/// Reshape, Flatten, Squeeze, Unsqueeze, Identity) to the Gather that indexes a weight with the ids; the weight may reach
/// the Gather through Identity or Cast (a tied or fp16-converted export). Shape, ArgMax and other ops that read the ids
/// but not as indices (the position ids, the pooled output's EOS position) are not followed. The taller table cannot be a
/// replaced initializer (<see cref="WeightVariant"/> requires the file's shape, because ONNX Runtime resolved the graph
/// with it), so the graph is rewritten: a new initializer [V + n, D] in the table's element type replaces the old one
/// as the first input of the path, the old one is dropped when nothing else reads it, and the session is created from
/// the rewritten bytes with the model's folder as the external-data folder.
/// </remarks>
internal sealed class TokenEmbeddingGraph
{
    private static readonly HashSet<string> s_passThrough = new(StringComparer.Ordinal) { "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity" };

    private readonly OnnxModelReader _reader;
    private readonly NodeProto _consumer;
    private readonly int _consumerInput;

    private TokenEmbeddingGraph(OnnxModelReader reader, OnnxInitializer table, NodeProto consumer, int consumerInput)
    {
        _reader = reader;
        Table = table;
        _consumer = consumer;
        _consumerInput = consumerInput;
    }

    /// <summary>The table's initializer (name, [V, D], element type).</summary>
    public OnnxInitializer Table { get; }

    /// <summary>The table's row count V.</summary>
    public int Rows => checked((int)Table.Dims[0]);

    /// <summary>The vector width D.</summary>
    public int Width => checked((int)Table.Dims[1]);

    /// <summary>Finds the token-embedding table of the text encoder <paramref name="reader"/> read.</summary>
    /// <exception cref="InvalidDataException">No single float table is indexed by <c>input_ids</c> (the message names the file).</exception>
    public static TokenEmbeddingGraph Find(OnnxModelReader reader)
    {
        var graph = reader.Model.Graph;
        string? ids = null;
        foreach (var input in graph.Input)
        {
            if (input.Name == "input_ids")
                ids = input.Name;
        }
        if (ids is null)
            throw new InvalidDataException($"Text encoder '{reader.ModelPath}' has no 'input_ids' input to find its token-embedding table from.");

        var producers = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var node in graph.Node)
        {
            foreach (string output in node.Output)
                producers[output] = node;
        }

        // Values that carry the ids unchanged (cast or reshaped).
        var idValues = new HashSet<string>(StringComparer.Ordinal) { ids };
        bool grew = true;
        while (grew)
        {
            grew = false;
            foreach (var node in graph.Node)
            {
                if (s_passThrough.Contains(node.OpType) && node.Input.Count > 0 && idValues.Contains(node.Input[0]) && node.Output.Count > 0 && idValues.Add(node.Output[0]))
                    grew = true;
            }
        }

        TokenEmbeddingGraph? found = null;
        foreach (var node in graph.Node)
        {
            if (node.OpType != "Gather" || node.Input.Count < 2 || !idValues.Contains(node.Input[1]))
                continue;
            // Walk the data input back through Identity/Cast to the initializer; the last node on the way reads it.
            NodeProto consumer = node;
            string value = node.Input[0];
            while (!reader.TryGetInitializer(value, out _) && producers.TryGetValue(value, out var producer) && producer.OpType is "Identity" or "Cast" && producer.Input.Count > 0)
            {
                consumer = producer;
                value = producer.Input[0];
            }
            if (!reader.TryGetInitializer(value, out var table))
                throw new InvalidDataException($"Text encoder '{reader.ModelPath}': the Gather '{node.Name}' that reads input_ids takes its table from '{node.Input[0]}', which is not a weight (initializer); "
                    + "textual inversion needs the token-embedding table as an initializer.");
            if (table.Dims.Count != 2 || table.ElementType is not (TensorElementType.Float or TensorElementType.Float16))
                throw new InvalidDataException($"Text encoder '{reader.ModelPath}': the token-embedding table '{table.Name}' is {table.ElementType} [{string.Join(",", table.Dims)}]; "
                    + "textual inversion needs a float32 or float16 [vocabulary, width] table.");
            if (found is not null && found.Table.Name != table.Name)
                throw new InvalidDataException($"Text encoder '{reader.ModelPath}' indexes two tables with input_ids ('{found.Table.Name}' and '{table.Name}'); cannot tell which is the token embedding.");
            int index = consumer.Input.IndexOf(value);
            found ??= new TokenEmbeddingGraph(reader, table, consumer, index);
        }
        return found ?? throw new InvalidDataException($"Text encoder '{reader.ModelPath}' has no Gather that indexes a weight with input_ids; cannot find its token-embedding table.");
    }

    /// <summary>
    /// The model's bytes with rows <paramref name="firstRow"/>… of the table set to <paramref name="rows"/>
    /// (<paramref name="count"/> × <see cref="Width"/> values): the table grows to max(V, firstRow + count) rows; rows
    /// between V and <paramref name="firstRow"/> (none for CLIP, whose tokenizer has V entries) are zero. It edits the
    /// reader's parsed model, so it is called once per <see cref="Find"/>.
    /// </summary>
    public byte[] WithRows(int firstRow, int count, ReadOnlySpan<float> rows)
    {
        if (rows.Length != checked(count * Width))
            throw new ArgumentException($"Expected {count}×{Width} values, got {rows.Length}.", nameof(rows));
        int height = Math.Max(Rows, checked(firstRow + count));
        long elements = (long)height * Width;
        bool half = Table.ElementType == TensorElementType.Float16;
        // The new table is written straight into the tensor's raw bytes (wrapped, not copied, by the protobuf message).
        var raw = new byte[checked((int)(elements * (half ? 2 : sizeof(float))))];
        if (half)
        {
            var values = new float[checked((int)elements)];
            _reader.ReadSingles(Table.Name, values.AsSpan(0, Rows * Width));
            rows.CopyTo(values.AsSpan(firstRow * Width));
            TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(raw.AsSpan()));
        }
        else
        {
            var values = MemoryMarshal.Cast<byte, float>(raw.AsSpan());
            _reader.ReadSingles(Table.Name, values[..(Rows * Width)]);
            rows.CopyTo(values[(firstRow * Width)..]);
        }

        var graph = _reader.Model.Graph;
        string name = UniqueName(graph, Table.Name + ".textual_inversion");
        var tensor = new TensorProto { Name = name, DataType = (int)Table.ElementType, RawData = UnsafeByteOperations.UnsafeWrap(raw) };
        tensor.Dims.Add(height);
        tensor.Dims.Add(Width);
        _consumer.Input[_consumerInput] = name;
        if (!IsRead(graph, Table.Name))
        {
            for (int i = 0; i < graph.Initializer.Count; i++)
            {
                if (graph.Initializer[i].Name == Table.Name)
                {
                    graph.Initializer.RemoveAt(i);
                    break;
                }
            }
            // Exports of IR version < 4 also list initializers as graph inputs; a listed one without its initializer
            // would become a required input.
            for (int i = 0; i < graph.Input.Count; i++)
            {
                if (graph.Input[i].Name == Table.Name)
                {
                    graph.Input.RemoveAt(i);
                    break;
                }
            }
        }
        graph.Initializer.Add(tensor);
        return _reader.Model.ToByteArray();
    }

    private static bool IsRead(GraphProto graph, string name)
    {
        foreach (var node in graph.Node)
        {
            if (node.Input.Contains(name))
                return true;
        }
        foreach (var output in graph.Output)
        {
            if (output.Name == name)
                return true;
        }
        return false;
    }

    private static string UniqueName(GraphProto graph, string name)
    {
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer)
            used.Add(t.Name);
        foreach (var node in graph.Node)
        {
            foreach (string output in node.Output)
                used.Add(output);
        }
        string candidate = name;
        for (int i = 1; used.Contains(candidate); i++)
            candidate = name + "." + i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return candidate;
    }
}
