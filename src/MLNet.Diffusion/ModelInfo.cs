using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion;

/// <summary>What a loaded model folder says about itself, read from its ONNX metadata and configs (never assumed).</summary>
public sealed class ModelInfo
{
    internal ModelInfo(string directory, int latentChannels, int vaeSpatialFactor, int hiddenSize, int sequenceLength,
        int? pooledSize, float vaeScalingFactor, SchedulerConfig schedulerConfig, string executionProvider)
    {
        Directory = directory;
        LatentChannels = latentChannels;
        VaeSpatialFactor = vaeSpatialFactor;
        HiddenSize = hiddenSize;
        SequenceLength = sequenceLength;
        PooledSize = pooledSize;
        VaeScalingFactor = vaeScalingFactor;
        SchedulerConfig = schedulerConfig;
        ExecutionProvider = executionProvider;
    }

    /// <summary>The model folder's full path.</summary>
    public string Directory { get; }

    /// <summary>Channels of the latent space (4 for Stable Diffusion).</summary>
    public int LatentChannels { get; }

    /// <summary>
    /// Channels of the UNet's <c>sample</c> input: <see cref="LatentChannels"/> for text-to-image UNets, 2·C + 1 (9) for
    /// inpainting UNets, which take the latents, the mask and the masked image's latents concatenated on the channel axis.
    /// </summary>
    public int UnetInputChannels { get; internal init; }

    /// <summary>Whether the UNet is an inpainting UNet (<see cref="UnetInputChannels"/> = 2·C + 1).</summary>
    public bool IsInpaintingUnet => UnetInputChannels == 2 * LatentChannels + 1;

    /// <summary>Pixels per latent along each axis (8 for Stable Diffusion's VAE).</summary>
    public int VaeSpatialFactor { get; }

    /// <summary>
    /// Width D of the conditioning states the UNet takes (<c>encoder_hidden_states</c>): the text encoder's hidden size
    /// (768 for SD 1.x, 1024 for SD 2.x); for SDXL the two text encoders' penultimate hidden states side by side
    /// (768 + 1280 = 2048; 1280 for the refiner, which has only the second).
    /// </summary>
    public int HiddenSize { get; }

    /// <summary>Token sequence length of the text encoder (77).</summary>
    public int SequenceLength { get; }

    /// <summary>
    /// Width P of the pooled prompt vector, or null when there is none: the text encoder's <c>pooler_output</c> for
    /// SD 1.x/2.x (optional there), <c>text_encoder_2</c>'s projected <c>text_embeds</c> for SDXL (1280; the UNet's
    /// <c>text_embeds</c> input).
    /// </summary>
    public int? PooledSize { get; }

    /// <summary>Which pipeline the folder is (from <c>model_index.json</c> and the files).</summary>
    public ModelKind Kind { get; internal init; }

    /// <summary>
    /// Values per row of the SDXL UNet's <c>time_ids</c> input, or null for models without it: 6 (original size, crop
    /// top-left, target size) or 5 for refiner-style UNets (original size, crop top-left, aesthetic score), as diffusers'
    /// <c>_get_add_time_ids</c> builds them.
    /// </summary>
    public int? TimeIdsWidth { get; internal init; }

    /// <summary>
    /// Whether an empty negative prompt gives all-zero unconditional states and pooled vector instead of the encoded
    /// empty prompt (<c>model_index.json</c> <c>force_zeros_for_empty_prompt</c>; diffusers' SDXL default true, false for
    /// the SDXL refiner's folder and not used by SD 1.x/2.x).
    /// </summary>
    public bool ForceZerosForEmptyPrompt { get; internal init; }

    /// <summary>
    /// The ControlNet residual inputs of the UNet (<c>down_block_{i}_additional_residual</c> in order, then
    /// <c>mid_block_additional_residual</c>), read from the graph; empty when neither <c>unet/</c> nor OnnxStack's
    /// <c>controlnet/</c> UNet takes them. A ControlNet's outputs must match these names and channels.
    /// </summary>
    public System.Collections.Generic.IReadOnlyList<ControlNetResidual> ControlNetResiduals { get; internal set; } = System.Array.Empty<ControlNetResidual>();

    /// <summary>Whether the folder has its own ControlNet (diffusers' <c>controlnet/</c> holding a graph with a <c>controlnet_cond</c> input).</summary>
    public bool HasControlNet { get; internal set; }

    /// <summary>The factor latents are multiplied by after encoding and divided by before decoding (1 for pixel-space models).</summary>
    public float VaeScalingFactor { get; }

    /// <summary>
    /// Whether the UNet is conditioned on text (<c>encoder_hidden_states</c>): true for Stable Diffusion and SDXL, false
    /// for the unconditional <c>UNet2DModel</c> of <see cref="ModelKind.LatentDiffusion"/> and <see cref="ModelKind.PixelDiffusion"/>
    /// folders, whose UNet takes only <c>sample</c> and <c>timestep</c> (no prompt, no embeddings column, no guidance).
    /// </summary>
    public bool IsConditional { get; internal init; } = true;

    /// <summary>
    /// Whether the diffusion runs in an autoencoder's latent space (true) or on pixels (false: <see cref="ModelKind.PixelDiffusion"/>,
    /// where the denoised tensor [3, H, W] in [−1, 1] is the image and <see cref="VaeSpatialFactor"/> is 1).
    /// </summary>
    public bool IsLatentSpace => Autoencoder != AutoencoderKind.None;

    /// <summary>The folder's autoencoder: KL-regularised (<c>vae_decoder/</c>), VQ-regularised (<c>vqvae_decoder/</c>) or none (pixel space).</summary>
    public AutoencoderKind Autoencoder { get; internal init; } = AutoencoderKind.KL;

    /// <summary>
    /// VQ autoencoders: the number of codebook vectors, the config's <c>num_vq_embeddings</c> (<c>codebook.npy</c>, when
    /// present, must have as many rows); null for other autoencoders or when the config does not state it.
    /// </summary>
    public int? CodebookSize { get; internal init; }

    /// <summary>The folder's scheduler settings.</summary>
    public SchedulerConfig SchedulerConfig { get; }

    /// <summary>The execution provider the sessions run on (after any fallback), e.g. <c>CPU</c> or <c>CUDA:0</c>.</summary>
    public string ExecutionProvider { get; }
}

/// <summary>
/// One ControlNet residual the UNet adds to a skip connection (diffusers <c>down_block_additional_residuals</c>) or to the
/// mid block's output (<c>mid_block_additional_residual</c>).
/// </summary>
/// <param name="Name">The UNet input (and ControlNet output) name.</param>
/// <param name="Channels">Its channels.</param>
/// <param name="Downscale">Its spatial size is the latent size divided by this (1, 2, 4, 8…).</param>
public sealed record ControlNetResidual(string Name, int Channels, int Downscale);

/// <summary>The kinds of model folder the library runs, told apart by <c>model_index.json</c> and the files present.</summary>
public enum ModelKind
{
    /// <summary>Stable Diffusion 1.x/2.x: one text encoder; the UNet takes <c>sample</c>, <c>timestep</c>, <c>encoder_hidden_states</c>.</summary>
    StableDiffusion,

    /// <summary>
    /// SDXL (<c>StableDiffusionXLPipeline</c>): <c>text_encoder/</c> and <c>text_encoder_2/</c> with their tokenizers; the
    /// UNet also takes the pooled <c>text_embeds</c> and the micro-conditioning <c>time_ids</c>.
    /// </summary>
    StableDiffusionXL,

    /// <summary>The SDXL refiner layout: only <c>text_encoder_2/</c> and <c>tokenizer_2/</c> (model_index.json declares no <c>text_encoder</c>).</summary>
    StableDiffusionXLRefiner,

    /// <summary>
    /// Unconditional latent diffusion (diffusers <c>LDMPipeline</c>, e.g. CompVis/ldm-celebahq-256): an autoencoder
    /// (<c>vqvae_decoder/</c> and optional <c>vqvae_encoder/</c>, or <c>vae_decoder/</c>) and a <c>UNet2DModel</c> that
    /// takes <c>sample</c> and <c>timestep</c> only.
    /// </summary>
    LatentDiffusion,

    /// <summary>
    /// Pixel-space diffusion (diffusers <c>DDPMPipeline</c>, e.g. google/ddpm-cifar10-32): a <c>UNet2DModel</c> on RGB
    /// pixels and no autoencoder.
    /// </summary>
    PixelDiffusion,

    /// <summary>
    /// Latent-diffusion super-resolution (diffusers <c>LDMSuperResolutionPipeline</c>, e.g.
    /// CompVis/ldm-super-resolution-4x-openimages): the <c>LatentDiffusion</c> folder layout, whose <c>UNet2DModel</c> takes
    /// the latents concatenated with the low-resolution image (3 more channels) at every step; the latent grid is the
    /// low-resolution image's size and the decoder (no scaling factor: the pipeline decodes the latents as they are) makes
    /// the image the autoencoder's factor larger.
    /// </summary>
    SuperResolution,
}

/// <summary>The autoencoder of a model folder (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", §3: KL- or VQ-regularised).</summary>
public enum AutoencoderKind
{
    /// <summary>No autoencoder: the model denoises pixels.</summary>
    None,

    /// <summary>A KL-regularised autoencoder (diffusers <c>AutoencoderKL</c>, <c>vae_decoder/</c>), as Stable Diffusion's.</summary>
    KL,

    /// <summary>
    /// A VQ-regularised autoencoder (diffusers <c>VQModel</c>, <c>vqvae_decoder/</c>): decoding snaps each latent vector to
    /// its nearest codebook vector (van den Oord et al. 2017, "Neural Discrete Representation Learning").
    /// </summary>
    VQ,
}
