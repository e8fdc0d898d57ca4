using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using Microsoft.ML.Transforms.Image;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>Settings of the DecodeLatents stage.</summary>
public sealed class DecodeLatentsOptions
{
    /// <summary>Latent width (w) when the latents column has no fixed shape (e.g. a loaded model); otherwise read from the column.</summary>
    public int? LatentWidth { get; init; }

    /// <summary>Latent height (h) when the latents column has no fixed shape.</summary>
    public int? LatentHeight { get; init; }

    /// <summary>Name of an optional second output: the decoded pixels as a planar float vector [3, H, W] in [−1, 1].</summary>
    public string? PixelsColumnName { get; init; }

    /// <summary>Rows per VAE decoder call.</summary>
    public int BatchSize { get; init; } = 2;

    /// <summary>
    /// Whether the VAE decodes the image in overlapping tiles blended at the seams (diffusers' <c>enable_vae_tiling()</c>), so
    /// that memory stays that of one tile for big images; default <see cref="VaeTiling.Auto"/> (images of at least four
    /// tiles).
    /// </summary>
    public VaeTiling Tiling { get; init; } = VaeTiling.Auto;

    /// <summary>
    /// The tile side in pixels; null takes the VAE's <c>sample_size</c> (<c>vae_decoder/config.json</c>; 512 for Stable
    /// Diffusion 1.x). A multiple of 4 × the VAE factor (32 for Stable Diffusion).
    /// </summary>
    public int? TileSize { get; init; }

    /// <summary>
    /// VQ autoencoders: decode the latents as they are, without snapping them to the codebook (diffusers
    /// <c>VQModel.decode(h, force_not_quantize=True)</c>); needs <c>vqvae_decoder_no_quantize/</c>. Default false
    /// (quantise, as LDMPipeline does). Setting it for a model without a VQ autoencoder is an error.
    /// </summary>
    public bool ForceNotQuantize { get; init; }

    /// <summary>
    /// VQ autoencoders: quantise on the host from <c>vqvae_decoder/codebook.npy</c> (nearest codebook vector by squared
    /// distance, ties to the lowest index as <c>torch.argmin</c>) and decode with <c>vqvae_decoder_no_quantize/</c>,
    /// instead of with the quantising graph <c>vqvae_decoder/</c>; the results agree up to float rounding. Default false.
    /// </summary>
    public bool QuantizeOnHost { get; init; }

    /// <summary>
    /// VQ autoencoders: name of an optional output column of the codebook index chosen for each latent pixel, a vector of
    /// Int32 [h, w] (the token grid a VQ model sees; needs <c>vqvae_decoder/codebook.npy</c>). Not with <see cref="ForceNotQuantize"/>.
    /// </summary>
    public string? CodebookIndicesColumnName { get; init; }

    /// <summary>The VQ decoding mode these options select.</summary>
    internal VqDecoding VqDecoding => ForceNotQuantize ? VqDecoding.NoQuantize : QuantizeOnHost ? VqDecoding.HostQuantize : VqDecoding.InGraph;

    internal void Validate(ModelInfo info)
    {
        bool vq = info.Autoencoder == AutoencoderKind.VQ;
        string kind = info.Autoencoder == AutoencoderKind.None ? "has no autoencoder (pixel space)" : "has a KL autoencoder (vae_decoder/)";
        if (!vq && (ForceNotQuantize || QuantizeOnHost || CodebookIndicesColumnName is not null))
        {
            string name = ForceNotQuantize ? nameof(ForceNotQuantize) : QuantizeOnHost ? nameof(QuantizeOnHost) : nameof(CodebookIndicesColumnName);
            throw new ArgumentException($"{name} applies to VQ autoencoders only; the model '{info.Directory}' {kind}.", name);
        }
        if (ForceNotQuantize && QuantizeOnHost)
            throw new ArgumentException("ForceNotQuantize and QuantizeOnHost exclude each other: the first decodes without quantising, the second quantises on the host.", nameof(QuantizeOnHost));
        if (ForceNotQuantize && CodebookIndicesColumnName is not null)
            throw new ArgumentException("CodebookIndicesColumnName needs quantisation, which ForceNotQuantize turns off.", nameof(CodebookIndicesColumnName));
        if (CodebookIndicesColumnName is not null)
            ArgumentException.ThrowIfNullOrWhiteSpace(CodebookIndicesColumnName, nameof(CodebookIndicesColumnName));
    }
}

/// <summary>Decodes latents with the VAE decoder into <see cref="MLImage"/>s: the transformer of <see cref="LatentDecodingEstimator"/>.</summary>
public sealed class LatentDecodingTransformer : DiffusionTransformer
{
    internal LatentDecodingTransformer(StableDiffusionModel model, string outputColumnName, string inputColumnName, DecodeLatentsOptions options)
        : base(model, "DecodeLatents")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputColumnName);
        ArgumentException.ThrowIfNullOrWhiteSpace(inputColumnName);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BatchSize < 1 || options.BatchSize > 256)
            throw new ArgumentOutOfRangeException(nameof(options), options.BatchSize, "BatchSize must be in [1, 256].");
        if (options.LatentHeight is int h && (h < 1 || h > 1024) || options.LatentWidth is int w && (w < 1 || w > 1024))
            throw new ArgumentOutOfRangeException(nameof(options), $"Latent size {options.LatentHeight}×{options.LatentWidth} is out of range [1, 1024].");
        if (options.LatentHeight.HasValue != options.LatentWidth.HasValue)
            throw new ArgumentException("Set both LatentWidth and LatentHeight, or neither.", nameof(options));
        VaeTiler.Validate(options.Tiling, options.TileSize, model.Info.VaeSpatialFactor);
        options.Validate(model.Info);
        // The folder's files the mode needs (codebook, no-quantize graph) are checked now, naming the missing one.
        using (new LatentDecoder(model, VaeTiling.Off, null, options.VqDecoding, options.CodebookIndicesColumnName is not null))
        {
        }
        OutputColumnName = outputColumnName;
        InputColumnName = inputColumnName;
        Options = options;
    }

    /// <summary>The image output column.</summary>
    public string OutputColumnName { get; }

    /// <summary>The latents input column.</summary>
    public string InputColumnName { get; }

    /// <summary>The stage's settings.</summary>
    public DecodeLatentsOptions Options { get; }

    internal override int BatchSize => Options.BatchSize;

    /// <summary>The latent [h, w] from the options, else from the input column's fixed shape [C, h, w].</summary>
    private (int Height, int Width) LatentSize(DataViewSchema inputSchema)
    {
        if (Options.LatentHeight is int h && Options.LatentWidth is int w)
            return (h, w);
        var c = inputSchema.GetColumnOrNull(InputColumnName);
        if (c?.Type is VectorDataViewType { Dimensions.Length: 3 } v && v.Dimensions[0] == Model.Info.LatentChannels && v.Dimensions[1] > 0 && v.Dimensions[2] > 0)
            return (v.Dimensions[1], v.Dimensions[2]);
        throw new ArgumentOutOfRangeException(nameof(inputSchema),
            $"Schema mismatch for input column '{InputColumnName}': expected Vector<Single> latents of shape [{Model.Info.LatentChannels}, h, w], got {c?.Type.ToString() ?? "no such column"}. "
            + "For a column without a fixed shape, set DecodeLatentsOptions.LatentWidth and LatentHeight.");
    }

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema)
    {
        // Image columns carry no size, as ML.NET's LoadImages does; the pixels vector has [3, H, W].
        var outputs = new List<KeyValuePair<string, DataViewType>> { new(OutputColumnName, new ImageDataViewType()) };
        if (Options.PixelsColumnName is { } p)
        {
            var (h, w) = inputSchema is null ? (1, 1) : LatentSize(inputSchema);
            int f = Model.Info.VaeSpatialFactor;
            outputs.Add(new(p, new VectorDataViewType(NumberDataViewType.Single, 3, h * f, w * f)));
        }
        if (Options.CodebookIndicesColumnName is { } k)
        {
            var (h, w) = inputSchema is null ? (1, 1) : LatentSize(inputSchema);
            outputs.Add(new(k, new VectorDataViewType(NumberDataViewType.Int32, h, w)));
        }
        return outputs;
    }

    /// <summary>The latents column; against a schema, of the size the latent [h, w] gives (<see cref="LatentSize"/>).</summary>
    internal override InputColumnTable GetInputColumns(DataViewSchema? inputSchema)
    {
        int c = Model.Info.LatentChannels;
        if (inputSchema is null)
            return new InputColumnTable().Add(InputColumnName, InputColumnKind.FloatVector, $"Vector<Single> latents [{c}, h, w]");
        var (h, w) = LatentSize(inputSchema);
        return new InputColumnTable().Add(InputColumnName, InputColumnKind.FloatVector, $"Vector<Single> of size {c * h * w} ({c}×{h}×{w})", size: c * h * w);
    }

    internal override StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs) => new Worker(this, input, LatentSize(input.Schema));

    private sealed class Worker : StageWorker
    {
        private readonly LatentDecodingTransformer _stage;
        private readonly LatentDecoder _decoder;
        private readonly IChannel _channel;
        private readonly ValueGetter<VBuffer<float>> _latentsGetter;
        private readonly float[] _batchLatents;
        private readonly long[] _positions;
        private VBuffer<float> _buffer;
        private ReadOnlyMemory<float> _batchPixels;

        private readonly int _latentHeight;
        private readonly int _latentWidth;
        private readonly int _width;
        private readonly int _height;
        private readonly int _latentLength;

        public Worker(LatentDecodingTransformer stage, DataViewRow input, (int Height, int Width) latent)
        {
            _stage = stage;
            (_latentHeight, _latentWidth) = latent;
            int f = stage.Model.Info.VaeSpatialFactor;
            _height = _latentHeight * f;
            _width = _latentWidth * f;
            _latentLength = stage.Model.Info.LatentChannels * _latentHeight * _latentWidth;
            _decoder = new LatentDecoder(stage.Model, stage.Options.Tiling, stage.Options.TileSize, stage.Options.VqDecoding, stage.Options.CodebookIndicesColumnName is not null);
            _channel = stage.StartChannel();
            _latentsGetter = input.GetGetter<VBuffer<float>>(input.Schema[stage.InputColumnName]);
            _batchLatents = new float[stage.BatchSize * _latentLength];
            _positions = new long[stage.BatchSize];
        }

        public override void ReadRow(int slot, long position)
        {
            _latentsGetter(ref _buffer);
            int len = _latentLength;
            if (_buffer.Length != len)
                throw new InvalidOperationException($"Row {position}: column '{_stage.InputColumnName}' has {_buffer.Length} values; expected {len} ({_stage.Model.Info.LatentChannels}×{_latentHeight}×{_latentWidth}).");
            _buffer.CopyTo(_batchLatents, slot * len);
            _positions[slot] = position;
        }

        public override void Process(int count)
        {
            // Rows are served straight from the decoder's output buffer (valid until the next batch): no per-row copies.
            _batchPixels = _decoder.Decode(_batchLatents.AsSpan(0, count * _latentLength), count, _latentHeight, _latentWidth);
            _channel.Trace(MessageSensitivity.None, $"Decoded rows {_positions[0]}–{_positions[0] + count - 1}.");
        }

        public override Delegate MakeGetter(int outputIndex, Func<int> slot)
        {
            if (outputIndex == 0)
                return (ValueGetter<MLImage>)((ref MLImage value) => value = ImageTensor.ToImage(Row(slot()), _width, _height));
            if (_stage.Options.CodebookIndicesColumnName is not null && outputIndex == (_stage.Options.PixelsColumnName is null ? 1 : 2))
            {
                return (ValueGetter<VBuffer<int>>)((ref VBuffer<int> value) =>
                {
                    int plane = _latentHeight * _latentWidth;
                    var editor = VBufferEditor.Create(ref value, plane);
                    _decoder.Indices.Span.Slice(slot() * plane, plane).CopyTo(editor.Values);
                    value = editor.Commit();
                });
            }
            return (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) =>
            {
                WriteVector(Row(slot()), ref value);
            });
        }

        private ReadOnlySpan<float> Row(int slot)
        {
            int plane = 3 * _width * _height;
            return _batchPixels.Span.Slice(slot * plane, plane);
        }

        public override void Dispose()
        {
            _decoder.Dispose();
            _channel.Dispose();
        }
    }
}

/// <summary>
/// Create a <see cref="LatentDecodingEstimator"/>, which decodes latents with the model's VAE decoder into images.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// ###  Estimator characteristics
/// |  |  |
/// | -- | -- |
/// | Does this estimator need to look at the data to train its parameters? | No |
/// | Input column data type | Vector of Single [C, h, w] latents (DenoiseLatents' output) |
/// | Output column data type | MLImage (RGBA32, f·w × f·h); optionally Vector of Single [3, H, W] pixels |
/// | Required NuGet in addition to Microsoft.ML | MLNet.Diffusion, Microsoft.ML.ImageAnalytics, an ONNX Runtime native package |
/// ]]></format>
/// </remarks>
public sealed class LatentDecodingEstimator : DiffusionEstimator<LatentDecodingTransformer>
{
    internal LatentDecodingEstimator(StableDiffusionModel model, string outputColumnName, string inputColumnName, DecodeLatentsOptions options)
        : base(new LatentDecodingTransformer(model, outputColumnName, inputColumnName, options))
    {
    }
}
