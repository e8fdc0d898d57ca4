using System;
using MLNet.Diffusion;

namespace Microsoft.ML;

/// <summary>
/// Stable Diffusion stages for <see cref="TransformsCatalog"/>: <c>mlContext.Transforms.EncodePrompt(…)</c>,
/// <c>DenoiseLatents(…)</c>, <c>DecodeLatents(…)</c>, <c>EncodeImage(…)</c> and <c>PrepareInpainting(…)</c>, each running
/// one component of a <see cref="StableDiffusionModel"/> loaded with <see cref="StableDiffusionModel.Load"/>, and
/// <c>AddDiffusionNoise(…)</c>, the forward process of the model's noise schedule.
/// </summary>
public static class DiffusionCatalog
{
    /// <summary>
    /// Create a <see cref="PromptEncodingEstimator"/>, which tokenizes the text column <paramref name="inputColumnName"/>
    /// with the model's CLIP tokenizer and encodes it with the text encoder into <paramref name="outputColumnName"/>:
    /// a float vector [2, 77, D] holding the negative (or empty) prompt's hidden states, then the prompt's. For SDXL models
    /// it also writes the pooled prompt column <see cref="EncodePromptOptions.DefaultPooledColumnName"/>, which DenoiseLatents reads.
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model.</param>
    /// <param name="outputColumnName">Name of the embeddings column to create.</param>
    /// <param name="inputColumnName">Name of the prompt column (text); defaults to <paramref name="outputColumnName"/>.</param>
    /// <param name="negativePromptColumnName">Name of an optional negative-prompt column (text).</param>
    public static PromptEncodingEstimator EncodePrompt(this TransformsCatalog catalog, StableDiffusionModel model,
        string outputColumnName = "Embeddings", string? inputColumnName = null, string? negativePromptColumnName = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new PromptEncodingEstimator(model, new EncodePromptOptions
        {
            OutputColumnName = outputColumnName,
            InputColumnName = inputColumnName ?? outputColumnName,
            NegativePromptColumnName = negativePromptColumnName,
        });
    }

    /// <summary>Create a <see cref="PromptEncodingEstimator"/> with all options (batch size, pooled output, long prompts).</summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model.</param>
    /// <param name="options">Column names and settings.</param>
    public static PromptEncodingEstimator EncodePrompt(this TransformsCatalog catalog, StableDiffusionModel model, EncodePromptOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        return new PromptEncodingEstimator(model, options);
    }

    /// <summary>
    /// Create a <see cref="LatentDenoisingEstimator"/>, which runs the UNet denoising loop (scheduler, classifier-free
    /// guidance) from each row's seeded noise, conditioned on the embeddings column, into a latents column [C, H/f, W/f].
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model.</param>
    /// <param name="outputColumnName">Name of the latents column to create.</param>
    /// <param name="inputColumnName">Name of the embeddings column (EncodePrompt's output); defaults to "Embeddings".</param>
    /// <param name="options">Steps, guidance, size, scheduler, seeds, batching, progress; defaults when null.</param>
    public static LatentDenoisingEstimator DenoiseLatents(this TransformsCatalog catalog, StableDiffusionModel model,
        string outputColumnName = "Latents", string inputColumnName = "Embeddings", DenoiseLatentsOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new LatentDenoisingEstimator(model, outputColumnName, inputColumnName, options ?? new DenoiseLatentsOptions());
    }

    /// <summary>
    /// Create a <see cref="LatentDenoisingEstimator"/> for an unconditional model (<see cref="ModelInfo.IsConditional"/> false:
    /// diffusers' <c>LDMPipeline</c> and <c>DDPMPipeline</c> folders), whose <c>UNet2DModel</c> takes only the sample and the
    /// timestep: the denoising loop runs from each row's seeded noise with no embeddings column and no guidance, into a
    /// latents column [C, H/f, W/f] (for a pixel-space model the image tensor [3, H, W]).
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded unconditional model.</param>
    /// <param name="outputColumnName">Name of the latents column to create.</param>
    /// <param name="options">Steps, size, scheduler, seeds, batching, progress.</param>
    /// <exception cref="ArgumentException">The model is text-conditioned: it needs the embeddings column (the overload with <c>inputColumnName</c>).</exception>
    public static LatentDenoisingEstimator DenoiseLatents(this TransformsCatalog catalog, StableDiffusionModel model, string outputColumnName, DenoiseLatentsOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        if (model.Info.IsConditional)
            throw new ArgumentException($"The model '{model.Info.Directory}' is text-conditioned ({model.Info.Kind}): its UNet takes encoder_hidden_states, so DenoiseLatents needs "
                + "the embeddings column. Use DenoiseLatents(model, outputColumnName, inputColumnName, options) after EncodePrompt.", nameof(model));
        return new LatentDenoisingEstimator(model, outputColumnName, null, options);
    }

    /// <summary>
    /// Create a <see cref="LatentDecodingEstimator"/>, which decodes the latents column with the VAE decoder into an
    /// <see cref="Microsoft.ML.Data.MLImage"/> column.
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model.</param>
    /// <param name="outputColumnName">Name of the image column to create.</param>
    /// <param name="inputColumnName">Name of the latents column (DenoiseLatents' output); defaults to "Latents".</param>
    /// <param name="options">Batching, an optional pixels column, and the latent size for columns without a fixed shape.</param>
    public static LatentDecodingEstimator DecodeLatents(this TransformsCatalog catalog, StableDiffusionModel model,
        string outputColumnName = "Image", string inputColumnName = "Latents", DecodeLatentsOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new LatentDecodingEstimator(model, outputColumnName, inputColumnName, options ?? new DecodeLatentsOptions());
    }

    /// <summary>
    /// Create an <see cref="ImageEncodingEstimator"/>, which encodes an <see cref="Microsoft.ML.Data.MLImage"/> column with the
    /// VAE encoder into a latents column [C, H/f, W/f] scaled by the VAE scaling factor: the initial latents of
    /// image-to-image (<see cref="DenoiseLatentsOptions.InitialLatentsColumnName"/>), and what DecodeLatents reads.
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model; its folder must have vae_encoder/.</param>
    /// <param name="outputColumnName">Name of the latents column to create.</param>
    /// <param name="inputColumnName">Name of the image column; defaults to "Image".</param>
    /// <param name="options">Size, resizing, sampling, seeds and batching; defaults when null.</param>
    /// <exception cref="InvalidOperationException">The model folder has no vae_encoder.</exception>
    public static ImageEncodingEstimator EncodeImage(this TransformsCatalog catalog, StableDiffusionModel model,
        string outputColumnName = "Latents", string inputColumnName = "Image", EncodeImageOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new ImageEncodingEstimator(model, outputColumnName, inputColumnName, options ?? new EncodeImageOptions());
    }

    /// <summary>
    /// Create an <see cref="InpaintingPreparationEstimator"/>, which turns an image column and a mask column
    /// (<see cref="Microsoft.ML.Data.MLImage"/>s of the same size, white = repaint) into a latent mask [1, H/f, W/f] and
    /// the masked image's latents [C, H/f, W/f]: what DenoiseLatents inpaints with
    /// (<see cref="DenoiseLatentsOptions.MaskColumnName"/>, <see cref="DenoiseLatentsOptions.MaskedImageLatentsColumnName"/>).
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model; its folder must have vae_encoder/ unless the masked-image latents are not asked for.</param>
    /// <param name="latentMaskColumnName">Name of the latent mask column to create.</param>
    /// <param name="maskedImageLatentsColumnName">Name of the masked-image latents column to create, or null for none (ordinary UNets do not use it).</param>
    /// <param name="imageColumnName">Name of the image column.</param>
    /// <param name="maskColumnName">Name of the mask column.</param>
    /// <param name="width">Width the image is worked at (DenoiseLatents' width).</param>
    /// <param name="height">Height the image is worked at (DenoiseLatents' height).</param>
    public static InpaintingPreparationEstimator PrepareInpainting(this TransformsCatalog catalog, StableDiffusionModel model,
        string latentMaskColumnName = "LatentMask", string? maskedImageLatentsColumnName = "MaskedImageLatents",
        string imageColumnName = "Image", string maskColumnName = "Mask", int width = 512, int height = 512)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new InpaintingPreparationEstimator(model, new PrepareInpaintingOptions
        {
            LatentMaskColumnName = latentMaskColumnName,
            MaskedImageLatentsColumnName = maskedImageLatentsColumnName,
            ImageColumnName = imageColumnName,
            MaskColumnName = maskColumnName,
            Width = width,
            Height = height,
        });
    }

    /// <summary>
    /// Create a <see cref="ControlImagePreparationEstimator"/>, which turns an image column into ControlNet control images
    /// [3, H, W] in [0, 1] (<see cref="ControlNetUnit.ImageColumnName"/>), optionally through a preprocessor (Canny edges).
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model (its VAE factor constrains the size).</param>
    /// <param name="options">Column names, size and preprocessor.</param>
    public static ControlImagePreparationEstimator PrepareControlImage(this TransformsCatalog catalog, StableDiffusionModel model, PrepareControlImageOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        return new ControlImagePreparationEstimator(model, options);
    }

    /// <summary>Create an <see cref="InpaintingPreparationEstimator"/> with all options (resizing, mask downsampling, sampling, seeds, batching).</summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model.</param>
    /// <param name="options">Column names and settings.</param>
    public static InpaintingPreparationEstimator PrepareInpainting(this TransformsCatalog catalog, StableDiffusionModel model, PrepareInpaintingOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        ArgumentNullException.ThrowIfNull(options);
        return new InpaintingPreparationEstimator(model, options);
    }

    /// <summary>
    /// Create a <see cref="DiffusionNoisingEstimator"/>, which applies the forward diffusion process of the model's noise
    /// schedule to a float vector column: x_t = √ᾱ_t·x₀ + √(1 − ᾱ_t)·ε (Ho et al. 2020, eq. 4) with ε ~ N(0, I) from the
    /// row's seed, for training or studying denoisers (the ε is available as a second output).
    /// </summary>
    /// <param name="catalog">The transform catalog.</param>
    /// <param name="model">The loaded model; only its scheduler config (the ᾱ table) is used.</param>
    /// <param name="outputColumnName">Name of the noisy column x_t to create (the input's type).</param>
    /// <param name="inputColumnName">Name of the clean column x₀ (a float vector, e.g. EncodeImage's latents).</param>
    /// <param name="options">The timestep (fixed or per row), seeds, and the optional noise output.</param>
    public static DiffusionNoisingEstimator AddDiffusionNoise(this TransformsCatalog catalog, StableDiffusionModel model,
        string outputColumnName, string inputColumnName, AddDiffusionNoiseOptions options)
    {
        ArgumentNullException.ThrowIfNull(catalog);
        return new DiffusionNoisingEstimator(model, outputColumnName, inputColumnName, options);
    }
}
