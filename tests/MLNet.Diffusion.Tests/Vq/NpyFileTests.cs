using System;
using System.IO;
using System.Linq;
using System.Text;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>The .npy reader: the format of numpy.lib.format (version 1.0 header: magic, version, uint16 length, dict) and hostile files.</summary>
[TestClass]
public sealed class NpyFileTests
{
    /// <summary>A .npy file as numpy.lib.format.write_array writes it (header padded with spaces to a multiple of 64, ending in a newline).</summary>
    private static byte[] Npy(string header, float[] values, byte major = 1)
    {
        int preamble = major == 1 ? 10 : 12;
        string padded = header;
        while ((preamble + padded.Length + 1) % 64 != 0)
            padded += " ";
        padded += "\n";
        var bytes = new System.Collections.Generic.List<byte> { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y', major, 0 };
        if (major == 1)
            bytes.AddRange(BitConverter.GetBytes((ushort)padded.Length));
        else
            bytes.AddRange(BitConverter.GetBytes((uint)padded.Length));
        bytes.AddRange(Encoding.ASCII.GetBytes(padded));
        foreach (float v in values)
            bytes.AddRange(BitConverter.GetBytes(v));
        return bytes.ToArray();
    }

    [TestMethod]
    public void ReadsAFloat32CArray()
    {
        var (values, shape) = NpyFile.Parse(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", new[] { 1f, 2, 3, 4, 5, 6 }), "a.npy");
        CollectionAssert.AreEqual(new[] { 2, 3 }, shape);
        CollectionAssert.AreEqual(new[] { 1f, 2, 3, 4, 5, 6 }, values);
        var (v2, s2) = NpyFile.Parse(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", new[] { 1f, 2, 3, 4 }, major: 2), "b.npy");
        CollectionAssert.AreEqual(new[] { 4 }, s2);
        Assert.AreEqual(4, v2.Length);
    }

    [TestMethod]
    public void ReadsTheSharedCodebook()
    {
        string dir = UnconditionalModels.RequireLdmVq();
        var (values, shape) = NpyFile.ReadFloat32(Path.Combine(dir, "vqvae_decoder", "codebook.npy"));
        CollectionAssert.AreEqual(new[] { 64, 3 }, shape); // the README: float32 [64, 3]
        Assert.IsTrue(values.All(float.IsFinite));
    }

    [TestMethod]
    public void RefusesHostileFiles()
    {
        var good = Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", new float[6]);
        void Refused(byte[] bytes, string expected)
        {
            var e = Assert.ThrowsExactly<InvalidDataException>(() => NpyFile.Parse(bytes, "bad.npy"));
            StringAssert.Contains(e.Message, "'bad.npy'");
            StringAssert.Contains(e.Message, expected);
        }
        Refused(Array.Empty<byte>(), "magic");
        Refused(Encoding.ASCII.GetBytes("PK\x03\x04 not a npy file"), "magic");
        var version = (byte[])good.Clone();
        version[6] = 9;
        Refused(version, "version 9.0");
        var longHeader = (byte[])good.Clone();
        longHeader[8] = 0xFF;
        longHeader[9] = 0xFF;
        Refused(longHeader, "header claims 65535 bytes");
        Refused(good.AsSpan(0, good.Length - 4).ToArray(), "needs 24 bytes");
        Refused(Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }", new float[12]), "'<f8'");
        Refused(Npy("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", new float[6]), "'>f4'");
        Refused(Npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", new float[6]), "Fortran order");
        Refused(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 3), }", new float[6]), "needs 36 bytes");
        Refused(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }", new float[6]), "more than");
        Refused(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1, 3), }", new float[6]), "not a tuple of integers");
        Refused(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': __import__('os'), }", new float[6]), "unsupported form");
        Refused(Npy("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", new float[6]), "repeats the key 'descr'");
        Refused(Npy("{'fortran_order': False, 'shape': (2, 3), }", new float[6]), "no 'descr'");
    }
}
