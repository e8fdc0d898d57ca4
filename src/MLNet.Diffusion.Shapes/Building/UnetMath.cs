using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphBuilder;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// The subgraphs every Shapes UNet shares (<see cref="ShapesGraphs.Unet"/>, <see cref="ShapesSdxlGraphs.Unet"/>,
/// <see cref="ShapesInpaintingGraphs.Unet"/>): the noise level, the item latents at the sample's size, the likelihood of
/// the noisy latents, the prior's size scale and the posterior-mean noise prediction. Each adds its nodes and initializers
/// under the same names and in the same order as every UNet wrote them inline, so the graphs' bytes (and the Shapes cache
/// key) are unchanged; <see cref="ShapesVariants"/> finds <c>x0</c>, <c>sqrt_alpha_bar</c>, <c>sqrt_one_minus_alpha_bar</c>
/// and <c>out_sample</c> by these names.
/// </summary>
internal static class UnetMath
{
    /// <summary>
    /// λ·attrᵀ [D,K] as the initializer <c>match_weights</c>: the prompt-attribute weights of the SD-shaped UNets,
    /// match_k = Σ_d a_d·λ·attr_kd.
    /// </summary>
    /// <param name="g">The graph.</param>
    /// <param name="itemCount">K.</param>
    /// <param name="matchStrength">λ.</param>
    public static string MatchWeights(OnnxGraphBuilder g, int itemCount, float matchStrength)
    {
        const int d = AttributeSpace.Dimensions;
        var attrT = new float[d * itemCount];
        foreach (var item in ShapesDataset.Items)
        {
            float[] itemAttr = AttributeSpace.ItemAttributes(item);
            for (int j = 0; j < d; j++)
                attrT[j * itemCount + item.Index] = matchStrength * itemAttr[j];
        }
        return g.Initializer("match_weights", attrT, d, itemCount);
    }

    /// <summary>
    /// The noise level at a (possibly fractional) <c>timestep</c>: σ is linear between integer steps, as sigma-based
    /// samplers (Euler, Heun, LMS…) interpolate it; t is clamped to [0, T−1].
    /// <code>
    /// σ(t) = lerp(σ[⌊t⌋], σ[⌈t⌉]),   ᾱ = 1/(1 + σ²),   1 − ᾱ = σ²/(1 + σ²),   √(1 − ᾱ) = σ·√ᾱ
    /// </code>
    /// The values come [T'] (T' = B or 1) and broadcastable as [T',1] and [T',1,1,1].
    /// </summary>
    /// <param name="g">The graph.</param>
    /// <param name="sigmaTable">The initializer σ_t, t = 0 … T−1.</param>
    /// <param name="steps">T.</param>
    /// <param name="one">The scalar 1.</param>
    public static NoiseLevel Noise(OnnxGraphBuilder g, string sigmaTable, int steps, string one)
    {
        string t = g.Node("Clip", ["timestep", g.Scalar("t_min", 0f), g.Scalar("t_max", steps - 1)], "t");
        string lo = g.Node("Floor", [t]);
        string hi = g.Node("Ceil", [t]);
        string frac = g.Sub(t, lo, "t_frac");
        string sLo = g.Node("Gather", [sigmaTable, g.Node("Cast", [lo], null, Attr("to", (long)DataType.Int64))]);
        string sHi = g.Node("Gather", [sigmaTable, g.Node("Cast", [hi], null, Attr("to", (long)DataType.Int64))]);
        string sigma = g.Add(sLo, g.Mul(frac, g.Sub(sHi, sLo)), "sigma");
        string sigma2 = g.Mul(sigma, sigma);
        string onePlus = g.Add(one, sigma2);
        string alphaBar = g.Node("Reciprocal", [onePlus], "alpha_bar");
        string sqrtAlphaBar = g.Node("Sqrt", [alphaBar], "sqrt_alpha_bar");
        string oneMinusAlphaBar = g.Div(sigma2, onePlus, "one_minus_alpha_bar");
        string sqrtOneMinus = g.Mul(sigma, sqrtAlphaBar, "sqrt_one_minus_alpha_bar"); // σ/√(1+σ²)
        string axis1 = g.Ints("axes.1", 1);
        string axes123 = g.Ints("axes.123", 1, 2, 3);
        string sqrtAb2 = g.Node("Unsqueeze", [sqrtAlphaBar, axis1]);
        string ab2 = g.Node("Unsqueeze", [alphaBar, axis1]);
        string oneMinus2 = g.Node("Unsqueeze", [oneMinusAlphaBar, axis1]);
        string sqrtAb4 = g.Node("Unsqueeze", [sqrtAlphaBar, axes123]);
        string sqrtOneMinus4 = g.Node("Unsqueeze", [sqrtOneMinus, axes123]);
        return new NoiseLevel(axis1, sqrtAb2, ab2, oneMinus2, sqrtAb4, sqrtOneMinus4);
    }

    /// <summary>
    /// The item latents z at the sample's spatial size (Resize, linear, half-pixel: the identity at the native size),
    /// flattened to Z [K,N], and ‖z_k‖² [K].
    /// </summary>
    /// <param name="g">The graph.</param>
    /// <param name="z">The initializer of the item latents [K,4,s,s].</param>
    /// <param name="itemCount">K.</param>
    /// <param name="latentShape">The shape [B,4,h,w] of the noisy latents.</param>
    public static ItemLatents Items(OnnxGraphBuilder g, string z, int itemCount, string latentShape)
    {
        string hw = g.Node("Slice", [latentShape, g.Ints("hw.starts", 2), g.Ints("hw.ends", 4)]);
        string sizes = g.Node("Concat", [g.Ints("kc", itemCount, 4), hw], "resize_sizes", Attr("axis", 0L));
        string zr = g.Node("Resize", [z, string.Empty, string.Empty, sizes], "item_latents_resized",
            Attr("mode", "linear"), Attr("coordinate_transformation_mode", "half_pixel"));
        string zf = g.Node("Flatten", [zr], "items_flat", Attr("axis", 1L));                  // [K,N]
        string zz = g.Node("ReduceSumSquare", [zf], "items_norm2", Attr("axes", [1L]), Attr("keepdims", 0L)); // [K]
        return new ItemLatents(hw, zf, zz);
    }

    /// <summary>
    /// The log-likelihood of the noisy latents x under each item, up to a constant in x:
    /// (√ᾱ x·z_k − ½ ᾱ ‖z_k‖²)/(1 − ᾱ) [B,K] (from −‖x − √ᾱ z_k‖² / (2(1 − ᾱ))).
    /// </summary>
    /// <param name="g">The graph.</param>
    /// <param name="x">The noisy latents [B,4,h,w].</param>
    /// <param name="items">The items at the sample's size.</param>
    /// <param name="noise">The noise level.</param>
    public static string LogLikelihood(OnnxGraphBuilder g, string x, ItemLatents items, NoiseLevel noise)
    {
        string xf = g.Node("Flatten", [x], "sample_flat", Attr("axis", 1L));                   // [B,N]
        string xz = g.Node("Gemm", [xf, items.Flat], "dot", Attr("transB", 1L));              // [B,K]
        string quad = g.Mul(g.Mul(noise.AlphaBar2, g.Scalar("half", 0.5f)), items.Norm2);     // [T',K]
        return g.Div(g.Sub(g.Mul(noise.SqrtAlphaBar2, xz), quad), noise.OneMinusAlphaBar2, "log_likelihood");
    }

    /// <summary>a = Σ_seq <c>encoder_hidden_states</c> [B,D], the prompt's attributes.</summary>
    /// <param name="g">The graph.</param>
    /// <param name="noise">The noise level (for its axis constant).</param>
    public static string PromptAttributes(OnnxGraphBuilder g, NoiseLevel noise) =>
        g.Node("ReduceSum", ["encoder_hidden_states", noise.Axis1], "prompt_attributes", Attr("keepdims", 0L));

    /// <summary>
    /// hw/s², the prior's scale. The image evidence (the likelihood's Gemm) grows with the number of latent pixels while the
    /// prompt's is fixed: scaling the prior by hw/s² keeps their balance, and so sampling, the same at every output size.
    /// </summary>
    /// <param name="g">The graph.</param>
    /// <param name="items">The items at the sample's size (for its h, w).</param>
    /// <param name="latentSize">s.</param>
    public static string PriorScale(OnnxGraphBuilder g, ItemLatents items, int latentSize)
    {
        string pixels = g.Node("Cast", [g.Node("ReduceProd", [items.Hw], null, Attr("keepdims", 0L))], null, Attr("to", (long)DataType.Float));
        return g.Div(pixels, g.Scalar("native_pixels", latentSize * latentSize), "prior_scale");
    }

    /// <summary>
    /// The posterior mean and the noise prediction, the graph's output <c>out_sample</c> [B,4,h,w]:
    /// <code>
    /// x̂₀ = Σ_k softmax(logit)_k z_k,   out = ε̂ = (x − √ᾱ x̂₀) / √(1 − ᾱ)
    /// </code>
    /// </summary>
    /// <param name="g">The graph.</param>
    /// <param name="logits">The posterior's logits [B,K].</param>
    /// <param name="x">The noisy latents [B,4,h,w].</param>
    /// <param name="latentShape">The shape of <paramref name="x"/>, or null to add a Shape node for it after the posterior mean.</param>
    /// <param name="items">The items at the sample's size.</param>
    /// <param name="noise">The noise level.</param>
    public static void NoisePrediction(OnnxGraphBuilder g, string logits, string x, string? latentShape, ItemLatents items, NoiseLevel noise)
    {
        string weights = g.Node("Softmax", [logits], "posterior", Attr("axis", 1L));
        string x0Flat = g.Node("MatMul", [weights, items.Flat]);
        string x0 = g.Node("Reshape", [x0Flat, latentShape ?? g.Node("Shape", [x])], "x0");
        g.Div(g.Sub(x, g.Mul(noise.SqrtAlphaBar4, x0)), noise.SqrtOneMinusAlphaBar4, "out_sample");
        g.Output("out_sample", DataType.Float, "batch", 4L, "height", "width");
    }
}

/// <summary>The noise level's values in the shapes the UNet math broadcasts them to.</summary>
/// <param name="Axis1">The int64 constant [1] (axes of Unsqueeze and ReduceSum).</param>
/// <param name="SqrtAlphaBar2">√ᾱ [T',1].</param>
/// <param name="AlphaBar2">ᾱ [T',1].</param>
/// <param name="OneMinusAlphaBar2">1 − ᾱ [T',1].</param>
/// <param name="SqrtAlphaBar4">√ᾱ [T',1,1,1].</param>
/// <param name="SqrtOneMinusAlphaBar4">√(1 − ᾱ) [T',1,1,1].</param>
internal readonly record struct NoiseLevel(
    string Axis1, string SqrtAlphaBar2, string AlphaBar2, string OneMinusAlphaBar2, string SqrtAlphaBar4, string SqrtOneMinusAlphaBar4);

/// <summary>The item latents at the sample's spatial size.</summary>
/// <param name="Hw">The sample's (h, w), int64 [2].</param>
/// <param name="Flat">Z [K,N].</param>
/// <param name="Norm2">‖z_k‖² [K].</param>
internal readonly record struct ItemLatents(string Hw, string Flat, string Norm2);
