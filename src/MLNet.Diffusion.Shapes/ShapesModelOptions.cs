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

    /// <summary>float16 weights, inputs and outputs (as <c>--fp16</c> exports).</summary>
    Float16 = 2,

    /// <summary>Weights in an external-data file next to each graph (<c>model.onnx_data</c>).</summary>
    ExternalWeights = 4,

    /// <summary>An inpainting UNet: 9 input channels (latents, mask, masked-image latents).</summary>
    Inpainting = 8,

    /// <summary>SDXL-shaped: a second text encoder and tokenizer, UNet inputs <c>text_embeds</c> and <c>time_ids</c>.</summary>
    Sdxl = 16,

    /// <summary>The VAE encoder outputs 8-channel <c>latent_parameters</c> (mean ‖ log-variance) instead of a sampled <c>latent_sample</c>.</summary>
    LatentParameters = 32,

    /// <summary>The UNet takes an int64 <c>timestep</c> [B] (instead of float32 [B]).</summary>
    TimestepInt64 = 64,

    /// <summary>The UNet takes a float32 scalar <c>timestep</c> (rank 0, shared by the batch).</summary>
    TimestepScalar = 128,

    /// <summary>Weights in one external-data file named <c>weights.pb</c> next to each graph.</summary>
    ExternalWeightsPb = 256,

    /// <summary>The UNet predicts v = √ᾱ·ε − √(1 − ᾱ)·x₀ (SD 2.x, <c>prediction_type: v_prediction</c>).</summary>
    VPrediction = 512,
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
        | ShapesVariant.Inpainting
        | ShapesVariant.LatentParameters;

    /// <summary>The variant flags that change the UNet's graph, which the inpainting UNet does not take in this version.</summary>
    private const ShapesVariant UnetForms =
        ShapesVariant.Float16 | ShapesVariant.Sdxl | ShapesVariant.TimestepInt64 | ShapesVariant.TimestepScalar | ShapesVariant.VPrediction;

    /// <summary>Checks every setting.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range; the message names it.</exception>
    /// <exception cref="NotSupportedException">The variant is not built by this version.</exception>
    internal void Validate()
    {
        if (!(MatchStrength >= 0f && MatchStrength <= 1000f))
            throw new ArgumentOutOfRangeException(nameof(MatchStrength), MatchStrength, "MatchStrength must be in [0, 1000].");
        if (ImageSize < 32 || ImageSize > 1024 || ImageSize % 8 != 0)
            throw new ArgumentOutOfRangeException(nameof(ImageSize), ImageSize, "ImageSize must be a multiple of 8 in [32, 1024].");
        if ((Variant & ~BuiltVariants) != 0)
            throw new NotSupportedException($"Shapes model variant '{Variant & ~BuiltVariants}' is not built by this version; it builds '{ShapesVariant.Standard}' combined with '{BuiltVariants}'.");
        if (Variant.HasFlag(ShapesVariant.Inpainting) && (Variant & UnetForms) != 0)
            throw new NotSupportedException($"Shapes model variant '{ShapesVariant.Inpainting}' cannot be combined with '{Variant & UnetForms}' in this version.");
    }

    /// <summary>A canonical text of the settings, hashed into the cache folder name.</summary>
    internal string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"match_strength={MatchStrength:R};image_size={ImageSize};variant={(int)Variant}");
}
