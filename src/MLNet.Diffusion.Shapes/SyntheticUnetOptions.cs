using System;
using System.Collections.Generic;
using System.Globalization;

namespace MLNet.Diffusion.Shapes;

/// <summary>
/// Settings of the synthetic UNet (<see cref="SyntheticUnet"/>). The defaults are Stable Diffusion 1.5's architecture
/// (diffusers <c>UNet2DConditionModel</c> config of <c>stable-diffusion-v1-5</c>): block widths 320, 640, 1280, 1280,
/// two ResNet layers per down block, 8 attention heads, cross-attention to 768-wide text states, 32 GroupNorm groups,
/// 64×64 latents — 859,520,964 parameters.
/// </summary>
public sealed class SyntheticUnetOptions
{
    /// <summary>Stable Diffusion 1.5's block widths (<c>block_out_channels</c>).</summary>
    public static IReadOnlyList<int> StableDiffusion15Channels { get; } = Array.AsReadOnly(new[] { 320, 640, 1280, 1280 });

    /// <summary>Channels of each resolution level, highest resolution first (<c>block_out_channels</c>); default SD 1.5's.</summary>
    /// <remarks>Every level but the lowest has a spatial transformer after each ResNet layer, as in SD 1.x.</remarks>
    public IReadOnlyList<int> BlockChannels { get; init; } = StableDiffusion15Channels;

    /// <summary>ResNet layers per down block (<c>layers_per_block</c>, the up blocks have one more); default 2.</summary>
    public int LayersPerBlock { get; init; } = 2;

    /// <summary>Attention heads of every attention layer (SD 1.x's <c>attention_head_dim</c> 8); default 8.</summary>
    public int AttentionHeads { get; init; } = 8;

    /// <summary>Width of <c>encoder_hidden_states</c> (<c>cross_attention_dim</c>); default 768 (CLIP ViT-L/14).</summary>
    public int CrossAttentionDim { get; init; } = 768;

    /// <summary>GroupNorm groups (<c>norm_num_groups</c>); every block width must be a multiple; default 32.</summary>
    public int NormGroups { get; init; } = 32;

    /// <summary>The latent side the model is made for (<c>sample_size</c> in config.json; the graph takes any multiple of 2^(levels−1)); default 64.</summary>
    public int SampleSize { get; init; } = 64;

    /// <summary>Whether weights, inputs and output are float16 (as <c>--fp16</c> exports); default float32.</summary>
    public bool Float16 { get; init; }

    /// <summary>Seed of the random weights; the same options give byte-identical files.</summary>
    public int Seed { get; init; } = 1;

    /// <summary>
    /// A tiny configuration with the same structure (widths 32, 64, 64, 64, one layer per block, 2 heads, 8 groups,
    /// 768-wide cross-attention, 8×8 latents): builds and runs on a CPU in well under a second, for tests.
    /// </summary>
    public static SyntheticUnetOptions Tiny(bool float16 = false) => new()
    {
        BlockChannels = new[] { 32, 64, 64, 64 },
        LayersPerBlock = 1,
        AttentionHeads = 2,
        NormGroups = 8,
        SampleSize = 8,
        Float16 = float16,
    };

    /// <summary>The width of the timestep embedding (4 × the first block width, as diffusers' <c>time_embed_dim</c>).</summary>
    internal int TimeEmbeddingDim => 4 * BlockChannels[0];

    /// <summary>Checks every setting.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range; ParamName names it.</exception>
    internal void Validate()
    {
        if (BlockChannels is null || BlockChannels.Count < 2 || BlockChannels.Count > 6)
            throw new ArgumentOutOfRangeException(nameof(BlockChannels), BlockChannels?.Count, "BlockChannels must list 2 to 6 levels.");
        if (!(NormGroups >= 1))
            throw new ArgumentOutOfRangeException(nameof(NormGroups), NormGroups, "NormGroups must be 1 or more.");
        if (!(AttentionHeads >= 1))
            throw new ArgumentOutOfRangeException(nameof(AttentionHeads), AttentionHeads, "AttentionHeads must be 1 or more.");
        foreach (int c in BlockChannels)
        {
            if (c < 1 || c > 8192 || c % NormGroups != 0 || c % AttentionHeads != 0)
                throw new ArgumentOutOfRangeException(nameof(BlockChannels), c,
                    $"Every block width must be in [1, 8192] and a multiple of NormGroups ({NormGroups}) and AttentionHeads ({AttentionHeads}); got {c}.");
        }
        if (BlockChannels[0] % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(BlockChannels), BlockChannels[0], "The first block width must be even (it is the sinusoidal timestep embedding's width).");
        if (LayersPerBlock < 1 || LayersPerBlock > 8)
            throw new ArgumentOutOfRangeException(nameof(LayersPerBlock), LayersPerBlock, "LayersPerBlock must be in [1, 8].");
        if (CrossAttentionDim < 1 || CrossAttentionDim > 8192)
            throw new ArgumentOutOfRangeException(nameof(CrossAttentionDim), CrossAttentionDim, "CrossAttentionDim must be in [1, 8192].");
        int multiple = 1 << (BlockChannels.Count - 1);
        if (SampleSize < multiple || SampleSize > 512 || SampleSize % multiple != 0)
            throw new ArgumentOutOfRangeException(nameof(SampleSize), SampleSize, $"SampleSize must be a multiple of {multiple} (2^(levels−1)) in [{multiple}, 512].");
    }

    /// <summary>A canonical text of the settings (for file names and READMEs).</summary>
    internal string Describe() => string.Create(CultureInfo.InvariantCulture,
        $"channels={string.Join(",", BlockChannels)};layers={LayersPerBlock};heads={AttentionHeads};cross={CrossAttentionDim};groups={NormGroups};sample={SampleSize};fp16={Float16};seed={Seed}");
}
