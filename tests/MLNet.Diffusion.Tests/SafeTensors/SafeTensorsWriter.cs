using System;
using System.Collections.Generic;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;

namespace MLNet.Diffusion.Tests.SafeTensors;

/// <summary>
/// Writes small .safetensors files for tests, in the layout huggingface/safetensors writes (u64 little-endian
/// header length, JSON header padded with spaces to a multiple of 8, tensors in name order), and splits one back
/// into header text and data so tests can craft broken variants of a valid file.
/// </summary>
internal static class SafeTensorsWriter
{
    /// <summary>A tensor to write: dtype name, shape and its raw little-endian bytes.</summary>
    public sealed record Entry(string DType, long[] Shape, byte[] Data);

    public static Entry F32(long[] shape, params float[] values) => new("F32", shape, MemoryMarshal.AsBytes(values.AsSpan()).ToArray());

    public static Entry F16(long[] shape, params float[] values)
    {
        var half = new Half[values.Length];
        for (int i = 0; i < values.Length; i++)
            half[i] = (Half)values[i];
        return new("F16", shape, MemoryMarshal.AsBytes(half.AsSpan()).ToArray());
    }

    public static Entry BF16(long[] shape, params float[] values)
    {
        var bits = new ushort[values.Length];
        for (int i = 0; i < values.Length; i++)
            bits[i] = (ushort)(BitConverter.SingleToUInt32Bits(values[i]) >> 16); // test values are exact in bfloat16
        return new("BF16", shape, MemoryMarshal.AsBytes(bits.AsSpan()).ToArray());
    }

    public static byte[] Build(IReadOnlyDictionary<string, Entry> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var names = new List<string>(tensors.Keys);
        names.Sort(StringComparer.Ordinal);
        var header = new Dictionary<string, object>();
        if (metadata is not null)
            header["__metadata__"] = metadata;
        long offset = 0;
        var data = new MemoryStream();
        foreach (string name in names)
        {
            var entry = tensors[name];
            header[name] = new Dictionary<string, object> { ["dtype"] = entry.DType, ["shape"] = entry.Shape, ["data_offsets"] = new[] { offset, offset + entry.Data.Length } };
            data.Write(entry.Data);
            offset += entry.Data.Length;
        }
        return Assemble(JsonSerializer.Serialize(header), data.ToArray());
    }

    /// <summary>Header length, header (padded to a multiple of 8 as the reference writer pads) and data.</summary>
    public static byte[] Assemble(string headerJson, byte[] data)
    {
        byte[] json = Encoding.UTF8.GetBytes(headerJson);
        int padded = (json.Length + 7) / 8 * 8;
        var file = new byte[8 + padded + data.Length];
        BitConverter.TryWriteBytes(file.AsSpan(0, 8), (ulong)padded);
        json.CopyTo(file, 8);
        file.AsSpan(8 + json.Length, padded - json.Length).Fill((byte)' ');
        data.CopyTo(file, 8 + padded);
        return file;
    }

    /// <summary>The header text and the data section of a file's bytes.</summary>
    public static (string Header, byte[] Data) Split(byte[] file)
    {
        int length = (int)BitConverter.ToUInt64(file, 0);
        return (Encoding.UTF8.GetString(file, 8, length).TrimEnd(' '), file[(8 + length)..]);
    }
}
