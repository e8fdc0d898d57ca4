using System;
using System.IO;
using System.Linq;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Onnx.Protobuf;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.TextualInversion;

/// <summary>
/// <see cref="TokenEmbeddingGraph"/> on a hand-built graph with what real exports vary in: int32 ids cast to int64, a
/// float16 table reached through an Identity (a renamed/tied weight), and a decoy Gather (position embeddings) whose
/// indices do not come from input_ids.
/// </summary>
[TestClass]
public sealed class TokenEmbeddingGraphTests
{
    private const int Int32 = 6, Int64 = 7, Float = 1, Float16 = 10;

    [TestMethod]
    public void TheTableIsFoundFromInputIdsAndGrowsInItsElementType()
    {
        string path = PersistenceRoundTrip.TempFile("token_embedding.onnx");
        File.WriteAllBytes(path, BuildModel().ToByteArray());
        try
        {
            var graph = TokenEmbeddingGraph.Find(OnnxModelReader.Open(path));
            Assert.AreEqual("weights.renamed_by_exporter", graph.Table.Name, "the Gather indexed by the ids, not the position table");
            Assert.AreEqual(TensorElementType.Float16, graph.Table.ElementType);
            Assert.AreEqual(4, graph.Rows);
            Assert.AreEqual(2, graph.Width);

            byte[] rewritten = graph.WithRows(4, 2, [10f, 11f, 12f, 13f]);
            using var session = new InferenceSession(rewritten);
            var ids = new DenseTensor<int>(new[] { 5, 0, 4, 3 }, [1, 4]);
            using var results = session.Run([NamedOnnxValue.CreateFromTensor("input_ids", ids)]);
            float[] states = results.First().AsEnumerable<float>().ToArray();
            // Rows 5 and 4 are the new vectors; rows 0 and 3 the file's (row r holds 2r, 2r + 1); position rows are 0.5·k.
            CollectionAssert.AreEqual(new[] { 12f + 0f, 13f + 0.5f, 0f + 1f, 1f + 1.5f, 10f + 2f, 11f + 2.5f, 6f + 3f, 7f + 3.5f }, states);

            var model = ModelProto.Parser.ParseFrom(rewritten);
            Assert.IsFalse(model.Graph.Initializer.Any(t => t.Name == "weights.renamed_by_exporter"), "the old table, read by nothing else, is dropped");
        }
        finally
        {
            File.Delete(path);
        }
    }

    [TestMethod]
    public void AGraphWithoutAnIdIndexedTableIsRefusedNamingTheFile()
    {
        var model = BuildModel();
        model.Graph.Input[0].Name = "tokens";
        foreach (var node in model.Graph.Node)
        {
            for (int i = 0; i < node.Input.Count; i++)
            {
                if (node.Input[i] == "input_ids")
                    node.Input[i] = "tokens";
            }
        }
        string path = PersistenceRoundTrip.TempFile("no_input_ids.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        try
        {
            var error = Assert.ThrowsExactly<InvalidDataException>(() => TokenEmbeddingGraph.Find(OnnxModelReader.Open(path)));
            StringAssert.Contains(error.Message, "no_input_ids.onnx");
            StringAssert.Contains(error.Message, "input_ids");
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static ModelProto BuildModel()
    {
        var graph = new GraphProto { Name = "text_encoder" };
        graph.Input.Add(Value("input_ids", Int32, 1, 4));
        graph.Output.Add(Value("last_hidden_state", Float, 1, 4, 2));
        graph.Initializer.Add(Half("weights.renamed_by_exporter", 4, 2, r => 2f * r));
        graph.Initializer.Add(Half("position_table", 4, 2, r => r));
        var positions = new TensorProto { Name = "position_ids", DataType = Int64 };
        positions.Dims.Add(4);
        positions.Int64Data.Add([0L, 1L, 2L, 3L]);
        graph.Initializer.Add(positions);

        graph.Node.Add(Node("Cast", ["input_ids"], "ids64", ("to", Int64)));
        graph.Node.Add(Node("Identity", ["weights.renamed_by_exporter"], "token_embedding.weight"));
        graph.Node.Add(Node("Gather", ["token_embedding.weight", "ids64"], "tokens"));
        graph.Node.Add(Node("Gather", ["position_table", "position_ids"], "positions"));
        graph.Node.Add(Node("Add", ["tokens", "positions"], "sum"));
        graph.Node.Add(Node("Cast", ["sum"], "last_hidden_state", ("to", Float)));

        var model = new ModelProto { IrVersion = 7, Graph = graph, ProducerName = "TokenEmbeddingGraphTests" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = string.Empty, Version = 14 });
        return model;
    }

    /// <summary>A float16 [rows, width] table: row r holds start(r) + c (the position table: 0.5·(r·width + c)).</summary>
    private static TensorProto Half(string name, int rows, int width, Func<int, float> start)
    {
        var values = new Half[rows * width];
        for (int r = 0; r < rows; r++)
        {
            for (int c = 0; c < width; c++)
                values[r * width + c] = (Half)(name == "position_table" ? 0.5f * (r * width + c) : start(r) + c);
        }
        var tensor = new TensorProto { Name = name, DataType = Float16, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan())) };
        tensor.Dims.Add(rows);
        tensor.Dims.Add(width);
        return tensor;
    }

    private static ValueInfoProto Value(string name, int elementType, params long[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (long d in dims)
            shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
        return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elementType, Shape = shape } } };
    }

    private static NodeProto Node(string op, string[] inputs, string output, params (string Name, long Value)[] attributes)
    {
        var node = new NodeProto { OpType = op, Name = "/" + op + "_" + output };
        node.Input.Add(inputs);
        node.Output.Add(output);
        foreach (var (name, value) in attributes)
            node.Attribute.Add(new AttributeProto { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value });
        return node;
    }
}
