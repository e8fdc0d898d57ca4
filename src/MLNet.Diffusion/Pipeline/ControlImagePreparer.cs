using System;
using Microsoft.ML.Data;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// The control image of a ControlNet from an image, as diffusers' StableDiffusionControlNetPipeline prepares it
/// (<c>control_image_processor = VaeImageProcessor(do_convert_rgb=True, do_normalize=False)</c>, <c>prepare_image</c>):
/// RGB (alpha dropped), optionally through a preprocessor at the image's own size first (Canny edges, as the ControlNet
/// annotators run on the source image), then <c>byte / 255</c> in [0, 1], planar [3, H, W], resized to the output size.
/// </summary>
internal sealed class ControlImagePreparer
{
    private readonly PrepareControlImageOptions _options;
    private readonly CannyEdges? _canny;
    private byte[] _edges = Array.Empty<byte>();

    public ControlImagePreparer(PrepareControlImageOptions options)
    {
        _options = options;
        _canny = options.Preprocessor == ControlImagePreprocessor.Canny ? new CannyEdges() : null;
    }

    /// <summary>Writes the image's control planes [3, image.Height, image.Width] in [0, 1], after the preprocessor.</summary>
    public void ReadPlanes(MLImage image, Span<float> chw)
    {
        int plane = image.Width * image.Height;
        if (chw.Length != 3 * plane)
            throw new ArgumentException($"Expected {3 * plane} values, got {chw.Length}.", nameof(chw));
        if (_canny is not null)
        {
            // The Canny annotator's map is one channel, stacked to three (diffusers' ControlNet examples: np.concatenate([e, e, e], axis=2)).
            if (_edges.Length != plane)
                _edges = new byte[plane];
            _canny.Detect(image, _options.CannyLowThreshold, _options.CannyHighThreshold, _options.CannyL2Gradient, _edges);
            for (int i = 0; i < plane; i++)
            {
                float v = _edges[i] / 255f;
                chw[i] = v;
                chw[plane + i] = v;
                chw[2 * plane + i] = v;
            }
            return;
        }
        var pixels = image.Pixels;
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        if (!bgra && image.PixelFormat != MLPixelFormat.Rgba32)
            throw new ArgumentException($"Image pixel format {image.PixelFormat} is not supported; expected RGBA32 or BGRA32.", nameof(image));
        int ri = bgra ? 2 : 0, bi = bgra ? 0 : 2;
        // VaeImageProcessor.pil_to_numpy: np.array(image).astype(np.float32) / 255.0.
        for (int i = 0; i < plane; i++)
        {
            chw[i] = pixels[4 * i + ri] / 255f;
            chw[plane + i] = pixels[4 * i + 1] / 255f;
            chw[2 * plane + i] = pixels[4 * i + bi] / 255f;
        }
    }
}
