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

    /// <summary>Width of the text encoder's hidden states (768 for SD 1.x, 1024 for SD 2.x).</summary>
    public int HiddenSize { get; }

    /// <summary>Token sequence length of the text encoder (77).</summary>
    public int SequenceLength { get; }

    /// <summary>Width of the text encoder's pooled output, or null when it has none.</summary>
    public int? PooledSize { get; }

    /// <summary>The factor latents are multiplied by after encoding and divided by before decoding.</summary>
    public float VaeScalingFactor { get; }

    /// <summary>The folder's scheduler settings.</summary>
    public SchedulerConfig SchedulerConfig { get; }

    /// <summary>The execution provider the sessions run on (after any fallback), e.g. <c>CPU</c> or <c>CUDA:0</c>.</summary>
    public string ExecutionProvider { get; }
}
