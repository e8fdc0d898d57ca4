using System.IO;
using Google.Protobuf;

namespace ComposePipeline;

/// <summary>
/// Writes a two-node ONNX model, <c>Pixels</c> float [3·n] (planar R, G, B) → Reshape [3, n] → ReduceMean(axis 1) →
/// <c>ChannelMeans</c> float [3], with Google.Protobuf's wire writer and the field numbers of ONNX's onnx.proto
/// (ModelProto ir_version 1, opset_import 8, graph 7; GraphProto node 1, initializer 5, input 11, output 12; …).
/// </summary>
internal static class ChannelStatsModel
{
    public static void Write(string path, int pixelsPerChannel)
    {
        byte[] shape = Tensor("shape", new long[] { 3, pixelsPerChannel });
        byte[] reshape = Node("Reshape", new[] { "Pixels", "shape" }, "planes");
        byte[] mean = Node("ReduceMean", new[] { "planes" }, "ChannelMeans",
            Message(w => { w.WriteTag(1, WireFormat.WireType.LengthDelimited); w.WriteString("axes"); w.WriteTag(8, WireFormat.WireType.Varint); w.WriteInt64(1); w.WriteTag(20, WireFormat.WireType.Varint); w.WriteInt32(7); }),
            Message(w => { w.WriteTag(1, WireFormat.WireType.LengthDelimited); w.WriteString("keepdims"); w.WriteTag(3, WireFormat.WireType.Varint); w.WriteInt64(0); w.WriteTag(20, WireFormat.WireType.Varint); w.WriteInt32(2); }));
        byte[] graph = Message(w =>
        {
            Bytes(w, 1, reshape);
            Bytes(w, 1, mean);
            w.WriteTag(2, WireFormat.WireType.LengthDelimited);
            w.WriteString("channel_stats");
            Bytes(w, 5, shape);
            Bytes(w, 11, ValueInfo("Pixels", 3L * pixelsPerChannel));
            Bytes(w, 12, ValueInfo("ChannelMeans", 3));
        });
        byte[] model = Message(w =>
        {
            w.WriteTag(1, WireFormat.WireType.Varint);
            w.WriteInt64(8); // ir_version
            Bytes(w, 8, Message(o => { o.WriteTag(2, WireFormat.WireType.Varint); o.WriteInt64(13); })); // opset 13 (ReduceMean with axes attribute)
            Bytes(w, 7, graph);
        });
        File.WriteAllBytes(path, model);
    }

    private static byte[] Node(string op, string[] inputs, string output, params byte[][] attributes) => Message(w =>
    {
        foreach (string i in inputs)
        {
            w.WriteTag(1, WireFormat.WireType.LengthDelimited);
            w.WriteString(i);
        }
        w.WriteTag(2, WireFormat.WireType.LengthDelimited);
        w.WriteString(output);
        w.WriteTag(4, WireFormat.WireType.LengthDelimited);
        w.WriteString(op);
        foreach (byte[] a in attributes)
            Bytes(w, 5, a);
    });

    private static byte[] Tensor(string name, long[] values) => Message(w =>
    {
        w.WriteTag(1, WireFormat.WireType.Varint);
        w.WriteInt64(values.Length); // dims
        w.WriteTag(2, WireFormat.WireType.Varint);
        w.WriteInt32(7); // INT64
        foreach (long v in values)
        {
            w.WriteTag(7, WireFormat.WireType.Varint); // int64_data
            w.WriteInt64(v);
        }
        w.WriteTag(8, WireFormat.WireType.LengthDelimited);
        w.WriteString(name);
    });

    private static byte[] ValueInfo(string name, long size) => Message(w =>
    {
        w.WriteTag(1, WireFormat.WireType.LengthDelimited);
        w.WriteString(name);
        var dim = Message(d => { d.WriteTag(1, WireFormat.WireType.Varint); d.WriteInt64(size); });
        var tensorShape = Message(s => Bytes(s, 1, dim));
        var tensorType = Message(t => { t.WriteTag(1, WireFormat.WireType.Varint); t.WriteInt32(1); Bytes(t, 2, tensorShape); });
        Bytes(w, 2, Message(t => Bytes(t, 1, tensorType)));
    });

    private static void Bytes(CodedOutputStream w, int field, byte[] message)
    {
        w.WriteTag(field, WireFormat.WireType.LengthDelimited);
        w.WriteBytes(ByteString.CopyFrom(message));
    }

    private static byte[] Message(System.Action<CodedOutputStream> write)
    {
        using var stream = new MemoryStream();
        var output = new CodedOutputStream(stream);
        write(output);
        output.Flush();
        return stream.ToArray();
    }
}
