using System;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Randomness;

namespace MLNet.Diffusion.Transforms;

/// <summary>
/// What the stages that work on images at a fixed size share (EncodeImage, PrepareInpainting): the checks of their size,
/// resize, sampling and batch options, and a per-worker reader that brings a row's image to that size.
/// </summary>
internal sealed class ImageStageInput
{
    private readonly int _width;
    private readonly int _height;
    private readonly ImageResizeMode _resizeMode;
    private readonly string _optionsName;
    private readonly string _resizeAdvice;
    private float[] _source = Array.Empty<float>();
    private ImageResampler? _resampler;

    /// <summary>Creates the reader of one worker.</summary>
    /// <param name="width">The stage's width in pixels.</param>
    /// <param name="height">The stage's height in pixels.</param>
    /// <param name="resizeMode">What to do with an image of another size.</param>
    /// <param name="optionsName">The options class, for the error of <see cref="ImageResizeMode.None"/>.</param>
    /// <param name="resizeAdvice">The end of that error, after "Set ResizeMode = ImageResizeMode.Stretch ".</param>
    public ImageStageInput(int width, int height, ImageResizeMode resizeMode, string optionsName, string resizeAdvice)
    {
        _width = width;
        _height = height;
        _resizeMode = resizeMode;
        _optionsName = optionsName;
        _resizeAdvice = resizeAdvice;
    }

    /// <summary>Reads a plane-major image of <c>channels</c> planes (RGB, luma…) of any size into a span.</summary>
    public delegate void ReadPlanes(MLImage image, Span<float> destination);

    /// <summary>The stage's own reader of RGB planes in [−1, 1] (<see cref="ImageTensor"/>), cached as a delegate.</summary>
    public static readonly ReadPlanes Rgb = ImageTensor.ReadPlanes;

    /// <summary>Checks the options every fixed-size image stage has: a size the VAE can encode and a known resize mode.</summary>
    public static void ValidateSize(ModelInfo info, int width, int height, ImageResizeMode resizeMode)
    {
        DenoiseLatentsOptions.CheckSize("Width", width, info.VaeSpatialFactor);
        DenoiseLatentsOptions.CheckSize("Height", height, info.VaeSpatialFactor);
        if (!Enum.IsDefined(resizeMode))
            throw new ArgumentOutOfRangeException("ResizeMode", resizeMode, "ResizeMode must be Stretch or None.");
    }

    /// <summary>Checks the options of the VAE encoder calls: a known sampling mode and a batch size in [1, 256].</summary>
    public static void ValidateNoise(NoiseOptions noise)
    {
        if (noise is null)
            throw new ArgumentNullException("Noise", "Noise must be set; NoiseOptions.Default is the library's generator.");
        noise.Validate("Noise");
    }

    public static void ValidateEncoding(LatentSampling sampling, int batchSize)
    {
        if (!Enum.IsDefined(sampling))
            throw new ArgumentOutOfRangeException("Sampling", sampling, "Sampling must be Sample or Mean.");
        if (batchSize < 1 || batchSize > 256)
            throw new ArgumentOutOfRangeException("BatchSize", batchSize, "BatchSize must be in [1, 256].");
    }

    /// <summary>
    /// Whether a row's image must be resized to the stage's size; with <see cref="ImageResizeMode.None"/> an image of
    /// another size is an error naming the row, the column and both sizes.
    /// </summary>
    public bool NeedsResize(MLImage image, long position, string columnName)
    {
        if (image.Width == _width && image.Height == _height)
            return false;
        if (_resizeMode == ImageResizeMode.None)
            throw new InvalidOperationException(
                $"Row {position}: the image in column '{columnName}' is {image.Width}×{image.Height}; expected {_width}×{_height} "
                + $"({_optionsName}.Width × Height). Set ResizeMode = ImageResizeMode.Stretch {_resizeAdvice}");
        if (_resampler is null || _resampler.SourceWidth != image.Width || _resampler.SourceHeight != image.Height)
            _resampler = new ImageResampler(image.Width, image.Height, _width, _height);
        return true;
    }

    /// <summary>
    /// Reads an image's planes into <paramref name="destination"/> at the stage's size, through the resampler (Pillow's
    /// bilinear filter) when <see cref="NeedsResize"/> said so for this image.
    /// </summary>
    public void Read(MLImage image, int channels, Span<float> destination, bool resize, ReadPlanes read)
    {
        if (!resize)
        {
            read(image, destination);
            return;
        }
        int length = channels * image.Width * image.Height;
        if (_source.Length < length)
            _source = new float[length];
        read(image, _source.AsSpan(0, length));
        _resampler!.Resize(_source.AsSpan(0, length), destination, channels);
    }
}
