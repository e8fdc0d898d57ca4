using System;
using System.Runtime.InteropServices;
using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// A tensor of a fixed shape whose memory is a pinned managed array shared with ONNX Runtime (no copy at Run), in
/// the element type the model declares. Callers write and read float32 (or int ids); fp16/int64 conversion happens
/// here, at the model boundary. Reused across steps: created once per batch shape.
/// </summary>
internal sealed class TensorBuffer : IDisposable
{
    private readonly float[]? _float;
    private readonly Float16[]? _half;
    private readonly long[]? _long;
    private readonly int[]? _int;
    private readonly double[]? _double;

    public TensorBuffer(TensorElementType type, long[] shape)
    {
        ElementType = type;
        Shape = shape;
        long n = 1;
        foreach (long d in shape)
            n *= d;
        if (n > int.MaxValue)
            throw new ArgumentOutOfRangeException(nameof(shape), $"Tensor [{string.Join(",", shape)}] is too large.");
        Length = (int)n;
        Value = type switch
        {
            TensorElementType.Float => OrtValue.CreateTensorValueFromMemory(_float = new float[Length], shape),
            TensorElementType.Float16 => OrtValue.CreateTensorValueFromMemory(_half = new Float16[Length], shape),
            TensorElementType.Int64 => OrtValue.CreateTensorValueFromMemory(_long = new long[Length], shape),
            TensorElementType.Int32 => OrtValue.CreateTensorValueFromMemory(_int = new int[Length], shape),
            TensorElementType.Double => OrtValue.CreateTensorValueFromMemory(_double = new double[Length], shape),
            _ => throw new NotSupportedException($"Tensor element type {type} is not supported."),
        };
    }

    public TensorElementType ElementType { get; }

    public long[] Shape { get; }

    public int Length { get; }

    public OrtValue Value { get; }

    /// <summary>The float32 storage when the element type is float (for zero-copy writes), else empty.</summary>
    public Span<float> FloatSpan => _float;

    /// <summary>The float32 storage as memory (valid after <see cref="Dispose"/> too: it is a managed array), else empty.</summary>
    public Memory<float> FloatMemory => _float;

    public bool ShapeEquals(ReadOnlySpan<long> shape) => shape.SequenceEqual(Shape);

    public void Write(ReadOnlySpan<float> values, int offset = 0)
    {
        if (_float is not null)
            values.CopyTo(_float.AsSpan(offset));
        else if (_half is not null)
            TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<Float16, Half>(_half.AsSpan(offset)));
        else if (_double is not null)
            for (int i = 0; i < values.Length; i++)
                _double[offset + i] = values[i];
        else if (_long is not null)
            for (int i = 0; i < values.Length; i++)
                _long[offset + i] = (long)MathF.Round(values[i]);
        else
            for (int i = 0; i < values.Length; i++)
                _int![offset + i] = (int)MathF.Round(values[i]);
    }

    public void Write(ReadOnlySpan<int> values, int offset = 0)
    {
        if (_int is not null)
            values.CopyTo(_int.AsSpan(offset));
        else if (_long is not null)
            for (int i = 0; i < values.Length; i++)
                _long[offset + i] = values[i];
        else
            throw new NotSupportedException($"Integer ids cannot be written to a {ElementType} tensor.");
    }

    public void Fill(float value)
    {
        if (_float is not null)
            _float.AsSpan().Fill(value);
        else if (_half is not null)
            _half.AsSpan().Fill((Float16)value);
        else if (_double is not null)
            _double.AsSpan().Fill(value);
        else if (_long is not null)
            _long.AsSpan().Fill((long)MathF.Round(value));
        else
            _int!.AsSpan().Fill((int)MathF.Round(value));
    }

    public void Read(Span<float> destination, int offset = 0)
    {
        if (_float is not null)
            _float.AsSpan(offset, destination.Length).CopyTo(destination);
        else if (_half is not null)
            TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<Float16, Half>(_half.AsSpan(offset, destination.Length)), destination);
        else if (_double is not null)
            for (int i = 0; i < destination.Length; i++)
                destination[i] = (float)_double[offset + i];
        else
            throw new NotSupportedException($"A {ElementType} tensor cannot be read as float.");
    }

    /// <summary>Copies any float/float16/double ONNX Runtime output into float32.</summary>
    public static void ReadOutput(OrtValue value, Span<float> destination)
    {
        var info = value.GetTensorTypeAndShape();
        if (info.ElementCount != destination.Length)
            throw new ModelContractException($"Model output has {info.ElementCount} values; expected {destination.Length}.");
        switch (info.ElementDataType)
        {
            case TensorElementType.Float:
                value.GetTensorDataAsSpan<float>().CopyTo(destination);
                break;
            case TensorElementType.Float16:
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<Float16, Half>(value.GetTensorDataAsSpan<Float16>()), destination);
                break;
            case TensorElementType.Double:
                var d = value.GetTensorDataAsSpan<double>();
                for (int i = 0; i < destination.Length; i++)
                    destination[i] = (float)d[i];
                break;
            default:
                throw new ModelContractException($"Model output element type {info.ElementDataType} is not a floating-point type.");
        }
    }

    public void Dispose() => Value.Dispose();
}
