using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Onnx.Protobuf;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Shapes.Building;
using MLNet.Diffusion.Shapes.Onnx;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Tests.Variants;

/// <summary>The files of each export variant: input/output element types and ranks as ONNX Runtime reads them, float16 weights, external data.</summary>
[TestClass]
public sealed class ExportVariantFileTests
{
    private static readonly string[] s_components = { "text_encoder", "unet", "vae_decoder", "vae_encoder" };

    [TestMethod]
    [DataRow(ShapesVariant.Standard)]
    [DataRow(ShapesVariant.Float16)]
    [DataRow(ShapesVariant.TimestepInt64)]
    [DataRow(ShapesVariant.TimestepScalar)]
    [DataRow(ShapesVariant.VPrediction)]
    [DataRow(ShapesVariant.ExternalWeights)]
    [DataRow(ShapesVariant.ExternalWeightsPb)]
    [DataRow(ShapesVariant.Float16 | ShapesVariant.TimestepInt64 | ShapesVariant.ExternalWeights)]
    [DataRow(ShapesVariant.Float16 | ShapesVariant.TimestepScalar | ShapesVariant.Int64InputIds | ShapesVariant.VPrediction)]
    [DataRow(ShapesVariant.Int64InputIds | ShapesVariant.TimestepScalar)]
    public void InputsAndOutputsHaveTheVariantsTypes(ShapesVariant variant)
    {
        string folder = ShapesVariantModels.Folder(variant);
        var f = variant.HasFlag(ShapesVariant.Float16) ? TensorElementType.Float16 : TensorElementType.Float;
        using (var te = Open(folder, "text_encoder"))
        {
            AssertNode(te.InputMetadata["input_ids"], variant.HasFlag(ShapesVariant.Int64InputIds) ? TensorElementType.Int64 : TensorElementType.Int32, 2);
            AssertNode(te.OutputMetadata["last_hidden_state"], f, 3);
            AssertNode(te.OutputMetadata["pooler_output"], f, 2);
        }
        using (var unet = Open(folder, "unet"))
        {
            AssertNode(unet.InputMetadata["sample"], f, 4);
            AssertNode(unet.InputMetadata["encoder_hidden_states"], f, 3);
            AssertNode(unet.OutputMetadata["out_sample"], f, 4);
            var timestepType = variant.HasFlag(ShapesVariant.TimestepInt64) ? TensorElementType.Int64
                : variant.HasFlag(ShapesVariant.TimestepScalar) ? TensorElementType.Float : f;
            AssertNode(unet.InputMetadata["timestep"], timestepType, variant.HasFlag(ShapesVariant.TimestepScalar) ? 0 : 1);
        }
        using (var decoder = Open(folder, "vae_decoder"))
        {
            AssertNode(decoder.InputMetadata["latent_sample"], f, 4);
            AssertNode(decoder.OutputMetadata["sample"], f, 4);
        }
        using (var encoder = Open(folder, "vae_encoder"))
        {
            AssertNode(encoder.InputMetadata["sample"], f, 4);
            foreach (var output in encoder.OutputMetadata)
                AssertNode(output.Value, f, 4);
        }
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(folder, "scheduler", "scheduler_config.json")));
        Assert.AreEqual(variant.HasFlag(ShapesVariant.VPrediction) ? "v_prediction" : "epsilon", doc.RootElement.GetProperty("prediction_type").GetString());
    }

    [TestMethod]
    [DataRow(ShapesVariant.Standard)]
    [DataRow(ShapesVariant.Float16)]
    [DataRow(ShapesVariant.Float16 | ShapesVariant.TimestepInt64 | ShapesVariant.ExternalWeights)]
    public void Float16VariantsStoreEveryFloatWeightAsFloat16(ShapesVariant variant)
    {
        bool half = variant.HasFlag(ShapesVariant.Float16);
        foreach (string component in s_components)
        {
            var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(ShapesVariantModels.Folder(variant), component, "model.onnx")));
            var types = model.Graph.Initializer.Select(t => (DataType)t.DataType).ToList();
            Assert.AreEqual(!half, types.Contains(DataType.Float), $"{variant} {component}: float32 weights");
            Assert.AreEqual(half, types.Contains(DataType.Float16), $"{variant} {component}: float16 weights");
        }
    }

    [TestMethod]
    [DataRow(ShapesVariant.Standard, null)]
    [DataRow(ShapesVariant.ExternalWeights, "model.onnx_data")]
    [DataRow(ShapesVariant.ExternalWeightsPb, "weights.pb")]
    [DataRow(ShapesVariant.Float16 | ShapesVariant.TimestepInt64 | ShapesVariant.ExternalWeights, "model.onnx_data")]
    public void ExternalWeightVariantsKeepTheWeightsNextToASmallGraph(ShapesVariant variant, string? dataFile)
    {
        string folder = ShapesVariantModels.Folder(variant);
        foreach (string component in s_components)
        {
            string dir = Path.Combine(folder, component);
            string onnx = Path.Combine(dir, "model.onnx");
            CollectionAssert.AreEquivalent(dataFile is null ? new[] { "model.onnx" } : new[] { "model.onnx", dataFile },
                Directory.GetFiles(dir).Select(Path.GetFileName).Where(n => n != "config.json").ToArray(), $"{variant} {component}");
            var model = ModelProto.Parser.ParseFrom(File.ReadAllBytes(onnx));
            long dataLength = dataFile is null ? 0 : new FileInfo(Path.Combine(dir, dataFile)).Length;
            long inline = 0, external = 0;
            foreach (var t in model.Graph.Initializer)
            {
                long bytes = t.Dims.Aggregate(1L, (a, d) => a * d) * ElementSize((DataType)t.DataType);
                if (t.DataLocation != TensorProto.Types.DataLocation.External)
                {
                    Assert.AreEqual(bytes, t.RawData.Length, $"{component} {t.Name}");
                    // ONNX's external-data convention (onnx.save_model size_threshold=1024): only small tensors stay inline.
                    Assert.IsTrue(dataFile is null || bytes < 1024, $"{variant} {component}: {t.Name} ({bytes} bytes) is not external");
                    inline += bytes;
                    continue;
                }
                Assert.IsNotNull(dataFile, $"{component} {t.Name} is external in a variant without external weights");
                Assert.AreEqual(0, t.RawData.Length, $"{component} {t.Name}");
                var entries = t.ExternalData.ToDictionary(e => e.Key, e => e.Value);
                Assert.AreEqual(dataFile, entries["location"], $"{component} {t.Name}");
                long offset = long.Parse(entries["offset"], System.Globalization.CultureInfo.InvariantCulture);
                long length = long.Parse(entries["length"], System.Globalization.CultureInfo.InvariantCulture);
                Assert.AreEqual(bytes, length, $"{component} {t.Name} length");
                Assert.AreEqual(0, offset % 4096, $"{component} {t.Name} offset {offset} is not page-aligned");
                Assert.IsTrue(offset + length <= dataLength, $"{component} {t.Name} ends past {dataFile}");
                external += bytes;
            }
            if (dataFile is not null)
            {
                Assert.IsTrue(external > 0 && external >= 4 * inline, $"{variant} {component}: {external} bytes external, {inline} inline");
                Assert.IsTrue(new FileInfo(onnx).Length < 16 * 1024, $"{variant} {component}: model.onnx has {new FileInfo(onnx).Length} bytes");
            }
        }
    }

    [TestMethod]
    public void AVariantBuildIsDeterministicAndHasItsOwnCacheFolder()
    {
        const ShapesVariant variant = ShapesVariant.Float16 | ShapesVariant.TimestepInt64 | ShapesVariant.ExternalWeights;
        string again = Path.Combine(Path.GetTempPath(), "mlnet-shapes-variant-det-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            ShapesModel.Build(again, new ShapesModelOptions { ImageSize = ShapesVariantModels.ImageSize, Variant = variant });
            var a = Hashes(ShapesVariantModels.Folder(variant));
            var b = Hashes(again);
            CollectionAssert.AreEqual(a, b, "two builds of the same variant differ");
            StringAssert.Contains(File.ReadAllText(Path.Combine(again, "README.md")), ShapesVariants.Describe(variant));
        }
        finally
        {
            Directory.Delete(again, recursive: true);
        }

        var names = new HashSet<string>();
        foreach (ShapesVariant flag in Enum.GetValues<ShapesVariant>().Where(v => (ShapesModelOptions.BuiltVariants & v) == v))
            Assert.IsTrue(names.Add(ShapesModel.CacheFolderName(new ShapesModelOptions { Variant = flag })), $"{flag} shares a cache folder");
        Assert.IsTrue(names.Add(ShapesModel.CacheFolderName(new ShapesModelOptions { Variant = variant })));
    }

    /// <summary>
    /// A timestep type outside the contract (float32, float16 or int64) fails at load, naming the input, its type and the
    /// supported ones — never later as an ONNX Runtime type error inside the denoising loop.
    /// </summary>
    [TestMethod]
    [DataRow("Int32")]
    [DataRow("Double")]
    public void AnUnsupportedTimestepTypeFailsAtLoadNamingIt(string typeName)
    {
        var type = Enum.Parse<DataType>(typeName);
        string folder = Path.Combine(Path.GetTempPath(), "mlnet-shapes-timestep-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            CopyFolder(ShapesVariantModels.Folder(ShapesVariant.Standard), folder);
            // The standard UNet with its timestep input retyped (behind a Cast to float): a valid graph ONNX Runtime runs.
            string unetPath = Path.Combine(folder, "unet", "model.onnx");
            var unet = ModelProto.Parser.ParseFrom(File.ReadAllBytes(unetPath));
            OnnxGraphRewriter.RetypeInput(unet.Graph, "timestep", type, scalar: false);
            File.WriteAllBytes(unetPath, Google.Protobuf.MessageExtensions.ToByteArray(unet));
            using (var session = new InferenceSession(unetPath))
                Assert.AreEqual(Enum.Parse<TensorElementType>(typeName), session.InputMetadata["timestep"].ElementDataType);

            var e = Assert.ThrowsExactly<ModelContractException>(() => StableDiffusionModel.Load(new MLContext(1), folder));
            foreach (string part in new[] { "unet", "'timestep'", typeName, "Float", "Float16", "Int64" })
                StringAssert.Contains(e.Message, part);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    private static InferenceSession Open(string folder, string component) => new(Path.Combine(folder, component, "model.onnx"));

    private static void AssertNode(NodeMetadata node, TensorElementType type, int rank)
    {
        Assert.AreEqual(type, node.ElementDataType);
        Assert.AreEqual(rank, node.Dimensions.Length, $"rank of a {type} node: [{string.Join(",", node.Dimensions)}]");
    }

    private static int ElementSize(DataType type) => type switch
    {
        DataType.Float or DataType.Int32 => 4,
        DataType.Float16 => 2,
        DataType.Int64 or DataType.Double => 8,
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, "Unexpected initializer type."),
    };

    private static string[] Hashes(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(folder, f).Replace('\\', '/') + " " + Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(f))))
            .Order(StringComparer.Ordinal)
            .ToArray();

    private static void CopyFolder(string from, string to)
    {
        foreach (string file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }
}
