using System;

namespace MLNet.Diffusion.Lora;

/// <summary>The model a LoRA module changes, named as diffusers names the pipeline's components.</summary>
internal enum LoraComponent
{
    /// <summary><c>unet</c> (kohya <c>lora_unet_</c>).</summary>
    Unet,

    /// <summary><c>text_encoder</c> (kohya <c>lora_te_</c>, and <c>lora_te1_</c> for SDXL's first encoder).</summary>
    TextEncoder,

    /// <summary><c>text_encoder_2</c> (kohya <c>lora_te2_</c>, SDXL's OpenCLIP encoder).</summary>
    TextEncoder2,
}

/// <summary>The kind of layer a LoRA module's matrices are shaped for.</summary>
internal enum LoraLayerKind
{
    /// <summary><c>down</c> [r, in], <c>up</c> [out, r]: a Linear (or a 1×1 convolution's squeezed matrix).</summary>
    Linear,

    /// <summary><c>down</c> [r, in, kh, kw], <c>up</c> [out, r, 1, 1]: a convolution (LoCon / LyCORIS).</summary>
    Conv,
}

/// <summary>
/// One low-rank update read from a LoRA file: <c>ΔW = (alpha / rank) · up · down</c> for the weight of module
/// <see cref="ModulePath"/> (diffusers naming, e.g. <c>down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q</c>)
/// of <see cref="Component"/>. The matrices are float32 whatever the file stored (F16/BF16 widen exactly).
/// </summary>
/// <param name="SourceKey">The module's key as the file spells it (kohya <c>lora_unet_…</c>, or the diffusers prefix), for messages.</param>
/// <param name="Component">The model it belongs to.</param>
/// <param name="ModulePath">The module path in diffusers naming (what the ONNX node names carry).</param>
/// <param name="FlatName">
/// For kohya keys, the module path with every '.' written '_' (the key without its <c>lora_unet_</c>-style prefix):
/// kohya names lose the boundary between module names and the underscores inside them, so a graph's module paths
/// flattened the same way are the authoritative match when <see cref="ModulePath"/>'s reconstruction misses. Null for
/// diffusers keys, which keep their dots.
/// </param>
/// <param name="Up">The up matrix [out, r] (row-major; [out, r, 1, 1] for a convolution).</param>
/// <param name="Down">The down matrix [r, in] (row-major; [r, in, kh, kw] for a convolution).</param>
/// <param name="OutFeatures">Rows of the weight (output features or channels).</param>
/// <param name="InFeatures">Input features or channels.</param>
/// <param name="Rank">The rank r.</param>
/// <param name="Alpha">The alpha (the rank when the file gives none, as kohya and diffusers assume).</param>
/// <param name="RankStabilized">True for rsLoRA (PEFT <c>use_rslora</c>): the factor is alpha/√r instead of alpha/r.</param>
/// <param name="Kind">Linear or convolution.</param>
/// <param name="KernelHeight">The convolution kernel height (1 for Linear).</param>
/// <param name="KernelWidth">The convolution kernel width (1 for Linear).</param>
internal sealed record LoraModule(
    string SourceKey,
    LoraComponent Component,
    string ModulePath,
    string? FlatName,
    float[] Up,
    float[] Down,
    int OutFeatures,
    int InFeatures,
    int Rank,
    float Alpha,
    bool RankStabilized,
    LoraLayerKind Kind,
    int KernelHeight,
    int KernelWidth)
{
    /// <summary>
    /// The factor the file's own settings put on <c>up · down</c>: alpha/r (kohya <c>networks/lora.py</c>
    /// <c>self.scale = alpha / self.lora_dim</c>; PEFT <c>scaling = lora_alpha / r</c>), or alpha/√r for rsLoRA.
    /// </summary>
    public float AlphaScale => RankStabilized ? Alpha / MathF.Sqrt(Rank) : Alpha / Rank;

    /// <summary>Elements of the weight per output row: <c>in · kh · kw</c>.</summary>
    public int RowLength => InFeatures * KernelHeight * KernelWidth;

    /// <summary>The component's name as diffusers spells it (<c>unet</c>, <c>text_encoder</c>, <c>text_encoder_2</c>).</summary>
    public static string ComponentName(LoraComponent component) => component switch
    {
        LoraComponent.Unet => "unet",
        LoraComponent.TextEncoder => "text_encoder",
        LoraComponent.TextEncoder2 => "text_encoder_2",
        _ => throw new ArgumentOutOfRangeException(nameof(component), component, "Unknown LoRA component."),
    };
}
