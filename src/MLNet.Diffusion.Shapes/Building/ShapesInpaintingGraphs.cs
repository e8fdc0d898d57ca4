using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphBuilder;
using DataType = MLNet.Diffusion.Shapes.Onnx.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>The UNet of the Shapes inpainting variant (<see cref="ShapesVariant.Inpainting"/>), with the math in the comments.</summary>
internal static class ShapesInpaintingGraphs
{
    /// <summary>
    /// τ, the noise level (in scaled latent units, where the item latents have unit standard deviation) at which the
    /// UNet observes the known region through the masked-image latents. Much smaller than the spread of the data, so the
    /// posterior keeps only items that agree with the known region; large enough that the small differences between an
    /// item's latents resized in the graph and the latents of the same picture drawn at that size do not outweigh the
    /// prompt.
    /// </summary>
    public const float KnownRegionSigma = 0.5f;

    /// <summary>
    /// unet with 9 input channels, as Stable Diffusion's inpainting UNet (diffusers StableDiffusionInpaintPipeline:
    /// <c>sample = concat(scaled latents x [4], mask m [1], masked-image latents y [4])</c> on the channel axis, m = 1
    /// where the picture is repainted, y = VAE(image·(m &lt; 0.5))·scaling_factor). The exact posterior-mean denoiser
    /// given both the noisy latents and the known region, which it sees as y = z + τ·ε' wherever m = 0: the logits of
    /// <see cref="ShapesGraphs.Unet"/> gain a likelihood term for the known region,
    /// <code>
    /// x, m, y = sample[:, 0:4], sample[:, 4:5], sample[:, 5:9]
    /// logit_k = (√ᾱ x·z_k − ½ᾱ‖z_k‖²) / (1 − ᾱ) + match_k + known_k
    /// known_k = −‖(1 − m)⊙(z_k − y)‖² / (2τ²)  =  (2 w·(y⊙z_k) − w·z_k²) / (2τ²) + const(y, m),   w = (1 − m)²
    /// x̂₀      = Σ_k softmax(logit)_k z_k,   out = ε̂ = (x − √ᾱ x̂₀) / √(1 − ᾱ)       [B,4,h,w]
    /// </code>
    /// With m = 1 everywhere the known term is 0 and the output equals the text-to-image UNet's. The Shapes VAE encodes
    /// each 8×8 patch on its own, so a patch that lies outside the mask has exactly the latents of the unmasked picture.
    /// </summary>
    /// <param name="latents">Scaled item latents [K,4,s,s].</param>
    /// <param name="itemCount">K.</param>
    /// <param name="latentSize">s.</param>
    /// <param name="sigmas">σ_t for t = 0 … T−1 from the scheduler's ᾱ table.</param>
    /// <param name="matchStrength">λ.</param>
    public static byte[] Unet(float[] latents, int itemCount, int latentSize, float[] sigmas, float matchStrength)
    {
        const int d = AttributeSpace.Dimensions;
        var g = new OnnxGraphBuilder("shapes_inpainting_unet");
        g.Input("sample", DataType.Float, "batch", 9L, "height", "width");
        g.Input("timestep", DataType.Float, "batch");
        g.Input("encoder_hidden_states", DataType.Float, "batch", "sequence", (long)d);

        string z = g.Initializer("item_latents", latents, itemCount, 4, latentSize, latentSize);
        string sigmaTable = g.Initializer("sigmas", sigmas, sigmas.Length);
        var attrT = new float[d * itemCount]; // λ·attrᵀ [D,K]
        foreach (var item in ShapesDataset.Items)
        {
            float[] itemAttr = AttributeSpace.ItemAttributes(item);
            for (int j = 0; j < d; j++)
                attrT[j * itemCount + item.Index] = matchStrength * itemAttr[j];
        }
        string attr = g.Initializer("match_weights", attrT, d, itemCount);
        string one = g.Scalar("one", 1f);

        // 0. The three parts of the input (channels 0–3, 4, 5–8).
        string channelAxis = g.Ints("channel_axis", 1);
        string x = g.Node("Slice", ["sample", g.Ints("x.starts", 0), g.Ints("x.ends", 4), channelAxis], "noisy_latents");
        string m = g.Node("Slice", ["sample", g.Ints("m.starts", 4), g.Ints("m.ends", 5), channelAxis], "mask");
        string y = g.Node("Slice", ["sample", g.Ints("y.starts", 5), g.Ints("y.ends", 9), channelAxis], "masked_image_latents");

        // 1. Noise level at a (possibly fractional) timestep, as in the text-to-image UNet.
        string t = g.Node("Clip", ["timestep", g.Scalar("t_min", 0f), g.Scalar("t_max", sigmas.Length - 1)], "t");
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
        string sqrtOneMinus = g.Mul(sigma, sqrtAlphaBar, "sqrt_one_minus_alpha_bar");
        string axis1 = g.Ints("axes.1", 1);
        string axes123 = g.Ints("axes.123", 1, 2, 3);
        string sqrtAb2 = g.Node("Unsqueeze", [sqrtAlphaBar, axis1]);
        string ab2 = g.Node("Unsqueeze", [alphaBar, axis1]);
        string oneMinus2 = g.Node("Unsqueeze", [oneMinusAlphaBar, axis1]);
        string sqrtAb4 = g.Node("Unsqueeze", [sqrtAlphaBar, axes123]);
        string sqrtOneMinus4 = g.Node("Unsqueeze", [sqrtOneMinus, axes123]);

        // 2. Item latents at the sample's spatial size, flattened to [K,N], and their squares.
        string xShape = g.Node("Shape", [x], "latent_shape");
        string hw = g.Node("Slice", [xShape, g.Ints("hw.starts", 2), g.Ints("hw.ends", 4)]);
        string sizes = g.Node("Concat", [g.Ints("kc", itemCount, 4), hw], "resize_sizes", Attr("axis", 0L));
        string zr = g.Node("Resize", [z, string.Empty, string.Empty, sizes], "item_latents_resized",
            Attr("mode", "linear"), Attr("coordinate_transformation_mode", "half_pixel"));
        string zf = g.Node("Flatten", [zr], "items_flat", Attr("axis", 1L));                  // [K,N]
        string zz = g.Node("ReduceSumSquare", [zf], "items_norm2", Attr("axes", [1L]), Attr("keepdims", 0L)); // [K]
        string zSquared = g.Mul(zf, zf, "items_squared");                                      // [K,N]

        // 3. Logits of the noisy latents and the prompt (as the text-to-image UNet).
        string xf = g.Node("Flatten", [x], "sample_flat", Attr("axis", 1L));                   // [B,N]
        string xz = g.Node("Gemm", [xf, zf], "dot", Attr("transB", 1L));                      // [B,K]
        string quad = g.Mul(g.Mul(ab2, g.Scalar("half", 0.5f)), zz);
        string fit = g.Div(g.Sub(g.Mul(sqrtAb2, xz), quad), oneMinus2, "log_likelihood");
        string a = g.Node("ReduceSum", ["encoder_hidden_states", axis1], "prompt_attributes", Attr("keepdims", 0L));
        string pixels = g.Node("Cast", [g.Node("ReduceProd", [hw], null, Attr("keepdims", 0L))], null, Attr("to", (long)DataType.Float));
        string sizeScale = g.Div(pixels, g.Scalar("native_pixels", latentSize * latentSize), "prior_scale");
        string match = g.Mul(g.Node("MatMul", [a, attr]), sizeScale, "match");                // [B,K]

        // 4. The known region: w = (1 − m)² broadcast over the 4 channels; known_k = (2 (w⊙y)·z_k − w·z_k²) / (2τ²).
        string keep = g.Sub(one, m, "keep");                                                   // [B,1,h,w]
        string w = g.Node("Expand", [g.Mul(keep, keep), xShape], "known_weight");             // [B,4,h,w]
        string wf = g.Node("Flatten", [w], "known_weight_flat", Attr("axis", 1L));            // [B,N]
        string yf = g.Node("Flatten", [y], "masked_image_flat", Attr("axis", 1L));            // [B,N]
        string cross = g.Node("Gemm", [g.Mul(wf, yf), zf], "known_cross", Attr("transB", 1L), Attr("alpha", 2f)); // [B,K]
        string norm = g.Node("Gemm", [wf, zSquared], "known_norm", Attr("transB", 1L));       // [B,K]
        string known = g.Mul(g.Sub(cross, norm), g.Scalar("inv_two_tau2", 1f / (2f * KnownRegionSigma * KnownRegionSigma)), "known_region");
        string logits = g.Add(g.Add(fit, match), known, "logits");

        // 5. Posterior mean x̂₀ and the noise prediction.
        string weights = g.Node("Softmax", [logits], "posterior", Attr("axis", 1L));
        string x0 = g.Node("Reshape", [g.Node("MatMul", [weights, zf]), xShape], "x0");
        g.Div(g.Sub(x, g.Mul(sqrtAb4, x0)), sqrtOneMinus4, "out_sample");
        g.Output("out_sample", DataType.Float, "batch", 4L, "height", "width");
        return g.ToModelBytes("Shapes inpainting UNet: exact posterior-mean denoiser given the noisy latents and the known region (9 input channels; epsilon prediction).");
    }
}
