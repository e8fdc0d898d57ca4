using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>What EncodeImage does with an image whose size is not <see cref="EncodeImageOptions.Width"/>×<see cref="EncodeImageOptions.Height"/>.</summary>
public enum ImageResizeMode
{
    /// <summary>
    /// Resize it to the target size, ignoring the aspect ratio, as diffusers' VaeImageProcessor.preprocess does (it
    /// resizes to the requested height and width). The filter is Pillow's bilinear one: antialiased when shrinking,
    /// bilinear interpolation when enlarging (diffusers' default resample is Lanczos; the difference is small).
    /// </summary>
    Stretch,

    /// <summary>Do not resize: a row whose image has another size fails with an error naming the row, its size and the expected size.</summary>
    None,
}

/// <summary>Settings of the EncodeImage stage.</summary>
public sealed class EncodeImageOptions
{
    /// <summary>Width in pixels the images are encoded at; a multiple of 8 and of the VAE factor. The latents are [C, Height/f, Width/f].</summary>
    public int Width { get; init; } = 512;

    /// <summary>Height in pixels the images are encoded at; a multiple of 8 and of the VAE factor.</summary>
    public int Height { get; init; } = 512;

    /// <summary>What to do with an image of another size; default <see cref="ImageResizeMode.Stretch"/>.</summary>
    public ImageResizeMode ResizeMode { get; init; } = ImageResizeMode.Stretch;

    /// <summary>
    /// How latents are taken from an encoder that outputs the distribution's parameters (<c>latent_parameters</c>);
    /// default <see cref="LatentSampling.Sample"/>. An encoder that outputs an already sampled <c>latent_sample</c>
    /// (the classic diffusers ONNX export) is used as it is in both modes.
    /// </summary>
    public LatentSampling Sampling { get; init; } = LatentSampling.Sample;

    /// <summary>
    /// Name of an optional seed column (any integer type, or whole numbers in a Single/Double column) for
    /// <see cref="LatentSampling.Sample"/>. Rows without a seed column use <see cref="Seed"/> (or a seed derived from
    /// the MLContext) plus the row's position, as DenoiseLatents does. The encoder draws from a stream derived from the
    /// seed that differs from DenoiseLatents' stream, so giving both stages the same seed column is safe.
    /// </summary>
    public string? SeedColumnName { get; init; }

    /// <summary>Base seed for rows without a seed column; null derives it from the MLContext's random source.</summary>
    public int? Seed { get; init; }

    /// <summary>
    /// Where the sampling noise ε comes from (<see cref="LatentSampling.Sample"/>): default <see cref="NoiseOptions.Default"/>.
    /// With another generator a row's ε is that generator's first draw from the row's seed, after <see cref="NoiseOptions.DrawsBefore"/>
    /// skipped ones (diffusers' <c>retrieve_latents(…, generator)</c>); <see cref="NoiseBatchPolicy.GeneratorPerBatch"/> draws [BatchSize, C, h, w] at once.
    /// </summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;

    /// <summary>Rows per VAE encoder call.</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>
    /// Whether the VAE encodes the image in overlapping tiles blended at the seams (diffusers' <c>enable_vae_tiling()</c>), so
    /// that memory stays that of one tile for big images; default <see cref="VaeTiling.Auto"/> (images of at least four
    /// tiles).
    /// </summary>
    public VaeTiling Tiling { get; init; } = VaeTiling.Auto;

    /// <summary>
    /// The tile side in pixels; null takes the VAE's <c>sample_size</c> (<c>vae_decoder/config.json</c>; 512 for Stable
    /// Diffusion 1.x). A multiple of 4 × the VAE factor (32 for Stable Diffusion).
    /// </summary>
    public int? TileSize { get; init; }

    internal void Validate(ModelInfo info)
    {
        ImageStageInput.ValidateSize(info, Width, Height, ResizeMode);
        ImageStageInput.ValidateEncoding(Sampling, BatchSize);
        VaeTiler.Validate(Tiling, TileSize, info.VaeSpatialFactor);
        ImageStageInput.ValidateNoise(Noise);
    }
}

/// <summary>
/// Encodes images with the VAE encoder into scaled latents — the latents DenoiseLatents produces and DecodeLatents
/// consumes: the transformer of <see cref="ImageEncodingEstimator"/>.
/// </summary>
public sealed class ImageEncodingTransformer : DiffusionTransformer
{
    private readonly KeyValuePair<string, DataViewType>[] _outputs;

    internal ImageEncodingTransformer(StableDiffusionModel model, string outputColumnName, string inputColumnName, EncodeImageOptions options)
        : base(model, "EncodeImage")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputColumnName);
        ArgumentException.ThrowIfNullOrWhiteSpace(inputColumnName);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(model.Info);
        ImageEncoder.ReadContract(model, ImageEncoder.RequireEncoder(model));
        ImageEncoder.CheckSampling(model, options.Sampling, "EncodeImage");
        OutputColumnName = outputColumnName;
        InputColumnName = inputColumnName;
        Options = options;
        int f = model.Info.VaeSpatialFactor;
        _outputs = new[] { new KeyValuePair<string, DataViewType>(outputColumnName, new VectorDataViewType(NumberDataViewType.Single, model.Info.LatentChannels, options.Height / f, options.Width / f)) };
    }

    /// <summary>The latents output column.</summary>
    public string OutputColumnName { get; }

    /// <summary>The image input column.</summary>
    public string InputColumnName { get; }

    /// <summary>The stage's settings.</summary>
    public EncodeImageOptions Options { get; }

    internal override int BatchSize => Options.BatchSize;

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema) => _outputs;

    internal override InputColumnTable GetInputColumns(DataViewSchema? inputSchema) => new InputColumnTable()
        .Add(InputColumnName, InputColumnKind.Image, "Image (MLImage)")
        .Add(Options.SeedColumnName, InputColumnKind.Integer, ColumnChecks.SeedDescription);

    internal override StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs) => new Worker(this, input);

    private sealed class Worker : StageWorker
    {
        private readonly ImageEncodingTransformer _stage;
        private readonly ImageEncoder _encoder;
        private readonly IChannel _channel;
        private readonly ValueGetter<MLImage> _imageGetter;
        private readonly ImageStageInput _images;
        private readonly RowSeeds _rowSeeds;
        private readonly long[] _seeds;
        private readonly long[] _positions;
        private readonly float[] _batchPixels;
        private readonly float[] _batchLatents;
        private readonly int _pixelLength;
        private readonly int _latentLength;

        public Worker(ImageEncodingTransformer stage, DataViewRow input)
        {
            _stage = stage;
            var o = stage.Options;
            _encoder = new ImageEncoder(stage.Model, o.Sampling, o.Tiling, o.TileSize, o.Noise);
            _channel = stage.StartChannel();
            _imageGetter = input.GetGetter<MLImage>(input.Schema[stage.InputColumnName]);
            _images = new ImageStageInput(o.Width, o.Height, o.ResizeMode, nameof(EncodeImageOptions), "to resize it, or resize it before this stage.");
            _rowSeeds = new RowSeeds(input, o.SeedColumnName, o.Seed, stage.Model);
            _pixelLength = 3 * o.Width * o.Height;
            _latentLength = _encoder.LatentLength(o.Height, o.Width);
            _batchPixels = new float[stage.BatchSize * _pixelLength];
            _batchLatents = new float[stage.BatchSize * _latentLength];
            _seeds = new long[stage.BatchSize];
            _positions = new long[stage.BatchSize];
        }

        public override void ReadRow(int slot, long position)
        {
            _positions[slot] = position;
            MLImage? image = null;
            _imageGetter(ref image!);
            _ = image ?? throw new InvalidOperationException($"Row {position}: image column '{_stage.InputColumnName}' has no image (null).");
            bool resize = _images.NeedsResize(image, position, _stage.InputColumnName);
            _images.Read(image, 3, _batchPixels.AsSpan(slot * _pixelLength, _pixelLength), resize, ImageStageInput.Rgb);
            _seeds[slot] = _rowSeeds.Read(position);
        }

        public override void Process(int count)
        {
            var o = _stage.Options;
            _encoder.Encode(_batchPixels.AsSpan(0, count * _pixelLength), count, o.Height, o.Width, _seeds.AsSpan(0, count), _positions.AsSpan(0, count),
                _batchLatents.AsSpan(0, count * _latentLength));
            _channel.Trace(MessageSensitivity.None, $"Encoded rows {_positions[0]}–{_positions[0] + count - 1}.");
        }

        public override Delegate MakeGetter(int outputIndex, Func<int> slot) =>
            (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) =>
                WriteVector(_batchLatents.AsSpan(slot() * _latentLength, _latentLength), ref value));

        public override void Dispose()
        {
            _encoder.Dispose();
            _channel.Dispose();
        }
    }
}

/// <summary>
/// Create an <see cref="ImageEncodingEstimator"/>, which encodes images with the model's VAE encoder into scaled
/// latents, the starting point of image-to-image (DenoiseLatents' <see cref="DenoiseLatentsOptions.InitialLatentsColumnName"/>).
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// ###  Estimator characteristics
/// |  |  |
/// | -- | -- |
/// | Does this estimator need to look at the data to train its parameters? | No |
/// | Input column data type | MLImage (RGBA32/BGRA32; alpha is ignored); optional seed (integer) |
/// | Output column data type | Vector of Single [C, H/f, W/f] latents × the VAE scaling factor |
/// | Required NuGet in addition to Microsoft.ML | MLNet.Diffusion, Microsoft.ML.ImageAnalytics, an ONNX Runtime native package |
/// ]]></format>
/// </remarks>
public sealed class ImageEncodingEstimator : DiffusionEstimator<ImageEncodingTransformer>
{
    internal ImageEncodingEstimator(StableDiffusionModel model, string outputColumnName, string inputColumnName, EncodeImageOptions options)
        : base(new ImageEncodingTransformer(model, outputColumnName, inputColumnName, options))
    {
    }
}
