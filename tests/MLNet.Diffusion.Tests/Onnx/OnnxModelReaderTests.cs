using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Onnx.Protobuf;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.TestSupport;
using MLNet.Diffusion.Tests.Variants;

namespace MLNet.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="OnnxModelReader"/> on the Shapes export variants (weights inline, in <c>model.onnx_data</c>, in
/// <c>weights.pb</c>, float16), on tiny-sd's PyTorch export, and on crafted models whose external data leaves the folder.
/// </summary>
[TestClass]
public sealed class OnnxModelReaderTests
{
    private static string UnetPath(ShapesVariant variant) => Path.Combine(ShapesVariantModels.Folder(variant), "unet", "model.onnx");

    [TestMethod]
    public void InlineWeightsAreListedWithTheirNodes()
    {
        var reader = OnnxModelReader.Open(UnetPath(ShapesVariant.Standard));

        Assert.IsTrue(reader.Nodes.Count > 0);
        Assert.IsTrue(reader.Initializers.Count > 0);
        Assert.IsTrue(reader.Initializers.All(i => !i.IsExternal && i.Offset == 0));
        var names = new HashSet<string>(reader.Nodes.SelectMany(n => n.Inputs));
        foreach (var initializer in reader.Initializers)
        {
            Assert.IsTrue(names.Contains(initializer.Name), $"no node reads initializer '{initializer.Name}'");
            Assert.AreEqual(initializer.Dims.Aggregate(1L, (a, d) => a * d), initializer.ElementCount);
        }
        Assert.IsTrue(reader.Nodes.All(n => n.OpType.Length > 0 && n.Outputs.Count > 0));
    }

    [TestMethod]
    [DataRow(ShapesVariant.ExternalWeights, "model.onnx_data")]
    [DataRow(ShapesVariant.ExternalWeightsPb, "weights.pb")]
    public void ExternalWeightsReadTheSameValuesAsInlineWeights(ShapesVariant variant, string dataFile)
    {
        var inline = OnnxModelReader.Open(UnetPath(ShapesVariant.Standard));
        var external = OnnxModelReader.Open(UnetPath(variant));
        string expectedFile = Path.Combine(Path.GetDirectoryName(external.ModelPath)!, dataFile);
        long dataLength = new FileInfo(expectedFile).Length;

        var floats = inline.Initializers.Where(i => i.ElementType == TensorElementType.Float).ToArray();
        Assert.IsTrue(floats.Length > 0);
        int externalCount = 0;
        foreach (var expected in floats)
        {
            var actual = external.Initializer(expected.Name);
            CollectionAssert.AreEqual(expected.Dims.ToArray(), actual.Dims.ToArray(), expected.Name);
            if (actual.IsExternal)
            {
                externalCount++;
                Assert.AreEqual(expectedFile, actual.ExternalPath);
                Assert.IsTrue(actual.Offset + actual.Length <= dataLength);
                Assert.AreEqual(actual.ElementCount * 4, actual.Length);
            }
            CollectionAssert.AreEqual(inline.ReadSingles(expected.Name), external.ReadSingles(expected.Name), expected.Name);
        }
        Assert.IsTrue(externalCount > 0, "the variant keeps weights in " + dataFile);
    }

    [TestMethod]
    [DataRow(ShapesVariant.Float16)]
    [DataRow(ShapesVariant.Float16 | ShapesVariant.TimestepInt64 | ShapesVariant.ExternalWeights)]
    public void Float16WeightsReadAsTheFloat32ValuesRoundedToHalf(ShapesVariant variant)
    {
        var float32 = OnnxModelReader.Open(UnetPath(ShapesVariant.Standard));
        var float16 = OnnxModelReader.Open(UnetPath(variant));
        int compared = 0;
        foreach (var half in float16.Initializers.Where(i => i.ElementType == TensorElementType.Float16))
        {
            if (!float32.TryGetInitializer(half.Name, out var full) || full.ElementType != TensorElementType.Float)
                continue;
            float[] expected = float32.ReadSingles(half.Name).Select(v => (float)(Half)v).ToArray();
            CollectionAssert.AreEqual(expected, float16.ReadSingles(half.Name), half.Name);
            compared++;
        }
        Assert.IsTrue(compared > 0);
    }

    [TestMethod]
    public void TinySdUnetNodesKeepPyTorchModulePathsAndItsWeightsAreInWeightsPb()
    {
        string folder = SharedModels.RequireTinySd();
        var reader = OnnxModelReader.Open(Path.Combine(folder, "unet", "model.onnx"));

        // tiny-sd-lora/README.md: time_emb_proj is a Gemm (transB=1) with a named [out, in] weight in weights.pb.
        var gemm = reader.Nodes.Single(n => n.Name == "/down_blocks.0/resnets.0/time_emb_proj/Gemm");
        Assert.AreEqual("Gemm", gemm.OpType);
        Assert.AreEqual("down_blocks.0.resnets.0.time_emb_proj.weight", gemm.Inputs[1]);
        var weight = reader.Initializer(gemm.Inputs[1]);
        CollectionAssert.AreEqual(new long[] { 32, 128 }, weight.Dims.ToArray());
        Assert.AreEqual(TensorElementType.Float, weight.ElementType);
        Assert.AreEqual(Path.Combine(folder, "unet", "weights.pb"), weight.ExternalPath);

        // The values are the bytes at the recorded offset, read independently here.
        float[] values = reader.ReadSingles(weight.Name);
        byte[] raw = new byte[weight.Length];
        using (var stream = File.OpenRead(weight.ExternalPath!))
        {
            stream.Position = weight.Offset;
            stream.ReadExactly(raw);
        }
        CollectionAssert.AreEqual(Enumerable.Range(0, values.Length).Select(i => BitConverter.ToSingle(raw, 4 * i)).ToArray(), values);
        Assert.IsTrue(values.Any(v => v != 0) && values.All(float.IsFinite));

        var conv = reader.Nodes.Single(n => n.Name == "/down_blocks.0/resnets.0/conv1/Conv");
        CollectionAssert.AreEqual(new long[] { 32, 32, 3, 3 }, reader.Initializer(conv.Inputs[1]).Dims.ToArray());
    }

    [TestMethod]
    public void CraftedExternalDataIsReadFromItsOffsetAsFloat32AndFloat16()
    {
        string folder = CreateFolder();
        float[] a = { 1.5f, -2.25f, 3f, 0.125f, 7f, -8f };
        Half[] b = { (Half)0.5f, (Half)(-1.75f), (Half)1024f, (Half)0.099975586f };
        byte[] data = new byte[64];
        Buffer.BlockCopy(a, 0, data, 16, a.Length * 4);
        for (int i = 0; i < b.Length; i++)
            BitConverter.TryWriteBytes(data.AsSpan(48 + 2 * i), b[i]);
        File.WriteAllBytes(Path.Combine(folder, "w.bin"), data);
        string model = WriteModel(folder, "model.onnx",
            External("a", TensorProto.Types.DataType.Float, new long[] { 2, 3 }, "w.bin", 16, 24),
            External("b", TensorProto.Types.DataType.Float16, new long[] { 4 }, "w.bin", 48, null));

        var reader = OnnxModelReader.Open(model);

        CollectionAssert.AreEqual(a, reader.ReadSingles("a"));
        CollectionAssert.AreEqual(b.Select(h => (float)h).ToArray(), reader.ReadSingles("b"));
        Assert.AreEqual(8, reader.Initializer("b").Length, "the length defaults to dims × element size");
        var e = Assert.ThrowsExactly<KeyNotFoundException>(() => reader.ReadSingles("c"));
        StringAssert.Contains(e.Message, "'c'");
    }

    [TestMethod]
    public void ExternalDataOutsideTheModelFolderIsRefusedNamingTheFileAndTheTensor()
    {
        string root = CreateFolder();
        string folder = Directory.CreateDirectory(Path.Combine(root, "unet")).FullName;
        File.WriteAllBytes(Path.Combine(root, "x"), new byte[16]);

        string dotDot = WriteModel(folder, "dotdot.onnx", External("up.weight", TensorProto.Types.DataType.Float, new long[] { 4 }, "../x", 0, 16));
        var e = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelReader.Open(dotDot));
        StringAssert.Contains(e.Message, "'up.weight'");
        StringAssert.Contains(e.Message, dotDot);
        StringAssert.Contains(e.Message, "'../x'");

        string absolute = WriteModel(folder, "absolute.onnx", External("abs.weight", TensorProto.Types.DataType.Float, new long[] { 4 }, Path.Combine(root, "x"), 0, 16));
        e = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelReader.Open(absolute));
        StringAssert.Contains(e.Message, "'abs.weight'");
        StringAssert.Contains(e.Message, "absolute");

        // A link inside the folder whose target is outside it.
        File.CreateSymbolicLink(Path.Combine(folder, "link.bin"), Path.Combine(root, "x"));
        string linked = WriteModel(folder, "linked.onnx", External("link.weight", TensorProto.Types.DataType.Float, new long[] { 4 }, "link.bin", 0, 16));
        e = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelReader.Open(linked));
        StringAssert.Contains(e.Message, "'link.weight'");
        StringAssert.Contains(e.Message, "symbolic link");

        // A link to a file inside the folder is fine.
        File.WriteAllBytes(Path.Combine(folder, "inside.bin"), new byte[16]);
        File.CreateSymbolicLink(Path.Combine(folder, "inside-link.bin"), "inside.bin");
        string inside = WriteModel(folder, "inside.onnx", External("w", TensorProto.Types.DataType.Float, new long[] { 4 }, "inside-link.bin", 0, 16));
        CollectionAssert.AreEqual(new float[4], OnnxModelReader.Open(inside).ReadSingles("w"));
    }

    [TestMethod]
    public void ExternalDataThatIsMissingOrTooShortIsNamed()
    {
        string folder = CreateFolder();
        File.WriteAllBytes(Path.Combine(folder, "short.bin"), new byte[8]);
        string missing = WriteModel(folder, "missing.onnx", External("m", TensorProto.Types.DataType.Float, new long[] { 2 }, "nothing.bin", 0, 8));
        var notFound = Assert.ThrowsExactly<FileNotFoundException>(() => OnnxModelReader.Open(missing));
        StringAssert.Contains(notFound.Message, "'m'");
        StringAssert.Contains(notFound.Message, "nothing.bin");

        string tooShort = WriteModel(folder, "short.onnx", External("s", TensorProto.Types.DataType.Float, new long[] { 4 }, "short.bin", 0, null));
        var e = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelReader.Open(tooShort));
        StringAssert.Contains(e.Message, "'s'");
        StringAssert.Contains(e.Message, "too short");

        File.WriteAllText(Path.Combine(folder, "text.onnx"), "not a model");
        e = Assert.ThrowsExactly<InvalidDataException>(() => OnnxModelReader.Open(Path.Combine(folder, "text.onnx")));
        StringAssert.Contains(e.Message, "text.onnx");
    }

    [TestMethod]
    public void InlineRawDataOfTheWrongSizeIsNamed()
    {
        string folder = CreateFolder();
        var t = new TensorProto { Name = "short.weight", DataType = (int)TensorProto.Types.DataType.Float, RawData = ByteString.CopyFrom(new byte[12]) };
        t.Dims.Add(4);
        var reader = OnnxModelReader.Open(WriteModel(folder, "inline.onnx", t));

        var e = Assert.ThrowsExactly<InvalidDataException>(() => reader.ReadSingles("short.weight"));
        StringAssert.Contains(e.Message, "'short.weight'");
        StringAssert.Contains(e.Message, "12 bytes");
    }

    private static TensorProto External(string name, TensorProto.Types.DataType type, long[] dims, string location, long offset, long? length)
    {
        var t = new TensorProto { Name = name, DataType = (int)type, DataLocation = TensorProto.Types.DataLocation.External };
        t.Dims.AddRange(dims);
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = location });
        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        if (length is long l)
            t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = l.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        return t;
    }

    /// <summary>A model whose graph adds each initializer to itself (the graph only has to name them).</summary>
    private static string WriteModel(string folder, string file, params TensorProto[] initializers)
    {
        var graph = new GraphProto { Name = "crafted" };
        foreach (var t in initializers)
        {
            graph.Initializer.Add(t);
            var node = new NodeProto { Name = "/" + t.Name + "/Add", OpType = "Add" };
            node.Input.Add(t.Name);
            node.Input.Add(t.Name);
            node.Output.Add(t.Name + "_twice");
            graph.Node.Add(node);
        }
        var model = new ModelProto { IrVersion = 8, Graph = graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Version = 14 });
        string path = Path.Combine(folder, file);
        File.WriteAllBytes(path, model.ToByteArray());
        return path;
    }

    private static string CreateFolder()
    {
        string folder = Path.Combine(Path.GetTempPath(), "mlnet-onnx-reader-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(folder);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return folder;
    }
}
