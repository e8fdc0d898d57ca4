using System;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// SDXL's added conditioning (diffusers StableDiffusionXLPipeline, step 7 of its recipe): the UNet's <c>text_embeds</c>
/// [rows, P] (text_encoder_2's pooled output) and <c>time_ids</c> [rows, W] (<see cref="SdxlTimeIds"/>), written once per
/// batch in the same [unconditional; conditional] order as the embeddings.
/// </summary>
internal sealed class SdxlAddedConditioning : IUnetConditioning
{
    private readonly int _pooledSize;
    private readonly float[] _condTimeIds;
    private readonly float[] _uncondTimeIds;
    private float[] _pooled = Array.Empty<float>();
    private TensorBuffer? _textEmbeds;
    private TensorBuffer? _timeIds;

    /// <param name="pooledSize">P, the pooled vector's size.</param>
    /// <param name="timeIds">The time ids of conditional rows (diffusers' add_time_ids).</param>
    /// <param name="negativeTimeIds">The time ids of unconditional rows (negative_add_time_ids).</param>
    public SdxlAddedConditioning(int pooledSize, float[] timeIds, float[] negativeTimeIds)
    {
        if (timeIds.Length != negativeTimeIds.Length)
            throw new ArgumentException($"Expected as many negative time ids as time ids, got {timeIds.Length} and {negativeTimeIds.Length}.", nameof(negativeTimeIds));
        _pooledSize = pooledSize;
        _condTimeIds = timeIds;
        _uncondTimeIds = negativeTimeIds;
    }

    /// <summary>P, the pooled vector's size (<c>text_embeds</c>' width).</summary>
    public int PooledSize => _pooledSize;

    /// <summary>The time ids of conditional rows, or of unconditional ones (an SDXL ControlNet gets the same as the UNet).</summary>
    public ReadOnlySpan<float> TimeIds(bool conditional) => conditional ? _condTimeIds : _uncondTimeIds;

    /// <summary>Rows the pooled buffer holds.</summary>
    public int Count { get; private set; }

    /// <summary>Sizes the pooled buffer for <paramref name="count"/> rows.</summary>
    public void Ensure(int count)
    {
        if (_pooled.Length != count * 2 * _pooledSize)
            _pooled = new float[count * 2 * _pooledSize];
        Count = count;
    }

    /// <summary>Row <paramref name="row"/>'s pooled vectors [2, P] (unconditional, conditional), for the caller to fill.</summary>
    public Span<float> Pooled(int row) => _pooled.AsSpan(row * 2 * _pooledSize, 2 * _pooledSize);

    public void DeclareInputs(UnetInputs inputs)
    {
        _textEmbeds = inputs.Add("text_embeds", new long[] { inputs.UnetRows, _pooledSize }, perStep: false);
        _timeIds = inputs.Add("time_ids", new long[] { inputs.UnetRows, _condTimeIds.Length }, perStep: false);
    }

    public void BeginBatch(in UnetBatch batch)
    {
        int count = batch.Rows.Count;
        if (Count != count)
            throw new InvalidOperationException($"SDXL: the batch's pooled prompt vectors were not set: expected {count}×2×{_pooledSize} values, got {Count}×2×{_pooledSize}.");
        for (int r = 0; r < count; r++)
        {
            var uncond = _pooled.AsSpan(2 * r * _pooledSize, _pooledSize);
            var cond = _pooled.AsSpan((2 * r + 1) * _pooledSize, _pooledSize);
            int condRow = batch.Guidance ? count + r : r;
            _textEmbeds!.Write(cond, condRow * _pooledSize);
            _timeIds!.Write(_condTimeIds, condRow * _condTimeIds.Length);
            if (batch.Guidance)
            {
                _textEmbeds.Write(uncond, r * _pooledSize);
                _timeIds.Write(_uncondTimeIds, r * _condTimeIds.Length);
            }
        }
    }
}
