using System;
using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Pipeline;

/// <summary>How a VQ autoencoder's latents are quantised before its decoder (diffusers <c>VQModel.decode(h, force_not_quantize)</c>).</summary>
internal enum VqDecoding
{
    /// <summary>
    /// Quantise as LDMPipeline does (<c>force_not_quantize=False</c>): inside vqvae_decoder/'s graph when it quantises, else on the host.
    /// </summary>
    InGraph,

    /// <summary>Nearest codebook vector on the host (<see cref="VqCodebook"/>), then vqvae_decoder_no_quantize/ (vqvae_decoder/ when absent: re-quantising is a no-op).</summary>
    HostQuantize,

    /// <summary><c>force_not_quantize=True</c>: vqvae_decoder_no_quantize/ on the latents as they are.</summary>
    NoQuantize,
}

/// <summary>
/// Runs the autoencoder's decoder: latents [n, C, h, w] ÷ scaling factor → pixels [n, 3, f·h, f·w] in about [−1, 1]. A VQ
/// autoencoder quantises first (<see cref="VqDecoding"/>); a pixel-space model has no decoder: its denoised tensor
/// [n, 3, H, W] is the image, passed through (diffusers DDPMPipeline post-processes <c>image</c> directly).
/// </summary>
internal sealed class LatentDecoder : IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly OnnxComponent? _decoder;
    private readonly VqCodebook? _codebook;
    private readonly bool _hostQuantize;
    private readonly bool _indices;
    private readonly string[] _inputNames = { "latent_sample" };
    private readonly string[] _outputNames;
    private float[] _quantizeScratch = Array.Empty<float>();
    private int[] _chosen = Array.Empty<int>();
    private float[] _pixels = Array.Empty<float>();
    private TensorBuffer? _input;
    private TensorBuffer? _output;
    private OrtValue[] _inputs = Array.Empty<OrtValue>();
    private OrtValue[] _outputs = Array.Empty<OrtValue>();
    private float[] _scaled = Array.Empty<float>();
    private float[] _converted = Array.Empty<float>();
    private float[] _tiled = Array.Empty<float>();
    private readonly VaeTiling _tiling;
    private readonly int? _tileSize;

    /// <param name="model">The model.</param>
    /// <param name="tiling">KL autoencoders: whether to decode in overlapping tiles (diffusers' <c>enable_vae_tiling()</c>).</param>
    /// <param name="tileSize">The tile side in pixels; null takes the VAE's <c>sample_size</c>.</param>
    /// <param name="vq">VQ autoencoders: how to quantise (ignored for other models).</param>
    /// <param name="indices">VQ autoencoders: also report the chosen codebook index of every latent pixel (<see cref="Indices"/>).</param>
    /// <exception cref="InvalidOperationException">The folder lacks the codebook or the no-quantize decoder the mode needs (named).</exception>
    public LatentDecoder(StableDiffusionModel model, VaeTiling tiling = VaeTiling.Off, int? tileSize = null, VqDecoding vq = VqDecoding.InGraph, bool indices = false)
    {
        _model = model;
        _tiling = tiling;
        _tileSize = tileSize;
        var info = model.Info;
        if (info.Autoencoder == AutoencoderKind.None)
        {
            _outputNames = Array.Empty<string>();
            return;
        }
        if (info.Autoencoder != AutoencoderKind.VQ)
        {
            _decoder = model.VaeDecoder;
            _outputNames = new[] { model.VaeDecoderOutputName };
            return;
        }
        // A vqvae_decoder/ that does not quantise in its graph is quantised for on the host (LDMPipeline always quantises).
        bool graphQuantizes = model.VqDecoderQuantizes;
        if (vq == VqDecoding.InGraph && !graphQuantizes)
            vq = VqDecoding.HostQuantize;
        _hostQuantize = vq == VqDecoding.HostQuantize;
        _indices = indices;
        if (_hostQuantize || indices)
        {
            string why = indices ? "The codebook indices need" : graphQuantizes ? "Quantising on the host needs" : $"{ModelFolder.VqvaeDecoder}/model.onnx does not quantise in its graph, so decoding needs";
            _codebook = model.Codebook ?? throw new InvalidOperationException(
                $"{why} the VQ codebook, but the model folder '{model.Directory}' has no {ModelFolder.Codebook} (a float32 [K, C] .npy array of VQModel.quantize.embedding.weight).");
        }
        _decoder = vq switch
        {
            VqDecoding.InGraph => model.VaeDecoder,
            VqDecoding.HostQuantize => model.VqDecoderNoQuantize ?? model.VaeDecoder,
            _ => model.VqDecoderNoQuantize ?? (graphQuantizes ? null : model.VaeDecoder) ?? throw new InvalidOperationException(
                $"force_not_quantize needs a VQ decoder without quantisation, but the model folder '{model.Directory}' has no {ModelFolder.VqvaeDecoderNoQuantize}/model.onnx "
                + "(vqvae_decoder/ quantises inside its graph)."),
        };
        _decoder.RequireInput("latent_sample", new[] { TensorElementType.Float, TensorElementType.Float16 }, 4);
        _outputNames = new[] { ModelInspector.VaeDecoderOutputName(_decoder) };
    }

    /// <summary>
    /// After <see cref="Decode"/> with indices asked for: the codebook index k = argmin_j ‖z − E_j‖² of every latent pixel
    /// of the scaled-back latents, [count, h, w] (valid until the next call).
    /// </summary>
    public ReadOnlyMemory<int> Indices { get; private set; }

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
        if (_decoder is null)
            return PassPixels(latents, count, len);
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

    /// <summary>
    /// The tile side in pixels for an image of this size, or null when it is decoded whole (<see cref="VaeTiler.Plan"/>).
    /// Only KL autoencoders tile: a VQ decoder quantises (and reports indices for) the whole latent grid at once.
    /// </summary>
    public int? TileSize(int latentHeight, int latentWidth)
    {
        if (_model.Info.Autoencoder != AutoencoderKind.KL)
            return null;
        int f = _model.Info.VaeSpatialFactor;
        return VaeTiler.Plan(_tiling, _tileSize, () => VaeTiler.TileSampleSize(_model.Info.Directory, f), f, latentHeight * f, latentWidth * f);
    }

    /// <summary>One decoder call on latents [count, C, h, w] (divided by the scaling factor here, quantised for VQ); the output buffer is reused.</summary>
    internal Memory<float> Run(ReadOnlySpan<float> latents, int count, int latentHeight, int latentWidth)
    {
        int c = _model.Info.LatentChannels, f = _model.Info.VaeSpatialFactor;
        int len = c * latentHeight * latentWidth;
        long[] inShape = { count, c, latentHeight, latentWidth };
        long[] outShape = { count, 3, latentHeight * f, latentWidth * f };
        if (_input is null || !_input.ShapeEquals(inShape))
        {
            Dispose();
            _input = new TensorBuffer(_decoder!.Input("latent_sample").ElementDataType, inShape);
            _output = new TensorBuffer(_decoder.Output(_outputNames[0]).ElementDataType, outShape, clear: false);
            _inputs = new[] { _input.Value };
            _outputs = new[] { _output.Value };
            _scaled = _input.ElementType == TensorElementType.Float ? Array.Empty<float>() : new float[_input.Length];
            _converted = _output.ElementType == TensorElementType.Float ? Array.Empty<float>() : new float[_output.Length];
        }
        // diffusers: image = vae.decode(latents / vae.config.scaling_factor) (LDMPipeline: vqvae.decode, the same scaling)
        if (_input.ElementType == TensorElementType.Float)
        {
            TensorPrimitives.Divide(latents, _model.Info.VaeScalingFactor, _input.FloatSpan);
            Quantize(_input.FloatSpan, count, latentHeight * latentWidth);
        }
        else
        {
            if (_scaled.Length != count * len)
                _scaled = new float[count * len];
            TensorPrimitives.Divide(latents, _model.Info.VaeScalingFactor, _scaled);
            Quantize(_scaled, count, latentHeight * latentWidth);
            _input.Write(_scaled);
        }
        _decoder!.Run(null, _inputNames, _inputs, _outputNames, _outputs);
        if (_output!.ElementType == TensorElementType.Float)
            return _output.FloatMemory;
        _output.Read(_converted);
        return _converted;
    }

    /// <summary>
    /// VQ: writes the nearest codebook vectors in place (host quantisation) and/or the chosen indices. With in-graph
    /// quantisation the indices come from a scratch copy, so the graph still sees the latents as they are.
    /// </summary>
    private void Quantize(Span<float> scaled, int count, int plane)
    {
        if (_codebook is null)
            return;
        Span<int> indices = default;
        if (_indices)
        {
            if (_chosen.Length != count * plane)
                _chosen = new int[count * plane];
            indices = _chosen;
            Indices = _chosen;
        }
        if (_hostQuantize)
        {
            _codebook.Quantize(scaled, count, plane, scaled, indices);
            return;
        }
        if (_quantizeScratch.Length != scaled.Length)
            _quantizeScratch = new float[scaled.Length];
        _codebook.Quantize(scaled, count, plane, _quantizeScratch, indices);
    }

    /// <summary>Pixel space: the denoised tensor [count, 3, H, W] is the image; copied (the caller's buffer is reused) and checked.</summary>
    private ReadOnlyMemory<float> PassPixels(ReadOnlySpan<float> latents, int count, int len)
    {
        if (_pixels.Length != latents.Length)
            _pixels = new float[latents.Length];
        latents.CopyTo(_pixels);
        for (int r = 0; r < count; r++)
        {
            if (!float.IsFinite(TensorPrimitives.Sum(_pixels.AsSpan(r * len, len))))
                throw new InvalidOperationException($"The denoised image of batch row {r} holds non-finite values (NaN or infinity).");
        }
        return _pixels;
    }

    public void Dispose()
    {
        _input?.Dispose();
        _output?.Dispose();
        _input = _output = null;
    }
}
