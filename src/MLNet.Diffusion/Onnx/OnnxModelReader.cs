using System;
using System.Buffers;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx.Protobuf;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// Reads an ONNX model file's graph without running it: the nodes of the main graph (name, op type, inputs, outputs)
/// and the initializers (name, dims, element type, where the data lives), and an initializer's values as float32.
/// The weight-editing code (LoRA, textual inversion) finds the weights it changes here and hands the new values to
/// <see cref="OnnxSessionFactory"/> as a <see cref="WeightVariant"/>.
/// </summary>
/// <remarks>
/// <para>
/// Memory: the model file is parsed as a whole (<c>ModelProto</c>). With external data (the form of every export over
/// 2 GB, and of <c>unet/</c> in most SD exports: <c>model.onnx</c> + <c>weights.pb</c> or <c>model.onnx_data</c>) the
/// graph file holds only names and offsets and is small; the weights stay in their file and are read one initializer at
/// a time by <see cref="ReadSingles(string)"/>. A single-file model holds its weights inline, and reading its graph reads
/// them too (protobuf has no lazy fields); such files are under protobuf's 2 GB limit by construction.
/// </para>
/// <para>
/// Safety: an external-data <c>location</c> must name a file inside the model's folder. An absolute path, a <c>..</c>
/// segment, or a path whose real location (symbolic links resolved) is outside the folder is refused when the model is
/// opened, naming the model file, the tensor and the location. Only load models from trusted sources all the same.
/// </para>
/// </remarks>
internal sealed class OnnxModelReader
{
    /// <summary>protobuf's limit for one message; bigger models must keep their weights in external data.</summary>
    private const long MaxProtobufBytes = int.MaxValue;

    private readonly Dictionary<string, int> _initializerIndex = new(StringComparer.Ordinal);
    private readonly OnnxInitializer[] _initializers;
    private readonly TensorProto[] _tensors;

    private OnnxModelReader(string path, ModelProto model)
    {
        ModelPath = path;
        Directory = System.IO.Path.GetDirectoryName(path)!;
        Model = model;
        var graph = model.Graph ?? throw new InvalidDataException($"ONNX model '{path}' has no graph.");

        var nodes = new OnnxNode[graph.Node.Count];
        for (int i = 0; i < nodes.Length; i++)
        {
            var n = graph.Node[i];
            nodes[i] = new OnnxNode(n.Name, n.OpType, [.. n.Input], [.. n.Output]);
        }
        Nodes = nodes;

        _tensors = new TensorProto[graph.Initializer.Count];
        _initializers = new OnnxInitializer[_tensors.Length];
        string? realDirectory = null;
        for (int i = 0; i < _tensors.Length; i++)
        {
            var t = graph.Initializer[i];
            _tensors[i] = t;
            _initializers[i] = Describe(t, ref realDirectory);
            if (!_initializerIndex.TryAdd(t.Name, i))
                throw new InvalidDataException($"ONNX model '{path}' has two initializers named '{t.Name}'.");
        }
    }

    /// <summary>The model file's full path.</summary>
    public string ModelPath { get; }

    /// <summary>The folder external-data locations are relative to (the model file's folder).</summary>
    public string Directory { get; }

    /// <summary>The nodes of the main graph in file order (subgraphs of If/Loop nodes are not listed).</summary>
    public IReadOnlyList<OnnxNode> Nodes { get; }

    /// <summary>The initializers of the main graph in file order.</summary>
    public IReadOnlyList<OnnxInitializer> Initializers => _initializers;

    /// <summary>The parsed model, for code that rewrites graphs (the Shapes builder); weight editors use the members above.</summary>
    internal ModelProto Model { get; }

    /// <summary>Opens and parses a model file and checks every external-data location.</summary>
    /// <param name="modelPath">The <c>.onnx</c> file.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not an ONNX model, is over 2 GB, or an initializer's external data is
    /// missing, outside the model's folder, or of the wrong size (the message names the file and the tensor).</exception>
    public static OnnxModelReader Open(string modelPath)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelPath);
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("ONNX raw tensor data is little-endian; this reader needs a little-endian machine.");
        string full = System.IO.Path.GetFullPath(modelPath);
        var info = new FileInfo(full);
        if (!info.Exists)
            throw new FileNotFoundException($"ONNX model '{full}' does not exist.", full);
        if (info.Length > MaxProtobufBytes)
            throw new InvalidDataException($"ONNX model '{full}' is {info.Length} bytes, over protobuf's 2 GB message limit; such models keep their weights in external data.");
        ModelProto model;
        try
        {
            using var stream = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
            model = ModelProto.Parser.ParseFrom(stream);
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new InvalidDataException($"'{full}' is not an ONNX model: {e.Message}", e);
        }
        return new OnnxModelReader(full, model);
    }

    /// <summary>Finds an initializer by name.</summary>
    public bool TryGetInitializer(string name, out OnnxInitializer initializer)
    {
        if (_initializerIndex.TryGetValue(name, out int i))
        {
            initializer = _initializers[i];
            return true;
        }
        initializer = null!;
        return false;
    }

    /// <summary>An initializer by name; the error names the model file.</summary>
    public OnnxInitializer Initializer(string name) =>
        TryGetInitializer(name, out var i) ? i
            : throw new KeyNotFoundException($"ONNX model '{ModelPath}' has no initializer '{name}'.");

    /// <summary>Reads a float32 or float16 initializer's values as float32 (inline or external data).</summary>
    public float[] ReadSingles(string name)
    {
        var initializer = Initializer(name);
        var values = new float[checked((int)initializer.ElementCount)];
        ReadSingles(name, values);
        return values;
    }

    /// <summary>Reads a float32 or float16 initializer's values as float32 into <paramref name="destination"/> (its exact length).</summary>
    public void ReadSingles(string name, Span<float> destination)
    {
        var initializer = Initializer(name);
        var t = _tensors[_initializerIndex[name]];
        if (destination.Length != initializer.ElementCount)
            throw new ArgumentException($"Initializer '{name}' of '{ModelPath}' has {initializer.ElementCount} values; the destination has {destination.Length}.", nameof(destination));
        if (initializer.ElementType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new NotSupportedException($"Initializer '{name}' of '{ModelPath}' is {initializer.ElementType}; only float32 and float16 weights are read as float32.");
        bool half = initializer.ElementType == TensorElementType.Float16;

        if (initializer.ExternalPath is { } file)
        {
            ReadExternal(initializer, file, half, destination);
            return;
        }
        if (!t.RawData.IsEmpty)
        {
            var raw = t.RawData.Span;
            if (raw.Length != destination.Length * (half ? 2 : sizeof(float)))
                throw new InvalidDataException($"Initializer '{name}' of '{ModelPath}' has dims [{string.Join(",", initializer.Dims)}] of {initializer.ElementType} but {raw.Length} bytes of raw data.");
            if (half)
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(raw), destination);
            else
                MemoryMarshal.Cast<byte, float>(raw).CopyTo(destination);
            return;
        }
        // Typed fields (ONNX spec): float in float_data; float16 as its 16 bits in int32_data.
        int count = half ? t.Int32Data.Count : t.FloatData.Count;
        if (count != destination.Length)
            throw new InvalidDataException($"Initializer '{name}' of '{ModelPath}' has dims [{string.Join(",", initializer.Dims)}] but {count} values.");
        for (int i = 0; i < count; i++)
            destination[i] = half ? (float)BitConverter.UInt16BitsToHalf((ushort)t.Int32Data[i]) : t.FloatData[i];
    }

    private static void ReadExternal(OnnxInitializer initializer, string file, bool half, Span<float> destination)
    {
        using var stream = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess);
        stream.Position = initializer.Offset;
        if (!half)
        {
            stream.ReadExactly(MemoryMarshal.AsBytes(destination));
            return;
        }
        // float16 in chunks: no buffer of the whole tensor's bytes besides the destination.
        const int Chunk = 1 << 15;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(Chunk * 2);
        try
        {
            for (int done = 0; done < destination.Length;)
            {
                int n = Math.Min(Chunk, destination.Length - done);
                stream.ReadExactly(buffer, 0, n * 2);
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(buffer.AsSpan(0, n * 2)), destination.Slice(done, n));
                done += n;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private OnnxInitializer Describe(TensorProto t, ref string? realDirectory)
    {
        var type = (TensorElementType)t.DataType;
        long[] dims = [.. t.Dims];
        long count = 1;
        foreach (long d in dims)
        {
            if (d < 0)
                throw new InvalidDataException($"Initializer '{t.Name}' of '{ModelPath}' has a negative dimension: [{string.Join(",", dims)}].");
            count = checked(count * d);
        }
        if (t.DataLocation != TensorProto.Types.DataLocation.External)
            return new OnnxInitializer(t.Name, dims, type, count, null, 0, t.RawData.Length);

        string? location = null;
        long offset = 0, length = -1;
        foreach (var entry in t.ExternalData)
        {
            switch (entry.Key)
            {
                case "location":
                    location = entry.Value;
                    break;
                case "offset":
                    offset = ParseLength(t.Name, entry);
                    break;
                case "length":
                    length = ParseLength(t.Name, entry);
                    break;
            }
        }
        if (string.IsNullOrEmpty(location))
            throw new InvalidDataException($"Initializer '{t.Name}' of '{ModelPath}' has external data without a 'location'.");
        (string path, string real) = ResolveLocation(t.Name, location, ref realDirectory);
        long fileLength = new FileInfo(real).Length;
        int elementSize = ElementSize(type);
        if (length < 0)
            length = elementSize > 0 ? count * elementSize : fileLength - offset;
        else if (elementSize > 0 && length != count * elementSize)
            throw new InvalidDataException($"Initializer '{t.Name}' of '{ModelPath}' has dims [{string.Join(",", dims)}] of {type} ({count * elementSize} bytes) but its external data length is {length}.");
        if (offset + length > fileLength)
            throw new InvalidDataException($"Initializer '{t.Name}' of '{ModelPath}': external data '{location}' is {fileLength} bytes, too short for offset {offset} + length {length}.");
        return new OnnxInitializer(t.Name, dims, type, count, path, offset, length);
    }

    private long ParseLength(string tensor, StringStringEntryProto entry) =>
        long.TryParse(entry.Value, NumberStyles.None, CultureInfo.InvariantCulture, out long v) ? v
            : throw new InvalidDataException($"Initializer '{tensor}' of '{ModelPath}' has external data '{entry.Key}' = '{entry.Value}', not a non-negative integer.");

    /// <summary>
    /// The full path of an external-data location, refused unless it stays inside the model's folder: no absolute path,
    /// no <c>..</c> segment, and, symbolic links resolved, a real path inside the folder's real path (ONNX Runtime's own
    /// check since 1.16 is the same rule; ours names the tensor).
    /// </summary>
    private (string Path, string RealPath) ResolveLocation(string tensor, string location, ref string? realDirectory)
    {
        string Refuse(string why) => throw new InvalidDataException(
            $"Initializer '{tensor}' of '{ModelPath}' has external data location '{location}', which {why}; external data must be a file inside the model's folder '{Directory}'.");

        if (System.IO.Path.IsPathRooted(location) || location.Contains(':', StringComparison.Ordinal))
            Refuse("is an absolute path");
        foreach (string segment in location.Split('/', '\\'))
        {
            if (segment == "..")
                Refuse("leaves the folder with '..'");
        }
        string path = System.IO.Path.GetFullPath(System.IO.Path.Combine(Directory, location));
        if (!File.Exists(path))
            throw new FileNotFoundException($"Initializer '{tensor}' of '{ModelPath}' has its data in '{location}', which does not exist ('{path}').", path);
        realDirectory ??= RealPath(Directory);
        string real = RealPath(path);
        if (!real.StartsWith(realDirectory + System.IO.Path.DirectorySeparatorChar, StringComparison.Ordinal))
            Refuse($"resolves through a symbolic link to '{real}', outside the folder");
        return (path, real);
    }

    /// <summary>A path with every symbolic link along it resolved (the BCL has no realpath).</summary>
    private static string RealPath(string fullPath)
    {
        string root = System.IO.Path.GetPathRoot(fullPath)!;
        string current = root;
        foreach (string segment in fullPath[root.Length..].Split(System.IO.Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            current = System.IO.Path.Combine(current, segment);
            FileSystemInfo entry = System.IO.Directory.Exists(current) ? new DirectoryInfo(current) : new FileInfo(current);
            if (entry.LinkTarget is not null && entry.ResolveLinkTarget(returnFinalTarget: true) is { } target)
                current = RealPath(target.FullName);
        }
        return current;
    }

    private static int ElementSize(TensorElementType type) => type switch
    {
        TensorElementType.Float or TensorElementType.Int32 or TensorElementType.UInt32 => 4,
        TensorElementType.Float16 or TensorElementType.BFloat16 or TensorElementType.Int16 or TensorElementType.UInt16 => 2,
        TensorElementType.Int64 or TensorElementType.UInt64 or TensorElementType.Double => 8,
        TensorElementType.Int8 or TensorElementType.UInt8 or TensorElementType.Bool => 1,
        _ => 0,
    };
}

/// <summary>A node of an ONNX graph.</summary>
/// <param name="Name">The node's name (exporters from PyTorch keep module paths, e.g. <c>/down_blocks.0/attentions.0/…</c>).</param>
/// <param name="OpType">The operator, e.g. <c>MatMul</c>, <c>Conv</c>, <c>Gemm</c>.</param>
/// <param name="Inputs">Its input value names (initializer names among them).</param>
/// <param name="Outputs">Its output value names.</param>
internal sealed record OnnxNode(string Name, string OpType, IReadOnlyList<string> Inputs, IReadOnlyList<string> Outputs);

/// <summary>An initializer (weight) of an ONNX graph and where its data lives.</summary>
/// <param name="Name">The initializer's name.</param>
/// <param name="Dims">Its dimensions.</param>
/// <param name="ElementType">Its element type (ONNX's data type numbering, which ONNX Runtime's enum shares).</param>
/// <param name="ElementCount">The product of <paramref name="Dims"/>.</param>
/// <param name="ExternalPath">The full path of its external-data file, or null when the data is inside the model file.</param>
/// <param name="Offset">Byte offset of the data in <paramref name="ExternalPath"/> (0 when inline).</param>
/// <param name="Length">Byte length of the data (of <c>raw_data</c> when inline; 0 when inline in typed fields).</param>
internal sealed record OnnxInitializer(string Name, IReadOnlyList<long> Dims, TensorElementType ElementType, long ElementCount,
    string? ExternalPath, long Offset, long Length)
{
    /// <summary>Whether the data is in an external file.</summary>
    public bool IsExternal => ExternalPath is not null;
}
