using System;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// Runs the text encoder on token ids, in mini-batches of one ONNX call each: ids [n, L] → last_hidden_state [n, L, D]
/// (and pooler_output [n, P] when the model has it). Ids are fed as int32 or int64 per the model's metadata.
/// </summary>
internal sealed class PromptEncoder : IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly OnnxComponent _encoder;
    private readonly TensorElementType _idType;
    private readonly int _length;
    private readonly int _hidden;
    private readonly string[] _inputNames = { "input_ids" };
    private readonly string[] _outputNames;
    private TensorBuffer? _ids;
    private TensorBuffer? _hiddenOut;
    private TensorBuffer? _pooledOut;

    public PromptEncoder(StableDiffusionModel model)
    {
        _model = model;
        _encoder = model.TextEncoder;
        _idType = _encoder.Input("input_ids").ElementDataType;
        _length = model.Info.SequenceLength;
        _hidden = model.Info.HiddenSize;
        _outputNames = model.Info.PooledSize is null ? new[] { "last_hidden_state" } : new[] { "last_hidden_state", "pooler_output" };
    }

    public int SequenceLength => _length;

    public int HiddenSize => _hidden;

    public int? PooledSize => _model.Info.PooledSize;

    /// <summary>Encodes <paramref name="count"/> id rows; writes [count, L, D] hidden states and, if requested, [count, P] pooled outputs.</summary>
    public void Encode(ReadOnlySpan<int> ids, int count, Span<float> hidden, Span<float> pooled)
    {
        if (ids.Length != count * _length)
            throw new ArgumentException($"Expected {count}×{_length} token ids, got {ids.Length}.", nameof(ids));
        if (hidden.Length != count * _length * _hidden)
            throw new ArgumentException($"Expected room for {count}×{_length}×{_hidden} hidden values, got {hidden.Length}.", nameof(hidden));
        _model.ThrowIfDisposed();
        Ensure(count);
        _ids!.Write(ids);
        var outputs = _pooledOut is null ? new[] { _hiddenOut!.Value } : new[] { _hiddenOut!.Value, _pooledOut.Value };
        _encoder.Run(null, _inputNames, new[] { _ids.Value }, _outputNames, outputs);
        _hiddenOut.Read(hidden);
        if (_pooledOut is not null && pooled.Length > 0)
            _pooledOut.Read(pooled);
    }

    private void Ensure(int count)
    {
        if (_ids is not null && _ids.Shape[0] == count)
            return;
        DisposeBuffers();
        _ids = new TensorBuffer(_idType, new long[] { count, _length });
        _hiddenOut = new TensorBuffer(_encoder.Output("last_hidden_state").ElementDataType, new long[] { count, _length, _hidden });
        if (_model.Info.PooledSize is int p)
            _pooledOut = new TensorBuffer(_encoder.Output("pooler_output").ElementDataType, new long[] { count, p });
    }

    private void DisposeBuffers()
    {
        _ids?.Dispose();
        _hiddenOut?.Dispose();
        _pooledOut?.Dispose();
        _ids = _hiddenOut = _pooledOut = null;
    }

    public void Dispose() => DisposeBuffers();
}
