using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using MLNet.Diffusion.SafeTensors;
using MLNet.Diffusion.Tests.TestSupport;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using static MLNet.Diffusion.Tests.SafeTensors.SafeTensorsWriter;

namespace MLNet.Diffusion.Tests.SafeTensors;

[TestClass]
public sealed class SafeTensorsFileTests
{
    private static readonly Dictionary<string, Entry> s_tensors = new()
    {
        ["a"] = F32([2, 3], 1f, -2f, 3.5f, 0f, 1e-8f, -7.25f),
        ["b"] = F16([4], 0.5f, -1f, 65504f, 6.1035156e-05f),
        ["c"] = BF16([2], 1.5f, -3f),
        ["d"] = F32([], 2f),
    };

    private static readonly Dictionary<string, string> s_metadata = new() { ["format"] = "pt", ["ss_network_dim"] = "4" };

    private static string Write(byte[] bytes, string name = "crafted.safetensors")
    {
        string path = PersistenceRoundTrip.TempFile(name);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    private static byte[] Valid() => Build(s_tensors, s_metadata);

    /// <summary>Opens <paramref name="bytes"/>, reading every tensor; returns the exception, if any.</summary>
    private static Exception? OpenAndReadAll(byte[] bytes, string name = "crafted.safetensors")
    {
        string path = Write(bytes, name);
        try
        {
            using var file = SafeTensorsFile.Open(path);
            foreach (string tensor in file.Tensors.Keys)
                file.ReadFloat32(tensor);
            return null;
        }
        catch (Exception e)
        {
            return e;
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static void AssertRefused(byte[] bytes, params string[] mentions)
    {
        var error = OpenAndReadAll(bytes, "hostile.safetensors");
        Assert.IsInstanceOfType<InvalidDataException>(error);
        StringAssert.Contains(error.Message, "hostile.safetensors");
        foreach (string mention in mentions)
            StringAssert.Contains(error.Message, mention);
    }

    private static byte[] WithHeader(Func<string, string> edit)
    {
        var (header, data) = Split(Valid());
        return Assemble(edit(header), data);
    }

    [TestMethod]
    public void ReadsTheTensorsAndMetadataOfTheKohyaLoraFile()
    {
        string folder = Path.Combine(SharedModels.RequireTinySd(), "..", "tiny-sd-lora");
        using var file = SafeTensorsFile.Open(Path.Combine(folder, "tiny_lora_kohya.safetensors"));
        Assert.AreEqual(216, file.Tensors.Count);
        Assert.AreEqual("4", file.Metadata["ss_network_dim"]);
        const string down = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight";
        CollectionAssert.AreEqual(new long[] { 4, 64 }, file.Tensors[down].Shape);
        Assert.AreEqual("F32", file.Tensors[down].DType);
        float[] values = file.ReadFloat32(down);
        // First values read with numpy from the same bytes (np.frombuffer(..., np.float32)).
        CollectionAssert.AreEqual(new[] { 0.3264524042606354f, -0.2605191767215729f, 0.16296730935573578f }, values[..3]);
    }

    [TestMethod]
    public void HashesTheDataSectionAsA1111sAddNetHash()
    {
        // hashlib.sha256(bytes[8 + header_length:]).hexdigest() of the shared files (A1111 addnet_hash_safetensors).
        string folder = Path.Combine(SharedModels.RequireTinySd(), "..", "tiny-sd-lora");
        using (var kohya = SafeTensorsFile.Open(Path.Combine(folder, "tiny_lora_kohya.safetensors")))
            Assert.AreEqual("0be1c2e69d685d368c26d3a2caa01745d41638efea849a080cf23d77159ab5b5", kohya.ComputeDataSha256());
        using var locon = SafeTensorsFile.Open(Path.Combine(folder, "tiny_locon_kohya_fp16.safetensors"));
        Assert.AreEqual("bf29b9ffa78442b5c7e1961c8639c2690c7d509dbd90c0121c920586dc38f26e", locon.ComputeDataSha256());
    }

    [TestMethod]
    public void WidensFloat16TensorsOfTheLoConFileExactly()
    {
        string folder = Path.Combine(SharedModels.RequireTinySd(), "..", "tiny-sd-lora");
        using var file = SafeTensorsFile.Open(Path.Combine(folder, "tiny_locon_kohya_fp16.safetensors"));
        Assert.AreEqual(351, file.Tensors.Count);
        const string up = "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight";
        CollectionAssert.AreEqual(new long[] { 32, 4, 1, 1 }, file.Tensors[up].Shape);
        // numpy: np.frombuffer(..., np.float16).astype(np.float32)[:3]
        CollectionAssert.AreEqual(new[] { -0.07000732421875f, 0.1822509765625f, -0.058502197265625f }, file.ReadFloat32(up)[..3]);
        var alpha = file.Tensors["lora_unet_down_blocks_0_resnets_0_conv1.alpha"];
        Assert.AreEqual(0, alpha.Shape.Length);
        Assert.AreEqual(2f, file.ReadFloat32(alpha.Name)[0]);
    }

    [TestMethod]
    public void ReadsFloat32Float16AndBFloat16AsFloat32()
    {
        string path = Write(Valid());
        using var file = SafeTensorsFile.Open(path);
        CollectionAssert.AreEqual(new[] { 1f, -2f, 3.5f, 0f, 1e-8f, -7.25f }, file.ReadFloat32("a"));
        CollectionAssert.AreEqual(new[] { 0.5f, -1f, 65504f, 6.1035156e-05f }, file.ReadFloat32("b"));
        CollectionAssert.AreEqual(new[] { 1.5f, -3f }, file.ReadFloat32("c"));
        CollectionAssert.AreEqual(new[] { 2f }, file.ReadFloat32("d"));
        Assert.AreEqual("pt", file.Metadata["format"]);
        Assert.AreEqual(24, file.GetBytes("a").Length);
        file.Dispose();
        Assert.ThrowsExactly<ObjectDisposedException>(() => file.ReadFloat32("a"));
        File.Delete(path);
    }

    [TestMethod]
    public void RefusesPickleCheckpointsByExtensionBeforeReadingThem()
    {
        foreach (string extension in new[] { ".ckpt", ".pt", ".pth", ".bin" })
        {
            var error = Assert.ThrowsExactly<NotSupportedException>(() => SafeTensorsFile.Open("/nonexistent/model" + extension));
            StringAssert.Contains(error.Message, "model" + extension);
            StringAssert.Contains(error.Message, "execute arbitrary code");
        }
    }

    [TestMethod]
    public void RefusesEveryTruncationOfAValidFile()
    {
        byte[] valid = Valid();
        for (int length = 0; length < valid.Length; length++)
        {
            var error = OpenAndReadAll(valid[..length], "hostile.safetensors");
            Assert.IsInstanceOfType<InvalidDataException>(error, $"truncated to {length} bytes");
            StringAssert.Contains(error.Message, "hostile.safetensors");
        }
    }

    [TestMethod]
    public void RefusesHeaderLengthsBeyondTheFileOrTheLimit()
    {
        byte[] beyond = Valid();
        BitConverter.TryWriteBytes(beyond.AsSpan(0, 8), (ulong)beyond.Length);
        AssertRefused(beyond, "runs past the end of the file");
        byte[] huge = Valid();
        BitConverter.TryWriteBytes(huge.AsSpan(0, 8), ulong.MaxValue);
        AssertRefused(huge, "exceeds the 100000000-byte limit");
        BitConverter.TryWriteBytes(huge.AsSpan(0, 8), 100_000_001UL);
        AssertRefused(huge, "exceeds the 100000000-byte limit");
    }

    [TestMethod]
    public void FlippedHeaderBytesEitherStillParseOrAreRefusedCleanly()
    {
        byte[] valid = Valid();
        int headerEnd = 8 + (int)BitConverter.ToUInt64(valid, 0);
        int refused = 0;
        for (int i = 0; i < headerEnd; i++)
        {
            foreach (byte mask in new byte[] { 0x01, 0x20, 0xFF })
            {
                byte[] bytes = (byte[])valid.Clone();
                bytes[i] ^= mask;
                var error = OpenAndReadAll(bytes, "hostile.safetensors");
                if (error is null)
                    continue;
                refused++;
                Assert.IsInstanceOfType<InvalidDataException>(error, $"byte {i} ^ 0x{mask:X2}: {error}");
                StringAssert.Contains(error.Message, "hostile.safetensors");
            }
        }
        Assert.IsTrue(refused > headerEnd, $"only {refused} of {3 * headerEnd} flips were refused");
    }

    [TestMethod]
    public void RefusesSwappedReversedAndOverlappingOffsets()
    {
        // a is [0, 24), b [24, 32): swapping them leaves each tensor's shape at odds with its byte count.
        AssertRefused(WithHeader(h => h.Replace("[0,24]", "[X]").Replace("[24,32]", "[0,24]").Replace("[X]", "[24,32]")), "tensor 'a'", "span 8 bytes");
        AssertRefused(WithHeader(h => h.Replace("[0,24]", "[24,0]")), "tensor 'a'", "run backwards");
        // c claims b's bytes: same size, so only the overlap check sees it.
        AssertRefused(WithHeader(h => h.Replace("[32,36]", "[28,32]")), "overlapping", "'b'", "'c'");
        AssertRefused(WithHeader(h => h.Replace("[36,40]", "[36,44]")), "tensor 'd'", "beyond the 40-byte data section");
    }

    [TestMethod]
    public void RefusesByteCountsThatDisagreeWithShapeTimesDType()
    {
        AssertRefused(WithHeader(h => h.Replace("\"shape\":[2,3]", "\"shape\":[3,3]")), "tensor 'a'", "[3, 3]", "36 bytes", "span 24 bytes");
        AssertRefused(WithHeader(h => h.Replace("\"dtype\":\"F16\"", "\"dtype\":\"F32\"")), "tensor 'b'", "16 bytes");
        AssertRefused(WithHeader(h => h.Replace("\"shape\":[2,3]", "\"shape\":[4611686018427387904,4611686018427387904]")), "tensor 'a'", "more elements than");
        AssertRefused(WithHeader(h => h.Replace("\"shape\":[2,3]", "\"shape\":[-2,-3]")), "tensor 'a'", "not a non-negative integer");
    }

    [TestMethod]
    public void RefusesUnknownDTypesAndReadsOnlyFloatOnes()
    {
        AssertRefused(WithHeader(h => h.Replace("\"dtype\":\"F16\"", "\"dtype\":\"Q16\"")), "tensor 'b'", "unknown dtype 'Q16'");
        AssertRefused(WithHeader(h => h.Replace("\"dtype\":\"F16\"", "\"dtype\":\"I16\"")), "Tensor 'b'", "dtype I16", "only F32, F16 and BF16");
    }

    [TestMethod]
    public void RefusesNonFiniteWeightsNamingTheTensor()
    {
        var tensors = new Dictionary<string, Entry>(s_tensors) { ["a"] = F32([2, 3], 1f, 2f, float.NaN, 0f, 0f, 0f) };
        AssertRefused(Build(tensors), "Tensor 'a'", "non-finite", "element 2");
        tensors["a"] = s_tensors["a"];
        tensors["b"] = F16([4], 0f, float.PositiveInfinity, 0f, 0f);
        AssertRefused(Build(tensors), "Tensor 'b'", "element 1");
        tensors["b"] = s_tensors["b"];
        tensors["c"] = new Entry("BF16", [2], [0x00, 0x00, 0xC0, 0x7F]); // bfloat16 NaN 0x7FC0
        AssertRefused(Build(tensors), "Tensor 'c'", "element 1");
    }

    [TestMethod]
    public void RefusesMalformedJsonHeaders()
    {
        AssertRefused(Assemble("{\"a\": {\"dtype\": \"F32\", ", new byte[8]), "not valid JSON");
        AssertRefused(Assemble("[1, 2]", []), "not a JSON object");
        AssertRefused(WithHeader(h => h.Replace("\"ss_network_dim\":\"4\"", "\"ss_network_dim\":4")), "__metadata__ entry 'ss_network_dim' is not a string");
        AssertRefused(WithHeader(h => h.Replace("\"b\":", "\"a\":")), "tensor 'a'", "listed twice");
        AssertRefused(WithHeader(h => h.Replace("\"dtype\":\"BF16\",", "")), "tensor 'c'", "lacks one of");
        AssertRefused(WithHeader(h => h.Replace("\"dtype\":\"BF16\",", "\"dtype\":\"BF16\",\"extra\":1,")), "tensor 'c'", "unknown field 'extra'");
        AssertRefused(WithHeader(h => h.Replace("[0,24]", "[0,24,48]")), "tensor 'a'", "data_offsets");
        AssertRefused(WithHeader(h => "{\"x\":" + new string('[', 64) + new string(']', 64) + "," + h[1..]), "not valid JSON");
    }

    [TestMethod]
    public void RefusesFilesTooShortForAHeader()
    {
        AssertRefused([], "0 bytes long");
        AssertRefused(new byte[7], "7 bytes long");
        AssertRefused(new byte[8], "cannot hold a JSON object");
        // A torch.save zip renamed to .safetensors: its first 8 bytes read as an absurd header length.
        AssertRefused(Encoding.ASCII.GetBytes("PK\u0003\u0004\u0014\u0000\u0000\u0000rest-of-zip"), "exceeds the 100000000-byte limit");
    }
}
