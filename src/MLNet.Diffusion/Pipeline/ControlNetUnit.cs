namespace MLNet.Diffusion;

/// <summary>
/// One ControlNet of a DenoiseLatents stage (<see cref="DenoiseLatentsOptions.ControlNets"/>): which ControlNet, the column
/// of its control images, its conditioning scale and the part of the steps it acts in — diffusers'
/// StableDiffusionControlNetPipeline arguments <c>controlnet</c>, <c>image</c>, <c>controlnet_conditioning_scale</c>,
/// <c>control_guidance_start</c> and <c>control_guidance_end</c>, one entry per ControlNet of a MultiControlNetModel.
/// </summary>
public sealed record ControlNetUnit
{
    /// <summary>
    /// The ControlNet's <c>.onnx</c> file or folder (<see cref="StableDiffusionModel.LoadControlNet"/>); null uses the model
    /// folder's own <c>controlnet/</c> (<see cref="StableDiffusionModel.ControlNet"/>).
    /// </summary>
    public string? ModelPath { get; init; }

    /// <summary>
    /// The control-image column: a float vector [3, H, W] in [0, 1], RGB, at the stage's <see cref="DenoiseLatentsOptions.Height"/>
    /// × <see cref="DenoiseLatentsOptions.Width"/> (PrepareControlImage's output).
    /// </summary>
    public string ImageColumnName { get; init; } = "ControlImage";

    /// <summary>The conditioning scale (diffusers' default 1.0): the ControlNet's residuals are multiplied by it; 0 turns it off.</summary>
    public float Scale { get; init; } = 1f;

    /// <summary>An optional Single column with each row's conditioning scale, used instead of <see cref="Scale"/>.</summary>
    public string? ScaleColumnName { get; init; }

    /// <summary>The fraction of the steps at which the ControlNet starts acting (diffusers' <c>control_guidance_start</c>, default 0).</summary>
    public float GuidanceStart { get; init; }

    /// <summary>The fraction of the steps at which it stops acting (diffusers' <c>control_guidance_end</c>, default 1).</summary>
    public float GuidanceEnd { get; init; } = 1f;
}
