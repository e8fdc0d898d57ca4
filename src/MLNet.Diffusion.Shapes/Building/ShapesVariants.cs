using System;
using System.Collections.Generic;
using System.IO;
using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphRewriter;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// Turns the written float32 graphs into an export variant, one pass per flag over each <c>&lt;component&gt;/model.onnx</c>
/// (as export tools derive variants from one model): <see cref="ShapesVariant.VPrediction"/>,
/// <see cref="ShapesVariant.TimestepInt64"/> / <see cref="ShapesVariant.TimestepScalar"/> (UNet only),
/// <see cref="ShapesVariant.Float16"/>, then <see cref="ShapesVariant.ExternalWeights"/> /
/// <see cref="ShapesVariant.ExternalWeightsPb"/> when writing. Flags that change what a graph computes in its own
/// terms (int64 ids, a VAE encoder's outputs, extra inputs) are built by <see cref="ShapesGraphs"/> itself.
/// </summary>
internal static class ShapesVariants
{
    /// <summary>The external-data file of <see cref="ShapesVariant.ExternalWeights"/> (torch.onnx / optimum's name).</summary>
    public const string OnnxDataFileName = "model.onnx_data";

    /// <summary>The external-data file of <see cref="ShapesVariant.ExternalWeightsPb"/> (Olive / ONNX Runtime conversions' name).</summary>
    public const string WeightsPbFileName = "weights.pb";

    private const ShapesVariant GraphPasses = ShapesVariant.VPrediction | ShapesVariant.TimestepInt64 | ShapesVariant.TimestepScalar
        | ShapesVariant.Float16 | ShapesVariant.ExternalWeights | ShapesVariant.ExternalWeightsPb;

    /// <summary>Applies the passes of <paramref name="variant"/> to every <c>model.onnx</c> one level under <paramref name="directory"/>.</summary>
    public static void Apply(string directory, ShapesVariant variant)
    {
        if ((variant & GraphPasses) == 0)
            return;
        var components = Directory.GetDirectories(directory);
        Array.Sort(components, StringComparer.Ordinal);
        foreach (string folder in components)
        {
            string path = Path.Combine(folder, "model.onnx");
            if (!File.Exists(path))
                continue;
            var model = MLNet.Diffusion.Onnx.OnnxModelReader.Open(path).Model;
            Apply(model, Path.GetFileName(folder), variant);
            string? dataFile = variant.HasFlag(ShapesVariant.ExternalWeights) ? OnnxDataFileName
                : variant.HasFlag(ShapesVariant.ExternalWeightsPb) ? WeightsPbFileName : null;
            if (dataFile is null)
                File.WriteAllBytes(path, Google.Protobuf.MessageExtensions.ToByteArray(model));
            else
                WriteWithExternalData(model, path, dataFile);
        }
    }

    /// <summary>The graph passes of <paramref name="variant"/> on one component's model (not the external-data write).</summary>
    public static void Apply(ModelProto model, string component, ShapesVariant variant)
    {
        var graph = model.Graph;
        var notes = new List<string>();
        bool unet = component == "unet";
        if (unet && variant.HasFlag(ShapesVariant.VPrediction))
        {
            VPrediction(graph);
            notes.Add("out_sample is the v-prediction √ᾱ·ε̂ − √(1−ᾱ)·x̂₀");
        }
        bool timestepInt64 = variant.HasFlag(ShapesVariant.TimestepInt64), timestepScalar = variant.HasFlag(ShapesVariant.TimestepScalar);
        if (unet && (timestepInt64 || timestepScalar))
        {
            RetypeInput(graph, "timestep", timestepInt64 ? DataType.Int64 : DataType.Float, timestepScalar);
            notes.Add($"timestep is {(timestepInt64 ? "int64" : "float32")} {(timestepScalar ? "[] (one for the batch)" : "[batch]")}");
        }
        if (variant.HasFlag(ShapesVariant.Float16))
        {
            // The timestep stays as the timestep flags made it (SD --fp16 exports take float16 [batch] otherwise).
            ToFloat16(graph, unet && (timestepInt64 || timestepScalar) ? ["timestep"] : []);
            notes.Add("weights, inputs and outputs are float16; arithmetic is float32 inside");
        }
        if (notes.Count > 0)
            model.DocString += " Variant: " + string.Join("; ", notes) + ".";
    }

    /// <summary>The variant in words for the folder's README (<c>float32</c> for the standard export).</summary>
    public static string Describe(ShapesVariant variant)
    {
        var parts = new List<string> { variant.HasFlag(ShapesVariant.Float16) ? "float16 weights, inputs and outputs" : "float32" };
        if (variant.HasFlag(ShapesVariant.TimestepInt64) || variant.HasFlag(ShapesVariant.TimestepScalar))
            parts.Add($"unet timestep {(variant.HasFlag(ShapesVariant.TimestepInt64) ? "int64" : "float32")}{(variant.HasFlag(ShapesVariant.TimestepScalar) ? " scalar" : " [batch]")}");
        if (variant.HasFlag(ShapesVariant.VPrediction))
            parts.Add("v-prediction UNet (prediction_type v_prediction, as SD 2.x)");
        if (variant.HasFlag(ShapesVariant.ExternalWeights))
            parts.Add($"weights in {OnnxDataFileName} next to each model.onnx");
        if (variant.HasFlag(ShapesVariant.ExternalWeightsPb))
            parts.Add($"weights in {WeightsPbFileName} next to each model.onnx");
        return string.Join(", ", parts);
    }

    /// <summary>
    /// The UNet predicts v instead of ε (Salimans &amp; Ho 2022, "Progressive distillation", §4:
    /// v ≡ α_t·ε − σ_t·x, with α_t = √ᾱ_t and σ_t = √(1 − ᾱ_t) in DDPM terms), from the values the epsilon graph
    /// already computes: <c>out_sample</c> (ε̂), <c>x0</c> (x̂₀) and the per-row <c>sqrt_alpha_bar</c>,
    /// <c>sqrt_one_minus_alpha_bar</c> [T'] (see <see cref="ShapesGraphs.Unet"/>).
    /// <code>v = √ᾱ·ε̂ − √(1 − ᾱ)·x̂₀</code>
    /// </summary>
    private static void VPrediction(GraphProto graph)
    {
        foreach (string needed in new[] { "x0", "sqrt_alpha_bar", "sqrt_one_minus_alpha_bar" })
        {
            if (!HasValue(graph, needed))
                throw new InvalidOperationException($"The UNet graph has no value '{needed}' to compute the v-prediction from.");
        }
        DetachOutput(graph, "out_sample", "epsilon");
        string axes = AddInt64Initializer(graph, "v.axes", [1L, 2L, 3L]);
        string alpha = AppendNode(graph, "Unsqueeze", ["sqrt_alpha_bar", axes], "v.sqrt_alpha_bar");               // [T',1,1,1]
        string sigma = AppendNode(graph, "Unsqueeze", ["sqrt_one_minus_alpha_bar", axes], "v.sqrt_one_minus_alpha_bar");
        string alphaEps = AppendNode(graph, "Mul", [alpha, "epsilon"], "v.alpha_epsilon");
        string sigmaX0 = AppendNode(graph, "Mul", [sigma, "x0"], "v.sigma_x0");
        AppendNode(graph, "Sub", [alphaEps, sigmaX0], "out_sample");
    }
}
