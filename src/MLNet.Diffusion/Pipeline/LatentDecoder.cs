using System;
using System.Numerics.Tensors;
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
    private float[] _scaled = Array.Empty<float>();

    public LatentDecoder(StableDiffusionModel model)
    {
        _model = model;
        _decoder = model.VaeDecoder;
        _outputNames = new[] { model.VaeDecoderOutputName };
    }

    /// <summary>Decodes <paramref name="count"/> latents of shape [C, h, w] into <paramref name="pixels"/> [count, 3, f·h, f·w].</summary>
    public void Decode(ReadOnlySpan<float> latents, int count, int latentHeight, int latentWidth, Span<float> pixels)
    {
        int c = _model.Info.LatentChannels, f = _model.Info.VaeSpatialFactor;
        int len = c * latentHeight * latentWidth;
        if (latents.Length != count * len)
            throw new ArgumentException($"Expected {count}×{len} latent values, got {latents.Length}.", nameof(latents));
        _model.ThrowIfDisposed();
        long[] inShape = { count, c, latentHeight, latentWidth };
        long[] outShape = { count, 3, latentHeight * f, latentWidth * f };
        if (_input is null || !_input.ShapeEquals(inShape))
        {
            Dispose();
            _input = new TensorBuffer(_decoder.Input("latent_sample").ElementDataType, inShape);
            _output = new TensorBuffer(_decoder.Output(_outputNames[0]).ElementDataType, outShape);
            _scaled = new float[count * len];
        }
        // diffusers: image = vae.decode(latents / vae.config.scaling_factor)
        TensorPrimitives.Divide(latents, _model.Info.VaeScalingFactor, _scaled);
        _input.Write(_scaled);
        _decoder.Run(null, _inputNames, new[] { _input.Value }, _outputNames, new[] { _output!.Value });
        _output.Read(pixels);
        for (int r = 0; r < count; r++)
        {
            int n = pixels.Length / count;
            if (!float.IsFinite(TensorPrimitives.Sum(pixels.Slice(r * n, n))))
                throw new InvalidOperationException($"The VAE decoder produced non-finite values (NaN or infinity) for batch row {r}.");
        }
    }

    public void Dispose()
    {
        _input?.Dispose();
        _output?.Dispose();
        _input = _output = null;
    }
}
