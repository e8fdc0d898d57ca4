using System;
using System.Collections.Generic;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Threading;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// A set of replaced initializers for one component (the UNet with LoRA set A merged, the text encoder with new token
/// embeddings, …), identified by <see cref="Id"/> so that sessions with different weights coexist: the model opens one
/// session per (component, variant id) with <see cref="SessionOptions.AddInitializer"/>.
/// </summary>
/// <remarks>
/// The values live in native memory owned by the variant (a tensor over memory the caller owns, as ONNX Runtime requires). ONNX Runtime does not copy an added initializer: the
/// <see cref="OrtValue"/> must outlive every session created with it. Each such session therefore holds a lease
/// (<see cref="Acquire"/>), and the memory is freed only when the owner has disposed the variant and the last session
/// has released its lease, in whatever order those happen.
/// </remarks>
internal sealed unsafe class WeightVariant : IDisposable
{
    private readonly List<(string Name, OrtValue Value, long[] Dims, TensorElementType Type)> _initializers = new();
    // ONNX Runtime accepts only initializers over memory the caller owns ("Buffer containing the initializer must be
    // owned by the user"), not OrtAllocator memory: one native block per initializer, freed in ReleaseIfUnused.
    private readonly List<IntPtr> _buffers = new();
    private readonly HashSet<string> _names = new(StringComparer.Ordinal);
    private readonly object _lock = new();
    private int _leases;
    private bool _ownerDisposed;
    private bool _sealed;

    /// <summary>Creates an empty variant.</summary>
    /// <param name="id">The variant's key, unique per set of weights (e.g. a hash of the LoRA files and scales).</param>
    public WeightVariant(string id)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        Id = id;
    }

    /// <summary>The key sessions with these weights are cached under.</summary>
    public string Id { get; }

    /// <summary>How many initializers the variant replaces.</summary>
    public int Count => _initializers.Count;

    /// <summary>Whether the native memory was freed (the owner disposed the variant and no session holds it).</summary>
    public bool IsReleased { get; private set; }

    /// <summary>
    /// Adds a replaced initializer, stored as <paramref name="elementType"/> (float32, or float16 for a float16 export:
    /// the replacement must have the original initializer's type and dims, <see cref="OnnxModelReader.Initializer"/>).
    /// </summary>
    /// <param name="name">The initializer's name in the model.</param>
    /// <param name="dims">Its dimensions.</param>
    /// <param name="elementType">Float or Float16.</param>
    /// <param name="values">The new values, as many as the product of <paramref name="dims"/>.</param>
    public void Add(string name, ReadOnlySpan<long> dims, TensorElementType elementType, ReadOnlySpan<float> values)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        long count = 1;
        foreach (long d in dims)
            count = d >= 0 ? checked(count * d) : throw new ArgumentOutOfRangeException(nameof(dims), $"Initializer '{name}' has a negative dimension [{string.Join(",", dims.ToArray())}].");
        if (count != values.Length)
            throw new ArgumentException($"Initializer '{name}' has dims [{string.Join(",", dims.ToArray())}] ({count} values) but {values.Length} values were given.", nameof(values));
        if (elementType is not (TensorElementType.Float or TensorElementType.Float16))
            throw new ArgumentOutOfRangeException(nameof(elementType), $"Initializer '{name}': only float32 and float16 replacements are supported, not {elementType}.");
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_ownerDisposed, this);
            if (_sealed)
                throw new InvalidOperationException($"Weight variant '{Id}' is in use by a session; create a new variant to change its weights.");
            if (!_names.Add(name))
                throw new ArgumentException($"Weight variant '{Id}' already replaces initializer '{name}'.", nameof(name));
            long[] shape = dims.ToArray();
            int elementSize = elementType == TensorElementType.Float ? sizeof(float) : 2;
            nuint bytes = checked((nuint)count * (nuint)elementSize);
            IntPtr buffer = (IntPtr)NativeMemory.AlignedAlloc(Math.Max(bytes, 1), 64);
            OrtValue value;
            try
            {
                var destination = new Span<byte>((void*)buffer, checked((int)bytes));
                if (elementType == TensorElementType.Float)
                    MemoryMarshal.AsBytes(values).CopyTo(destination);
                else
                    TensorPrimitives.ConvertToHalf(values, MemoryMarshal.Cast<byte, Half>(destination));
                value = OrtValue.CreateTensorValueWithData(OrtMemoryInfo.DefaultInstance, elementType, shape, buffer, (long)bytes);
            }
            catch
            {
                NativeMemory.AlignedFree((void*)buffer);
                throw;
            }
            _buffers.Add(buffer);
            _initializers.Add((name, value, shape, elementType));
        }
    }

    /// <summary>The replaced initializers (name, dims, type), for validation against the model.</summary>
    public (string Name, long[] Dims, TensorElementType ElementType)[] Describe()
    {
        lock (_lock)
        {
            var result = new (string, long[], TensorElementType)[_initializers.Count];
            for (int i = 0; i < result.Length; i++)
                result[i] = (_initializers[i].Name, _initializers[i].Dims, _initializers[i].Type);
            return result;
        }
    }

    /// <summary>
    /// Adds every initializer to <paramref name="options"/> and takes a lease that keeps the native memory alive until
    /// the returned object is disposed (with the session). The variant cannot change afterwards.
    /// </summary>
    public IDisposable Acquire(SessionOptions options)
    {
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_ownerDisposed, this);
            foreach (var (name, value, _, _) in _initializers)
                options.AddInitializer(name, value);
            _sealed = true;
            _leases++;
            return new Lease(this);
        }
    }

    /// <summary>The owner is done with the variant; the memory goes when the last session using it is disposed.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_ownerDisposed)
                return;
            _ownerDisposed = true;
            ReleaseIfUnused();
        }
    }

    private void Release()
    {
        lock (_lock)
        {
            _leases--;
            ReleaseIfUnused();
        }
    }

    private void ReleaseIfUnused()
    {
        if (!_ownerDisposed || _leases > 0 || IsReleased)
            return;
        foreach (var (_, value, _, _) in _initializers)
            value.Dispose();
        foreach (IntPtr buffer in _buffers)
            NativeMemory.AlignedFree((void*)buffer);
        _buffers.Clear();
        IsReleased = true;
    }

    private sealed class Lease : IDisposable
    {
        private WeightVariant? _variant;

        public Lease(WeightVariant variant) => _variant = variant;

        public void Dispose() => Interlocked.Exchange(ref _variant, null)?.Release();
    }
}
