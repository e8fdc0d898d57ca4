using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>Settings of the PrepareInpainting stage: its columns, the size the image is worked at, and the mask processing.</summary>
public sealed class PrepareInpaintingOptions
{
    /// <summary>Name of the image input column (<see cref="MLImage"/>): the picture to repaint.</summary>
    public string ImageColumnName { get; init; } = "Image";

    /// <summary>
    /// Name of the mask input column (<see cref="MLImage"/>, the image's size): white repaints, black keeps. The mask is
    /// read as Pillow's grayscale and binarised at 0.5 (luma ≥ 128 repaints), as diffusers' inpainting mask processor does.
    /// </summary>
    public string MaskColumnName { get; init; } = "Mask";

    /// <summary>
    /// Name of the latent mask output column: float vector [1, Height/f, Width/f] of 0 (keep) and 1 (repaint), for
    /// <see cref="DenoiseLatentsOptions.MaskColumnName"/>.
    /// </summary>
    public string LatentMaskColumnName { get; init; } = "LatentMask";

    /// <summary>
    /// Name of the masked-image latents output column: float vector [C, Height/f, Width/f], the VAE encoding (× scaling
    /// factor) of the image with the repainted pixels set to mid gray (diffusers: <c>image · (mask &lt; 0.5)</c>), for
    /// <see cref="DenoiseLatentsOptions.MaskedImageLatentsColumnName"/> (inpainting UNets). Null for none: ordinary UNets do not
    /// use it. Computed only when a cursor reads it.
    /// </summary>
    public string? MaskedImageLatentsColumnName { get; init; } = "MaskedImageLatents";

    /// <summary>Width in pixels the image and mask are worked at; a multiple of 8 and of the VAE factor (DenoiseLatents' width).</summary>
    public int Width { get; init; } = 512;

    /// <summary>Height in pixels the image and mask are worked at; a multiple of 8 and of the VAE factor.</summary>
    public int Height { get; init; } = 512;

    /// <summary>
    /// What to do with an image (and its mask) of another size than <see cref="Width"/>×<see cref="Height"/>; default
    /// <see cref="ImageResizeMode.Stretch"/>, the rule of EncodeImage. A resized mask is binarised after resizing, as
    /// diffusers does.
    /// </summary>
    public ImageResizeMode ResizeMode { get; init; } = ImageResizeMode.Stretch;

    /// <summary>How the pixel mask becomes the latent mask; default <see cref="Imaging.MaskDownsampling.Nearest"/> (diffusers).</summary>
    public MaskDownsampling MaskDownsampling { get; init; } = MaskDownsampling.Nearest;

    /// <summary>
    /// How the masked image's latents are taken from an encoder that outputs the distribution's parameters; as
    /// <see cref="EncodeImageOptions.Sampling"/>. With the same seeds as EncodeImage the sampling noise is the same, so
    /// the latents of the known region agree between the two.
    /// </summary>
    public LatentSampling Sampling { get; init; } = LatentSampling.Sample;

    /// <summary>Name of an optional seed column for <see cref="LatentSampling.Sample"/> (as <see cref="EncodeImageOptions.SeedColumnName"/>).</summary>
    public string? SeedColumnName { get; init; }

    /// <summary>Base seed for rows without a seed column; null derives it from the MLContext's random source.</summary>
    public int? Seed { get; init; }

    /// <summary>
    /// Where the masked image's sampling noise ε comes from (<see cref="LatentSampling.Sample"/>): default <see cref="NoiseOptions.Default"/>.
    /// With another generator a row's ε is that generator's first draw from the row's seed, after <see cref="NoiseOptions.DrawsBefore"/>
    /// skipped ones (diffusers' <c>retrieve_latents(…, generator)</c>, which StableDiffusionInpaintPipeline calls after its
    /// initial noise); <see cref="NoiseBatchPolicy.GeneratorPerBatch"/> draws [BatchSize, C, h, w] at once.
    /// </summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;

    /// <summary>Rows per VAE encoder call.</summary>
    public int BatchSize { get; init; } = 4;

    internal void Validate(ModelInfo info)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(ImageColumnName, nameof(ImageColumnName));
        ArgumentException.ThrowIfNullOrWhiteSpace(MaskColumnName, nameof(MaskColumnName));
        ArgumentException.ThrowIfNullOrWhiteSpace(LatentMaskColumnName, nameof(LatentMaskColumnName));
        if (MaskedImageLatentsColumnName is { } m && (string.IsNullOrWhiteSpace(m) || m == LatentMaskColumnName))
            throw new ArgumentException($"MaskedImageLatentsColumnName '{m}' must be a non-empty name other than LatentMaskColumnName (or null for none).", nameof(MaskedImageLatentsColumnName));
        ImageStageInput.ValidateSize(info, Width, Height, ResizeMode);
        if (!Enum.IsDefined(MaskDownsampling))
            throw new ArgumentOutOfRangeException(nameof(MaskDownsampling), MaskDownsampling, "MaskDownsampling must be Nearest or Any.");
        ImageStageInput.ValidateEncoding(Sampling, BatchSize);
        ImageStageInput.ValidateNoise(Noise);
    }
}

/// <summary>
/// Turns an image and its mask into what DenoiseLatents inpaints with: the latent-resolution mask and the masked
/// image's latents (diffusers StableDiffusionInpaintPipeline, <c>prepare_mask_latents</c>). The transformer of
/// <see cref="InpaintingPreparationEstimator"/>.
/// </summary>
public sealed class InpaintingPreparationTransformer : DiffusionTransformer
{
    private readonly KeyValuePair<string, DataViewType>[] _outputs;

    internal InpaintingPreparationTransformer(StableDiffusionModel model, PrepareInpaintingOptions options)
        : base(model, "PrepareInpainting")
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(model.Info);
        if (options.MaskedImageLatentsColumnName is not null)
        {
            ImageEncoder.ReadContract(model, ImageEncoder.RequireEncoder(model));
            ImageEncoder.CheckSampling(model, options.Sampling, "PrepareInpainting");
        }
        Options = options;
        int f = model.Info.VaeSpatialFactor, h = options.Height / f, w = options.Width / f;
        var outputs = new List<KeyValuePair<string, DataViewType>> { new(options.LatentMaskColumnName, new VectorDataViewType(NumberDataViewType.Single, 1, h, w)) };
        if (options.MaskedImageLatentsColumnName is { } m)
            outputs.Add(new(m, new VectorDataViewType(NumberDataViewType.Single, model.Info.LatentChannels, h, w)));
        _outputs = outputs.ToArray();
    }

    /// <summary>The stage's settings (column names included).</summary>
    public PrepareInpaintingOptions Options { get; }

    internal override int BatchSize => Options.BatchSize;

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema) => _outputs;

    internal override InputColumnTable GetInputColumns(DataViewSchema? inputSchema) => new InputColumnTable()
        .Add(Options.ImageColumnName, InputColumnKind.Image, "Image (MLImage)")
        .Add(Options.MaskColumnName, InputColumnKind.Image, "Image (MLImage) mask, white = repaint")
        .Add(Options.SeedColumnName, InputColumnKind.Integer, ColumnChecks.SeedDescription);

    internal override StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs) =>
        new Worker(this, input, activeOutputs.Length > 1 && activeOutputs[1]);

    private sealed class Worker : StageWorker
    {
        private static readonly ImageStageInput.ReadPlanes s_readLuma = InpaintingMask.ReadLuma;
        private readonly InpaintingPreparationTransformer _stage;
        private readonly ImageEncoder? _encoder;
        private readonly IChannel _channel;
        private readonly ValueGetter<MLImage> _imageGetter;
        private readonly ValueGetter<MLImage> _maskGetter;
        private readonly ImageStageInput _images;
        private readonly RowSeeds _rowSeeds;
        private readonly long[] _seeds;
        private readonly long[] _positions;
        private readonly float[] _batchPixels;
        private readonly float[] _batchMasks;
        private readonly float[] _batchLatents;
        private readonly float[] _mask;
        private readonly int _pixelLength;
        private readonly int _maskLength;
        private readonly int _latentLength;

        public Worker(InpaintingPreparationTransformer stage, DataViewRow input, bool encode)
        {
            _stage = stage;
            var o = stage.Options;
            _channel = stage.StartChannel();
            _imageGetter = input.GetGetter<MLImage>(input.Schema[o.ImageColumnName]);
            _maskGetter = input.GetGetter<MLImage>(input.Schema[o.MaskColumnName]);
            _images = new ImageStageInput(o.Width, o.Height, o.ResizeMode, nameof(PrepareInpaintingOptions),
                "to resize it and its mask, or resize them before this stage.");
            _rowSeeds = new RowSeeds(input, o.SeedColumnName, o.Seed, stage.Model);
            int f = stage.Model.Info.VaeSpatialFactor, b = stage.BatchSize;
            _pixelLength = 3 * o.Width * o.Height;
            _maskLength = o.Height / f * (o.Width / f);
            _mask = new float[o.Width * o.Height];
            _batchMasks = new float[b * _maskLength];
            if (encode)
            {
                _encoder = new ImageEncoder(stage.Model, o.Sampling, noise: o.Noise);
                _latentLength = _encoder.LatentLength(o.Height, o.Width);
            }
            _batchPixels = new float[encode ? b * _pixelLength : 0];
            _batchLatents = new float[b * _latentLength];
            _seeds = new long[b];
            _positions = new long[b];
        }

        public override void ReadRow(int slot, long position)
        {
            var o = _stage.Options;
            _positions[slot] = position;
            MLImage? image = null, mask = null;
            _imageGetter(ref image!);
            _maskGetter(ref mask!);
            _ = image ?? throw new InvalidOperationException($"Row {position}: image column '{o.ImageColumnName}' has no image (null).");
            _ = mask ?? throw new InvalidOperationException($"Row {position}: mask column '{o.MaskColumnName}' has no image (null).");
            if (mask.Width != image.Width || mask.Height != image.Height)
                throw new InvalidOperationException(
                    $"Row {position}: the mask in column '{o.MaskColumnName}' is {mask.Width}×{mask.Height} but the image in column '{o.ImageColumnName}' is {image.Width}×{image.Height}; "
                    + "a mask must have its image's size (white = repaint, black = keep).");
            bool resize = _images.NeedsResize(image, position, o.ImageColumnName);

            // 1. The mask: grayscale (resized like the image), binarised at 0.5, then downsampled to the latent grid.
            _images.Read(mask, 1, _mask, resize, s_readLuma);
            InpaintingMask.Binarize(_mask);
            InpaintingMask.ToLatent(_mask, o.Width, o.Height, _stage.Model.Info.VaeSpatialFactor, o.MaskDownsampling, _batchMasks.AsSpan(slot * _maskLength, _maskLength));

            // 2. The masked image image·(mask < 0.5), encoded in Process (only when its column is read).
            if (_encoder is not null)
            {
                var pixels = _batchPixels.AsSpan(slot * _pixelLength, _pixelLength);
                _images.Read(image, 3, pixels, resize, ImageStageInput.Rgb);
                InpaintingMask.ApplyToImage(pixels, _mask);
                _seeds[slot] = _rowSeeds.Read(position);
            }
        }

        public override void Process(int count)
        {
            if (_encoder is null)
                return;
            var o = _stage.Options;
            _encoder.Encode(_batchPixels.AsSpan(0, count * _pixelLength), count, o.Height, o.Width, _seeds.AsSpan(0, count), _positions.AsSpan(0, count),
                _batchLatents.AsSpan(0, count * _latentLength));
            _channel.Trace(MessageSensitivity.None, $"Encoded the masked images of rows {_positions[0]}–{_positions[0] + count - 1}.");
        }

        public override Delegate MakeGetter(int outputIndex, Func<int> slot) => outputIndex == 0
            ? (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) => WriteVector(_batchMasks.AsSpan(slot() * _maskLength, _maskLength), ref value))
            : (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) => WriteVector(_batchLatents.AsSpan(slot() * _latentLength, _latentLength), ref value));

        public override void Dispose()
        {
            _encoder?.Dispose();
            _channel.Dispose();
        }
    }
}

/// <summary>
/// Create an <see cref="InpaintingPreparationEstimator"/>, which turns an image column and a mask column (white =
/// repaint) into the latent mask and the masked image's latents that DenoiseLatents inpaints with.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// ###  Estimator characteristics
/// |  |  |
/// | -- | -- |
/// | Does this estimator need to look at the data to train its parameters? | No |
/// | Input column data type | MLImage image and MLImage mask of the same size (RGBA32/BGRA32); optional seed (integer) |
/// | Output column data type | Vector of Single [1, H/f, W/f] latent mask; Vector of Single [C, H/f, W/f] masked-image latents |
/// | Required NuGet in addition to Microsoft.ML | MLNet.Diffusion, Microsoft.ML.ImageAnalytics, an ONNX Runtime native package |
/// ]]></format>
/// </remarks>
public sealed class InpaintingPreparationEstimator : DiffusionEstimator<InpaintingPreparationTransformer>
{
    internal InpaintingPreparationEstimator(StableDiffusionModel model, PrepareInpaintingOptions options)
        : base(new InpaintingPreparationTransformer(model, options))
    {
    }
}
