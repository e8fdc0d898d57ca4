using System;
using System.Globalization;

namespace MLNet.Diffusion.Shapes;

/// <summary>
/// Variants of the Shapes model folder, mirroring the forms real Stable Diffusion exports come in, so the library can be
/// tested against each. Flags combine (e.g. <see cref="Int64InputIds"/> | <see cref="Float16"/>).
/// </summary>
/// <remarks><see cref="ShapesModel.Build"/> rejects a flag this version does not build, naming it.</remarks>
[Flags]
public enum ShapesVariant
{
    /// <summary>SD 1.x-shaped float32 export: int32 <c>input_ids</c>, weights inside each <c>model.onnx</c>.</summary>
    Standard = 0,

    /// <summary>The text encoder takes int64 <c>input_ids</c> (as some exporters write it).</summary>
    Int64InputIds = 1,

    /// <summary>
    /// float16 weights, inputs and outputs (as <c>--fp16</c> exports): text encoder hidden states, UNet sample,
    /// encoder_hidden_states, timestep [B] and out_sample, VAE inputs and outputs; the graphs compute in float32 inside.
    /// </summary>
    Float16 = 2,

    /// <summary>Weights in an external-data file next to each graph (<c>model.onnx_data</c>).</summary>
    ExternalWeights = 4,

    /// <summary>An inpainting UNet: 9 input channels (latents, mask, masked-image latents).</summary>
    Inpainting = 8,

    /// <summary>SDXL-shaped: a second text encoder and tokenizer, UNet inputs <c>text_embeds</c> and <c>time_ids</c>.</summary>
    Sdxl = 16,

    /// <summary>The VAE encoder outputs 8-channel <c>latent_parameters</c> (mean ‖ log-variance) instead of a sampled <c>latent_sample</c>.</summary>
    LatentParameters = 32,

    /// <summary>The UNet takes an int64 <c>timestep</c> [B] (instead of float32 [B]; a scalar with <see cref="TimestepScalar"/>).</summary>
    TimestepInt64 = 64,

    /// <summary>The UNet takes a float32 scalar <c>timestep</c> (rank 0, shared by the batch; int64 with <see cref="TimestepInt64"/>).</summary>
    TimestepScalar = 128,

    /// <summary>Weights in one external-data file named <c>weights.pb</c> next to each graph (not with <see cref="ExternalWeights"/>).</summary>
    ExternalWeightsPb = 256,

    /// <summary>The UNet predicts v = √ᾱ·ε − √(1 − ᾱ)·x₀ (SD 2.x, <c>prediction_type: v_prediction</c>).</summary>
    VPrediction = 512,

    /// <summary>
    /// SDXL refiner-shaped (implies <see cref="Sdxl"/>): only text_encoder_2 and tokenizer_2, a UNet whose <c>time_ids</c>
    /// have 5 values ending with the aesthetic score, model_index.json of StableDiffusionXLImg2ImgPipeline with
    /// <c>requires_aesthetics_score</c> true and <c>force_zeros_for_empty_prompt</c> false.
    /// </summary>
    SdxlRefiner = 1024,

    /// <summary>
    /// Unconditional latent diffusion (diffusers <c>LDMPipeline</c>, as CompVis/ldm-celebahq-256): one class of images —
    /// the 90 circles of every colour, background and position — and no text: no tokenizer or text encoder, a
    /// <c>UNet2DModel</c>-shaped UNet (<c>sample</c>, <c>timestep</c> → <c>out_sample</c>), the KL-shaped PCA autoencoder
    /// in <c>vae_encoder/</c> and <c>vae_decoder/</c>. Combines only with <see cref="Vq"/>.
    /// </summary>
    Unconditional = 4096,

    /// <summary>
    /// The VQ route (implies <see cref="Unconditional"/>): the same class and UNet, with a VQ autoencoder in the layout of
    /// diffusers' <c>VQModel</c> exports — <c>vqvae_encoder/</c> (the PCA encoder, no quantisation, as
    /// <c>VQModel.encode</c>), <c>vqvae_decoder/</c> (nearest codebook vector in the graph, then the PCA decoder),
    /// <c>vqvae_decoder/codebook.npy</c> (a codebook of <see cref="ShapesModel.CodebookSize"/> vectors learned by k-means
    /// from the latents of all the dataset's 8×8 patches) and <c>vqvae_decoder_no_quantize/</c>.
    /// </summary>
    Vq = 8192,

    /// <summary>
    /// Latent-diffusion super-resolution (diffusers <c>LDMSuperResolutionPipeline</c>): the VQ autoencoder of
    /// <see cref="Vq"/> and a UNet of 7 input channels (the latents, then the low-resolution RGB image) over all the
    /// dataset's items, which upscales a picture drawn at 1/8 of <see cref="ShapesModelOptions.ImageSize"/> by the
    /// autoencoder's factor 8. The latents are unscaled (the pipeline decodes them with no scaling factor). Combines with
    /// no other flag.
    /// </summary>
    SuperResolution = 16384,

    /// <summary>
    /// With a ControlNet in diffusers' naming (model_index.json of StableDiffusionControlNetPipeline, or
    /// StableDiffusionXLControlNetPipeline with <see cref="Sdxl"/>): <c>controlnet/</c> turns a control image — a white
    /// silhouette on black — into residuals, and <c>unet/</c> takes them as inputs, so the silhouette decides where and which
    /// shape is drawn while the prompt decides the colours. Combines with <see cref="Sdxl"/> and <see cref="Int64InputIds"/>.
    /// </summary>
    ControlNet = 2048,
}

/// <summary>Settings of the Shapes model (<see cref="ShapesModel"/>). Every setting is part of the cache key.</summary>
public sealed class ShapesModelOptions
{
    /// <summary>
    /// λ, the strength with which the prompt selects items: each mentioned attribute adds λ to the log-prior of the
    /// items that have it and subtracts λ from those that have another value of that attribute (at the native latent
    /// size; the UNet scales it by the number of latent pixels relative to that size). Default 40.
    /// </summary>
    /// <remarks>
    /// Why 40 and not less: SD 1.x's schedule ends at ᾱ ≈ 0.005, not 0, so pure noise x_T is evidence of a latent with
    /// a small norm. For this data it favours gray over white backgrounds by about 40 nats at DDIM's first step
    /// (t = 951 for 20 steps), so with λ = 12 about half of the "… on a white background" prompts came out gray;
    /// with λ = 40 a sweep of 15 prompts × 10 seeds (DDIM 20 steps) matched every prompt at guidance 5 and all but one
    /// at guidance 7.5 (a gray background over-shot to black, classifier-free guidance's over-saturation).
    /// </remarks>
    public float MatchStrength { get; init; } = 40f;

    /// <summary>
    /// Width and height in pixels of the stored items (the images the model reproduces at its native resolution,
    /// latent size <c>ImageSize / 8</c>). A multiple of 8 in [32, 1024]; default 256. Other output sizes work too:
    /// the UNet resizes its item latents to the requested latent size.
    /// </summary>
    public int ImageSize { get; init; } = 256;

    /// <summary>The folder variant; default <see cref="ShapesVariant.Standard"/>.</summary>
    public ShapesVariant Variant { get; init; } = ShapesVariant.Standard;

    /// <summary>The variant flags this version builds (one per line).</summary>
    internal const ShapesVariant BuiltVariants =
        ShapesVariant.Int64InputIds
        | ShapesVariant.Float16
        | ShapesVariant.ExternalWeights
        | ShapesVariant.TimestepInt64
        | ShapesVariant.TimestepScalar
        | ShapesVariant.ExternalWeightsPb
        | ShapesVariant.VPrediction
        | ShapesVariant.Sdxl
        | ShapesVariant.SdxlRefiner
        | ShapesVariant.LatentParameters
        | ShapesVariant.Inpainting
        | ShapesVariant.Unconditional
        | ShapesVariant.Vq
        | ShapesVariant.SuperResolution
        | ShapesVariant.ControlNet;

    /// <summary>The variant flags of the unconditional (LDMPipeline) folders, which combine only with each other.</summary>
    internal const ShapesVariant UnconditionalCombinations = ShapesVariant.Unconditional | ShapesVariant.Vq | ShapesVariant.SuperResolution;

    /// <summary>The variant flags the SDXL-shaped folders combine with.</summary>
    internal const ShapesVariant SdxlCombinations = ShapesVariant.Sdxl | ShapesVariant.SdxlRefiner | ShapesVariant.Int64InputIds | ShapesVariant.ControlNet;

    /// <summary>The variant flags the ControlNet variant combines with.</summary>
    internal const ShapesVariant ControlNetCombinations = ShapesVariant.ControlNet | ShapesVariant.Sdxl | ShapesVariant.Int64InputIds;

    /// <summary>Checks every setting.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range; the message names it.</exception>
    /// <exception cref="NotSupportedException">The variant is not built by this version.</exception>
    /// <exception cref="ArgumentException">The variant combines flags that exclude each other.</exception>
    internal void Validate()
    {
        if (!(MatchStrength >= 0f && MatchStrength <= 1000f))
            throw new ArgumentOutOfRangeException(nameof(MatchStrength), MatchStrength, "MatchStrength must be in [0, 1000].");
        if (ImageSize < 32 || ImageSize > 1024 || ImageSize % 8 != 0)
            throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, "ImageSize must be a multiple of 8 in [32, 1024].");
        if ((Variant & ~BuiltVariants) != 0)
            throw new NotSupportedException($"Shapes model variant '{Variant & ~BuiltVariants}' is not built by this version; it builds '{ShapesVariant.Standard}' combined with '{BuiltVariants}'.");
        if (Variant.HasFlag(ShapesVariant.ExternalWeights) && Variant.HasFlag(ShapesVariant.ExternalWeightsPb))
            throw new ArgumentException($"Variant '{Variant}' names two external-data files; choose '{ShapesVariant.ExternalWeights}' (model.onnx_data) or '{ShapesVariant.ExternalWeightsPb}' (weights.pb).", nameof(Variant));
        if ((Variant & (ShapesVariant.Sdxl | ShapesVariant.SdxlRefiner)) != 0 && (Variant & ~SdxlCombinations) != 0)
            throw new NotSupportedException($"Shapes model variant '{Variant & ~SdxlCombinations}' is not built together with '{ShapesVariant.Sdxl}' by this version; the SDXL-shaped folder combines with '{SdxlCombinations}'.");
        if ((Variant & UnconditionalCombinations) != 0 && (Variant & ~UnconditionalCombinations) != 0)
            throw new NotSupportedException($"Shapes model variant '{Variant & ~UnconditionalCombinations}' is not built together with '{Variant & UnconditionalCombinations}' by this version; the unconditional (LDMPipeline) folder combines only '{ShapesVariant.Unconditional}' and '{ShapesVariant.Vq}'.");
        if (Variant.HasFlag(ShapesVariant.SuperResolution) && Variant != ShapesVariant.SuperResolution)
            throw new NotSupportedException($"Shapes model variant '{Variant & ~ShapesVariant.SuperResolution}' is not built together with '{ShapesVariant.SuperResolution}' by this version; the super-resolution folder combines with no other flag.");
        if (Variant.HasFlag(ShapesVariant.ControlNet) && (Variant & ~ControlNetCombinations) != 0)
            throw new NotSupportedException($"Shapes model variant '{Variant & ~ControlNetCombinations}' is not built together with '{ShapesVariant.ControlNet}' by this version; the ControlNet folder combines with '{ControlNetCombinations}'.");
    }

    /// <summary>A canonical text of the settings, hashed into the cache folder name.</summary>
    internal string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"match_strength={MatchStrength:R};image_size={ImageSize};variant={(int)Variant}");
}
