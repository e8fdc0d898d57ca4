using System;
using System.Collections.Generic;
using System.Numerics.Tensors;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Transforms;

/// <summary>
/// DenoiseLatents' inpainting inputs (<see cref="DenoiseLatentsOptions.MaskColumnName"/>, and for inpainting UNets
/// <see cref="DenoiseLatentsOptions.MaskedImageLatentsColumnName"/>): their schema checks, and per cursor the rows' values
/// gathered into an <see cref="InpaintingConditioning"/> for each run of the loop.
/// </summary>
internal sealed class DenoisingInpaintingColumns
{
    private readonly DenoiseLatentsOptions _options;
    private readonly ValueGetter<VBuffer<float>> _maskGetter;
    private readonly ValueGetter<VBuffer<float>>? _maskedGetter;
    private readonly float[][] _masks;
    private readonly float[][] _masked;
    private readonly int _plane;
    private readonly int _latentLength;
    private VBuffer<float> _buffer;

    private DenoisingInpaintingColumns(ModelInfo info, DenoiseLatentsOptions options, DataViewRow input, int batchSize)
    {
        _options = options;
        int f = info.VaeSpatialFactor;
        _plane = options.Height / f * (options.Width / f);
        _latentLength = info.LatentChannels * _plane;
        _maskGetter = input.GetGetter<VBuffer<float>>(input.Schema[options.MaskColumnName!]);
        if (info.IsInpaintingUnet)
            _maskedGetter = input.GetGetter<VBuffer<float>>(input.Schema[options.MaskedImageLatentsColumnName!]);
        _masks = new float[batchSize][];
        _masked = new float[batchSize][];
        Conditioning = new InpaintingConditioning(info.LatentChannels, _plane, info.IsInpaintingUnet);
    }

    /// <summary>The run's conditioning, filled by <see cref="Prepare"/>.</summary>
    public InpaintingConditioning Conditioning { get; }

    /// <summary>The columns for a cursor, or null when the stage does not inpaint.</summary>
    public static DenoisingInpaintingColumns? Create(ModelInfo info, DenoiseLatentsOptions options, DataViewRow input, int batchSize) =>
        options.MaskColumnName is null ? null : new DenoisingInpaintingColumns(info, options, input, batchSize);

    /// <summary>The inpainting columns the stage reads (the masked-image latents only for an inpainting UNet).</summary>
    public static void AddInputColumnNames(ModelInfo info, DenoiseLatentsOptions options, List<string> names)
    {
        if (options.MaskColumnName is { } m)
            names.Add(m);
        if (info.IsInpaintingUnet && options.MaskedImageLatentsColumnName is { } l)
            names.Add(l);
    }

    /// <summary>Checks the inpainting columns' presence and sizes; throws naming the column.</summary>
    public static void ValidateSchema(ModelInfo info, DenoiseLatentsOptions options, DataViewSchema schema, string latentShape)
    {
        int f = info.VaeSpatialFactor, h = options.Height / f, w = options.Width / f;
        if (options.MaskColumnName is { } m)
            RequireSize(schema, m, h * w, $"Vector<Single> of size {h * w} (1×{h}×{w}) latent mask, 1 = repaint (PrepareInpainting's output)");
        if (info.IsInpaintingUnet && options.MaskedImageLatentsColumnName is { } l)
            RequireSize(schema, l, info.LatentChannels * h * w, $"Vector<Single> of size {info.LatentChannels * h * w} ({latentShape}) masked-image latents (PrepareInpainting's output)");
    }

    /// <summary>Checks the inpainting columns of a <see cref="SchemaShape"/>.</summary>
    public static void ValidateShape(ModelInfo info, DenoiseLatentsOptions options, SchemaShape shape)
    {
        if (options.MaskColumnName is { } m)
            ColumnChecks.Require(shape, m, "Vector<Single> latent mask (PrepareInpainting's output)", ColumnChecks.IsFloatVector);
        if (info.IsInpaintingUnet && options.MaskedImageLatentsColumnName is { } l)
            ColumnChecks.Require(shape, l, "Vector<Single> masked-image latents (PrepareInpainting's output)", ColumnChecks.IsFloatVector);
    }

    private static void RequireSize(DataViewSchema schema, string column, int size, string expected)
    {
        var c = ColumnChecks.Require(schema, column, expected, ColumnChecks.IsFloatVector);
        if (c.Type is VectorDataViewType v && v.Size > 0 && v.Size != size)
            throw DiffusionTransformer.SchemaMismatch(nameof(schema), column, expected, $"Vector<Single> of size {v.Size}");
    }

    /// <summary>Reads the input row's mask (checked to lie in [0, 1]) and masked-image latents into batch slot <paramref name="slot"/>.</summary>
    public void ReadRow(int slot, long position)
    {
        var mask = Read(_maskGetter, _masks, slot, _plane, position, _options.MaskColumnName!, "latent mask");
        float min = TensorPrimitives.Min(mask), max = TensorPrimitives.Max(mask);
        if (!(min >= 0f && max <= 1f))
            throw new InvalidOperationException($"Row {position}: mask column '{_options.MaskColumnName}' has values in [{min}, {max}]; a latent mask holds values in [0, 1] (1 = repaint).");
        if (_maskedGetter is not null)
            Read(_maskedGetter, _masked, slot, _latentLength, position, _options.MaskedImageLatentsColumnName!, "masked-image latents");
    }

    private float[] Read(ValueGetter<VBuffer<float>> getter, float[][] slots, int slot, int length, long position, string column, string what)
    {
        getter(ref _buffer);
        if (_buffer.Length != length)
            throw new InvalidOperationException($"Row {position}: {what} column '{column}' has {_buffer.Length} values; expected {length}.");
        var values = slots[slot] ??= new float[length];
        _buffer.CopyTo(values);
        return values;
    }

    /// <summary>Fills <see cref="Conditioning"/> with slots [start, start + count) for one run of the loop.</summary>
    public InpaintingConditioning Prepare(int start, int count)
    {
        Conditioning.Ensure(count);
        for (int r = 0; r < count; r++)
        {
            _masks[start + r].CopyTo(Conditioning.Mask(r));
            if (_maskedGetter is not null)
                _masked[start + r].CopyTo(Conditioning.MaskedImageLatents(r));
        }
        return Conditioning;
    }
}
