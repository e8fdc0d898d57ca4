using System;
using System.Collections.Generic;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// One kind of extra conditioning of the UNet in the denoising loop (SDXL's added conditions, inpainting channels,
/// ControlNet residuals…): it declares the UNet inputs it feeds and writes them once per batch and/or every step, may
/// append channels to the UNet's sample, and may adjust the latents after each scheduler step. <see cref="LatentDenoiser"/>
/// calls the members in the order of its recipe; every member has a no-op default, so an implementation overrides
/// only what it uses. Per-row values (pooled vectors, masks, control images) are the implementation's own buffers,
/// filled by the caller before <see cref="LatentDenoiser.Run"/>.
/// </summary>
internal interface IUnetConditioning
{
    /// <summary>Channels this conditioning appends to every row of the UNet's <c>sample</c>, after the latents' C channels.</summary>
    int SampleChannels => 0;

    /// <summary>
    /// Declares the UNet inputs this conditioning feeds (<see cref="UnetInputs.Add"/>), whenever the denoiser sizes its
    /// buffers for a batch shape; the returned tensors replace the ones of the previous shape (the denoiser owns them).
    /// </summary>
    void DeclareInputs(UnetInputs inputs)
    {
    }

    /// <summary>
    /// Once per batch, after the initial latents and before the inputs are bound: writes the once-per-batch inputs and
    /// this conditioning's sample channels (they keep their values for every step).
    /// </summary>
    void BeginBatch(in UnetBatch batch)
    {
    }

    /// <summary>
    /// Every step, after the denoiser wrote the scaled latents into the sample and before the UNet runs: writes the
    /// per-step inputs (declared with <c>perStep: true</c>), which may be computed from <see cref="UnetStep.Sample"/>.
    /// </summary>
    void BeforeUnet(in UnetStep step)
    {
    }

    /// <summary>Every step, after the scheduler step: may adjust <see cref="UnetStep.Latents"/> (inpainting's blend of the known region).</summary>
    void AfterStep(in UnetStep step)
    {
    }
}

/// <summary>
/// The UNet inputs of one batch shape, declared by the denoiser (sample, timestep, encoder_hidden_states) and by the
/// conditionings: each gets a pinned host tensor of the UNet input's element type, bound through <see cref="UnetBinding"/>.
/// </summary>
internal sealed class UnetInputs
{
    private readonly OnnxComponent _unet;
    private readonly List<string> _names = new();
    private readonly List<TensorBuffer> _buffers = new();
    private readonly List<int> _perStep = new();

    public UnetInputs(OnnxComponent unet, int count, bool guidance)
    {
        _unet = unet;
        Count = count;
        Guidance = guidance;
    }

    /// <summary>Rows of the batch.</summary>
    public int Count { get; }

    /// <summary>Whether the UNet batch holds the unconditional rows first, then the conditional ones (2·<see cref="Count"/> rows).</summary>
    public bool Guidance { get; }

    /// <summary>Rows of the UNet batch: 2·<see cref="Count"/> with guidance, else <see cref="Count"/>.</summary>
    public int UnetRows => Guidance ? 2 * Count : Count;

    /// <summary>The declared input names, in binding order.</summary>
    public IReadOnlyList<string> Names => _names;

    /// <summary>The declared tensors, aligned with <see cref="Names"/>.</summary>
    public IReadOnlyList<TensorBuffer> Buffers => _buffers;

    /// <summary>Indexes of the inputs rewritten every step.</summary>
    public IReadOnlyList<int> PerStep => _perStep;

    /// <summary>The element type the UNet takes for input <paramref name="name"/>.</summary>
    public TensorElementType ElementType(string name) => _unet.Input(name).ElementDataType;

    /// <summary>Declares UNet input <paramref name="name"/> of <paramref name="shape"/>, written every step or once per batch.</summary>
    /// <returns>The host tensor to write the input into.</returns>
    public TensorBuffer Add(string name, long[] shape, bool perStep)
    {
        if (_names.Contains(name))
            throw new InvalidOperationException($"The UNet input '{name}' is fed twice: two conditionings declare it.");
        var buffer = new TensorBuffer(ElementType(name), shape);
        if (perStep)
            _perStep.Add(_names.Count);
        _names.Add(name);
        _buffers.Add(buffer);
        return buffer;
    }
}

/// <summary>What a conditioning sees once per batch (<see cref="IUnetConditioning.BeginBatch"/>).</summary>
internal readonly ref struct UnetBatch
{
    public UnetBatch(DenoiseBatch rows, bool guidance, DiffusionScheduler scheduler, ReadOnlySpan<float> initialNoise, Span<float> sample,
        int sampleChannels, int channelOffset, int plane)
    {
        Rows = rows;
        Guidance = guidance;
        Scheduler = scheduler;
        InitialNoise = initialNoise;
        Sample = sample;
        SampleChannels = sampleChannels;
        ChannelOffset = channelOffset;
        Plane = plane;
    }

    /// <summary>The batch's rows and their inputs.</summary>
    public DenoiseBatch Rows { get; }

    /// <summary>Whether the UNet batch is [unconditional rows; conditional rows].</summary>
    public bool Guidance { get; }

    /// <summary>The batch's scheduler, its timesteps set.</summary>
    public DiffusionScheduler Scheduler { get; }

    /// <summary>ε, the batch's initial noise [count, C, h, w] before any scaling (the rows' seeded or given noise).</summary>
    public ReadOnlySpan<float> InitialNoise { get; }

    /// <summary>The UNet's sample as floats [UNet rows, SampleChannels, h, w]; the latents' channels are written every step.</summary>
    public Span<float> Sample { get; }

    /// <summary>Channels of one sample row: C plus every conditioning's <see cref="IUnetConditioning.SampleChannels"/>.</summary>
    public int SampleChannels { get; }

    /// <summary>The first sample channel that belongs to this conditioning.</summary>
    public int ChannelOffset { get; }

    /// <summary>h·w, the latent pixels of one channel.</summary>
    public int Plane { get; }
}

/// <summary>What a conditioning sees every step (<see cref="IUnetConditioning.BeforeUnet"/>, <see cref="IUnetConditioning.AfterStep"/>).</summary>
internal readonly ref struct UnetStep
{
    public UnetStep(DenoiseBatch rows, int index, float timestep, bool guidance, DiffusionScheduler scheduler, ReadOnlySpan<float> initialNoise,
        Span<float> sample, Span<float> latents)
    {
        Rows = rows;
        Index = index;
        Timestep = timestep;
        Guidance = guidance;
        Scheduler = scheduler;
        InitialNoise = initialNoise;
        Sample = sample;
        Latents = latents;
    }

    /// <summary>The batch's rows and their inputs.</summary>
    public DenoiseBatch Rows { get; }

    /// <summary>The index of the step in the scheduler's timesteps.</summary>
    public int Index { get; }

    /// <summary>The step's timestep t.</summary>
    public float Timestep { get; }

    /// <summary>Whether the UNet batch is [unconditional rows; conditional rows].</summary>
    public bool Guidance { get; }

    /// <summary>The batch's scheduler.</summary>
    public DiffusionScheduler Scheduler { get; }

    /// <summary>ε, the batch's initial noise [count, C, h, w] before any scaling.</summary>
    public ReadOnlySpan<float> InitialNoise { get; }

    /// <summary>The UNet's sample as floats [UNet rows, sample channels, h, w], holding scale_model_input(latents) this step.</summary>
    public Span<float> Sample { get; }

    /// <summary>The batch's latents [count, C, h, w]: before the step in <see cref="IUnetConditioning.BeforeUnet"/>, after it in <see cref="IUnetConditioning.AfterStep"/>.</summary>
    public Span<float> Latents { get; }
}
