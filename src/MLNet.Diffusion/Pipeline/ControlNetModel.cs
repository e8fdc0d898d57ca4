using System.Collections.Generic;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion;

/// <summary>
/// A ControlNet graph loaded next to a <see cref="StableDiffusionModel"/> and checked to fit its UNet: the folder's own
/// (<see cref="StableDiffusionModel.ControlNet"/>) or one given as a file or folder
/// (<see cref="StableDiffusionModel.LoadControlNet"/>). The model owns it and releases its session when disposed.
/// </summary>
public sealed class ControlNetModel
{
    internal ControlNetModel(OnnxComponent component, string[] outputNames, IReadOnlyList<ControlNetResidual> residuals, bool globalPoolConditions)
    {
        Component = component;
        OutputNames = outputNames;
        Residuals = residuals;
        GlobalPoolConditions = globalPoolConditions;
    }

    /// <summary>The ControlNet's <c>model.onnx</c>, full path.</summary>
    public string Path => Component.Path;

    /// <summary>The residuals it gives, in the UNet's order (down blocks, then mid), with their channels and downscale.</summary>
    public IReadOnlyList<ControlNetResidual> Residuals { get; }

    /// <summary>
    /// Its <c>config.json</c>'s <c>global_pool_conditions</c> (shuffle-style ControlNets): diffusers then always runs it in
    /// guess mode.
    /// </summary>
    public bool GlobalPoolConditions { get; }

    internal OnnxComponent Component { get; }

    /// <summary>The graph's residual outputs, aligned with <see cref="Residuals"/>.</summary>
    internal string[] OutputNames { get; }

    /// <summary>How many times the ControlNet ran (for tests and diagnostics).</summary>
    internal long RunCount => Component.RunCount;
}
