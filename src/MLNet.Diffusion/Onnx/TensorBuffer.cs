using System;
using System.Buffers;
using System.Threading;
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
/// <remarks>
/// The storage is rented from <see cref="ArrayPool{T}.Shared"/> and returned by <see cref="Dispose"/>: every cursor
/// creates its stages' buffers anew, and at 512×512 the VAE output alone is 3 MiB per row, so fresh arrays were
/// large-object-heap allocations per generation (each cursor), which grew the working set and triggered gen2
/// collections during the next UNet loop. Rented storage is cleared unless the caller says ONNX Runtime overwrites
/// it (an output), so a buffer always starts as zeros, as a new array did.
/// </remarks>
internal sealed class TensorBuffer : IDisposable
{
    private float[]? _float;
    private Float16[]? _half;
    private long[]? _long;
    private int[]? _int;
    private double[]? _double;
    private int _disposed;

    /// <summary>Creates the buffer.</summary>
    /// <param name="type">The element type the model declares.</param>
    /// <param name="shape">The tensor's shape.</param>
    /// <param name="clear">False for a buffer ONNX Runtime writes completely before anyone reads it (an output): skips zeroing the rented storage.</param>
    public TensorBuffer(TensorElementType type, long[] shape, bool clear = true)
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
            TensorElementType.Float => Create(ref _float, shape, clear),
            TensorElementType.Float16 => Create(ref _half, shape, clear),
            TensorElementType.Int64 => Create(ref _long, shape, clear),
            TensorElementType.Int32 => Create(ref _int, shape, clear),
            TensorElementType.Double => Create(ref _double, shape, clear),
            _ => throw new NotSupportedException($"Tensor element type {type} is not supported."),
        };
    }

    private OrtValue Create<T>(ref T[]? storage, long[] shape, bool clear)
        where T : unmanaged
    {
        storage = ArrayPool<T>.Shared.Rent(Math.Max(Length, 1));
        if (clear)
            storage.AsSpan(0, Length).Clear();
        return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, storage.AsMemory(0, Length), shape);
    }

    public TensorElementType ElementType { get; }

    public long[] Shape { get; }

    public int Length { get; }

    public OrtValue Value { get; }

    /// <summary>The float32 storage when the element type is float (for zero-copy writes), else empty.</summary>
    public Span<float> FloatSpan => _float.AsSpan(0, _float is null ? 0 : Length);

    /// <summary>The float32 storage as memory (valid until <see cref="Dispose"/>, which returns it to the pool), else empty.</summary>
    public Memory<float> FloatMemory => _float.AsMemory(0, _float is null ? 0 : Length);

    public bool ShapeEquals(ReadOnlySpan<long> shape) => shape.SequenceEqual(Shape);

    public void Write(ReadOnlySpan<float> values, int offset = 0)
    {
        CheckRange(offset, values.Length);
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
        CheckRange(offset, values.Length);
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
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if (_float is not null)
            _float.AsSpan(0, Length).Fill(value);
        else if (_half is not null)
            _half.AsSpan(0, Length).Fill((Float16)value);
        else if (_double is not null)
            _double.AsSpan(0, Length).Fill(value);
        else if (_long is not null)
            _long.AsSpan(0, Length).Fill((long)MathF.Round(value));
        else
            _int!.AsSpan(0, Length).Fill((int)MathF.Round(value));
    }

    public void Read(Span<float> destination, int offset = 0)
    {
        CheckRange(offset, destination.Length);
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

    /// <summary>The rented storage may be longer than the tensor: a range outside [0, Length) is an error, as on an exact array.</summary>
    private void CheckRange(int offset, int count)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        if ((uint)offset > (uint)Length || (uint)count > (uint)(Length - offset))
            throw new ArgumentOutOfRangeException(nameof(offset), $"Values [{offset}, {(long)offset + count}) do not fit the tensor [{string.Join(",", Shape)}] of {Length} values.");
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

    /// <summary>Releases the OrtValue, then returns the storage to the pool (once; later calls do nothing).</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        Value.Dispose();
        Return(ref _float);
        Return(ref _half);
        Return(ref _long);
        Return(ref _int);
        Return(ref _double);
    }

    private static void Return<T>(ref T[]? storage)
    {
        if (storage is not null)
            ArrayPool<T>.Shared.Return(storage);
        storage = null;
    }
}
