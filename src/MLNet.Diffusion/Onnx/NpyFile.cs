using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Runtime.InteropServices;
using System.Text;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// A reader of NumPy's <c>.npy</c> format (numpy.lib.format, versions 1.0–3.0) for the one form the library needs: a
/// little-endian float32 array (<c>'descr': '&lt;f4'</c>) in C order. Every field is checked before it is trusted — the
/// magic, the version, the header length against the file, the header's keys, the shape against the bytes present and
/// a size limit — and an error names the file and the problem; nothing in the file is evaluated.
/// </summary>
internal static class NpyFile
{
    private static readonly byte[] s_magic = { 0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y' };

    /// <summary>The largest array read (values), far above any codebook (2^16 × 256).</summary>
    internal const long MaxValues = 1L << 26;

    /// <summary>Reads a float32 array; returns its values (C order) and shape.</summary>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not a C-order little-endian float32 .npy array (the message says why).</exception>
    public static (float[] Values, int[] Shape) ReadFloat32(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"'{path}' does not exist.", path);
        long length = new FileInfo(path).Length;
        if (length > 16 + 65536 + MaxValues * 4)
            throw new InvalidDataException($"'{path}' is {length} bytes, more than a .npy array of at most {MaxValues} float32 values can be.");
        return Parse(File.ReadAllBytes(path), path);
    }

    /// <summary>Parses the bytes of a .npy file; <paramref name="name"/> names it in errors.</summary>
    internal static (float[] Values, int[] Shape) Parse(ReadOnlySpan<byte> bytes, string name)
    {
        if (bytes.Length < 10 || !bytes.Slice(0, 6).SequenceEqual(s_magic))
            throw Bad(name, "it does not start with the .npy magic \\x93NUMPY");
        byte major = bytes[6];
        int headerLength, offset;
        switch (major)
        {
            case 1:
                headerLength = BinaryPrimitives.ReadUInt16LittleEndian(bytes.Slice(8, 2));
                offset = 10;
                break;
            case 2 or 3:
                if (bytes.Length < 12)
                    throw Bad(name, "the file ends inside the header length");
                uint h = BinaryPrimitives.ReadUInt32LittleEndian(bytes.Slice(8, 4));
                if (h > 65536)
                    throw Bad(name, $"the header claims {h} bytes (at most 65536 are read)");
                headerLength = (int)h;
                offset = 12;
                break;
            default:
                throw Bad(name, $"format version {major}.{bytes[7]} is not one of 1.0, 2.0, 3.0");
        }
        if (offset + headerLength > bytes.Length)
            throw Bad(name, $"the header claims {headerLength} bytes but the file has {bytes.Length - offset} after the preamble");
        var headerBytes = bytes.Slice(offset, headerLength);
        foreach (byte b in headerBytes)
        {
            if (b > 0x7E || b < 0x20 && b != (byte)'\n')
                throw Bad(name, "the header is not printable ASCII");
        }
        var header = ParseHeader(Encoding.ASCII.GetString(headerBytes), name);
        if (!header.TryGetValue("descr", out var descr) || descr is not string d)
            throw Bad(name, "the header has no 'descr' string");
        if (d != "<f4")
            throw Bad(name, $"dtype '{d}' is not '<f4' (little-endian float32)");
        if (!header.TryGetValue("fortran_order", out var fortran) || fortran is not bool f)
            throw Bad(name, "the header has no 'fortran_order' True/False");
        if (f)
            throw Bad(name, "the array is in Fortran order; expected C order (save it with np.ascontiguousarray)");
        if (!header.TryGetValue("shape", out var shapeValue) || shapeValue is not List<long> dims)
            throw Bad(name, "the header has no 'shape' tuple");
        long count = 1;
        var shape = new int[dims.Count];
        for (int i = 0; i < dims.Count; i++)
        {
            if (dims[i] < 0 || dims[i] > MaxValues)
                throw Bad(name, $"shape dimension {i} is {dims[i]}");
            count *= dims[i];
            if (count > MaxValues)
                throw Bad(name, $"the shape ({string.Join(", ", dims)}) holds more than {MaxValues} values");
            shape[i] = (int)dims[i];
        }
        var data = bytes.Slice(offset + headerLength);
        if (data.Length != count * 4)
            throw Bad(name, $"the shape ({string.Join(", ", dims)}) needs {count * 4} bytes of float32 data but the file has {data.Length}");
        var values = new float[count];
        if (BitConverter.IsLittleEndian)
        {
            MemoryMarshal.Cast<byte, float>(data).CopyTo(values);
        }
        else
        {
            for (int i = 0; i < values.Length; i++)
                values[i] = BinaryPrimitives.ReadSingleLittleEndian(data.Slice(4 * i, 4));
        }
        return (values, shape);
    }

    /// <summary>
    /// Parses the header, a Python dict literal of string keys whose values are strings, True/False or a tuple of
    /// integers (numpy.lib.format writes exactly these); anything else is refused.
    /// </summary>
    private static Dictionary<string, object> ParseHeader(string text, string name)
    {
        var result = new Dictionary<string, object>(StringComparer.Ordinal);
        int i = 0;
        void Skip()
        {
            while (i < text.Length && char.IsWhiteSpace(text[i]))
                i++;
        }
        void Expect(char c)
        {
            Skip();
            if (i >= text.Length || text[i] != c)
                throw Bad(name, $"the header '{text.TrimEnd()}' is not a dict literal (expected '{c}' at {i})");
            i++;
        }
        string ReadString()
        {
            Skip();
            if (i >= text.Length || text[i] is not ('\'' or '"'))
                throw Bad(name, $"the header '{text.TrimEnd()}' has no string at {i}");
            char quote = text[i++];
            int end = text.IndexOf(quote, i);
            if (end < 0)
                throw Bad(name, "the header has an unterminated string");
            string s = text.Substring(i, end - i);
            i = end + 1;
            return s;
        }
        Expect('{');
        while (true)
        {
            Skip();
            if (i < text.Length && text[i] == '}')
            {
                i++;
                break;
            }
            string key = ReadString();
            Expect(':');
            Skip();
            object value;
            if (i < text.Length && text[i] is '\'' or '"')
            {
                value = ReadString();
            }
            else if (string.CompareOrdinal(text, i, "True", 0, 4) == 0)
            {
                value = true;
                i += 4;
            }
            else if (string.CompareOrdinal(text, i, "False", 0, 5) == 0)
            {
                value = false;
                i += 5;
            }
            else if (i < text.Length && text[i] == '(')
            {
                i++;
                var dims = new List<long>();
                while (true)
                {
                    Skip();
                    if (i < text.Length && text[i] == ')')
                    {
                        i++;
                        break;
                    }
                    int start = i;
                    while (i < text.Length && char.IsAsciiDigit(text[i]))
                        i++;
                    if (i == start || i - start > 12 || !long.TryParse(text.AsSpan(start, i - start), NumberStyles.None, CultureInfo.InvariantCulture, out long dim))
                        throw Bad(name, $"the shape in '{text.TrimEnd()}' is not a tuple of integers");
                    dims.Add(dim);
                    if (dims.Count > 32)
                        throw Bad(name, "the shape has more than 32 dimensions");
                    Skip();
                    if (i < text.Length && text[i] == ',')
                        i++;
                }
                value = dims;
            }
            else
            {
                throw Bad(name, $"the header '{text.TrimEnd()}' has a value of an unsupported form for '{key}'");
            }
            if (!result.TryAdd(key, value))
                throw Bad(name, $"the header repeats the key '{key}'");
            Skip();
            if (i < text.Length && text[i] == ',')
                i++;
        }
        Skip();
        if (i != text.Length)
            throw Bad(name, "the header has text after its dict");
        return result;
    }

    private static InvalidDataException Bad(string name, string why) => new($"'{name}' is not a float32 .npy array: {why}.");
}
