using System;
using System.Collections.Generic;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>How PrepareControlImage turns an image into a control image before scaling it to [0, 1].</summary>
public enum ControlImagePreprocessor
{
    /// <summary>The image as is (a control image made elsewhere: an edge map, a pose, a depth map, a silhouette).</summary>
    None,

    /// <summary>Canny edges with OpenCV's semantics (<see cref="PrepareControlImageOptions.CannyLowThreshold"/>…), white on black, for Canny ControlNets.</summary>
    Canny,
}

/// <summary>Settings of the PrepareControlImage stage.</summary>
public sealed class PrepareControlImageOptions
{
    /// <summary>The MLImage input column.</summary>
    public string ImageColumnName { get; init; } = "Image";

    /// <summary>The control-image output column, a float vector [3, H, W] in [0, 1] (<see cref="ControlNetUnit.ImageColumnName"/>).</summary>
    public string OutputColumnName { get; init; } = "ControlImage";

    /// <summary>The output width, DenoiseLatents' width.</summary>
    public int Width { get; init; } = 512;

    /// <summary>The output height, DenoiseLatents' height.</summary>
    public int Height { get; init; } = 512;

    /// <summary>
    /// An image of another size is resized with <see cref="ImageResizeMode.Stretch"/> — with Pillow's LANCZOS filter on the
    /// 8-bit picture, bit for bit, as diffusers' VaeImageProcessor (<c>resample="lanczos"</c>) — and refused with
    /// <see cref="ImageResizeMode.None"/>. (Pillow premultiplies a translucent RGBA picture's alpha before resizing; this stage
    /// drops alpha, so the two agree for opaque pictures.)
    /// </summary>
    public ImageResizeMode ResizeMode { get; init; } = ImageResizeMode.Stretch;

    /// <summary>The preprocessor, run on the image at its own size before resizing.</summary>
    public ControlImagePreprocessor Preprocessor { get; init; } = ControlImagePreprocessor.None;

    /// <summary>Canny: OpenCV's <c>threshold1</c> (diffusers' ControlNet example: 100).</summary>
    public double CannyLowThreshold { get; init; } = 100;

    /// <summary>Canny: OpenCV's <c>threshold2</c> (diffusers' ControlNet example: 200).</summary>
    public double CannyHighThreshold { get; init; } = 200;

    /// <summary>Canny: OpenCV's <c>L2gradient</c> (√(dx² + dy²) instead of |dx| + |dy|).</summary>
    public bool CannyL2Gradient { get; init; }

    /// <summary>Rows per batch.</summary>
    public int BatchSize { get; init; } = 4;

    internal void Validate(ModelInfo info)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(ImageColumnName, nameof(ImageColumnName));
        ArgumentException.ThrowIfNullOrWhiteSpace(OutputColumnName, nameof(OutputColumnName));
        ImageStageInput.ValidateSize(info, Width, Height, ResizeMode);
        if (!Enum.IsDefined(Preprocessor))
            throw new ArgumentOutOfRangeException(nameof(Preprocessor), Preprocessor, "Preprocessor must be None or Canny.");
        if (!(CannyLowThreshold >= 0 && CannyHighThreshold >= 0) || double.IsInfinity(CannyLowThreshold) || double.IsInfinity(CannyHighThreshold))
            throw new ArgumentOutOfRangeException(nameof(CannyLowThreshold), $"Canny thresholds must be finite numbers ≥ 0, got {CannyLowThreshold} and {CannyHighThreshold}.");
        if (BatchSize < 1 || BatchSize > 256)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be in [1, 256].");
    }
}

/// <summary>Turns an MLImage column into ControlNet control images: the transformer of <see cref="ControlImagePreparationEstimator"/>.</summary>
public sealed class ControlImagePreparationTransformer : DiffusionTransformer
{
    private readonly KeyValuePair<string, DataViewType>[] _outputs;

    internal ControlImagePreparationTransformer(StableDiffusionModel model, PrepareControlImageOptions options)
        : base(model, "PrepareControlImage")
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate(model.Info);
        Options = options;
        _outputs = new[] { new KeyValuePair<string, DataViewType>(options.OutputColumnName, new VectorDataViewType(NumberDataViewType.Single, 3, options.Height, options.Width)) };
    }

    /// <summary>The stage's settings.</summary>
    public PrepareControlImageOptions Options { get; }

    internal override int BatchSize => Options.BatchSize;

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema) => _outputs;

    internal override InputColumnTable GetInputColumns(DataViewSchema? inputSchema) => new InputColumnTable()
        .Add(Options.ImageColumnName, InputColumnKind.Image, "Image (MLImage)");

    internal override StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs) => new Worker(this, input);

    private sealed class Worker : StageWorker
    {
        private readonly ControlImagePreparationTransformer _stage;
        private readonly ValueGetter<MLImage> _imageGetter;
        private readonly ImageStageInput _images;
        private readonly ImageStageInput.ReadPlanes _read;
        private readonly float[] _batch;
        private readonly int _length;
        private PillowLanczosResampler? _lanczos;
        private float[] _source = Array.Empty<float>();
        private byte[] _sourceBytes = Array.Empty<byte>();
        private byte[] _resized = Array.Empty<byte>();

        public Worker(ControlImagePreparationTransformer stage, DataViewRow input)
        {
            _stage = stage;
            var o = stage.Options;
            _imageGetter = input.GetGetter<MLImage>(input.Schema[o.ImageColumnName]);
            _images = new ImageStageInput(o.Width, o.Height, o.ResizeMode, nameof(PrepareControlImageOptions), "to resize it, or resize it before this stage.");
            _read = new ControlImagePreparer(o).ReadPlanes;
            _length = 3 * o.Width * o.Height;
            _batch = new float[stage.BatchSize * _length];
        }

        public override void ReadRow(int slot, long position)
        {
            var o = _stage.Options;
            MLImage? image = null;
            _imageGetter(ref image!);
            _ = image ?? throw new InvalidOperationException($"Row {position}: image column '{o.ImageColumnName}' has no image (null).");
            var destination = _batch.AsSpan(slot * _length, _length);
            if (!_images.NeedsResize(image, position, o.ImageColumnName))
            {
                _read(image, destination);
                return;
            }
            // diffusers' control_image_processor resizes the 8-bit picture with Pillow's LANCZOS (VaeImageProcessor's
            // default resample) before pil_to_numpy's / 255: the same on the bytes, then / 255.
            int sourceLength = 3 * image.Width * image.Height;
            if (_source.Length < sourceLength)
            {
                _source = new float[sourceLength];
                _sourceBytes = new byte[sourceLength];
            }
            if (_resized.Length != _length)
                _resized = new byte[_length];
            if (_lanczos is null || _lanczos.SourceWidth != image.Width || _lanczos.SourceHeight != image.Height)
                _lanczos = new PillowLanczosResampler(image.Width, image.Height, o.Width, o.Height);
            var planes = _source.AsSpan(0, sourceLength);
            var bytes = _sourceBytes.AsSpan(0, sourceLength);
            _read(image, planes);
            for (int i = 0; i < sourceLength; i++)
                bytes[i] = (byte)MathF.Round(planes[i] * 255f); // the planes are byte / 255: exact
            _lanczos.Resize(bytes, _resized, 3);
            for (int i = 0; i < _length; i++)
                destination[i] = _resized[i] / 255f;
        }

        public override void Process(int count)
        {
        }

        public override Delegate MakeGetter(int outputIndex, Func<int> slot) =>
            (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) => WriteVector(_batch.AsSpan(slot() * _length, _length), ref value));
    }
}

/// <summary>
/// Create a <see cref="ControlImagePreparationEstimator"/>, which prepares ControlNet control images from an image column
/// as diffusers' VaeImageProcessor does for ControlNet (RGB, resized to the output size, [0, 1]), optionally through a
/// preprocessor (Canny edges).
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// ###  Estimator characteristics
/// |  |  |
/// | -- | -- |
/// | Does this estimator need to look at the data to train its parameters? | No |
/// | Input column data type | MLImage (RGBA32/BGRA32) |
/// | Output column data type | Vector of Single [3, H, W] in [0, 1] |
/// | Required NuGet in addition to Microsoft.ML | MLNet.Diffusion, Microsoft.ML.ImageAnalytics |
/// ]]></format>
/// </remarks>
public sealed class ControlImagePreparationEstimator : DiffusionEstimator<ControlImagePreparationTransformer>
{
    internal ControlImagePreparationEstimator(StableDiffusionModel model, PrepareControlImageOptions options)
        : base(new ControlImagePreparationTransformer(model, options))
    {
    }
}
