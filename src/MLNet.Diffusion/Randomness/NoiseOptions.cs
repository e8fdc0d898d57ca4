using System;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Randomness;

/// <summary>
/// Where a stage's noise comes from: the generator, how a batch shares it, and which stream the stochastic steps draw
/// from. The defaults are this library's own generator, one per row, one stream per row.
/// </summary>
/// <remarks>
/// Presets name the settings that reproduce other tools: <see cref="Diffusers"/>, <see cref="ComfyUI"/> and
/// <see cref="Automatic1111"/>. docs/reproducing.md lists what stays different (GPU kernels, half precision).
/// </remarks>
public sealed record NoiseOptions
{
    /// <summary>The library's defaults: <see cref="NoiseGenerator.Library"/>, one generator per row.</summary>
    public static NoiseOptions Default { get; } = new();

    /// <summary>The algorithm. Default: <see cref="NoiseGenerator.Library"/>.</summary>
    public NoiseGenerator Generator { get; init; } = NoiseGenerator.Library;

    /// <summary>The PyTorch CPU kernel <see cref="NoiseGenerator.TorchCpu"/> reproduces. Default: <see cref="TorchCpuKernel.Avx2"/>.</summary>
    public TorchCpuKernel TorchCpuKernel { get; init; } = TorchCpuKernel.Avx2;

    /// <summary>How the rows of a batch share generators. Default: <see cref="NoiseBatchPolicy.GeneratorPerRow"/>.</summary>
    public NoiseBatchPolicy BatchPolicy { get; init; } = NoiseBatchPolicy.GeneratorPerRow;

    /// <summary>
    /// Null (the default): the steps' noise continues the stream of the initial noise, in the order diffusers draws it
    /// (one draw of the latent shape per stochastic step). A value d: after the initial noise, the stream restarts from
    /// a new generator seeded with seed + d — AUTOMATIC1111's "Eta noise seed delta" (ENSD, e.g. 31337), and 1 for
    /// ComfyUI's CPU sampling (<c>default_noise_sampler</c> seeds its generator with seed + 1 on the CPU).
    /// </summary>
    public long? StepNoiseSeedOffset { get; init; }

    /// <summary>
    /// Draws the generator made in earlier stages before this stage's first draw; default 0 (a fresh generator). Each is
    /// one draw of this stage's noise shape — a row's [C, h, w] latent, or the whole batch's with
    /// <see cref="NoiseBatchPolicy.GeneratorPerBatch"/> — so the stage continues the stream where a pipeline of one
    /// generator would stand. diffusers' image-to-image draws the encoder's sample and then the initial noise from one
    /// generator: EncodeImage with <see cref="Diffusers"/>, DenoiseLatents with <c>Diffusers() with { DrawsBefore = 1 }</c>
    /// (docs/reproducing.md has the inpainting settings).
    /// </summary>
    /// <remarks>
    /// The draws are skipped, not made: <see cref="NoiseGenerator.TorchCpu"/> advances its Mersenne Twister by the 32-bit
    /// outputs a draw takes (n, plus 16 when n is not a multiple of 16, for n ≥ 16 values); the other generators draw and
    /// discard.
    /// </remarks>
    public int DrawsBefore { get; init; }

    /// <summary>
    /// DenoiseLatents only: draws skipped between the initial noise and the first stochastic step's, for a pipeline that
    /// draws from the same generator in between; default 0. diffusers' StableDiffusionInpaintPipeline encodes the masked
    /// image (<c>prepare_mask_latents</c>, <c>retrieve_latents(…, generator)</c>) after the initial noise, so its steps'
    /// noise starts one draw later: 1 there, with PrepareInpainting's <see cref="DrawsBefore"/> counting the draws before it.
    /// With <see cref="StepNoiseSeedOffset"/>, the skipped draws come from the restarted stream.
    /// </summary>
    public int DrawsBeforeSteps { get; init; }

    /// <summary>
    /// diffusers with CPU generators: <c>torch.Generator("cpu").manual_seed(seed)</c> per row (a list of generators),
    /// or one generator for the whole batch.
    /// </summary>
    /// <param name="oneGeneratorForBatch">True for <c>generator=torch.Generator("cpu").manual_seed(seed)</c> (one object for every image).</param>
    public static NoiseOptions Diffusers(bool oneGeneratorForBatch = false) => new()
    {
        Generator = NoiseGenerator.TorchCpu,
        BatchPolicy = oneGeneratorForBatch ? NoiseBatchPolicy.GeneratorPerBatch : NoiseBatchPolicy.GeneratorPerRow,
    };

    /// <summary>
    /// ComfyUI's KSampler run on the CPU: one CPU <c>randn</c> of the whole batch from the seed, and the ancestral steps'
    /// noise from a CPU generator seeded with seed + 1.
    /// </summary>
    public static NoiseOptions ComfyUI() => new()
    {
        Generator = NoiseGenerator.TorchCpu,
        BatchPolicy = NoiseBatchPolicy.GeneratorPerBatch,
        StepNoiseSeedOffset = 1,
    };

    /// <summary>AUTOMATIC1111's web UI: one generator per image, its "Random number generator source" and ENSD.</summary>
    /// <param name="randomSource">Its <c>RNG</c> infotext value: <c>GPU</c> (the default, emulated with Philox), <c>NV</c> or <c>CPU</c>.</param>
    /// <param name="etaNoiseSeedDelta">Its <c>ENSD</c> setting; 0 when the infotext has none.</param>
    /// <exception cref="ArgumentException">The source is none of <c>GPU</c>, <c>NV</c>, <c>CPU</c>.</exception>
    public static NoiseOptions Automatic1111(string randomSource = "GPU", long etaNoiseSeedDelta = 0)
    {
        ArgumentNullException.ThrowIfNull(randomSource);
        var generator = randomSource.Trim().ToUpperInvariant() switch
        {
            "GPU" or "NV" => NoiseGenerator.Philox,
            "CPU" => NoiseGenerator.TorchCpu,
            _ => throw new ArgumentException($"AUTOMATIC1111's random number source is GPU, NV or CPU, not '{randomSource}'.", nameof(randomSource)),
        };
        return new()
        {
            Generator = generator,
            BatchPolicy = NoiseBatchPolicy.GeneratorPerRow,
            StepNoiseSeedOffset = etaNoiseSeedDelta == 0 ? null : etaNoiseSeedDelta,
        };
    }

    /// <summary>Throws, naming the stage option, when a field holds a value outside its enum (a stage validates its options with it).</summary>
    /// <param name="optionName">The stage option that holds these settings, e.g. <c>Noise</c>.</param>
    internal void Validate(string optionName)
    {
        if (!Enum.IsDefined(Generator))
            throw new ArgumentOutOfRangeException(optionName, Generator, $"{optionName}.Generator must be Library, TorchCpu or Philox.");
        if (!Enum.IsDefined(TorchCpuKernel))
            throw new ArgumentOutOfRangeException(optionName, TorchCpuKernel, $"{optionName}.TorchCpuKernel must be Avx2 or Portable.");
        if (!Enum.IsDefined(BatchPolicy))
            throw new ArgumentOutOfRangeException(optionName, BatchPolicy, $"{optionName}.BatchPolicy must be GeneratorPerRow or GeneratorPerBatch.");
        if (DrawsBefore < 0)
            throw new ArgumentOutOfRangeException(optionName, DrawsBefore, $"{optionName}.DrawsBefore must be 0 or more (the draws the generator made in earlier stages).");
        if (DrawsBeforeSteps < 0)
            throw new ArgumentOutOfRangeException(optionName, DrawsBeforeSteps, $"{optionName}.DrawsBeforeSteps must be 0 or more (the draws skipped between the initial noise and the steps' noise).");
    }

    /// <summary>Creates one generator of this kind from <paramref name="seed"/>.</summary>
    /// <param name="seed">The seed.</param>
    public INoiseSource CreateGenerator(long seed) => Generator switch
    {
        NoiseGenerator.Library => new GaussianNoise(seed),
        NoiseGenerator.TorchCpu => new TorchCpuNoise(seed, TorchCpuKernel),
        NoiseGenerator.Philox => new PhiloxNoise(seed),
        _ => throw new InvalidOperationException($"Unknown noise generator {Generator}."),
    };

    /// <summary>
    /// Creates the noise of one batch: the rows' seeds, each row <paramref name="rowLength"/> values. Its first draw is
    /// the initial noise, the following draws the steps' noise.
    /// </summary>
    /// <param name="seeds">One seed per row.</param>
    /// <param name="rowLength">The values per row (e.g. 4·64·64 latent values).</param>
    /// <exception cref="ArgumentException">No rows, or a row length below 1.</exception>
    public BatchNoise CreateBatch(ReadOnlySpan<long> seeds, int rowLength) => new(this, seeds, rowLength);
}
