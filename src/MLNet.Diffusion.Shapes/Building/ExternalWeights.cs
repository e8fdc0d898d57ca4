using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using Google.Protobuf;
using MLNet.Diffusion.Shapes.Onnx;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// Writes a graph's weights to one external-data file (the ONNX external data convention: each initializer names
/// <c>location</c>, <c>offset</c> and <c>length</c> in that file), streaming them so that a model of several GB never
/// sits in memory and the graph stays far below protobuf's 2 GB message limit. Random weights come from a seeded
/// SplitMix64 stream per tensor, so the same seed gives byte-identical files. With no stream it only counts.
/// </summary>
internal sealed class ExternalWeights
{
    /// <summary>Tensors start at multiples of this (the page size), so ONNX Runtime can map them directly.</summary>
    private const int Alignment = 4096;
    private const int Chunk = 1 << 16;

    private readonly OnnxGraphBuilder _graph;
    private readonly Stream? _stream;
    private readonly string _location;
    private readonly bool _half;
    private readonly ulong _seed;
    private readonly float[] _values = new float[Chunk];
    private readonly Half[] _halves;
    private readonly Dictionary<string, string> _constants = new(StringComparer.Ordinal);
    private long _tensorIndex;

    public ExternalWeights(OnnxGraphBuilder graph, Stream? stream, string location, bool float16, int seed)
    {
        if (!BitConverter.IsLittleEndian)
            throw new PlatformNotSupportedException("ONNX raw tensor data is little-endian; this writer needs a little-endian machine.");
        _graph = graph;
        _stream = stream;
        _location = location;
        _half = float16;
        _seed = (ulong)seed;
        _halves = float16 ? new Half[Chunk] : Array.Empty<Half>();
    }

    /// <summary>The element type of weights and activations.</summary>
    public DataType Type => _half ? DataType.Float16 : DataType.Float;

    /// <summary>Elements of all weights so far (the model's parameter count).</summary>
    public long Parameters { get; private set; }

    /// <summary>Bytes written to the external file so far, alignment padding included.</summary>
    public long Bytes { get; private set; }

    /// <summary>A weight with values uniform in [−<paramref name="bound"/>, <paramref name="bound"/>).</summary>
    public string Uniform(string name, float bound, params long[] dims) => Add(name, dims, bound, constant: 0f);

    /// <summary>A weight with every value <paramref name="value"/> (norm scales 1, biases 0).</summary>
    public string Fill(string name, float value, params long[] dims) => Add(name, dims, 0f, value);

    /// <summary>A small constant stored inside the graph in the weights' element type (not counted as a parameter); shared by value.</summary>
    public string Constant(float[] values, params long[] dims)
    {
        string key = string.Join(",", Array.ConvertAll(values, v => v.ToString("R", CultureInfo.InvariantCulture))) + "|" + string.Join(",", dims);
        if (_constants.TryGetValue(key, out string? existing))
            return existing;
        string name = "const_" + _constants.Count.ToString(CultureInfo.InvariantCulture);
        var tensor = new TensorProto { Name = name, DataType = (int)Type, RawData = ByteString.CopyFrom(Encode(values)) };
        tensor.Dims.AddRange(dims);
        _constants[key] = _graph.Initializer(tensor);
        return name;
    }

    /// <summary>A scalar constant in the weights' element type.</summary>
    public string Scalar(float value) => Constant(new[] { value });

    private byte[] Encode(float[] values)
    {
        if (!_half)
            return MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        var h = new Half[values.Length];
        TensorPrimitives.ConvertToHalf(values, h);
        return MemoryMarshal.AsBytes(h.AsSpan()).ToArray();
    }

    private string Add(string name, long[] dims, float bound, float constant)
    {
        long count = 1;
        foreach (long d in dims)
            count *= d;
        int elementSize = _half ? 2 : 4;
        long offset = Bytes;
        if (_stream is not null)
        {
            // SplitMix64 (Steele, Lea & Flood 2014) seeded by (seed, tensor index): independent of the write order's chunking.
            ulong state = _seed * 0x9E3779B97F4A7C15UL ^ (ulong)(_tensorIndex + 1) * 0xD1B54A32D192ED03UL;
            for (long done = 0; done < count; done += Chunk)
            {
                int n = (int)Math.Min(Chunk, count - done);
                var span = _values.AsSpan(0, n);
                if (bound == 0f)
                {
                    span.Fill(constant);
                }
                else
                {
                    for (int i = 0; i < n; i++)
                    {
                        ulong z = state += 0x9E3779B97F4A7C15UL;
                        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
                        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
                        z ^= z >> 31;
                        span[i] = ((z >> 40) * (1f / (1 << 24)) * 2f - 1f) * bound; // 24 random bits → [−1, 1)
                    }
                }
                if (_half)
                {
                    var h = _halves.AsSpan(0, n);
                    TensorPrimitives.ConvertToHalf(span, h);
                    _stream.Write(MemoryMarshal.AsBytes(h));
                }
                else
                {
                    _stream.Write(MemoryMarshal.AsBytes(span));
                }
            }
        }
        long length = count * elementSize;
        long padded = (length + Alignment - 1) / Alignment * Alignment;
        if (_stream is not null && padded > length)
            _stream.Write(new byte[padded - length]);
        Bytes += padded;
        Parameters += count;
        _tensorIndex++;

        var tensor = new TensorProto { Name = name, DataType = (int)Type, DataLocation = TensorProto.Types.DataLocation.External };
        tensor.Dims.AddRange(dims);
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = _location });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(CultureInfo.InvariantCulture) });
        tensor.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = length.ToString(CultureInfo.InvariantCulture) });
        return _graph.Initializer(tensor);
    }
}
