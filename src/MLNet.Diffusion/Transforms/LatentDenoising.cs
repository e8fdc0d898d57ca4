using System;
using System.Collections.Generic;
using System.Numerics.Tensors;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Transforms;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion;

/// <summary>Settings of the DenoiseLatents stage.</summary>
public sealed class DenoiseLatentsOptions
{
    /// <summary>Number of denoising steps.</summary>
    public int Steps { get; init; } = 20;

    /// <summary>
    /// Classifier-free guidance scale g (Ho &amp; Salimans 2022); values ≤ 1 turn guidance off (one UNet batch of N instead of 2N).
    /// Unconditional models (<see cref="ModelInfo.IsConditional"/> false) have nothing to guide by: it does not apply to them.
    /// </summary>
    public float GuidanceScale { get; init; } = 7.5f;

    /// <summary>Image width in pixels; a multiple of 8 and of the VAE factor.</summary>
    public int Width { get; init; } = 512;

    /// <summary>Image height in pixels; a multiple of 8 and of the VAE factor.</summary>
    public int Height { get; init; } = 512;

    /// <summary>
    /// The scheduler, with its settings on top of the folder's <c>scheduler_config.json</c>; null uses the class the config's
    /// <c>_class_name</c> names, as diffusers' pipelines do (an unknown class is then an error that lists the known ones).
    /// Give it by name (<c>Scheduler = "euler-a"</c>, <c>"dpmpp-2m-karras"</c>, … see <see cref="SchedulerFactory.Names"/>),
    /// by diffusers class name (<c>"EulerAncestralDiscreteScheduler"</c>, see <see cref="SchedulerFactory.ClassNames"/>),
    /// or as a configured options record of the scheduler's own file: <c>new DdimSchedulerOptions { Eta = 1 }</c>,
    /// <c>new EulerDiscreteSchedulerOptions { UseKarrasSigmas = true, TimestepSpacing = "trailing" }</c>. A string converts
    /// to the registered defaults (<see cref="SchedulerOptions"/> explains why options, not a scheduler instance).
    /// </summary>
    public SchedulerOptions? Scheduler { get; init; }

    /// <summary>
    /// Name of an optional seed column (any integer type, or whole numbers in a Single/Double column). Rows without a
    /// seed column use <see cref="Seed"/> (or a seed derived from the MLContext) plus the row's position.
    /// </summary>
    public string? SeedColumnName { get; init; }

    /// <summary>Base seed for rows without a seed column; null derives it from the MLContext's random source.</summary>
    public int? Seed { get; init; }

    /// <summary>
    /// Where the noise comes from: the generator, how a batch shares it, and the stream of the stochastic steps; default
    /// <see cref="NoiseOptions.Default"/> (this library's generator, one per row). <see cref="NoiseOptions.Diffusers"/>,
    /// <see cref="NoiseOptions.ComfyUI"/> and <see cref="NoiseOptions.Automatic1111"/> reproduce those tools' noise from
    /// the same seed: the initial noise is the generator's first draw, and each stochastic step (Euler ancestral, DDPM,
    /// LCM, DDIM with eta &gt; 0, …) draws the next one of the latent shape, as diffusers' <c>randn_tensor(model_output.shape,
    /// generator=…)</c>. With <see cref="NoiseBatchPolicy.GeneratorPerBatch"/> the batch is <see cref="BatchSize"/> rows.
    /// Image-to-image as diffusers (whose generator drew the encoder's sample first): <c>NoiseOptions.Diffusers() with {
    /// DrawsBefore = 1 }</c> here and <see cref="NoiseOptions.Diffusers"/> on EncodeImage, the same seeds in both.
    /// docs/reproducing.md has the table of tools and settings.
    /// </summary>
    public NoiseOptions Noise { get; init; } = NoiseOptions.Default;

    /// <summary>
    /// Name of an optional initial-noise column, float vector [C, h, w] of N(0, 1) noise that replaces the seeded noise,
    /// so results of other tools can be reproduced exactly from their noise.
    /// </summary>
    public string? InitialNoiseColumnName { get; init; }

    /// <summary>
    /// Image-to-image: name of an optional column of initial latents, a float vector [C, h, w] of scaled latents as
    /// EncodeImage produces them. Denoising starts from these latents noised to the timestep <see cref="Strength"/>
    /// selects instead of from pure noise (at strength 1 too; with a <see cref="MaskColumnName"/>, strength 1 starts from
    /// pure noise, as diffusers' inpainting pipeline).
    /// </summary>
    public string? InitialLatentsColumnName { get; init; }

    /// <summary>
    /// Image-to-image strength in [0, 1] (diffusers' StableDiffusionImg2ImgPipeline <c>strength</c>); default 1. With
    /// <see cref="InitialLatentsColumnName"/> the run keeps the last ⌊Steps·Strength⌋ of the <see cref="Steps"/> timesteps
    /// and starts from the initial latents noised to the first of them: x = AddNoise(latents, ε, t_start) with ε the row's
    /// noise (its seed, or <see cref="InitialNoiseColumnName"/>). Values below 1 need <see cref="InitialLatentsColumnName"/>;
    /// without it, strength 1 is text-to-image.
    /// </summary>
    /// <remarks>
    /// The edges, as diffusers: when no step is left (Strength 0, or Steps·Strength &lt; 1) the initial latents are
    /// returned unchanged. Strength 1 with initial latents still starts from AddNoise(latents, ε, t_first), not from pure
    /// noise (<c>prepare_latents</c> has no strength-1 branch), so a faint trace of the image stays: √ᾱ_t ≈ 0.12 at
    /// t_first = 901 (SD 1.x's schedule, 10 DDIM steps), ≈ 0.07 at t = 999. For the sigma schedulers it is x₀ + σ_max·ε.
    /// Inpainting (<see cref="MaskColumnName"/>) at strength 1 starts from pure noise, as StableDiffusionInpaintPipeline
    /// (<c>is_strength_max</c>).
    /// </remarks>
    public float Strength { get; init; } = 1f;

    /// <summary>
    /// Inpainting: name of an optional mask column, a float vector [1, h, w] (or [h, w]) at latent resolution with
    /// values in [0, 1], 1 = repaint, 0 = keep — PrepareInpainting's latent mask. How it is used depends on the UNet
    /// (<see cref="ModelInfo.UnetInputChannels"/>), as in diffusers' StableDiffusionInpaintPipeline: an inpainting UNet
    /// (9 channels) takes it with <see cref="MaskedImageLatentsColumnName"/> as input; an ordinary UNet (4 channels)
    /// keeps <see cref="InitialLatentsColumnName"/> outside the mask by blending after every step,
    /// x = (1 − m)·AddNoise(initial latents, ε, t_next) + m·x, and the initial latents themselves after the last step,
    /// so the result equals them outside the mask. <see cref="Strength"/> applies as in image-to-image.
    /// </summary>
    public string? MaskColumnName { get; init; }

    /// <summary>
    /// Inpainting UNets (9 input channels): name of the masked-image latents column, a float vector [C, h, w] —
    /// PrepareInpainting's output (the scaled VAE latents of the image with the repainted pixels gray). Required with an
    /// inpainting UNet; an ordinary UNet does not use it (the column is then not read), so one pipeline serves both.
    /// </summary>
    public string? MaskedImageLatentsColumnName { get; init; }

    /// <summary>
    /// Super-resolution models (<see cref="ModelKind.SuperResolution"/>, diffusers' <c>LDMSuperResolutionPipeline</c>):
    /// name of the low-resolution image column (MLImage), required by them and refused by other models. Each row's image
    /// must be <see cref="Width"/>/f × <see cref="Height"/>/f pixels (f the autoencoder's factor: the latent grid is the
    /// image's size and the output f times larger), a multiple of 32 on each side as the pipeline's <c>preprocess</c>
    /// makes it (it shrinks other sizes to a multiple of 32 with Lanczos, which this stage leaves to the caller). Its
    /// pixels become <c>2·(v / 255) − 1</c> and are concatenated with the latents at every step.
    /// </summary>
    public string? LowResolutionImageColumnName { get; init; }

    /// <summary>
    /// Name of an optional text column of per-row LoRA tags: EncodePrompt's <see cref="EncodePromptOptions.LoraColumnName"/>
    /// output. Each row's UNet then carries the LoRAs its prompt named (on top of the model's own), as its text encoder
    /// did. Consecutive rows with the same LoRAs run in one UNet batch; a row with other LoRAs starts a new one, so
    /// sorting rows by their LoRAs batches them best. Null: every row uses the model's UNet.
    /// </summary>
    public string? LoraColumnName { get; init; }

    /// <summary>
    /// Name of an optional prompt-schedule column: EncodePrompt's <see cref="EncodePromptOptions.PromptScheduleColumnName"/>
    /// output (A1111 syntax). A row whose schedule edits or combines conditionings — <c>[red:blue:0.5]</c>,
    /// <c>[red|blue]</c>, <c>a AND b :0.5</c> — reads its embeddings as [1 + K, S, D] and switches the conditional states
    /// at the denoiser call A1111's <c>reconstruct_cond_batch</c> picks; AND parts run one UNet call each and are summed
    /// as A1111's <c>combine_denoised</c>: ε = ε_u + Σ_k (ε_k − ε_u)·w_k·g (AND and part weights need guidance, g &gt; 1).
    /// An ordinary row's schedule changes nothing. A schedule made for another step count than <see cref="Steps"/> is an
    /// error naming the row. Null (default): none.
    /// </summary>
    public string? PromptScheduleColumnName { get; init; }

    /// <summary>Rows per UNet call (the guidance batch is twice as large).</summary>
    public int BatchSize { get; init; } = 4;

    /// <summary>Receives a report after every step of every mini-batch.</summary>
    public IProgress<DenoiseProgress>? Progress { get; init; }

    /// <summary>
    /// Called at the end of every denoising step of every mini-batch, as diffusers' <c>callback_on_step_end</c>: the step
    /// index, the timestep, the batch's first row position and row count, and a read-only view of the batch's current
    /// latents, valid only during the call (<see cref="DenoiseStepEnd.Latents"/>). For previews and tooling; it runs on
    /// the cursor's thread, before <see cref="Progress"/> is told. Not saved with the model (like <see cref="Progress"/>).
    /// </summary>
    public DenoiseStepCallback? OnStepEnd { get; init; }

    /// <summary>Cancels the denoising between steps; the cursor then throws <see cref="OperationCanceledException"/>.</summary>
    public CancellationToken CancellationToken { get; init; }

    /// <summary>
    /// SDXL: name of the pooled prompt column, float vector [2, P] (unconditional, conditional; EncodePrompt's pooled
    /// output, text_encoder_2's <c>text_embeds</c>), fed to the UNet's <c>text_embeds</c> input. Null reads
    /// <see cref="EncodePromptOptions.DefaultPooledColumnName"/>, the column EncodePrompt writes for SDXL by default.
    /// SD 1.x/2.x UNets take no pooled input: setting it there is an error.
    /// </summary>
    public string? PooledEmbeddingsColumnName { get; init; }

    /// <summary>
    /// SDXL micro-conditioning (Podell et al. 2023, "SDXL", §2.2; diffusers <c>_get_add_time_ids</c>): the width of the
    /// image the model should assume the picture was taken from, in <c>time_ids</c>; null uses <see cref="Width"/>.
    /// </summary>
    public int? OriginalWidth { get; init; }

    /// <summary>SDXL: the original height in <c>time_ids</c> (see <see cref="OriginalWidth"/>); null uses <see cref="Height"/>.</summary>
    public int? OriginalHeight { get; init; }

    /// <summary>SDXL: the top of the crop, in pixels, in <c>time_ids</c> (<c>crops_coords_top_left</c>); null uses 0 (uncropped).</summary>
    public int? CropTop { get; init; }

    /// <summary>SDXL: the left of the crop, in pixels, in <c>time_ids</c>; null uses 0.</summary>
    public int? CropLeft { get; init; }

    /// <summary>
    /// SDXL base UNets (6 time ids): the target width in <c>time_ids</c>; null uses <see cref="Width"/>. Refiner-style UNets
    /// (5 time ids) take an aesthetic score instead: setting it there is an error.
    /// </summary>
    public int? TargetWidth { get; init; }

    /// <summary>SDXL base UNets: the target height in <c>time_ids</c>; null uses <see cref="Height"/>.</summary>
    public int? TargetHeight { get; init; }

    /// <summary>
    /// Refiner-style SDXL UNets (5 time ids, <c>requires_aesthetics_score</c>): the aesthetic score of the conditional rows'
    /// <c>time_ids</c>; null uses diffusers' default 6.0. Setting it for other UNets is an error.
    /// </summary>
    public float? AestheticScore { get; init; }

    /// <summary>Refiner-style SDXL UNets: the aesthetic score of the unconditional rows' <c>time_ids</c>; null uses diffusers' default 2.5.</summary>
    public float? NegativeAestheticScore { get; init; }

    /// <summary>
    /// The ControlNets that steer the denoising (diffusers' StableDiffusionControlNetPipeline; several are summed as its
    /// MultiControlNetModel does), each with its control-image column, scale and guidance window; null or empty: none. The
    /// model's UNet must take ControlNet residuals (<see cref="ModelInfo.ControlNetResiduals"/>); such a UNet without
    /// ControlNets runs with zero residuals.
    /// </summary>
    public System.Collections.Generic.IReadOnlyList<ControlNetUnit>? ControlNets { get; init; }

    /// <summary>
    /// diffusers' <c>guess_mode</c>: the ControlNets see the conditional half of the guidance batch only (the unconditional
    /// half gets no residuals), and their down residuals are scaled by <c>logspace(−1, 0, n + 1)</c> (the mid one by 1).
    /// Needs <see cref="ControlNets"/>.
    /// </summary>
    public bool ControlNetGuessMode { get; init; }

    internal void Validate(ModelInfo info)
    {
        if (Steps < 1 || Steps > info.SchedulerConfig.NumTrainTimesteps)
            throw new ArgumentOutOfRangeException(nameof(Steps), Steps, $"Steps must be in [1, {info.SchedulerConfig.NumTrainTimesteps}].");
        if (!float.IsFinite(GuidanceScale) || GuidanceScale < 0)
            throw new ArgumentOutOfRangeException(nameof(GuidanceScale), GuidanceScale, "GuidanceScale must be a finite number ≥ 0 (7.5 is typical; ≤ 1 disables guidance).");
        CheckSize(nameof(Width), Width, info.VaeSpatialFactor);
        CheckSize(nameof(Height), Height, info.VaeSpatialFactor);
        if (BatchSize < 1 || BatchSize > 256)
            throw new ArgumentOutOfRangeException(nameof(BatchSize), BatchSize, "BatchSize must be in [1, 256].");
        if (!(Strength >= 0f && Strength <= 1f))
            throw new ArgumentOutOfRangeException(nameof(Strength), Strength, "Strength must be in [0, 1] (0 keeps the initial latents, 1 noises them at the first timestep).");
        if (Noise is null)
            throw new ArgumentNullException(nameof(Noise), "Noise must be set; NoiseOptions.Default is the library's generator.");
        Noise.Validate(nameof(Noise));
        if (PromptScheduleColumnName is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(PromptScheduleColumnName, nameof(PromptScheduleColumnName));
            if (!info.IsConditional || info.TimeIdsWidth is not null)
                throw new ArgumentException($"PromptScheduleColumnName applies to text-conditioned SD 1.x/2.x models; '{info.Directory}' is {info.Kind}"
                    + (info.TimeIdsWidth is not null ? " (SDXL: its pooled text_embeds would have to switch with each conditioning)." : "."), nameof(PromptScheduleColumnName));
        }
        if (Strength < 1f && InitialLatentsColumnName is null)
            throw new ArgumentException($"Strength {Strength} is below 1, which needs initial latents: set InitialLatentsColumnName (e.g. EncodeImage's output column), or leave Strength at 1 for text-to-image.", nameof(Strength));
        ValidateAddedConditioning(info);
        ValidateInpainting(info);
        ValidateControlNets(info);
        ValidateSuperResolution(info);
    }

    /// <summary>The low-resolution image column: required by a super-resolution model, at a size diffusers' preprocess keeps.</summary>
    private void ValidateSuperResolution(ModelInfo info)
    {
        if (info.Kind != ModelKind.SuperResolution)
        {
            if (LowResolutionImageColumnName is not null)
                throw new ArgumentException($"LowResolutionImageColumnName '{LowResolutionImageColumnName}' needs a super-resolution model (LDMSuperResolutionPipeline); "
                    + $"'{info.Directory}' is {Onnx.ModelFolder.Describe(info.Kind)}.", nameof(LowResolutionImageColumnName));
            return;
        }
        if (LowResolutionImageColumnName is null)
            throw new ArgumentException($"The model '{info.Directory}' is a super-resolution model (LDMSuperResolutionPipeline): set LowResolutionImageColumnName, "
                + "the MLImage column of the low-resolution images to upscale.", nameof(LowResolutionImageColumnName));
        int f = info.VaeSpatialFactor;
        if (Width / f % 32 != 0 || Height / f % 32 != 0)
            throw new ArgumentOutOfRangeException(nameof(Width), $"Width {Width} and Height {Height} make a low-resolution image of {Width / f}×{Height / f} pixels "
                + $"(÷ {f}, the autoencoder's factor); LDMSuperResolutionPipeline's preprocess makes it a multiple of 32 on each side, so Width and Height must be multiples of {32 * f}.");
    }

    /// <summary>ControlNet units: valid values (diffusers' check_inputs), and a UNet that takes residuals.</summary>
    private void ValidateControlNets(ModelInfo info)
    {
        if (ControlNets is null || ControlNets.Count == 0)
        {
            if (ControlNetGuessMode)
                throw new ArgumentException("ControlNetGuessMode needs ControlNets.", nameof(ControlNetGuessMode));
            return;
        }
        if (info.ControlNetResiduals.Count == 0)
            throw new ArgumentException($"ControlNets need a UNet with ControlNet residual inputs (down_block_{{i}}_additional_residual, mid_block_additional_residual); "
                + $"the model '{info.Directory}' has none (neither unet/ nor OnnxStack's controlnet/ UNet takes them).", nameof(ControlNets));
        for (int i = 0; i < ControlNets.Count; i++)
        {
            var u = ControlNets[i] ?? throw new ArgumentException($"ControlNets[{i}] is null.", nameof(ControlNets));
            ArgumentException.ThrowIfNullOrWhiteSpace(u.ImageColumnName, $"ControlNets[{i}].ImageColumnName");
            if (u.ModelPath is null && !info.HasControlNet)
                throw new ArgumentException($"ControlNets[{i}] has no ModelPath and the model folder '{info.Directory}' has no controlnet/ ControlNet of its own.", nameof(ControlNets));
            if (!float.IsFinite(u.Scale))
                throw new ArgumentOutOfRangeException(nameof(ControlNets), u.Scale, $"ControlNets[{i}].Scale must be a finite number (1.0 is diffusers' default).");
            // diffusers check_inputs: start < end, start ≥ 0, end ≤ 1.
            if (!(u.GuidanceStart >= 0f && u.GuidanceEnd <= 1f && u.GuidanceStart < u.GuidanceEnd))
                throw new ArgumentOutOfRangeException(nameof(ControlNets), $"ControlNets[{i}]: GuidanceStart {u.GuidanceStart} and GuidanceEnd {u.GuidanceEnd} must satisfy 0 ≤ start < end ≤ 1.");
        }
    }

    /// <summary>Which inpainting columns the model's UNet needs (diffusers picks the path by <c>unet.config.in_channels</c>).</summary>
    private void ValidateInpainting(ModelInfo info)
    {
        if (info.IsInpaintingUnet)
        {
            string? missing = MaskColumnName is null ? nameof(MaskColumnName) : MaskedImageLatentsColumnName is null ? nameof(MaskedImageLatentsColumnName) : null;
            if (missing is not null)
                throw new ArgumentException(
                    $"The UNet of '{info.Directory}' is an inpainting UNet (unet in_channels {info.UnetInputChannels}: latents, mask, masked-image latents), so DenoiseLatents needs "
                    + $"{nameof(MaskColumnName)} and {nameof(MaskedImageLatentsColumnName)}; {missing} is not set. Use PrepareInpainting's LatentMask and MaskedImageLatents columns.", missing);
            return;
        }
        if (MaskColumnName is not null && InitialLatentsColumnName is null)
            throw new ArgumentException(
                $"MaskColumnName '{MaskColumnName}' needs InitialLatentsColumnName: the UNet of '{info.Directory}' takes {info.UnetInputChannels} channels (an ordinary UNet), "
                + "which inpaints by keeping the initial latents (EncodeImage of the image) outside the mask.", nameof(InitialLatentsColumnName));
        if (MaskedImageLatentsColumnName is not null && MaskColumnName is null)
            throw new ArgumentException($"MaskedImageLatentsColumnName '{MaskedImageLatentsColumnName}' is set without MaskColumnName; inpainting needs the mask.", nameof(MaskColumnName));
    }

    /// <summary>SDXL options: valid values, and only those the model's UNet takes.</summary>
    private void ValidateAddedConditioning(ModelInfo info)
    {
        int? width = info.TimeIdsWidth;
        void NotFor(string name, object? value, string why)
        {
            if (value is not null)
                throw new ArgumentException($"{name} {why}.", name);
        }
        if (width is null)
        {
            const string sdxlOnly = "applies to SDXL models only: this Stable Diffusion UNet takes no text_embeds or time_ids";
            NotFor(nameof(PooledEmbeddingsColumnName), PooledEmbeddingsColumnName, sdxlOnly);
            NotFor(nameof(OriginalWidth), OriginalWidth, sdxlOnly);
            NotFor(nameof(OriginalHeight), OriginalHeight, sdxlOnly);
            NotFor(nameof(CropTop), CropTop, sdxlOnly);
            NotFor(nameof(CropLeft), CropLeft, sdxlOnly);
            NotFor(nameof(TargetWidth), TargetWidth, sdxlOnly);
            NotFor(nameof(TargetHeight), TargetHeight, sdxlOnly);
            NotFor(nameof(AestheticScore), AestheticScore, sdxlOnly);
            NotFor(nameof(NegativeAestheticScore), NegativeAestheticScore, sdxlOnly);
            return;
        }
        if (width == 6)
        {
            const string refinerOnly = "applies to refiner-style UNets, whose time_ids (5 values) end with an aesthetic score; this UNet's 6 end with the target size";
            NotFor(nameof(AestheticScore), AestheticScore, refinerOnly);
            NotFor(nameof(NegativeAestheticScore), NegativeAestheticScore, refinerOnly);
        }
        else
        {
            const string baseOnly = "applies to SDXL base UNets (6 time ids); this UNet's 5 time ids end with an aesthetic score instead of the target size";
            NotFor(nameof(TargetWidth), TargetWidth, baseOnly);
            NotFor(nameof(TargetHeight), TargetHeight, baseOnly);
        }
        if (PooledEmbeddingsColumnName is not null)
            ArgumentException.ThrowIfNullOrWhiteSpace(PooledEmbeddingsColumnName, nameof(PooledEmbeddingsColumnName));
        CheckPixels(nameof(OriginalWidth), OriginalWidth, 1);
        CheckPixels(nameof(OriginalHeight), OriginalHeight, 1);
        CheckPixels(nameof(TargetWidth), TargetWidth, 1);
        CheckPixels(nameof(TargetHeight), TargetHeight, 1);
        CheckPixels(nameof(CropTop), CropTop, 0);
        CheckPixels(nameof(CropLeft), CropLeft, 0);
        if (AestheticScore is float a && !float.IsFinite(a))
            throw new ArgumentOutOfRangeException(nameof(AestheticScore), a, "AestheticScore must be a finite number (diffusers' default 6.0).");
        if (NegativeAestheticScore is float n && !float.IsFinite(n))
            throw new ArgumentOutOfRangeException(nameof(NegativeAestheticScore), n, "NegativeAestheticScore must be a finite number (diffusers' default 2.5).");
    }

    private static void CheckPixels(string name, int? value, int min)
    {
        if (value is int v && (v < min || v > 65536))
            throw new ArgumentOutOfRangeException(name, v, $"{name} must be in [{min}, 65536] pixels.");
    }

    /// <summary>The SDXL micro-conditioning these options set (<see cref="Pipeline.SdxlTimeIds"/> turns it into <c>time_ids</c>).</summary>
    internal SdxlTimeIds SdxlTimeIds => new(Width, Height)
    {
        OriginalWidth = OriginalWidth,
        OriginalHeight = OriginalHeight,
        CropTop = CropTop,
        CropLeft = CropLeft,
        TargetWidth = TargetWidth,
        TargetHeight = TargetHeight,
        AestheticScore = AestheticScore,
        NegativeAestheticScore = NegativeAestheticScore,
    };

    internal static void CheckSize(string name, int value, int factor)
    {
        if (value < 8 || value > 8192)
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be in [8, 8192] pixels.");
        if (value % 8 != 0 || value % factor != 0)
            throw new ArgumentOutOfRangeException(name, value, $"{name} must be a multiple of 8 (and of the VAE factor {factor}); the nearest valid values are {value / 8 * 8} and {value / 8 * 8 + 8}.");
    }
}

/// <summary>Runs the UNet denoising loop with a scheduler and classifier-free guidance: the transformer of <see cref="LatentDenoisingEstimator"/>.</summary>
public sealed class LatentDenoisingTransformer : DiffusionTransformer
{
    private readonly KeyValuePair<string, DataViewType>[] _outputs;
    private readonly DiffusionScheduler _scheduler;
    private readonly int _latentLength;
    private readonly InputColumnTable _inputs;
    private readonly float[] _timeIds = Array.Empty<float>();
    private readonly float[] _negativeTimeIds = Array.Empty<float>();
    private readonly ControlNetModel[] _controlNets;

    internal LatentDenoisingTransformer(StableDiffusionModel model, string outputColumnName, string? inputColumnName, DenoiseLatentsOptions options)
        : base(model, "DenoiseLatents")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(outputColumnName);
        ArgumentNullException.ThrowIfNull(options);
        // A text-conditioned UNet needs the embeddings column; an unconditional UNet2DModel (LDMPipeline, DDPMPipeline) reads none.
        if (model.Info.IsConditional)
            ArgumentException.ThrowIfNullOrWhiteSpace(inputColumnName);
        else if (inputColumnName is not null)
            throw new ArgumentException($"The model '{model.Info.Directory}' is unconditional ({model.Info.Kind}: its UNet takes sample and timestep only), so DenoiseLatents reads no "
                + $"embeddings column, but '{inputColumnName}' was given. Use mlContext.Transforms.DenoiseLatents(model, outputColumnName, options).", nameof(inputColumnName));
        options.Validate(model.Info);
        OutputColumnName = outputColumnName;
        InputColumnName = inputColumnName;
        Options = options;
        _scheduler = options.Scheduler is { } scheduler
            ? scheduler.CreateScheduler(model.Info.SchedulerConfig)
            : SchedulerFactory.CreateDefault(model.Info.SchedulerConfig);
        int f = model.Info.VaeSpatialFactor, c = model.Info.LatentChannels;
        _latentLength = c * (options.Height / f) * (options.Width / f);
        _outputs = new[] { new KeyValuePair<string, DataViewType>(outputColumnName, new VectorDataViewType(NumberDataViewType.Single, c, options.Height / f, options.Width / f)) };
        if (model.Info.TimeIdsWidth is int width)
        {
            PooledColumnName = options.PooledEmbeddingsColumnName ?? EncodePromptOptions.DefaultPooledColumnName;
            (_timeIds, _negativeTimeIds) = options.SdxlTimeIds.Create(width);
        }
        var units = options.ControlNets ?? Array.Empty<ControlNetUnit>();
        _controlNets = new ControlNetModel[units.Count];
        for (int i = 0; i < units.Count; i++)
            _controlNets[i] = units[i].ModelPath is { } path ? model.LoadControlNet(path) : model.ControlNet!;
        _inputs = InputColumns();
    }

    /// <summary>The ControlNets of <see cref="DenoiseLatentsOptions.ControlNets"/>, loaded and checked against the UNet.</summary>
    internal IReadOnlyList<ControlNetModel> ControlNets => _controlNets;

    /// <summary>SDXL: the pooled prompt column read (the option, or its default); null for SD 1.x/2.x.</summary>
    internal string? PooledColumnName { get; }

    /// <summary>The latents output column.</summary>
    public string OutputColumnName { get; }

    /// <summary>The embeddings input column; null for an unconditional model (<see cref="ModelInfo.IsConditional"/> false), which reads none.</summary>
    public string? InputColumnName { get; }

    /// <summary>The stage's settings.</summary>
    public DenoiseLatentsOptions Options { get; }

    /// <summary>The name of the scheduler in use.</summary>
    public string SchedulerName => _scheduler.Name;

    internal override int BatchSize => Options.BatchSize;

    internal override IReadOnlyList<KeyValuePair<string, DataViewType>> GetOutputColumns(DataViewSchema? inputSchema) => _outputs;

    internal override InputColumnTable GetInputColumns(DataViewSchema? inputSchema) => _inputs;

    /// <summary>The latents' shape "C×h×w", for messages.</summary>
    private string LatentShape => string.Join("×", ((VectorDataViewType)_outputs[0].Value).Dimensions);

    /// <summary>
    /// The stage's input columns: the prompt embeddings, then the optional ones its options name — seed, initial noise,
    /// SDXL's pooled embeddings (the UNet's text_embeds), initial latents, and inpainting's mask and masked-image
    /// latents (read only by an inpainting UNet).
    /// </summary>
    private InputColumnTable InputColumns()
    {
        var info = Model.Info;
        int per = info.HiddenSize, f = info.VaeSpatialFactor, h = Options.Height / f, w = Options.Width / f, len = _latentLength;
        string shape = LatentShape;
        string pooled = $"Vector<Single> of [2, {info.PooledSize}] pooled prompt embeddings (EncodePrompt's pooled output, which the SDXL UNet takes as text_embeds)";
        // With a schedule column a row holds 1 + K blocks of [S, D] (K its conditionings), so only D divides its length.
        var table = new InputColumnTable()
            .Add(InputColumnName, InputColumnKind.FloatVector, $"Vector<Single> of [2, S, {per}] prompt embeddings", "Vector<Single> prompt embeddings",
                sizeMultiple: Options.PromptScheduleColumnName is null ? 2 * per : per)
            .Add(Options.PromptScheduleColumnName, InputColumnKind.FloatVector, "Vector<Single> prompt schedule (EncodePrompt's PromptScheduleColumnName output)")
            .Add(Options.SeedColumnName, InputColumnKind.Integer, ColumnChecks.SeedDescription)
            .Add(Options.InitialNoiseColumnName, InputColumnKind.FloatVector, $"Vector<Single> of size {len}", size: len, sizeExpected: $"Vector<Single> of size {len} ({shape})")
            .Add(PooledColumnName, InputColumnKind.FloatVector, pooled, size: 2 * (info.PooledSize ?? 0))
            .Add(Options.InitialLatentsColumnName, InputColumnKind.FloatVector, $"Vector<Single> of size {len} ({shape}) initial latents", $"Vector<Single> of size {len} initial latents", size: len)
            .Add(Options.MaskColumnName, InputColumnKind.FloatVector, $"Vector<Single> of size {h * w} (1×{h}×{w}) latent mask, 1 = repaint (PrepareInpainting's output)",
                "Vector<Single> latent mask (PrepareInpainting's output)", size: h * w)
            .Add(info.IsInpaintingUnet ? Options.MaskedImageLatentsColumnName : null, InputColumnKind.FloatVector, $"Vector<Single> of size {len} ({shape}) masked-image latents (PrepareInpainting's output)",
                "Vector<Single> masked-image latents (PrepareInpainting's output)", size: len)
            .Add(Options.LoraColumnName, InputColumnKind.Text, "String of <lora:name:scale> tags (EncodePrompt's LoRA column)")
            .Add(Options.LowResolutionImageColumnName, InputColumnKind.Image, $"Image (MLImage) of {w}×{h} pixels, the low-resolution image to upscale");
        int image = 3 * Options.Height * Options.Width;
        foreach (var unit in Options.ControlNets ?? Array.Empty<ControlNetUnit>())
        {
            table.Add(unit.ImageColumnName, InputColumnKind.FloatVector, $"Vector<Single> of size {image} (3×{Options.Height}×{Options.Width}) control image in [0, 1] (PrepareControlImage's output)",
                "Vector<Single> control image (PrepareControlImage's output)", size: image);
            table.Add(unit.ScaleColumnName, InputColumnKind.Number, "Single ControlNet conditioning scale", size: 1);
        }
        return table;
    }

    internal override StageWorker CreateWorker(DataViewRow input, bool[] activeOutputs) => new Worker(this, input);

    /// <summary>
    /// One cursor's denoising: reads each row's inputs into batch slots, then runs the rows of a mini-batch that share a
    /// sequence length through <see cref="LatentDenoiser"/> as one <see cref="DenoiseBatch"/>, with the UNet
    /// conditionings the model and the options call for.
    /// </summary>
    private sealed class Worker : StageWorker
    {
        private readonly LatentDenoisingTransformer _stage;
        private readonly LatentDenoiser _denoiser;
        private readonly IChannel _channel;
        private readonly ValueGetter<VBuffer<float>>? _embeddingsGetter;
        private readonly ValueGetter<VBuffer<float>>? _scheduleGetter;
        private readonly Prompting.ConditioningSchedule?[] _schedules;
        private readonly int[] _sequences;
        private VBuffer<float> _scheduleBuffer;
        private float[] _scheduleValues = Array.Empty<float>();
        private readonly RowSeeds _rowSeeds;
        private readonly VectorColumnSlots? _noise;
        private readonly VectorColumnSlots? _initial;
        private readonly VectorColumnSlots? _pooled;
        private readonly VectorColumnSlots? _mask;
        private readonly VectorColumnSlots? _maskedLatents;
        private readonly SdxlAddedConditioning? _sdxl;
        private readonly InpaintingConditioning? _inpainting;
        private readonly ControlNetConditioning? _controlNet;
        private readonly SuperResolutionConditioning? _superResolution;
        private readonly ValueGetter<MLImage>? _lowResolutionGetter;
        private readonly float[][] _lowResolution = Array.Empty<float[]>();
        private readonly VectorColumnSlots[] _controlImages = Array.Empty<VectorColumnSlots>();
        private readonly ValueGetter<float>?[] _scaleGetters = Array.Empty<ValueGetter<float>?>();
        private readonly float[][] _scales = Array.Empty<float[]>();
        private readonly float[][] _embeddings;
        private readonly long[] _seeds;
        private readonly long[] _positions;
        private readonly float[][] _latents;
        private VBuffer<float> _buffer;
        private float[] _batchEmbeddings = Array.Empty<float>();
        private float[] _batchLatents = Array.Empty<float>();
        private float[] _batchInitial = Array.Empty<float>();
        private readonly RowLoras<LatentDenoiser> _loras;
        private readonly ValueGetter<ReadOnlyMemory<char>>? _loraGetter;

        public Worker(LatentDenoisingTransformer stage, DataViewRow input)
        {
            _stage = stage;
            var o = stage.Options;
            var info = stage.Model.Info;
            int b = stage.BatchSize, len = stage._latentLength, f = info.VaeSpatialFactor, plane = o.Height / f * (o.Width / f);
            string shape = stage.LatentShape;
            _embeddingsGetter = stage.InputColumnName is { } embeddings ? input.GetGetter<VBuffer<float>>(input.Schema[embeddings]) : null;
            if (o.PromptScheduleColumnName is { } schedule)
                _scheduleGetter = input.GetGetter<VBuffer<float>>(input.Schema[schedule]);
            _schedules = new Prompting.ConditioningSchedule?[b];
            _sequences = new int[b];
            _rowSeeds = new RowSeeds(input, o.SeedColumnName, o.Seed, stage.Model);
            if (o.InitialNoiseColumnName is { } n)
                _noise = new VectorColumnSlots(input, n, len, b, "initial-noise", $"{len} ({shape})");
            if (o.InitialLatentsColumnName is { } l)
                _initial = new VectorColumnSlots(input, l, len, b, "initial-latents", $"{len} ({shape})");

            // The UNet's conditionings: each is one class of Pipeline/ fed by the columns its options name.
            var conditionings = new List<IUnetConditioning>();
            if (stage.PooledColumnName is { } p)
            {
                _pooled = new VectorColumnSlots(input, p, 2 * info.PooledSize!.Value, b, "pooled", $"[2, {info.PooledSize}] pooled prompt embeddings from EncodePrompt");
                _sdxl = new SdxlAddedConditioning(info.PooledSize.Value, stage._timeIds, stage._negativeTimeIds);
                conditionings.Add(_sdxl);
            }
            if (o.MaskColumnName is { } m)
            {
                _mask = new VectorColumnSlots(input, m, plane, b, "latent mask");
                if (info.IsInpaintingUnet)
                    _maskedLatents = new VectorColumnSlots(input, o.MaskedImageLatentsColumnName!, len, b, "masked-image latents");
                _inpainting = new InpaintingConditioning(info.LatentChannels, plane, info.IsInpaintingUnet);
                conditionings.Add(_inpainting);
            }

            // ControlNet: the units' residuals, or zeros for a UNet with residual inputs run without one.
            var units = o.ControlNets ?? Array.Empty<ControlNetUnit>();
            if (units.Count > 0 || Onnx.ControlNetGraphs.TakesResiduals(stage.Model.Unet))
            {
                var runs = new ControlNetRun[units.Count];
                _controlImages = new VectorColumnSlots[units.Count];
                _scaleGetters = new ValueGetter<float>?[units.Count];
                _scales = new float[units.Count][];
                int image = 3 * o.Height * o.Width;
                for (int i = 0; i < units.Count; i++)
                {
                    var u = units[i];
                    runs[i] = new ControlNetRun(stage._controlNets[i], u.GuidanceStart, u.GuidanceEnd);
                    _controlImages[i] = new VectorColumnSlots(input, u.ImageColumnName, image, b, "control-image", $"{image} (3×{o.Height}×{o.Width})");
                    if (u.ScaleColumnName is { } sc)
                        _scaleGetters[i] = ScaleGetter(input, sc);
                    _scales[i] = new float[b];
                }
                _controlNet = new ControlNetConditioning(info.ControlNetResiduals, runs, o.ControlNetGuessMode, info.LatentChannels, o.Height / f, o.Width / f, o.Height, o.Width, info.HiddenSize, _sdxl);
                conditionings.Add(_controlNet);
            }

            // Super-resolution: the low-resolution image after the latents' channels, every step.
            if (o.LowResolutionImageColumnName is { } lowRes)
            {
                _lowResolutionGetter = input.GetGetter<MLImage>(input.Schema[lowRes]);
                _lowResolution = new float[b][];
                _superResolution = new SuperResolutionConditioning(plane);
                conditionings.Add(_superResolution);
            }

            _channel = stage.StartChannel();
            var settings = new DenoiseSettings(o.Steps, o.GuidanceScale, o.Width, o.Height, stage._scheduler, o.Progress, o.CancellationToken, o.Strength)
            {
                OnStepEnd = o.OnStepEnd,
                Unet = units.Count > 0 ? stage.Model.ResidualUnet : null,
                Noise = o.Noise,
                Inpainting = o.MaskColumnName is not null,
            };
            _denoiser = new LatentDenoiser(stage.Model, settings, conditionings, new ChannelLog(_channel));
            // Per-row LoRA sets: a denoiser per set, on a model whose UNet carries it, with the same settings (its own UNet
            // for ControlNet residuals) and the same conditionings (filled per run).
            _loras = new RowLoras<LatentDenoiser>(stage.Model, o.LoraColumnName, b, model => new LatentDenoiser(model,
                settings with { Unet = units.Count > 0 ? model.ResidualUnet : null }, conditionings, new ChannelLog(_channel)));
            if (o.LoraColumnName is { } loraColumn)
                _loraGetter = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[loraColumn]);
            _embeddings = new float[b][];
            _seeds = new long[b];
            _positions = new long[b];
            _latents = new float[b][];
        }

        /// <summary>
        /// Reads the row's prompt schedule (when the stage has a schedule column): null for an ordinary row; refuses one made
        /// for another step count. Returns the blocks of [S, D] its embeddings hold: 2, or 1 + K for a scheduled row.
        /// </summary>
        private int ReadSchedule(int slot, long position)
        {
            _schedules[slot] = null;
            if (_scheduleGetter is null)
                return 2;
            _scheduleGetter(ref _scheduleBuffer);
            if (_scheduleValues.Length != _scheduleBuffer.Length)
                _scheduleValues = new float[_scheduleBuffer.Length];
            _scheduleBuffer.CopyTo(_scheduleValues);
            string column = _stage.Options.PromptScheduleColumnName!;
            var schedule = Prompting.ConditioningSchedule.TryRead(_scheduleValues, out string? error)
                ?? throw new InvalidOperationException($"Row {position}: column '{column}' is not a prompt schedule from EncodePrompt: {error}.");
            // A1111 computes the schedules with total_steps: twice the steps for a second-order sampler (Heun).
            int total = Prompting.A1111SamplerSteps.TotalSteps(_stage._scheduler, _stage.Options.Steps);
            if (schedule.Steps != total)
                throw new InvalidOperationException($"Row {position}: the prompt schedule in column '{column}' was made for {schedule.Steps} steps "
                    + $"(EncodePromptOptions.ScheduleSteps), but DenoiseLatents runs {_stage.Options.Steps}"
                    + (total != _stage.Options.Steps ? $" steps of the second-order sampler {_stage.SchedulerName}, for which A1111 schedules prompts over 2 × {_stage.Options.Steps} = {total} (its total_steps)" : string.Empty)
                    + $"; A1111's [a:b:0.5] switches at a step computed from that count, so set ScheduleSteps to {total}.");
            if (!schedule.IsPlain)
                _schedules[slot] = schedule;
            return 1 + schedule.ConditioningCount;
        }

        /// <summary>A Single column's getter; a vector column (a saved stage's one-value slot) gives its only value.</summary>
        private static ValueGetter<float> ScaleGetter(DataViewRow input, string column)
        {
            var c = input.Schema[column];
            if (c.Type == NumberDataViewType.Single)
                return input.GetGetter<float>(c);
            var vector = input.GetGetter<VBuffer<float>>(c);
            VBuffer<float> buffer = default;
            return (ref float value) =>
            {
                vector(ref buffer);
                if (buffer.Length != 1)
                    throw new InvalidOperationException($"ControlNet scale column '{column}' holds {buffer.Length} values; expected one Single per row.");
                value = buffer.GetItemOrDefault(0);
            };
        }

        public override void ReadRow(int slot, long position)
        {
            _positions[slot] = position;
            if (_embeddingsGetter is null)
            {
                _embeddings[slot] = Array.Empty<float>(); // an unconditional UNet: no embeddings
                _sequences[slot] = 0;
            }
            else
            {
                int blocks = ReadSchedule(slot, position);
                _embeddingsGetter(ref _buffer);
                int per = blocks * _stage.Model.Info.HiddenSize;
                if (_buffer.Length == 0 || _buffer.Length % per != 0)
                    throw new InvalidOperationException($"Row {position}: column '{_stage.InputColumnName}' has {_buffer.Length} values; expected [{blocks}, S, {per / blocks}] prompt embeddings from EncodePrompt"
                        + (blocks == 2 ? "." : $" (the negative prompt's states and the {blocks - 1} conditionings its schedule in '{_stage.Options.PromptScheduleColumnName}' names)."));
                var e = _embeddings[slot];
                if (e is null || e.Length != _buffer.Length)
                    _embeddings[slot] = e = new float[_buffer.Length];
                _buffer.CopyTo(e);
                _sequences[slot] = _buffer.Length / per;
            }
            _seeds[slot] = _rowSeeds.Read(position);
            if (_loraGetter is not null)
            {
                ReadOnlyMemory<char> tags = default;
                _loraGetter(ref tags);
                _loras.ReadTags(slot, position, tags.ToString());
            }
            _noise?.Read(slot, position);
            _pooled?.Read(slot, position);
            _initial?.Read(slot, position);
            if (_mask is not null)
            {
                var mask = _mask.Read(slot, position);
                float min = TensorPrimitives.Min(mask), max = TensorPrimitives.Max(mask);
                if (!(min >= 0f && max <= 1f))
                    throw new InvalidOperationException($"Row {position}: mask column '{_stage.Options.MaskColumnName}' has values in [{min}, {max}]; a latent mask holds values in [0, 1] (1 = repaint).");
                _maskedLatents?.Read(slot, position);
            }
            if (_lowResolutionGetter is not null)
                ReadLowResolution(slot, position);
            for (int i = 0; i < _controlImages.Length; i++)
            {
                var image = _controlImages[i].Read(slot, position);
                float min = TensorPrimitives.Min(image), max = TensorPrimitives.Max(image);
                if (!(min >= 0f && max <= 1f))
                    throw new InvalidOperationException($"Row {position}: control-image column '{_stage.Options.ControlNets![i].ImageColumnName}' has values in [{min}, {max}]; "
                        + "a ControlNet takes its control image in [0, 1] (PrepareControlImage's output).");
                float scale = _stage.Options.ControlNets![i].Scale;
                if (_scaleGetters[i] is { } getter)
                {
                    getter(ref scale);
                    if (!float.IsFinite(scale))
                        throw new InvalidOperationException($"Row {position}: ControlNet scale column '{_stage.Options.ControlNets[i].ScaleColumnName}' holds {scale}; expected a finite number.");
                }
                _scales[i][slot] = scale;
            }
        }

        /// <summary>
        /// The row's low-resolution image as LDMSuperResolutionPipeline's <c>preprocess</c> makes it: RGB [3, h, w],
        /// <c>np.float32(v) / 255.0</c> then <c>2.0 * image − 1.0</c> in float32.
        /// </summary>
        private void ReadLowResolution(int slot, long position)
        {
            var o = _stage.Options;
            int f = _stage.Model.Info.VaeSpatialFactor, w = o.Width / f, h = o.Height / f;
            MLImage image = null!;
            _lowResolutionGetter!(ref image);
            if (image is null)
                throw new InvalidOperationException($"Row {position}: low-resolution image column '{o.LowResolutionImageColumnName}' holds no image.");
            if (image.Width != w || image.Height != h)
                throw new InvalidOperationException($"Row {position}: the low-resolution image in column '{o.LowResolutionImageColumnName}' is {image.Width}×{image.Height}; "
                    + $"expected {w}×{h} (Width × Height ÷ {f}). Resize it first (LDMSuperResolutionPipeline shrinks an image to a multiple of 32 with Lanczos).");
            if (image.PixelFormat is not (MLPixelFormat.Bgra32 or MLPixelFormat.Rgba32))
                throw new InvalidOperationException($"Row {position}: low-resolution image pixel format {image.PixelFormat} is not supported; expected RGBA32 or BGRA32.");
            int plane = w * h;
            var values = _lowResolution[slot] ??= new float[3 * plane];
            var pixels = image.Pixels;
            int ri = image.PixelFormat == MLPixelFormat.Bgra32 ? 2 : 0, bi = 2 - ri;
            for (int i = 0; i < plane; i++)
            {
                values[i] = 2f * (pixels[4 * i + ri] / 255f) - 1f;
                values[plane + i] = 2f * (pixels[4 * i + 1] / 255f) - 1f;
                values[2 * plane + i] = 2f * (pixels[4 * i + bi] / 255f) - 1f;
            }
        }

        public override void Process(int count)
        {
            // Rows with the same sequence length (always, unless LongPrompt or A1111/compel chunks) run together in one loop.
            int start = 0;
            while (start < count)
            {
                int end = start + 1;
                while (end < count && _sequences[end] == _sequences[start] && _loras.SetId(end) == _loras.SetId(start))
                    end++;
                Run(start, end - start);
                start = end;
            }
        }

        private void Run(int start, int count)
        {
            var denoiser = _loras.For(start, _denoiser);
            int len = denoiser.LatentLength, sequence = _sequences[start], total = 0;
            bool scheduled = false;
            for (int r = 0; r < count; r++)
            {
                total += _embeddings[start + r].Length;
                scheduled |= _schedules[start + r] is not null;
            }
            // Each row's blocks back to back ([2, S, D], or [1 + K, S, D] for a scheduled row: DenoiseBatch.Schedules).
            if (_batchEmbeddings.Length != total)
                _batchEmbeddings = new float[total];
            for (int r = 0, offset = 0; r < count; r++)
            {
                _embeddings[start + r].CopyTo(_batchEmbeddings, offset);
                offset += _embeddings[start + r].Length;
            }
            if (_batchLatents.Length != count * len)
                _batchLatents = new float[count * len];
            if (_initial is not null)
            {
                if (_batchInitial.Length != count * len)
                    _batchInitial = new float[count * len];
                _initial.Gather(start, count, _batchInitial);
            }

            // The conditionings' per-row inputs.
            if (_sdxl is not null)
            {
                _sdxl.Ensure(count);
                for (int r = 0; r < count; r++)
                    _pooled!.Slots[start + r].AsSpan().CopyTo(_sdxl.Pooled(r));
            }
            if (_inpainting is not null)
            {
                _inpainting.Ensure(count);
                for (int r = 0; r < count; r++)
                {
                    _mask!.Slots[start + r].AsSpan().CopyTo(_inpainting.Mask(r));
                    if (_maskedLatents is not null)
                        _maskedLatents.Slots[start + r].AsSpan().CopyTo(_inpainting.MaskedImageLatents(r));
                }
            }

            if (_controlNet is not null)
            {
                _controlNet.Ensure(count);
                for (int n = 0; n < _controlImages.Length; n++)
                {
                    for (int r = 0; r < count; r++)
                    {
                        _controlImages[n].Slots[start + r].AsSpan().CopyTo(_controlNet.Image(n, r));
                        _controlNet.SetScale(n, r, _scales[n][start + r]);
                    }
                }
            }

            if (_superResolution is not null)
            {
                _superResolution.Ensure(count);
                for (int r = 0; r < count; r++)
                    _lowResolution[start + r].AsSpan().CopyTo(_superResolution.Image(r));
            }

            denoiser.Run(new DenoiseBatch(count, _positions[start], _batchEmbeddings, sequence, _seeds.AsMemory(start, count), _batchLatents)
            {
                InitialNoise = _noise is null ? default : _noise.Slots.AsMemory(start, count),
                InitialLatents = _initial is null ? default : _batchInitial,
                // Only a batch with a scheduled row takes the scheduled path; ordinary rows keep today's loop bit for bit.
                Schedules = scheduled ? _schedules.AsMemory(start, count) : default,
            });
            for (int r = 0; r < count; r++)
            {
                var l = _latents[start + r] ??= new float[len];
                _batchLatents.AsSpan(r * len, len).CopyTo(l);
            }
            _channel.Info(MessageSensitivity.None, $"Denoised rows {_positions[start]}–{_positions[start] + count - 1} ({_stage.Options.Steps} steps, {_stage.SchedulerName}, guidance {_stage.Options.GuidanceScale}).");
        }

        public override Delegate MakeGetter(int outputIndex, Func<int> slot) =>
            (ValueGetter<VBuffer<float>>)((ref VBuffer<float> value) =>
                WriteVector(_latents[slot()], ref value));

        public override void Dispose()
        {
            _loras.Dispose();
            _denoiser.Dispose();
            _controlNet?.Dispose();
            _channel.Dispose();
        }
    }
}

/// <summary>
/// Create a <see cref="LatentDenoisingEstimator"/>, which runs Stable Diffusion's UNet denoising loop from seeded noise,
/// conditioned on prompt embeddings, with a diffusers-compatible scheduler and classifier-free guidance.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// ###  Estimator characteristics
/// |  |  |
/// | -- | -- |
/// | Does this estimator need to look at the data to train its parameters? | No |
/// | Input column data type | Vector of Single [2, S, D] (EncodePrompt's output); SDXL: Vector of Single [2, P] pooled embeddings; optional seed (integer), optional initial noise, optional initial latents (image-to-image), optional latent mask and masked-image latents (inpainting); optional prompt schedule (EncodePrompt's A1111 prompt editing and AND) |
/// | Output column data type | Vector of Single [C, H/f, W/f] latents |
/// | Required NuGet in addition to Microsoft.ML | MLNet.Diffusion, an ONNX Runtime native package |
/// ]]></format>
/// </remarks>
public sealed class LatentDenoisingEstimator : DiffusionEstimator<LatentDenoisingTransformer>
{
    internal LatentDenoisingEstimator(StableDiffusionModel model, string outputColumnName, string? inputColumnName, DenoiseLatentsOptions options)
        : base(new LatentDenoisingTransformer(model, outputColumnName, inputColumnName, options))
    {
    }
}
