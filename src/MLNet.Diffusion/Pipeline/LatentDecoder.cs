using System;
using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Pipeline;

/// <summary>Runs the VAE decoder: latents [n, C, h, w] ÷ scaling factor → pixels [n, 3, f·h, f·w] in about [−1, 1].</summary>
internal sealed class LatentDecoder : IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly OnnxComponent _decoder;
    private readonly string[] _inputNames = { "latent_sample" };
    private readonly string[] _outputNames;
    private TensorBuffer? _input;
    private TensorBuffer? _output;
    private OrtValue[] _inputs = Array.Empty<OrtValue>();
    private OrtValue[] _outputs = Array.Empty<OrtValue>();
    private float[] _scaled = Array.Empty<float>();
    private float[] _converted = Array.Empty<float>();
    private float[] _tiled = Array.Empty<float>();
    private readonly VaeTiling _tiling;
    private readonly int? _tileSize;

    public LatentDecoder(StableDiffusionModel model, VaeTiling tiling = VaeTiling.Off, int? tileSize = null)
    {
        _model = model;
        _decoder = model.VaeDecoder;
        _outputNames = new[] { model.VaeDecoderOutputName };
        _tiling = tiling;
        _tileSize = tileSize;
    }

    /// <summary>The tile side in pixels for an image of this size, or null when it is decoded whole (<see cref="VaeTiler.Plan"/>).</summary>
    public int? TileSize(int latentHeight, int latentWidth)
    {
        int f = _model.Info.VaeSpatialFactor;
        return VaeTiler.Plan(_tiling, _tileSize, () => VaeTiler.TileSampleSize(_model.Info.Directory, f), f, latentHeight * f, latentWidth * f);
    }

    /// <summary>
    /// Decodes <paramref name="count"/> latents of shape [C, h, w]; returns the pixels [count, 3, f·h, f·w]. The memory is
    /// the decoder's own output buffer (float32 models: ONNX Runtime's output, no copy), valid until the next call.
    /// </summary>
    public ReadOnlyMemory<float> Decode(ReadOnlySpan<float> latents, int count, int latentHeight, int latentWidth)
    {
        int c = _model.Info.LatentChannels, f = _model.Info.VaeSpatialFactor;
        int len = c * latentHeight * latentWidth;
        if (latents.Length != count * len)
            throw new ArgumentException($"Expected {count}×{len} latent values, got {latents.Length}.", nameof(latents));
        _model.ThrowIfDisposed();
        Memory<float> pixels;
        if (TileSize(latentHeight, latentWidth) is int tile)
        {
            // diffusers' tiled_decode over vae.decode(latents / scaling_factor): the division is elementwise, so it is
            // done per tile (Run divides) with the same bits as over the whole latent.
            int outLength = count * 3 * latentHeight * f * latentWidth * f;
            if (_tiled.Length != outLength)
                _tiled = new float[outLength];
            VaeTiler.Run(latents, count, c, latentHeight, latentWidth, tile / f, tile, 3,
                (t, th, tw) => Run(t, count, th, tw), _tiled);
            pixels = _tiled;
        }
        else
        {
            pixels = Run(latents, count, latentHeight, latentWidth);
        }
        int n = pixels.Length / count;
        for (int r = 0; r < count; r++)
        {
            if (!float.IsFinite(TensorPrimitives.Sum(pixels.Span.Slice(r * n, n))))
                throw new InvalidOperationException($"The VAE decoder produced non-finite values (NaN or infinity) for batch row {r}.");
        }
        return pixels;
    }

    /// <summary>One decoder call on latents [count, C, h, w] (divided by the scaling factor here); the output buffer is reused.</summary>
    internal Memory<float> Run(ReadOnlySpan<float> latents, int count, int latentHeight, int latentWidth)
    {
        int c = _model.Info.LatentChannels, f = _model.Info.VaeSpatialFactor;
        long[] inShape = { count, c, latentHeight, latentWidth };
        long[] outShape = { count, 3, latentHeight * f, latentWidth * f };
        if (_input is null || !_input.ShapeEquals(inShape))
        {
            Dispose();
            _input = new TensorBuffer(_decoder.Input("latent_sample").ElementDataType, inShape);
            _output = new TensorBuffer(_decoder.Output(_outputNames[0]).ElementDataType, outShape, clear: false);
            _inputs = new[] { _input.Value };
            _outputs = new[] { _output.Value };
            _scaled = _input.ElementType == TensorElementType.Float ? Array.Empty<float>() : new float[_input.Length];
            _converted = _output.ElementType == TensorElementType.Float ? Array.Empty<float>() : new float[_output.Length];
        }
        // diffusers: image = vae.decode(latents / vae.config.scaling_factor)
        if (_input.ElementType == TensorElementType.Float)
        {
            TensorPrimitives.Divide(latents, _model.Info.VaeScalingFactor, _input.FloatSpan);
        }
        else
        {
            TensorPrimitives.Divide(latents, _model.Info.VaeScalingFactor, _scaled);
            _input.Write(_scaled);
        }
        _decoder.Run(null, _inputNames, _inputs, _outputNames, _outputs);
        Memory<float> pixels;
        if (_output!.ElementType == TensorElementType.Float)
        {
            pixels = _output.FloatMemory;
        }
        else
        {
            _output.Read(_converted);
            pixels = _converted;
        }
        return pixels;
    }

    public void Dispose()
    {
        _input?.Dispose();
        _output?.Dispose();
        _input = _output = null;
    }
}
