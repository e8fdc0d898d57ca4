using System;
using System.Diagnostics;
using System.Numerics.Tensors;
using System.Threading;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Pipeline;

/// <summary>Settings of one denoising run (validated by the stage's options).</summary>
internal sealed record DenoiseSettings(
    int Steps,
    float GuidanceScale,
    int Width,
    int Height,
    DiffusionScheduler Scheduler,
    IProgress<DenoiseProgress>? Progress,
    CancellationToken CancellationToken,
    float Strength = 1f)
{
    /// <summary>
    /// Re-bind (copy) the UNet's per-step inputs at every step; null: when the UNet runs on a device. A test hook that
    /// runs the device path of <see cref="UnetBinding"/> on the CPU.
    /// </summary>
    public bool? CopyUnetInputsPerStep { get; init; }
}

/// <summary>
/// The denoising loop of diffusers' StableDiffusionPipeline (steps 5–7 of its recipe): seeded initial noise scaled by
/// the scheduler's init sigma, then for every timestep one UNet call on the batch — with classifier-free guidance the
/// batch is [unconditional rows; conditional rows], 2N in one call — the guidance combine
/// ε = ε_u + g·(ε_c − ε_u) (Ho &amp; Salimans 2022, eq. 6) and the scheduler step. Buffers are allocated once per batch
/// shape and reused across steps; ONNX Runtime reads and writes them in place (no copies at Run). The UNet runs through
/// an IO binding (<see cref="UnetBinding"/>): the embeddings are bound once per batch (on CUDA: copied to the device once
/// and kept there for every step), the output once per batch shape, and on a device only the sample and timestep are
/// copied in and the prediction out per step.
/// </summary>
internal sealed class LatentDenoiser : IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly OnnxComponent _unet;
    private readonly DenoiseSettings _settings;
    private readonly int _channels;
    private readonly int _unetChannels;
    private readonly int _latentHeight;
    private readonly int _latentWidth;
    private readonly bool _guidance;
    private readonly string[] _inputNames = { "sample", "timestep", "encoder_hidden_states" };
    private readonly string _outputName;
    private readonly TensorElementType _timestepType;
    private readonly int _timestepRank;
    private readonly int? _timestepStaticDim;

    private DiffusionScheduler? _scheduler;
    private int _rows = -1;
    private int _sequence = -1;
    private TensorBuffer? _sample;
    private TensorBuffer? _timestep;
    private TensorBuffer? _embeddings;
    private TensorBuffer? _output;
    private UnetBinding? _binding;
    private float[] _scaled = Array.Empty<float>();
    private float[] _prediction = Array.Empty<float>();
    private float[] _guided = Array.Empty<float>();
    private float[] _noise = Array.Empty<float>();
    private float[] _scaledLatents = Array.Empty<float>();

    // SDXL's added conditioning (diffusers StableDiffusionXLPipeline step 7): text_embeds [rows, P] and time_ids [rows, W],
    // written once per batch in the same [unconditional; conditional] order as the embeddings.
    private readonly int _pooledSize;
    private readonly int _timeIdsWidth;
    private TensorBuffer? _textEmbeds;
    private TensorBuffer? _timeIds;
    private float[] _pooled = Array.Empty<float>();
    private float[] _condTimeIds = Array.Empty<float>();
    private float[] _uncondTimeIds = Array.Empty<float>();

    public LatentDenoiser(StableDiffusionModel model, DenoiseSettings settings)
    {
        _model = model;
        _unet = model.Unet;
        _settings = settings;
        _channels = model.Info.LatentChannels;
        _unetChannels = model.Info.UnetInputChannels;
        _latentHeight = settings.Height / model.Info.VaeSpatialFactor;
        _latentWidth = settings.Width / model.Info.VaeSpatialFactor;
        _guidance = settings.GuidanceScale > 1f;
        _outputName = model.UnetOutputName;
        var ts = _unet.Input("timestep");
        _timestepType = ts.ElementDataType;
        _timestepRank = ts.Dimensions.Length;
        _timestepStaticDim = OnnxComponent.StaticDim(ts, 0);
        if (model.Info.TimeIdsWidth is int width)
        {
            _timeIdsWidth = width;
            _pooledSize = model.Info.PooledSize!.Value;
            _inputNames = new[] { "sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids" };
        }
    }

    /// <summary>
    /// SDXL: the next <see cref="Run"/>'s pooled vectors, per row [2, P] (unconditional, conditional) as the embeddings,
    /// and the time ids of conditional and unconditional rows (diffusers add_time_ids, negative_add_time_ids).
    /// </summary>
    public void SetAddedConditioning(float[] pooled, float[] timeIds, float[] negativeTimeIds)
    {
        if (timeIds.Length != _timeIdsWidth || negativeTimeIds.Length != _timeIdsWidth)
            throw new ArgumentException($"Expected {_timeIdsWidth} time ids, got {timeIds.Length} and {negativeTimeIds.Length}.", nameof(timeIds));
        _pooled = pooled;
        _condTimeIds = timeIds;
        _uncondTimeIds = negativeTimeIds;
    }

    /// <summary>The UNet's IO binding for the current batch shape (null before the first run).</summary>
    internal UnetBinding? Binding => _binding;

    /// <summary>Values per row of the latent tensor [C, h, w].</summary>
    public int LatentLength => _channels * _latentHeight * _latentWidth;

    public int[] LatentShape => new[] { _channels, _latentHeight, _latentWidth };

    /// <summary>
    /// Denoises <paramref name="count"/> rows. <paramref name="embeddings"/> holds per row [2, S, D]: the unconditional
    /// (negative prompt) states, then the prompt's. Each row's noise comes from its own seed (or its given initial
    /// noise), so a row's result does not depend on its batch or position. With a strength below 1,
    /// <paramref name="initialLatents"/> (per row [C, h, w]) is where image-to-image starts. With
    /// <paramref name="inpainting"/> (its buffers filled for the batch) the loop inpaints: an inpainting UNet gets the
    /// mask and the masked image's latents, an ordinary UNet keeps <paramref name="initialLatents"/> outside the mask.
    /// </summary>
    public void Run(int count, long firstRow, ReadOnlySpan<float> embeddings, int sequenceLength, ReadOnlySpan<long> seeds,
        float[]?[] initialNoise, Span<float> latents, IChannel? channel, ReadOnlySpan<float> initialLatents = default,
        InpaintingConditioning? inpainting = null)
    {
        int len = LatentLength;
        int hidden = _model.Info.HiddenSize;
        if (embeddings.Length != count * 2 * sequenceLength * hidden)
            throw new ArgumentException($"Expected {count}×2×{sequenceLength}×{hidden} embedding values, got {embeddings.Length}.", nameof(embeddings));
        if (latents.Length != count * len)
            throw new ArgumentException($"Expected room for {count}×{len} latent values.", nameof(latents));
        if ((inpainting?.UnetChannels ?? _channels) != _unetChannels || inpainting is not null && inpainting.Count != count)
            throw new InvalidOperationException($"The UNet takes {_unetChannels} input channels; the run prepared {inpainting?.UnetChannels ?? _channels} for {inpainting?.Count ?? count} rows.");
        bool blend = inpainting is { UnetTakesMask: false };
        if (blend && initialLatents.Length != count * len)
            throw new ArgumentException($"Inpainting with an ordinary UNet needs {count}×{len} initial latent values, got {initialLatents.Length}.", nameof(initialLatents));
        _model.ThrowIfDisposed();

        // One clone per denoiser, reused batch after batch: SetTimesteps resets all per-run state (scheduler contract),
        // and the clone's scratch and history buffers are then allocated once per cursor instead of once per batch.
        var scheduler = _scheduler ??= _settings.Scheduler.Clone();
        scheduler.SetTimesteps(_settings.Steps);
        var timesteps = scheduler.Timesteps;

        // Initial latents: N(0, I) per row from the row's seed (or the row's given noise), times the init sigma.
        var noise = new BatchNoise(count, len);
        for (int r = 0; r < count; r++)
        {
            noise.Generators[r] = new GaussianNoise(seeds[r]);
            var row = latents.Slice(r * len, len);
            if (initialNoise[r] is { } given)
                given.CopyTo(row);
            else
                noise.Generators[r].NextGaussian(row);
        }
        int start = 0;
        if (_settings.Strength < 1f)
        {
            start = StartImageToImage(scheduler, count, len, initialLatents, latents);
            if (start == timesteps.Length)
                return;
        }
        else
        {
            if (blend)
                KeepNoise(latents); // the known region is noised with the same ε at every step
            TensorPrimitives.Multiply(latents, scheduler.InitNoiseSigma, latents);
        }

        Ensure(count, sequenceLength);
        WriteEmbeddings(count, embeddings, sequenceLength * hidden);
        if (_timeIdsWidth > 0)
            WriteAddedConditioning(count);
        _binding!.BindBatch();

        int unetRows = _guidance ? 2 * count : count;
        int half = count * len;
        var sampleIn = _sample!.ElementType == TensorElementType.Float ? _sample.FloatSpan : _scaled.AsSpan(0, _sample.Length);
        var stopwatch = Stopwatch.StartNew();
        for (int i = start; i < timesteps.Length; i++)
        {
            _settings.CancellationToken.ThrowIfCancellationRequested();
            float t = timesteps[i];

            if (inpainting is { UnetTakesMask: true })
            {
                // sample = concat(scale_model_input(latents), mask, masked-image latents) on the channel axis.
                scheduler.ScaleModelInput(latents, _scaledLatents.AsSpan(0, half), i);
                inpainting.WriteUnetSample(_scaledLatents.AsSpan(0, half), sampleIn, _guidance);
            }
            else
            {
                scheduler.ScaleModelInput(latents, sampleIn.Slice(0, half), i);
                if (_guidance)
                    sampleIn.Slice(0, half).CopyTo(sampleIn.Slice(half, half));
            }
            if (_sample.ElementType != TensorElementType.Float)
                _sample.Write(sampleIn);
            _timestep!.Fill(t);

            _binding.Run();

            Span<float> prediction = _output!.ElementType == TensorElementType.Float ? _output.FloatSpan : _prediction.AsSpan(0, unetRows * len);
            if (_output.ElementType != TensorElementType.Float)
                _output.Read(prediction);

            Span<float> guided;
            if (_guidance)
            {
                // The guidance combine and the finite check in one pass (GuidanceMath).
                guided = _guided.AsSpan(0, half);
                int bad = GuidanceMath.Combine(prediction.Slice(0, 2 * half), _settings.GuidanceScale, guided, count, len);
                if (bad >= 0)
                    throw GuidanceMath.NonFinite(firstRow + bad, i, t);
            }
            else
            {
                guided = prediction.Slice(0, half);
                CheckFinite(guided, count, len, firstRow, i, t);
            }

            scheduler.Step(guided, i, latents, noise);
            if (blend)
                inpainting!.BlendKnownRegion(latents, initialLatents, _noise.AsSpan(0, half), scheduler, i);

            channel?.Trace(MessageSensitivity.None, $"Rows {firstRow}–{firstRow + count - 1}: step {i - start + 1}/{timesteps.Length - start} (t = {t}) done after {stopwatch.Elapsed.TotalMilliseconds:F0} ms.");
            _settings.Progress?.Report(new DenoiseProgress(i - start + 1, timesteps.Length - start, t, firstRow, count, stopwatch.Elapsed));
        }
        CheckFinite(latents, count, len, firstRow, timesteps.Length - 1, timesteps[^1]);
    }

    /// <summary>
    /// Image-to-image start (diffusers' StableDiffusionImg2ImgPipeline: get_timesteps, then prepare_latents): the loop
    /// begins at the strength's start index, and <paramref name="latents"/> (holding each row's noise ε) becomes
    /// add_noise(initial latents, ε, timesteps[start]). With no step left the initial latents are the result.
    /// </summary>
    /// <returns>The first step index; the timestep count when nothing is to be denoised.</returns>
    private int StartImageToImage(DiffusionScheduler scheduler, int count, int len, ReadOnlySpan<float> initialLatents, Span<float> latents)
    {
        if (initialLatents.Length != count * len)
            throw new ArgumentException($"Strength {_settings.Strength} needs {count}×{len} initial latent values, got {initialLatents.Length}.", nameof(initialLatents));
        int start = scheduler.GetStartIndex(_settings.Strength);
        if (start == scheduler.Timesteps.Length)
        {
            initialLatents.CopyTo(latents);
            return start;
        }
        KeepNoise(latents);
        scheduler.AddNoise(initialLatents, _noise.AsSpan(0, latents.Length), start, latents);
        scheduler.SetBeginIndex(start);
        return start;
    }

    /// <summary>Keeps a copy of the batch's initial noise ε (before any scaling) for the forward process.</summary>
    private void KeepNoise(ReadOnlySpan<float> noise)
    {
        if (_noise.Length != noise.Length)
            _noise = new float[noise.Length];
        noise.CopyTo(_noise);
    }

    /// <summary>Throws, naming the row, step and timestep, when a row of <paramref name="values"/> holds a NaN or an infinity.</summary>
    internal static void CheckFinite(ReadOnlySpan<float> values, int count, int len, long firstRow, int step, float t)
    {
        int bad = GuidanceMath.FirstNonFiniteRow(values, count, len);
        if (bad >= 0)
            throw GuidanceMath.NonFinite(firstRow + bad, step, t);
    }

    private void WriteEmbeddings(int count, ReadOnlySpan<float> embeddings, int perState)
    {
        // Per row the column holds [uncond, cond]; the UNet batch wants all unconditional rows first.
        for (int r = 0; r < count; r++)
        {
            var uncond = embeddings.Slice((2 * r) * perState, perState);
            var cond = embeddings.Slice((2 * r + 1) * perState, perState);
            if (_guidance)
            {
                _embeddings!.Write(uncond, r * perState);
                _embeddings.Write(cond, (count + r) * perState);
            }
            else
            {
                _embeddings!.Write(cond, r * perState);
            }
        }
    }

    private void WriteAddedConditioning(int count)
    {
        if (_pooled.Length != count * 2 * _pooledSize)
            throw new InvalidOperationException($"SDXL: the batch's pooled prompt vectors were not set (SetAddedConditioning): expected {count}×2×{_pooledSize} values, got {_pooled.Length}.");
        for (int r = 0; r < count; r++)
        {
            var uncond = _pooled.AsSpan(2 * r * _pooledSize, _pooledSize);
            var cond = _pooled.AsSpan((2 * r + 1) * _pooledSize, _pooledSize);
            int condRow = _guidance ? count + r : r;
            _textEmbeds!.Write(cond, condRow * _pooledSize);
            _timeIds!.Write(_condTimeIds, condRow * _timeIdsWidth);
            if (_guidance)
            {
                _textEmbeds.Write(uncond, r * _pooledSize);
                _timeIds.Write(_uncondTimeIds, r * _timeIdsWidth);
            }
        }
    }

    private void Ensure(int count, int sequenceLength)
    {
        if (count == _rows && sequenceLength == _sequence)
            return;
        DisposeBuffers();
        int unetRows = _guidance ? 2 * count : count;
        long[] sampleShape = { unetRows, _channels, _latentHeight, _latentWidth };
        _sample = new TensorBuffer(_unet.Input("sample").ElementDataType, new long[] { unetRows, _unetChannels, _latentHeight, _latentWidth });
        long[] timestepShape = _timestepRank == 0 ? Array.Empty<long>() : new long[] { _timestepStaticDim == 1 ? 1 : unetRows };
        _timestep = new TensorBuffer(_timestepType, timestepShape);
        _embeddings = new TensorBuffer(_unet.Input("encoder_hidden_states").ElementDataType, new long[] { unetRows, sequenceLength, _model.Info.HiddenSize });
        _output = new TensorBuffer(_unet.Output(_outputName).ElementDataType, sampleShape);
        var inputs = new[] { _sample.Value, _timestep.Value, _embeddings.Value };
        if (_timeIdsWidth > 0)
        {
            _textEmbeds = new TensorBuffer(_unet.Input("text_embeds").ElementDataType, new long[] { unetRows, _pooledSize });
            _timeIds = new TensorBuffer(_unet.Input("time_ids").ElementDataType, new long[] { unetRows, _timeIdsWidth });
            inputs = new[] { _sample.Value, _timestep.Value, _embeddings.Value, _textEmbeds.Value, _timeIds.Value };
        }
        // sample (0) and timestep (1) change every step; the rest once per batch.
        _binding = new UnetBinding(_unet, _inputNames, inputs, _outputName, _output.Value, s_perStepInputs, _settings.CopyUnetInputsPerStep);
        int total = unetRows * LatentLength;
        if (_sample.ElementType != TensorElementType.Float)
            _scaled = new float[_sample.Length];
        _scaledLatents = _unetChannels != _channels ? new float[count * LatentLength] : Array.Empty<float>();
        if (_output.ElementType != TensorElementType.Float)
            _prediction = new float[total];
        _guided = _guidance ? new float[count * LatentLength] : Array.Empty<float>();
        _rows = count;
        _sequence = sequenceLength;
    }

    private static readonly int[] s_perStepInputs = { 0, 1 };

    private void DisposeBuffers()
    {
        _binding?.Dispose();
        _binding = null;
        _sample?.Dispose();
        _timestep?.Dispose();
        _embeddings?.Dispose();
        _output?.Dispose();
        _textEmbeds?.Dispose();
        _timeIds?.Dispose();
        _sample = _timestep = _embeddings = _output = _textEmbeds = _timeIds = null;
        _rows = -1;
    }

    public void Dispose() => DisposeBuffers();

    /// <summary>Each row's scheduler noise from that row's own generator, so batching never changes a row's result.</summary>
    private sealed class BatchNoise : INoiseSource
    {
        private readonly int _rowLength;

        public BatchNoise(int rows, int rowLength)
        {
            Generators = new GaussianNoise[rows];
            _rowLength = rowLength;
        }

        public GaussianNoise[] Generators { get; }

        public void NextGaussian(Span<float> destination)
        {
            if (destination.Length != Generators.Length * _rowLength)
                throw new ArgumentException($"Expected noise for {Generators.Length} rows of {_rowLength} values, got {destination.Length}.", nameof(destination));
            for (int r = 0; r < Generators.Length; r++)
                Generators[r].NextGaussian(destination.Slice(r * _rowLength, _rowLength));
        }
    }
}
