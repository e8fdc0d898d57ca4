using System;
using System.Buffers.Binary;
using System.Collections.Generic;
using System.IO;
using System.IO.MemoryMappedFiles;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Unicode;

namespace MLNet.Diffusion.SafeTensors;

/// <summary>
/// A <c>.safetensors</c> file (huggingface/safetensors format: a little-endian u64 header length N, N bytes of UTF-8
/// JSON mapping tensor names to <c>{"dtype", "shape", "data_offsets": [begin, end)}</c> plus an optional
/// <c>__metadata__</c> object of strings, then the raw little-endian, row-major tensor bytes, offsets relative to the
/// first byte after the header), memory-mapped: opening parses and checks the header only; a tensor's bytes are read
/// from the mapping when asked for, so a large file is never copied whole.
/// </summary>
/// <remarks>
/// LoRA and embedding files come from sharing sites, so the file is treated as hostile. Opening refuses, with one
/// <see cref="InvalidDataException"/> naming the file (and the tensor where there is one): a header length beyond the
/// file or over <see cref="MaxHeaderBytes"/>, JSON that does not parse or has the wrong shape, duplicate names,
/// unknown dtypes, negative or overflowing shapes, data offsets outside the data section, reversed or overlapping,
/// and byte counts that disagree with shape × dtype. Reading refuses dtypes other than F32/F16/BF16 and non-finite
/// values. Every allocation is bounded by the file's size. Pickle-based checkpoints (<c>.ckpt</c>, <c>.pt</c>,
/// <c>.pth</c>, <c>.bin</c>) are refused before they are read: unpickling can execute code.
/// </remarks>
internal sealed unsafe class SafeTensorsFile : IDisposable
{
    /// <summary>The largest header accepted (the reference implementation's limit, <c>N_LEN</c> = 100 000 000).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    private readonly MemoryMappedFile _file;
    private readonly MemoryMappedViewAccessor _view;
    private readonly byte* _data;
    private readonly long _dataLength;
    private readonly Dictionary<string, SafeTensorInfo> _tensors;
    private bool _disposed;

    private SafeTensorsFile(string path, MemoryMappedFile file, MemoryMappedViewAccessor view, byte* data, long dataLength,
        Dictionary<string, SafeTensorInfo> tensors, IReadOnlyDictionary<string, string> metadata)
    {
        Path = path;
        _file = file;
        _view = view;
        _data = data;
        _dataLength = dataLength;
        _tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file's path, as given to <see cref="Open"/>.</summary>
    public string Path { get; }

    /// <summary>The file name used in error messages.</summary>
    public string FileName => System.IO.Path.GetFileName(Path);

    /// <summary>The <c>__metadata__</c> strings (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>The tensors, by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors => _tensors;

    /// <summary>
    /// Opens and checks <paramref name="path"/>. Throws <see cref="NotSupportedException"/> for pickle checkpoints,
    /// <see cref="InvalidDataException"/> for a malformed file, <see cref="FileNotFoundException"/> when it is absent.
    /// </summary>
    public static SafeTensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("Reading .safetensors files needs a little-endian machine.");
        string name = System.IO.Path.GetFileName(path);
        RefusePickle(path, name);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long length = stream.Length;
        if (length < 8)
            throw Bad(name, $"it is {length} bytes long, shorter than the 8-byte header length");
        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > MaxHeaderBytes)
            throw Bad(name, $"its header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit");
        if ((long)headerLength > length - 8)
            throw Bad(name, $"its header length {headerLength} runs past the end of the file ({length} bytes)");
        if (headerLength < 2)
            throw Bad(name, $"its header length {headerLength} cannot hold a JSON object");
        var header = new byte[(int)headerLength];
        stream.ReadExactly(header);
        long dataStart = 8 + (long)headerLength;
        long dataLength = length - dataStart;
        var (tensors, metadata) = ParseHeader(name, header, dataLength);

        var file = MemoryMappedFile.CreateFromFile(stream, null, 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: true);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = file.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointer += view.PointerOffset;
            return new SafeTensorsFile(path, file, view, pointer + dataStart, dataLength, tensors, metadata);
        }
        catch
        {
            view?.Dispose();
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// The raw little-endian bytes of tensor <paramref name="name"/>, straight from the mapping (valid until
    /// <see cref="Dispose"/>). Throws when the tensor is larger than a span can address.
    /// </summary>
    public ReadOnlySpan<byte> GetBytes(string name)
    {
        var info = Get(name);
        if (info.ByteLength > int.MaxValue)
            throw new InvalidDataException($"Tensor '{name}' of '{FileName}' is {info.ByteLength} bytes, more than one read can address.");
        return new ReadOnlySpan<byte>(_data + info.Begin, (int)info.ByteLength);
    }

    /// <summary>
    /// Tensor <paramref name="name"/> as float32 (F32 copied, F16 and BF16 widened exactly), checked finite.
    /// Throws <see cref="InvalidDataException"/> naming the file and tensor for any other dtype or a NaN/infinity.
    /// </summary>
    public float[] ReadFloat32(string name)
    {
        var info = Get(name);
        if (info.ElementCount > Array.MaxLength)
            throw new InvalidDataException($"Tensor '{name}' of '{FileName}' has {info.ElementCount} elements, more than one array can hold.");
        var values = new float[info.ElementCount];
        ReadFloat32(name, values);
        return values;
    }

    /// <summary>Writes tensor <paramref name="name"/> as float32 into <paramref name="destination"/> (its exact length).</summary>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var info = Get(name);
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"Tensor '{name}' of '{FileName}' has {info.ElementCount} elements; the destination holds {destination.Length}.", nameof(destination));
        ReadOnlySpan<byte> bytes = GetBytes(name);
        switch (info.DType)
        {
            case "F32":
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(destination);
                break;
            case "F16":
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(bytes), destination);
                break;
            case "BF16":
                // bfloat16 is the upper half of a float32: widening is exact (a shift).
                ReadOnlySpan<ushort> bf16 = MemoryMarshal.Cast<byte, ushort>(bytes);
                Span<uint> bits = MemoryMarshal.Cast<float, uint>(destination);
                for (int i = 0; i < bf16.Length; i++)
                    bits[i] = (uint)bf16[i] << 16;
                break;
            default:
                throw new InvalidDataException($"Tensor '{name}' of '{FileName}' has dtype {info.DType}; only F32, F16 and BF16 tensors can be read as weights.");
        }
        // A finite sum proves every element finite (NaN or ±∞ would propagate); only a non-finite sum, which large
        // finite values can also give, needs the element-wise scan.
        if (!float.IsFinite(TensorPrimitives.Sum(destination)) && !AllFinite(destination, out int index))
            throw new InvalidDataException($"Tensor '{name}' of '{FileName}' holds a non-finite value ({destination[index]}) at element {index}.");
    }

    /// <summary>
    /// The SHA-256 of the data section (the bytes after the header), lower-case hex: the "AddNet" hash that A1111
    /// records for .safetensors LoRAs in PNG parameters (<c>Lora hashes: "name: &lt;first 12 hex digits&gt;"</c>;
    /// stable-diffusion-webui <c>modules/hashes.py</c> <c>addnet_hash_safetensors</c>), unchanged by metadata edits.
    /// </summary>
    public string ComputeDataSha256()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        const int chunk = 1 << 20;
        for (long offset = 0; offset < _dataLength; offset += chunk)
            sha.AppendData(new ReadOnlySpan<byte>(_data + offset, (int)Math.Min(chunk, _dataLength - offset)));
        return Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
    }

    /// <summary>Releases the mapping.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        _disposed = true;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _file.Dispose();
    }

    private SafeTensorInfo Get(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!_tensors.TryGetValue(name, out var info))
            throw new KeyNotFoundException($"'{FileName}' has no tensor '{name}'.");
        return info;
    }

    private static bool AllFinite(ReadOnlySpan<float> values, out int index)
    {
        for (index = 0; index < values.Length; index++)
        {
            if (!float.IsFinite(values[index]))
                return false;
        }
        return true;
    }

    private static void RefusePickle(string path, string name)
    {
        string extension = System.IO.Path.GetExtension(path).ToLowerInvariant();
        if (extension is ".ckpt" or ".pt" or ".pth" or ".bin" or ".pkl" or ".pickle")
            throw new NotSupportedException($"'{name}' is a PyTorch pickle checkpoint ({extension}); loading one can execute arbitrary code, "
                + "so only .safetensors files are read. Convert it to .safetensors with a tool you trust.");
    }

    private static (Dictionary<string, SafeTensorInfo>, IReadOnlyDictionary<string, string>) ParseHeader(string file, byte[] header, long dataLength)
    {
        // A torch.save zip (PK\x03\x04) or a raw pickle (0x80 protocol byte) renamed to .safetensors reaches here as
        // a header length that is either absurd (caught above) or JSON that does not start with '{'.
        // The reader accepts invalid UTF-8 inside strings and fails only when a name is decoded; check it all first.
        if (!Utf8.IsValid(header))
            throw Bad(file, "its header is not valid UTF-8");
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(header, new JsonDocumentOptions { MaxDepth = 16 });
        }
        catch (JsonException e)
        {
            throw Bad(file, $"its header is not valid JSON ({e.Message})", e);
        }
        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
                throw Bad(file, "its header is not a JSON object");
            var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            bool sawMetadata = false;
            foreach (var property in document.RootElement.EnumerateObject())
            {
                if (property.Name == "__metadata__")
                {
                    if (sawMetadata)
                        throw Bad(file, "its header has two __metadata__ entries");
                    sawMetadata = true;
                    ReadMetadata(file, property.Value, metadata);
                    continue;
                }
                if (tensors.ContainsKey(property.Name))
                    throw BadTensor(file, property.Name, "is listed twice in the header");
                tensors.Add(property.Name, ReadTensor(file, property.Name, property.Value, dataLength));
            }
            CheckNoOverlap(file, tensors);
            return (tensors, metadata);
        }
    }

    private static void ReadMetadata(string file, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw Bad(file, "its __metadata__ is not a JSON object");
        foreach (var entry in value.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw Bad(file, $"its __metadata__ entry '{entry.Name}' is not a string");
            if (!metadata.TryAdd(entry.Name, entry.Value.GetString()!))
                throw Bad(file, $"its __metadata__ entry '{entry.Name}' appears twice");
        }
    }

    private static SafeTensorInfo ReadTensor(string file, string name, JsonElement value, long dataLength)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw BadTensor(file, name, "is not described by a JSON object");
        string? dtype = null;
        long[]? shape = null;
        long begin = -1, end = -1;
        foreach (var field in value.EnumerateObject())
        {
            switch (field.Name)
            {
                case "dtype":
                    if (field.Value.ValueKind != JsonValueKind.String)
                        throw BadTensor(file, name, "has a dtype that is not a string");
                    dtype = field.Value.GetString();
                    break;
                case "shape":
                    shape = ReadLongs(file, name, "shape", field.Value, maxCount: 16);
                    break;
                case "data_offsets":
                    var offsets = ReadLongs(file, name, "data_offsets", field.Value, maxCount: 2);
                    if (offsets.Length != 2)
                        throw BadTensor(file, name, $"has {offsets.Length} data_offsets instead of [begin, end]");
                    (begin, end) = (offsets[0], offsets[1]);
                    break;
                default:
                    throw BadTensor(file, name, $"has an unknown field '{field.Name}'");
            }
        }
        if (dtype is null || shape is null || begin < 0)
            throw BadTensor(file, name, "lacks one of dtype, shape and data_offsets");
        int elementSize = ElementSize(dtype);
        if (elementSize == 0)
            throw BadTensor(file, name, $"has an unknown dtype '{dtype}'");
        if (begin > end)
            throw BadTensor(file, name, $"has data_offsets [{begin}, {end}) that run backwards");
        if (end > dataLength)
            throw BadTensor(file, name, $"has data_offsets [{begin}, {end}) beyond the {dataLength}-byte data section");
        long count = 1;
        foreach (long dim in shape)
        {
            // Products are bounded by the data section (checked), so no element count can overflow silently.
            if (dim > dataLength || (count = count * dim) > dataLength)
                throw BadTensor(file, name, $"has shape [{string.Join(", ", shape)}], more elements than the {dataLength}-byte data section holds");
        }
        if (count * elementSize != end - begin)
            throw BadTensor(file, name, $"has shape [{string.Join(", ", shape)}] of {dtype} ({count * elementSize} bytes) but data_offsets [{begin}, {end}) span {end - begin} bytes");
        return new SafeTensorInfo(name, dtype, shape, count, begin, end);
    }

    private static long[] ReadLongs(string file, string name, string field, JsonElement value, int maxCount)
    {
        if (value.ValueKind != JsonValueKind.Array || value.GetArrayLength() > maxCount)
            throw BadTensor(file, name, $"has a {field} that is not an array of at most {maxCount} integers");
        var result = new long[value.GetArrayLength()];
        int i = 0;
        foreach (var item in value.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out long number) || number < 0)
                throw BadTensor(file, name, $"has a {field} entry '{item.GetRawText()}' that is not a non-negative integer");
            result[i++] = number;
        }
        return result;
    }

    private static void CheckNoOverlap(string file, Dictionary<string, SafeTensorInfo> tensors)
    {
        var ordered = new List<SafeTensorInfo>(tensors.Values);
        ordered.Sort(static (a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
        for (int i = 1; i < ordered.Count; i++)
        {
            var previous = ordered[i - 1];
            var current = ordered[i];
            if (current.Begin < previous.End)
                throw BadTensor(file, current.Name, $"has data_offsets [{current.Begin}, {current.End}) overlapping those of '{previous.Name}' [{previous.Begin}, {previous.End})");
        }
    }

    /// <summary>Bytes per element of a safetensors dtype; 0 for a name the format does not define.</summary>
    internal static int ElementSize(string dtype) => dtype switch
    {
        "BOOL" or "U8" or "I8" or "F8_E5M2" or "F8_E4M3" or "F8_E8M0" => 1,
        "I16" or "U16" or "F16" or "BF16" => 2,
        "I32" or "U32" or "F32" => 4,
        "I64" or "U64" or "F64" or "C64" => 8,
        _ => 0,
    };

    private static InvalidDataException Bad(string file, string problem, Exception? inner = null) =>
        new($"'{file}' is not a valid .safetensors file: {problem}.", inner);

    private static InvalidDataException BadTensor(string file, string tensor, string problem) =>
        new($"'{file}' is not a valid .safetensors file: tensor '{tensor}' {problem}.");
}

/// <summary>One tensor's entry in a <c>.safetensors</c> header (offsets relative to the data section).</summary>
/// <param name="Name">The tensor name.</param>
/// <param name="DType">The safetensors dtype name (<c>F32</c>, <c>F16</c>, <c>BF16</c>, …).</param>
/// <param name="Shape">The dimensions, row-major.</param>
/// <param name="ElementCount">The product of <paramref name="Shape"/> (1 for a 0-d tensor).</param>
/// <param name="Begin">First byte, relative to the data section.</param>
/// <param name="End">One past the last byte.</param>
internal sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long ElementCount, long Begin, long End)
{
    /// <summary>The number of bytes the tensor occupies.</summary>
    public long ByteLength => End - Begin;
}
