using System;
using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Randomness;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// Runs the VAE encoder: pixels [n, 3, H, W] in [−1, 1] → latents [n, C, H/f, W/f] × scaling factor (diffusers'
/// StableDiffusionImg2ImgPipeline.prepare_latents: <c>retrieve_latents(vae.encode(image)) · scaling_factor</c>).
/// Two export forms: <c>latent_sample</c> [n, C, h, w] is already sampled and used as is; <c>latent_parameters</c>
/// [n, 2C, h, w] holds the mean and the log-variance of diffusers' DiagonalGaussianDistribution, from which
/// <see cref="LatentSampling.Sample"/> draws mean + exp(½·clamp(logvar, −30, 20))·ε and <see cref="LatentSampling.Mean"/>
/// takes the mean (retrieve_latents' sample_mode "sample" / "argmax").
/// </summary>
internal sealed class ImageEncoder : IDisposable
{
    /// <summary>
    /// XOR-ed into a row's seed for the encoder's ε, so that the encoder's sample and DenoiseLatents' noise drawn from
    /// the same seed are different streams (diffusers draws both from one generator, one after the other).
    /// 0x6A09E667F3BCC908 is the fractional part of √2 (SHA-2's first constant): nothing up the sleeve.
    /// </summary>
    internal const long NoiseStream = 0x6A09E667F3BCC908;

    private readonly StableDiffusionModel _model;
    private readonly OnnxComponent _encoder;
    private readonly LatentSampling _sampling;
    private readonly NoiseOptions _noise;
    private readonly string[] _inputNames;
    private readonly string[] _outputNames;
    private TensorBuffer? _input;
    private OrtValue[] _inputs = Array.Empty<OrtValue>();
    private float[] _output = Array.Empty<float>();
    private float[] _scratch = Array.Empty<float>();

    private readonly VaeTiling _tiling;
    private readonly int? _tileSize;
    private float[] _tileOutput = Array.Empty<float>();

    public ImageEncoder(StableDiffusionModel model, LatentSampling sampling, VaeTiling tiling = VaeTiling.Off, int? tileSize = null, NoiseOptions? noise = null)
    {
        _noise = noise ?? NoiseOptions.Default;
        _tiling = tiling;
        _tileSize = tileSize;
        _model = model;
        _encoder = RequireEncoder(model);
        var (input, output) = ReadContract(model, _encoder);
        _inputNames = new[] { input };
        _outputNames = new[] { output };
        _sampling = sampling;
    }

    /// <summary>
    /// Refuses <see cref="LatentSampling.Mean"/> with an encoder that samples inside its graph: its output is already
    /// mean + σ·ε, so there is no mean to take (diffusers' classic ONNX export, <c>latent_sample</c> with C channels).
    /// </summary>
    /// <param name="model">The model whose encoder runs.</param>
    /// <param name="sampling">The stage's sampling mode.</param>
    /// <param name="stage">The stage's name for the message (EncodeImage, PrepareInpainting).</param>
    internal static void CheckSampling(StableDiffusionModel model, LatentSampling sampling, string stage)
    {
        if (sampling != LatentSampling.Mean)
            return;
        var encoder = RequireEncoder(model);
        var (_, output) = ReadContract(model, encoder);
        int c = model.Info.LatentChannels;
        if (output == "latent_parameters" || OnnxComponent.StaticDim(encoder.Output(output), 1) == 2 * c)
            return;
        throw new ArgumentException(
            $"{stage}: Sampling = Mean needs the latent distribution's mean, but {ModelFolder.VaeEncoder}/model.onnx of '{model.Directory}' outputs '{output}' "
            + $"with {c} channels, a latent already sampled inside the graph (the classic diffusers ONNX export), so the mean is not available. "
            + $"Use an encoder exporting 'latent_parameters' [B, {2 * c}, h, w] (mean and log-variance), or Sampling = Sample.", "Sampling");
    }

    /// <summary>The encoder of <paramref name="model"/>, or an error naming the missing vae_encoder folder.</summary>
    internal static OnnxComponent RequireEncoder(StableDiffusionModel model) => model.VaeEncoderOrNull
        ?? throw new InvalidOperationException(
            $"Image encoding needs a VAE encoder, but the model folder '{model.Directory}' has no {ModelFolder.VaeEncoder}/model.onnx. "
            + "Use a full diffusers ONNX export (it has a vae_encoder folder next to vae_decoder) for image-to-image.");

    /// <summary>
    /// The encoder's input and output names, checked against the contract: input <c>sample</c> (or the only input)
    /// float/float16 [B, 3, H, W]; output <c>latent_parameters</c> or <c>latent_sample</c> (or the only output)
    /// float/float16 [B, C or 2C, h, w].
    /// </summary>
    internal static (string Input, string Output) ReadContract(StableDiffusionModel model, OnnxComponent encoder)
    {
        TensorElementType[] floats = { TensorElementType.Float, TensorElementType.Float16 };
        string input = encoder.HasInput("sample") || encoder.Inputs.Count != 1 ? "sample" : Only(encoder.Inputs.Keys);
        string output = encoder.HasOutput("latent_parameters") ? "latent_parameters"
            : encoder.HasOutput("latent_sample") || encoder.Outputs.Count != 1 ? "latent_sample"
            : Only(encoder.Outputs.Keys);
        encoder.RequireInput(input, floats, 4);
        encoder.RequireOutput(output, floats, 4);
        if (OnnxComponent.StaticDim(encoder.Input(input), 1) is int colours && colours != 3)
            throw new ModelContractException($"{ModelFolder.VaeEncoder}/model.onnx input '{input}' has {colours} channels; expected 3 (RGB).");
        int c = model.Info.LatentChannels;
        if (OnnxComponent.StaticDim(encoder.Output(output), 1) is int channels && channels != c && channels != 2 * c)
            throw new ModelContractException($"{ModelFolder.VaeEncoder}/model.onnx output '{output}' has {channels} channels; expected {c} (a sampled latent) or {2 * c} (mean and log-variance).");
        return (input, output);
    }

    private static string Only(System.Collections.Generic.IEnumerable<string> names)
    {
        foreach (string n in names)
            return n;
        throw new ModelContractException($"{ModelFolder.VaeEncoder}/model.onnx has no inputs or outputs.");
    }

    /// <summary>Values per row of the result [C, height/f, width/f].</summary>
    public int LatentLength(int height, int width)
    {
        int f = _model.Info.VaeSpatialFactor;
        return _model.Info.LatentChannels * (height / f) * (width / f);
    }

    /// <summary>
    /// Encodes <paramref name="count"/> images [3, height, width] (in [−1, 1]) into scaled latents; row r's sampling
    /// noise comes from its own seed, so a row's result does not depend on its batch.
    /// </summary>
    public void Encode(ReadOnlySpan<float> pixels, int count, int height, int width, ReadOnlySpan<long> seeds, ReadOnlySpan<long> rows, Span<float> latents)
    {
        int f = _model.Info.VaeSpatialFactor, c = _model.Info.LatentChannels;
        int h = height / f, w = width / f, len = c * h * w;
        if (pixels.Length != count * 3 * height * width)
            throw new ArgumentException($"Expected {count}×3×{height}×{width} pixel values, got {pixels.Length}.", nameof(pixels));
        if (latents.Length != count * len)
            throw new ArgumentException($"Expected room for {count}×{len} latent values.", nameof(latents));
        _model.ThrowIfDisposed();

        if (TileSize(height, width) is int tile)
        {
            // diffusers' _tiled_encode: the encoder's moments (or sampled latents) of overlapping tiles, blended, then
            // DiagonalGaussianDistribution over the blended moments as below.
            int channels = EncoderChannels(count);
            int total = count * channels * h * w;
            if (_output.Length != total || ReferenceEquals(_output, _tileOutput))
                _output = new float[total];
            VaeTiler.Run(pixels, count, 3, height, width, tile, tile / f, channels, (t, th, tw) => RunEncoder(t, count, th, tw), _output);
        }
        else
        {
            _output = RunEncoder(pixels, count, height, width);
        }

        float scale = _model.Info.VaeScalingFactor;
        bool parameters = _output.Length == 2 * count * len;
        if (parameters && _sampling == LatentSampling.Sample)
            DrawNoise(seeds, count * len);
        for (int r = 0; r < count; r++)
        {
            var row = latents.Slice(r * len, len);
            if (!parameters)
            {
                if (_sampling == LatentSampling.Mean)
                    throw new InvalidOperationException(
                        $"Sampling = Mean needs the latent distribution's mean, but {ModelFolder.VaeEncoder}/model.onnx returned '{_outputNames[0]}' with {c} channels, "
                        + $"a latent already sampled inside the graph; use an encoder exporting 'latent_parameters' ({2 * c} channels: mean and log-variance).");
                TensorPrimitives.Multiply(_output.AsSpan(r * len, len), scale, row);
            }
            else
            {
                var mean = _output.AsSpan(2 * r * len, len);
                if (_sampling == LatentSampling.Mean)
                {
                    TensorPrimitives.Multiply(mean, scale, row);
                }
                else
                {
                    // DiagonalGaussianDistribution: logvar = clamp(logvar, −30, 20); std = exp(0.5·logvar); x = mean + std·ε.
                    var std = _output.AsSpan((2 * r + 1) * len, len);
                    TensorPrimitives.Max(std, -30f, std);
                    TensorPrimitives.Min(std, 20f, std);
                    TensorPrimitives.Multiply(std, 0.5f, std);
                    Exp(std);
                    TensorPrimitives.MultiplyAdd(std, _scratch.AsSpan(r * len, len), mean, row);
                    TensorPrimitives.Multiply(row, scale, row);
                }
            }
            if (!float.IsFinite(TensorPrimitives.Sum(row)))
                throw new InvalidOperationException($"The VAE encoder produced non-finite values (NaN or infinity) for row {rows[r]}.");
        }
    }

    /// <summary>
    /// The batch's ε for DiagonalGaussianDistribution.sample, one draw of [count, C, h, w] under the stage's
    /// <see cref="NoiseOptions"/> (diffusers' <c>randn_tensor(mean.shape, generator=…)</c>). The library's generator
    /// draws from the row's seed XOR <see cref="NoiseStream"/>; the other sources draw from the seed itself, as the
    /// first draw of the generator diffusers passes to <c>retrieve_latents</c>.
    /// </summary>
    private void DrawNoise(ReadOnlySpan<long> seeds, int length)
    {
        if (_scratch.Length != length)
            _scratch = new float[length];
        Span<long> streams = seeds.Length <= 256 ? stackalloc long[seeds.Length] : new long[seeds.Length];
        long xor = _noise.Generator == NoiseGenerator.Library ? NoiseStream : 0;
        for (int r = 0; r < seeds.Length; r++)
            streams[r] = seeds[r] ^ xor;
        _noise.CreateBatch(streams, length / seeds.Length).NextGaussian(_scratch);
    }

    /// <summary>
    /// std = exp(½·logvar) in place. The library's generator keeps <see cref="TensorPrimitives.Exp(ReadOnlySpan{float}, Span{float})"/>
    /// (today's results); the sources that reproduce another tool take <see cref="MathF.Exp"/> per value, which is
    /// closer to PyTorch's <c>torch.exp</c>: the vectorised exp is an ulp away at −6, the Shapes encoder's ½·logvar,
    /// where MathF.Exp equals PyTorch 1.13's AVX2 result (img2img_diffusers_order.json), so an ε drawn as diffusers draws
    /// it gives diffusers' sample bit for bit there. Both are within an ulp or two of exp elsewhere.
    /// </summary>
    private void Exp(Span<float> values)
    {
        if (_noise.Generator == NoiseGenerator.Library)
        {
            TensorPrimitives.Exp(values, values);
            return;
        }
        for (int i = 0; i < values.Length; i++)
            values[i] = MathF.Exp(values[i]);
    }

    /// <summary>The tile side in pixels for an image of this size, or null when it is encoded whole (<see cref="VaeTiler.Plan"/>).</summary>
    public int? TileSize(int height, int width)
    {
        int f = _model.Info.VaeSpatialFactor;
        return VaeTiler.Plan(_tiling, _tileSize, () => VaeTiler.TileSampleSize(_model.Info.Directory, f), f, height, width);
    }

    /// <summary>
    /// The encoder's output channels (C for <c>latent_sample</c>, 2C for <c>latent_parameters</c>) from its declared shape,
    /// else from one run on the smallest input.
    /// </summary>
    private int EncoderChannels(int count)
    {
        int f = _model.Info.VaeSpatialFactor;
        return OnnxComponent.StaticDim(_encoder.Output(_outputNames[0]), 1)
            ?? RunEncoder(new float[count * 3 * f * f], count, f, f).Length / count;
    }

    /// <summary>One encoder call on pixels [count, 3, height, width]; returns its output [count, C or 2C, h, w] in a reused buffer.</summary>
    internal float[] RunEncoder(ReadOnlySpan<float> pixels, int count, int height, int width)
    {
        int f = _model.Info.VaeSpatialFactor, c = _model.Info.LatentChannels;
        int h = height / f, w = width / f;
        long[] shape = { count, 3, height, width };
        if (_input is null || !_input.ShapeEquals(shape))
        {
            _input?.Dispose();
            _input = new TensorBuffer(_encoder.Input(_inputNames[0]).ElementDataType, shape);
            _inputs = new[] { _input.Value };
        }
        _input.Write(pixels);

        using var outputs = _encoder.Run(null, _inputNames, _inputs, _outputNames);
        var result = outputs[0].GetTensorTypeAndShape();
        long[] s = result.Shape;
        if (s.Length != 4 || s[0] != count || (s[1] != c && s[1] != 2 * c) || s[2] != h || s[3] != w)
            throw new ModelContractException(
                $"{ModelFolder.VaeEncoder}/model.onnx returned '{_outputNames[0]}' of shape [{string.Join(", ", s)}] for images [{string.Join(", ", shape)}]; "
                + $"expected [{count}, {c} or {2 * c}, {h}, {w}] (the VAE factor {f} of vae_decoder).");
        int total = checked((int)result.ElementCount);
        if (_tileOutput.Length != total)
            _tileOutput = new float[total];
        TensorBuffer.ReadOutput(outputs[0], _tileOutput);
        return _tileOutput;
    }

    public void Dispose()
    {
        _input?.Dispose();
        _input = null;
    }
}
