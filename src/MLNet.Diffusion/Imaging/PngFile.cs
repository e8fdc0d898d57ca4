using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.Text;
using Microsoft.ML.Data;
using SkiaSharp;

namespace MLNet.Diffusion.Imaging;

/// <summary>
/// PNG files carrying text metadata (the generation parameters) in <c>iTXt</c> chunks (PNG specification §11.3.4,
/// UTF-8, so any prompt survives), placed right after <c>IHDR</c>. <see cref="ReadText(string)"/> reads them back, together with
/// any <c>tEXt</c> chunks other tools wrote. AUTOMATIC1111's <c>parameters</c> entry (<see cref="GenerationParameters"/>)
/// is written as PIL writes it for that tool: a <c>tEXt</c> chunk when the text is Latin-1, <c>iTXt</c> otherwise.
/// </summary>
public static class PngFile
{
    private static readonly byte[] s_signature = { 137, 80, 78, 71, 13, 10, 26, 10 };

    /// <summary>Encodes an image as PNG with the given text entries.</summary>
    /// <param name="image">An RGBA32 or BGRA32 image.</param>
    /// <param name="text">Keyword → text entries (keywords: 1–79 Latin-1 characters, no NUL).</param>
    /// <returns>The PNG bytes.</returns>
    public static byte[] Encode(MLImage image, IReadOnlyDictionary<string, string>? text = null)
    {
        ArgumentNullException.ThrowIfNull(image);
        var colorType = image.PixelFormat switch
        {
            MLPixelFormat.Rgba32 => SKColorType.Rgba8888,
            MLPixelFormat.Bgra32 => SKColorType.Bgra8888,
            _ => throw new ArgumentException($"Image pixel format {image.PixelFormat} is not supported; expected RGBA32 or BGRA32.", nameof(image)),
        };
        var info = new SKImageInfo(image.Width, image.Height, colorType, SKAlphaType.Unpremul);
        byte[] pixels = image.Pixels.ToArray();
        byte[] png;
        unsafe
        {
            fixed (byte* p = pixels)
            {
                using var pixmap = new SKPixmap(info, (IntPtr)p, info.RowBytes);
                using var data = pixmap.Encode(SKEncodedImageFormat.Png, 100)
                    ?? throw new InvalidOperationException("SkiaSharp could not encode the image as PNG.");
                png = data.ToArray();
            }
        }
        return text is null || text.Count == 0 ? png : InsertText(png, text);
    }

    /// <summary>Writes an image as a PNG file with the given text entries.</summary>
    /// <param name="image">The image.</param>
    /// <param name="path">The file to write (replaced if present).</param>
    /// <param name="text">Keyword → text entries.</param>
    public static void Save(MLImage image, string path, IReadOnlyDictionary<string, string>? text = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        File.WriteAllBytes(path, Encode(image, text));
    }

    /// <summary>
    /// Writes an image as a PNG file with AUTOMATIC1111's <c>parameters</c> entry (its infotext) besides the given text
    /// entries, so that its PNG Info tab, ComfyUI and image sites read the settings.
    /// </summary>
    /// <param name="image">The image.</param>
    /// <param name="path">The file to write (replaced if present).</param>
    /// <param name="parameters">The generation parameters.</param>
    /// <param name="text">Other keyword → text entries; must not hold <c>parameters</c>.</param>
    public static void Save(MLImage image, string path, GenerationParameters parameters, IReadOnlyDictionary<string, string>? text = null)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var all = new Dictionary<string, string>(StringComparer.Ordinal);
        if (text is not null)
        {
            foreach (var kv in text)
                all.Add(kv.Key, kv.Value);
        }
        if (!all.TryAdd(GenerationParameters.PngKeyword, parameters.ToInfotext()))
            throw new ArgumentException($"The text entries already hold '{GenerationParameters.PngKeyword}'; pass the generation parameters once.", nameof(text));
        Save(image, path, all);
    }

    /// <summary>Reads AUTOMATIC1111's <c>parameters</c> entry of a PNG file.</summary>
    /// <param name="path">The PNG file.</param>
    /// <returns>The parsed parameters, or null when the file has no such entry.</returns>
    /// <exception cref="InvalidDataException">The file is not a PNG.</exception>
    public static GenerationParameters? ReadParameters(string path)
        => ReadText(path).TryGetValue(GenerationParameters.PngKeyword, out var infotext) ? GenerationParameters.Parse(infotext) : null;

    /// <summary>Reads the text entries (iTXt and tEXt chunks) of a PNG file.</summary>
    /// <param name="path">The PNG file.</param>
    /// <returns>Keyword → text; later chunks win on duplicate keywords.</returns>
    /// <exception cref="InvalidDataException">The file is not a PNG.</exception>
    public static IReadOnlyDictionary<string, string> ReadText(string path) => ReadText(File.ReadAllBytes(path));

    /// <summary>Reads the text entries (iTXt and tEXt chunks) of PNG bytes.</summary>
    /// <param name="png">The PNG bytes.</param>
    public static IReadOnlyDictionary<string, string> ReadText(ReadOnlySpan<byte> png)
    {
        if (png.Length < 8 || !png.Slice(0, 8).SequenceEqual(s_signature))
            throw new InvalidDataException("Not a PNG file (bad signature).");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        int pos = 8;
        while (pos + 12 <= png.Length)
        {
            int length = BinaryPrimitives.ReadInt32BigEndian(png.Slice(pos));
            if (length < 0 || pos + 12 + length > png.Length)
                throw new InvalidDataException($"PNG chunk at offset {pos} has an invalid length {length}.");
            var type = Encoding.ASCII.GetString(png.Slice(pos + 4, 4));
            var data = png.Slice(pos + 8, length);
            if (type == "tEXt")
            {
                int z = data.IndexOf((byte)0);
                if (z > 0)
                    result[Encoding.Latin1.GetString(data.Slice(0, z))] = Encoding.Latin1.GetString(data.Slice(z + 1));
            }
            else if (type == "iTXt")
            {
                ReadInternational(data, result);
            }
            else if (type == "IEND")
            {
                break;
            }
            pos += 12 + length;
        }
        return result;
    }

    private static void ReadInternational(ReadOnlySpan<byte> data, Dictionary<string, string> result)
    {
        // keyword \0 compression-flag compression-method language \0 translated-keyword \0 text
        int z = data.IndexOf((byte)0);
        if (z <= 0 || z + 3 > data.Length)
            return;
        string keyword = Encoding.Latin1.GetString(data.Slice(0, z));
        bool compressed = data[z + 1] != 0;
        var rest = data.Slice(z + 3);
        int lang = rest.IndexOf((byte)0);
        if (lang < 0)
            return;
        rest = rest.Slice(lang + 1);
        int translated = rest.IndexOf((byte)0);
        if (translated < 0)
            return;
        rest = rest.Slice(translated + 1);
        if (compressed)
        {
            using var input = new MemoryStream(rest.ToArray());
            using var z2 = new System.IO.Compression.ZLibStream(input, System.IO.Compression.CompressionMode.Decompress);
            using var output = new MemoryStream();
            z2.CopyTo(output);
            result[keyword] = Encoding.UTF8.GetString(output.ToArray());
        }
        else
        {
            result[keyword] = Encoding.UTF8.GetString(rest);
        }
    }

    private static byte[] InsertText(byte[] png, IReadOnlyDictionary<string, string> text)
    {
        // IHDR is always the first chunk: 8-byte signature + 4 length + 4 type + 13 data + 4 CRC.
        const int afterHeader = 8 + 25;
        using var output = new MemoryStream(png.Length + 256);
        output.Write(png, 0, afterHeader);
        foreach (var kv in text)
        {
            if (kv.Key.Length is < 1 or > 79 || kv.Key.Contains('\0') || kv.Key.Trim() != kv.Key)
                throw new ArgumentException($"PNG text keyword '{kv.Key}' must be 1–79 characters without NUL or surrounding spaces.", nameof(text));
            var chunk = new List<byte>();
            chunk.AddRange(Encoding.Latin1.GetBytes(kv.Key));
            string value = kv.Value ?? string.Empty;
            if (kv.Key == GenerationParameters.PngKeyword && IsLatin1(value))
            {
                // PIL's PngInfo.add_text, as AUTOMATIC1111 calls it: tEXt when the text encodes as Latin-1.
                chunk.Add(0);
                chunk.AddRange(Encoding.Latin1.GetBytes(value));
                WriteChunk(output, "tEXt", chunk.ToArray());
                continue;
            }
            chunk.AddRange(new byte[] { 0, 0, 0, 0, 0 }); // NUL, no compression, method 0, empty language NUL, empty translation NUL
            chunk.AddRange(Encoding.UTF8.GetBytes(value));
            WriteChunk(output, "iTXt", chunk.ToArray());
        }
        output.Write(png, afterHeader, png.Length - afterHeader);
        return output.ToArray();
    }

    private static bool IsLatin1(string value)
    {
        foreach (char c in value)
        {
            if (c > 0xFF)
                return false;
        }
        return true;
    }

    private static void WriteChunk(Stream output, string type, byte[] data)
    {
        Span<byte> header = stackalloc byte[8];
        BinaryPrimitives.WriteInt32BigEndian(header, data.Length);
        Encoding.ASCII.GetBytes(type, header.Slice(4));
        output.Write(header);
        output.Write(data);
        uint crc = Crc32.Update(Crc32.Update(0xFFFFFFFFu, header.Slice(4, 4)), data) ^ 0xFFFFFFFFu;
        Span<byte> crcBytes = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32BigEndian(crcBytes, crc);
        output.Write(crcBytes);
    }

    /// <summary>CRC-32 (ISO 3309, polynomial 0xEDB88320) as PNG specifies it for chunk checksums (Annex D).</summary>
    private static class Crc32
    {
        private static readonly uint[] s_table = CreateTable();

        private static uint[] CreateTable()
        {
            var table = new uint[256];
            for (uint n = 0; n < 256; n++)
            {
                uint c = n;
                for (int k = 0; k < 8; k++)
                    c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
                table[n] = c;
            }
            return table;
        }

        public static uint Update(uint crc, ReadOnlySpan<byte> data)
        {
            foreach (byte b in data)
                crc = s_table[(crc ^ b) & 0xFF] ^ (crc >> 8);
            return crc;
        }
    }
}
