using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Numerics.Tensors;
using System.Threading;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Randomness;
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

    /// <summary>Called at the end of every step with a view of the batch's latents (diffusers' <c>callback_on_step_end</c>).</summary>
    public DenoiseStepCallback? OnStepEnd { get; init; }

    /// <summary>The UNet to run instead of the model's <c>unet/</c> (OnnxStack's ControlNet UNet); null: the model's.</summary>
    public OnnxComponent? Unet { get; init; }

    /// <summary>Inpainting (the stage reads a mask): at strength 1 the run starts from pure noise, as diffusers' inpainting pipeline.</summary>
    public bool Inpainting { get; init; }

    /// <summary>Where the initial and the steps' noise come from (the stage's <c>Noise</c> option).</summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;
}

/// <summary>
/// The denoising loop of diffusers' StableDiffusionPipeline (steps 4–7 of its <c>__call__</c>), for one batch of rows:
/// seeded initial noise, then for every timestep one UNet call — with classifier-free guidance on the batch
/// [unconditional rows; conditional rows], 2N in one call — the guidance combine ε = ε_u + g·(ε_c − ε_u)
/// (Ho &amp; Salimans 2022, eq. 6) and the scheduler step. What the UNet takes beyond sample, timestep and text embeddings
/// comes from the <see cref="IUnetConditioning"/>s (SDXL's added conditions, inpainting channels…).
/// Buffers are allocated once per batch shape and reused across steps; ONNX Runtime reads and writes them in place. The
/// UNet runs through an IO binding (<see cref="UnetBinding"/>): the once-per-batch inputs are bound once (on CUDA:
/// copied to the device once), and on a device only the per-step inputs are copied in and the prediction out per step.
/// </summary>
internal sealed class LatentDenoiser : IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly OnnxComponent _unet;
    private readonly DenoiseSettings _settings;
    private readonly IUnetConditioning[] _conditionings;
    private readonly IPipelineLog _log;
    private readonly int _channels;
    private readonly int _unetChannels;
    private readonly int _latentHeight;
    private readonly int _latentWidth;
    private readonly bool _guidance;
    // Text-conditioned UNets take encoder_hidden_states; an unconditional UNet2DModel (LDM, DDPM) takes sample and timestep only.
    private readonly bool _conditional;
    private readonly string _outputName;
    private readonly int _timestepRank;
    private readonly int? _timestepStaticDim;

    private DiffusionScheduler? _scheduler;
    private int _rows = -1;
    private int _sequence = -1;
    private bool _scheduled;
    private int _parts = 1;
    private long[] _rowOffsets = Array.Empty<long>();
    private IReadOnlyList<TensorBuffer> _inputs = Array.Empty<TensorBuffer>();
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

    /// <param name="model">The model whose UNet runs.</param>
    /// <param name="settings">The run's settings.</param>
    /// <param name="conditionings">The UNet's extra conditionings; their sample channels follow the latents' in this order.</param>
    /// <param name="log">Where the per-step trace goes; null: nowhere.</param>
    public LatentDenoiser(StableDiffusionModel model, DenoiseSettings settings, IReadOnlyList<IUnetConditioning>? conditionings = null, IPipelineLog? log = null)
    {
        _model = model;
        _unet = settings.Unet ?? model.Unet;
        _settings = settings;
        _conditionings = conditionings is null ? Array.Empty<IUnetConditioning>() : new List<IUnetConditioning>(conditionings).ToArray();
        _log = log ?? PipelineLog.None;
        _channels = model.Info.LatentChannels;
        _unetChannels = model.Info.UnetInputChannels;
        _latentHeight = settings.Height / model.Info.VaeSpatialFactor;
        _latentWidth = settings.Width / model.Info.VaeSpatialFactor;
        _conditional = _unet.HasInput("encoder_hidden_states");
        // Classifier-free guidance mixes a conditional and an unconditional prediction; an unconditional UNet has only the latter.
        _guidance = settings.GuidanceScale > 1f && _conditional;
        _outputName = ModelInspector.UnetOutputName(_unet);
        var ts = _unet.Input("timestep");
        _timestepRank = ts.Dimensions.Length;
        _timestepStaticDim = OnnxComponent.StaticDim(ts, 0);
        int sampleChannels = _channels;
        foreach (var c in _conditionings)
            sampleChannels += c.SampleChannels;
        if (sampleChannels != _unetChannels)
            throw new InvalidOperationException($"The UNet takes {_unetChannels} input channels; the latents ({_channels}) and the run's conditionings give {sampleChannels}.");
    }

    /// <summary>The UNet's conditionings, in the order their sample channels follow the latents'.</summary>
    internal IReadOnlyList<IUnetConditioning> Conditionings => _conditionings;

    /// <summary>The UNet's IO binding for the current batch shape (null before the first run).</summary>
    internal UnetBinding? Binding => _binding;

    /// <summary>Values per row of the latent tensor [C, h, w].</summary>
    public int LatentLength => _channels * _latentHeight * _latentWidth;

    public int[] LatentShape => new[] { _channels, _latentHeight, _latentWidth };

    /// <summary>
    /// Denoises the rows of <paramref name="batch"/> into <see cref="DenoiseBatch.Latents"/>. Each row's noise comes from
    /// its own seed (or its given initial noise), so a row's result does not depend on its batch or position. The
    /// conditionings' per-row buffers must hold the batch's rows.
    /// </summary>
    public void Run(DenoiseBatch batch)
    {
        // 1. Check inputs.
        int count = batch.Count, len = LatentLength, hidden = _model.Info.HiddenSize;
        if (!_conditional && !batch.Embeddings.IsEmpty)
            throw new ArgumentException($"The UNet of '{_model.Info.Directory}' is unconditional (no encoder_hidden_states input); the batch must carry no embeddings.", nameof(batch));
        bool scheduled = !batch.Schedules.IsEmpty;
        long states = scheduled ? ScheduledStates(batch, Prompting.A1111SamplerSteps.TotalSteps(_settings.Scheduler, _settings.Steps)) : 2L * count;
        if (_conditional && batch.Embeddings.Length != states * batch.SequenceLength * hidden)
            throw new ArgumentException($"Expected {states}×{batch.SequenceLength}×{hidden} embedding values ({count} rows), got {batch.Embeddings.Length}.", nameof(batch));
        if (batch.Latents.Length != count * len)
            throw new ArgumentException($"Expected room for {count}×{len} latent values.", nameof(batch));
        if (batch.Seeds.Length != count || !batch.InitialNoise.IsEmpty && batch.InitialNoise.Length != count)
            throw new ArgumentException($"Expected a seed (and optionally an initial noise) for each of the {count} rows.", nameof(batch));
        if (_settings.Strength < 1f && batch.InitialLatents.Length != count * len)
            throw new ArgumentException($"Strength {_settings.Strength} needs {count}×{len} initial latent values, got {batch.InitialLatents.Length}.", nameof(batch));
        _model.ThrowIfDisposed();
        var latents = batch.Latents.Span;

        // 2. Timesteps. One scheduler clone per denoiser, reused batch after batch: SetTimesteps resets all per-run state
        //    (scheduler contract), so its scratch and history buffers are allocated once per cursor. Image-to-image keeps
        //    the last ⌊Steps·Strength⌋ of them (diffusers' get_timesteps), all of them at strength 1.
        var scheduler = _scheduler ??= _settings.Scheduler.Clone();
        scheduler.SetTimesteps(_settings.Steps);
        var timesteps = scheduler.Timesteps;
        bool fromImage = StartsFromInitialLatents(batch);
        int start = fromImage ? scheduler.GetStartIndex(_settings.Strength) : 0;

        // 3. Initial latents (prepare_latents): N(0, I) per row from the row's seed (or the row's given noise), kept as ε;
        //    then ε × the init sigma, or for image-to-image add_noise(initial latents, ε, timesteps[start]) — at strength 1
        //    too, as StableDiffusionImg2ImgPipeline does (only the inpainting pipeline starts from pure noise there).
        var noise = DrawNoise(batch, latents);
        if (start == timesteps.Length)
        {
            batch.InitialLatents.Span.CopyTo(latents); // no step left: the initial latents are the result
            return;
        }
        if (fromImage)
        {
            scheduler.AddNoise(batch.InitialLatents.Span, _noise, start, latents);
            scheduler.SetBeginIndex(start);
        }
        else
        {
            TensorPrimitives.Multiply(latents, scheduler.InitNoiseSigma, latents);
        }

        // 4. The batch's UNet inputs: the prompt embeddings [uncond; cond] and each conditioning's, then bound once.
        Ensure(count, batch.SequenceLength, scheduled);
        if (scheduled)
            WriteUnconditional(batch, batch.SequenceLength * hidden);
        else if (_conditional)
            WriteEmbeddings(count, batch.Embeddings.Span, batch.SequenceLength * hidden);
        var sample = _sample!.ElementType == TensorElementType.Float ? _sample.FloatSpan : _scaled.AsSpan(0, _sample.Length);
        int channel = _channels, plane = _latentHeight * _latentWidth;
        foreach (var c in _conditionings)
        {
            c.BeginBatch(new UnetBatch(batch, _guidance, scheduler, _noise, sample, _unetChannels, channel, plane));
            channel += c.SampleChannels;
        }
        _binding!.BindBatch();

        // 5. The denoising loop.
        int unetRows = _guidance ? 2 * count : count;
        int half = count * len;
        var stopwatch = Stopwatch.StartNew();
        for (int i = start; i < timesteps.Length; i++)
        {
            _settings.CancellationToken.ThrowIfCancellationRequested();
            float t = timesteps[i];

            // 5.1 sample = scale_model_input(latents), in both halves with guidance; the conditionings' channels stay.
            WriteSample(scheduler, latents, sample, i, count);

            // 5.2 The conditionings' per-step inputs (computed from the current sample, e.g. ControlNet residuals).
            foreach (var c in _conditionings)
                c.BeforeUnet(new UnetStep(batch, i, t, _guidance, scheduler, _noise, sample, latents));
            if (_sample.ElementType != TensorElementType.Float)
                _sample.Write(sample);
            _timestep!.Fill(t);

            // 5.3–5.4 With schedules: one UNet call per AND part, guidance summed over the parts (RunParts). The schedule is
            //     indexed by A1111's CFGDenoiser.step, which counts the denoiser calls the run executes from 0 (Sampler.initialize
            //     sets it to 0, forward ends with step += 1): loop index i is one call here (a second-order scheduler lists a
            //     timestep per UNet call), so the call is i − start, also for image-to-image.
            Span<float> guided;
            if (scheduled)
            {
                guided = RunParts(batch, i, i - start, t, unetRows, batch.SequenceLength * hidden);
                scheduler.Step(guided, i, latents, noise);
                AfterStep(batch, i, t, start, timesteps.Length, scheduler, sample, latents, stopwatch);
                continue;
            }

            // 5.3 The UNet's noise prediction.
            _binding.Run();
            Span<float> prediction = _output!.ElementType == TensorElementType.Float ? _output.FloatSpan : _prediction.AsSpan(0, unetRows * len);
            if (_output.ElementType != TensorElementType.Float)
                _output.Read(prediction);

            // 5.4 Classifier-free guidance, with the finite check in the same pass (GuidanceMath).
            if (_guidance)
            {
                guided = _guided.AsSpan(0, half);
                int bad = GuidanceMath.Combine(prediction.Slice(0, 2 * half), _settings.GuidanceScale, guided, count, len);
                if (bad >= 0)
                    throw GuidanceMath.NonFinite(batch.FirstRow + bad, i, t);
            }
            else
            {
                guided = prediction.Slice(0, half);
                CheckFinite(guided, count, len, batch.FirstRow, i, t);
            }

            // 5.5 The scheduler step x_t → x_{t−1}; a stochastic step draws the next noise of the rows' generators.
            scheduler.Step(guided, i, latents, noise);

            // 5.6–5.7 The conditionings after the step, the callback, the log and progress.
            AfterStep(batch, i, t, start, timesteps.Length, scheduler, sample, latents, stopwatch);
        }

        // 6. A last finite check of the result.
        CheckFinite(latents, count, len, batch.FirstRow, timesteps.Length - 1, timesteps[^1]);
    }

    /// <summary>5.6 The conditionings after the step (inpainting with an ordinary UNet: blend the known region); 5.7 callback_on_step_end, the log and progress.</summary>
    private void AfterStep(DenoiseBatch batch, int i, float t, int start, int steps, DiffusionScheduler scheduler, Span<float> sample, Span<float> latents, Stopwatch stopwatch)
    {
        int count = batch.Count;
        foreach (var c in _conditionings)
            c.AfterStep(new UnetStep(batch, i, t, _guidance, scheduler, _noise, sample, latents));
        _settings.OnStepEnd?.Invoke(new DenoiseStepEnd(i - start, steps - start, t, batch.FirstRow, count, _channels, _latentHeight, _latentWidth, latents));
        if (_log.TraceEnabled)
            _log.Trace($"Rows {batch.FirstRow}–{batch.FirstRow + count - 1}: step {i - start + 1}/{steps - start} (t = {t}) done after {stopwatch.Elapsed.TotalMilliseconds:F0} ms.");
        _settings.Progress?.Report(new DenoiseProgress(i - start + 1, steps - start, t, batch.FirstRow, count, stopwatch.Elapsed));
    }

    /// <summary>
    /// The states a scheduled batch holds, Σ_r (1 + K_r), checking that each schedule was made for the run's A1111
    /// <c>total_steps</c> (<paramref name="totalSteps"/>) and needs no missing guidance.
    /// </summary>
    private long ScheduledStates(DenoiseBatch batch, int totalSteps)
    {
        var schedules = batch.Schedules.Span;
        if (schedules.Length != batch.Count)
            throw new ArgumentException($"Expected a schedule (or null) for each of the {batch.Count} rows, got {schedules.Length}.", nameof(batch));
        long states = 0;
        int parts = 1;
        for (int r = 0; r < schedules.Length; r++)
        {
            var schedule = schedules[r];
            states += 1 + (schedule?.ConditioningCount ?? 1);
            if (schedule is null)
                continue;
            if (schedule.Steps != totalSteps)
                throw new ArgumentException($"Row {batch.FirstRow + r}: its prompt schedule was made for {schedule.Steps} steps, the run schedules prompts over {totalSteps} "
                    + $"({_settings.Steps} steps{(totalSteps != _settings.Steps ? ", twice for a second-order sampler as A1111's total_steps" : string.Empty)}); encode the prompt for that count.", nameof(batch));
            if (!_guidance && (schedule.Parts > 1 || schedule.Weight(0) != 1f))
                throw new NotSupportedException($"Row {batch.FirstRow + r}: AND and part weights combine noise predictions with the unconditional one, which needs classifier-free guidance (GuidanceScale > 1).");
            parts = Math.Max(parts, schedule.Parts);
        }
        _parts = parts;
        if (_rowOffsets.Length < batch.Count)
            _rowOffsets = new long[batch.Count];
        long offset = 0;
        for (int r = 0; r < schedules.Length; r++)
        {
            _rowOffsets[r] = offset;
            offset += 1 + (schedules[r]?.ConditioningCount ?? 1);
        }
        return states;
    }

    /// <summary>With schedules: each row's unconditional states into the first half of encoder_hidden_states, once per batch.</summary>
    private void WriteUnconditional(DenoiseBatch batch, int perState)
    {
        if (!_guidance)
            return;
        var embeddings = batch.Embeddings.Span;
        for (int r = 0; r < batch.Count; r++)
            _embeddings!.Write(embeddings.Slice((int)(_rowOffsets[r] * perState), perState), r * perState);
    }

    /// <summary>
    /// One denoiser call with AND parts and prompt editing (A1111's <c>CFGDenoiser.forward</c> and
    /// <c>combine_denoised</c>): for each part k, every row's conditional half gets the conditioning its schedule names
    /// for this call (<paramref name="call"/>, A1111's <c>CFGDenoiser.step</c>), the UNet runs, and the guided prediction accumulates <c>uncond + Σ_k (cond_k − uncond) · (w_k · g)</c>
    /// (a row with fewer parts adds nothing in the later calls). Without guidance a row's single part is its prediction.
    /// </summary>
    private Span<float> RunParts(DenoiseBatch batch, int step, int call, float t, int unetRows, int perState)
    {
        int count = batch.Count, len = LatentLength, half = count * len;
        var schedules = batch.Schedules.Span;
        var embeddings = batch.Embeddings.Span;
        var guided = _guided.AsSpan(0, half);
        float g = _settings.GuidanceScale;
        for (int k = 0; k < _parts; k++)
        {
            for (int r = 0; r < count; r++)
            {
                var schedule = schedules[r];
                int index = schedule is null ? 0 : schedule.IndexAt(call, Math.Min(k, schedule.Parts - 1));
                _embeddings!.Write(embeddings.Slice((int)((_rowOffsets[r] + 1 + index) * perState), perState), (_guidance ? count + r : r) * perState);
            }
            _binding!.Run();
            Span<float> prediction = _output!.ElementType == TensorElementType.Float ? _output.FloatSpan : _prediction.AsSpan(0, unetRows * len);
            if (_output.ElementType != TensorElementType.Float)
                _output.Read(prediction);
            if (!_guidance)
            {
                prediction.Slice(0, half).CopyTo(guided);
                break;
            }
            var uncond = prediction.Slice(0, half);
            var cond = prediction.Slice(half, half);
            if (k == 0)
                uncond.CopyTo(guided);
            for (int r = 0; r < count; r++)
            {
                var schedule = schedules[r];
                int parts = schedule?.Parts ?? 1;
                if (k >= parts)
                    continue;
                // denoised[i] += (x_out[cond_index] − denoised_uncond[i]) * (weight * cond_scale)
                float w = (schedule?.Weight(k) ?? 1f) * g;
                var u = uncond.Slice(r * len, len);
                var c = cond.Slice(r * len, len);
                var d = guided.Slice(r * len, len);
                for (int j = 0; j < len; j++)
                    d[j] += (c[j] - u[j]) * w;
            }
        }
        CheckFinite(guided, count, len, batch.FirstRow, step, t);
        return guided;
    }

    /// <summary>
    /// Writes each row's initial noise ε into <paramref name="latents"/> (its given noise, else the first draw of its
    /// generator) and keeps a copy of ε for the forward process; returns the batch's generators
    /// (<see cref="NoiseOptions.CreateBatch"/>), which go on to serve the scheduler's stochastic steps.
    /// </summary>
    private BatchNoise DrawNoise(DenoiseBatch batch, Span<float> latents)
    {
        int len = LatentLength;
        var given = batch.InitialNoise.Span;
        var noise = _settings.Noise.CreateBatch(batch.Seeds.Span, len);
        if (_settings.Noise.BatchPolicy == NoiseBatchPolicy.GeneratorPerBatch)
        {
            // One generator draws the whole batch tensor (torch.randn((n, C, h, w))); given rows replace their part. When
            // every row is given, nothing is drawn (diffusers' latents=) and the steps start where the generator stands.
            if (given.IsEmpty || HasSeededRow(given))
                noise.NextGaussian(latents);
            else
                noise.SkipInitialDraw();
            for (int r = 0; r < given.Length; r++)
                given[r]?.CopyTo(latents.Slice(r * len, len));
        }
        else
        {
            for (int r = 0; r < batch.Count; r++)
            {
                var row = latents.Slice(r * len, len);
                if (!given.IsEmpty && given[r] is { } values)
                {
                    values.CopyTo(row);
                    noise.SkipInitialDraw(r);
                }
                else
                {
                    noise.NextGaussian(r, row);
                }
            }
        }
        if (_noise.Length != latents.Length)
            _noise = new float[latents.Length];
        latents.CopyTo(_noise);
        return noise;
    }

    private static bool HasSeededRow(ReadOnlySpan<float[]?> given)
    {
        foreach (var row in given)
        {
            if (row is null)
                return true;
        }
        return false;
    }

    /// <summary>
    /// Whether the run starts from the initial latents noised to its first timestep: image-to-image at every strength
    /// (diffusers' StableDiffusionImg2ImgPipeline.prepare_latents has no strength-1 branch), and inpainting below strength 1
    /// (StableDiffusionInpaintPipeline: <c>latents = noise if is_strength_max else add_noise(image_latents, noise, t)</c>).
    /// </summary>
    private bool StartsFromInitialLatents(DenoiseBatch batch) =>
        !batch.InitialLatents.IsEmpty && (_settings.Strength < 1f || !_settings.Inpainting);

    /// <summary>Writes scale_model_input(latents) into the latents' channels of every sample row (both halves with guidance).</summary>
    private void WriteSample(DiffusionScheduler scheduler, ReadOnlySpan<float> latents, Span<float> sample, int step, int count)
    {
        int half = count * LatentLength;
        if (_unetChannels == _channels)
        {
            scheduler.ScaleModelInput(latents, sample.Slice(0, half), step);
            if (_guidance)
                sample.Slice(0, half).CopyTo(sample.Slice(half, half));
            return;
        }
        var scaled = _scaledLatents.AsSpan(0, half);
        scheduler.ScaleModelInput(latents, scaled, step);
        int len = LatentLength, row = _unetChannels * _latentHeight * _latentWidth;
        for (int r = 0; r < count; r++)
        {
            var values = scaled.Slice(r * len, len);
            values.CopyTo(sample.Slice(r * row, len));
            if (_guidance)
                values.CopyTo(sample.Slice((count + r) * row, len));
        }
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

    /// <summary>The UNet's tensors and IO binding for a batch shape: the denoiser's inputs, then each conditioning's.</summary>
    private void Ensure(int count, int sequenceLength, bool scheduled)
    {
        if (count == _rows && sequenceLength == _sequence && scheduled == _scheduled)
            return;
        DisposeBuffers();
        var inputs = new UnetInputs(_unet, count, _guidance);
        int unetRows = inputs.UnetRows;
        try
        {
            // sample and timestep change every step; the rest once per batch.
            _sample = inputs.Add("sample", new long[] { unetRows, _unetChannels, _latentHeight, _latentWidth }, perStep: true);
            long[] timestepShape = _timestepRank == 0 ? Array.Empty<long>() : new long[] { _timestepStaticDim == 1 ? 1 : unetRows };
            _timestep = inputs.Add("timestep", timestepShape, perStep: true);
            // The UNet's own inputs decide: an unconditional UNet2DModel takes no text states.
            _embeddings = _conditional ? inputs.Add("encoder_hidden_states", new long[] { unetRows, sequenceLength, _model.Info.HiddenSize }, perStep: scheduled) : null;
            foreach (var c in _conditionings)
                c.DeclareInputs(inputs);
            foreach (string name in _unet.Inputs.Keys)
            {
                if (!Contains(inputs.Names, name))
                    throw new InvalidOperationException($"The UNet of '{_model.Info.Directory}' takes the input '{name}', which none of the denoising loop's conditionings feeds.");
            }
            _output = new TensorBuffer(_unet.Output(_outputName).ElementDataType, new long[] { unetRows, _channels, _latentHeight, _latentWidth });
            var values = new Microsoft.ML.OnnxRuntime.OrtValue[inputs.Buffers.Count];
            for (int i = 0; i < values.Length; i++)
                values[i] = inputs.Buffers[i].Value;
            var perStep = new int[inputs.PerStep.Count];
            for (int i = 0; i < perStep.Length; i++)
                perStep[i] = inputs.PerStep[i];
            var names = new string[inputs.Names.Count];
            for (int i = 0; i < names.Length; i++)
                names[i] = inputs.Names[i];
            _binding = new UnetBinding(_unet, names, values, _outputName, _output.Value, perStep, _settings.CopyUnetInputsPerStep);
        }
        finally
        {
            _inputs = inputs.Buffers;
        }
        if (_sample!.ElementType != TensorElementType.Float)
            _scaled = new float[_sample.Length];
        _scaledLatents = _unetChannels != _channels ? new float[count * LatentLength] : Array.Empty<float>();
        if (_output!.ElementType != TensorElementType.Float)
            _prediction = new float[unetRows * LatentLength];
        _guided = _guidance || scheduled ? new float[count * LatentLength] : Array.Empty<float>();
        _rows = count;
        _scheduled = scheduled;
        _sequence = sequenceLength;
    }

    private static bool Contains(IReadOnlyList<string> names, string name)
    {
        for (int i = 0; i < names.Count; i++)
        {
            if (names[i] == name)
                return true;
        }
        return false;
    }

    private void DisposeBuffers()
    {
        _binding?.Dispose();
        _binding = null;
        foreach (var input in _inputs)
            input.Dispose();
        _inputs = Array.Empty<TensorBuffer>();
        _output?.Dispose();
        _sample = _timestep = _embeddings = _output = null;
        _rows = -1;
    }

    public void Dispose() => DisposeBuffers();
}
