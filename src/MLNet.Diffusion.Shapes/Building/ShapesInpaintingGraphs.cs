using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphBuilder;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

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
        string attr = UnetMath.MatchWeights(g, itemCount, matchStrength); // λ·attrᵀ [D,K]
        string one = g.Scalar("one", 1f);

        // 0. The three parts of the input (channels 0–3, 4, 5–8).
        string channelAxis = g.Ints("channel_axis", 1);
        string x = g.Node("Slice", ["sample", g.Ints("x.starts", 0), g.Ints("x.ends", 4), channelAxis], "noisy_latents");
        string m = g.Node("Slice", ["sample", g.Ints("m.starts", 4), g.Ints("m.ends", 5), channelAxis], "mask");
        string y = g.Node("Slice", ["sample", g.Ints("y.starts", 5), g.Ints("y.ends", 9), channelAxis], "masked_image_latents");

        // 1. Noise level at a (possibly fractional) timestep, as in the text-to-image UNet.
        var noise = UnetMath.Noise(g, sigmaTable, sigmas.Length, one);

        // 2. Item latents at the sample's spatial size, flattened to [K,N], and their squares.
        string xShape = g.Node("Shape", [x], "latent_shape");
        var items = UnetMath.Items(g, z, itemCount, xShape);
        string zSquared = g.Mul(items.Flat, items.Flat, "items_squared");                      // [K,N]

        // 3. Logits of the noisy latents and the prompt (as the text-to-image UNet).
        string fit = UnetMath.LogLikelihood(g, x, items, noise);
        string a = UnetMath.PromptAttributes(g, noise);
        string sizeScale = UnetMath.PriorScale(g, items, latentSize);
        string match = g.Mul(g.Node("MatMul", [a, attr]), sizeScale, "match");                // [B,K]

        // 4. The known region: w = (1 − m)² broadcast over the 4 channels; known_k = (2 (w⊙y)·z_k − w·z_k²) / (2τ²).
        string keep = g.Sub(one, m, "keep");                                                   // [B,1,h,w]
        string w = g.Node("Expand", [g.Mul(keep, keep), xShape], "known_weight");             // [B,4,h,w]
        string wf = g.Node("Flatten", [w], "known_weight_flat", Attr("axis", 1L));            // [B,N]
        string yf = g.Node("Flatten", [y], "masked_image_flat", Attr("axis", 1L));            // [B,N]
        string cross = g.Node("Gemm", [g.Mul(wf, yf), items.Flat], "known_cross", Attr("transB", 1L), Attr("alpha", 2f)); // [B,K]
        string norm = g.Node("Gemm", [wf, zSquared], "known_norm", Attr("transB", 1L));       // [B,K]
        string known = g.Mul(g.Sub(cross, norm), g.Scalar("inv_two_tau2", 1f / (2f * KnownRegionSigma * KnownRegionSigma)), "known_region");
        string logits = g.Add(g.Add(fit, match), known, "logits");

        // 5. Posterior mean x̂₀ and the noise prediction.
        UnetMath.NoisePrediction(g, logits, x, xShape, items, noise);
        return g.ToModelBytes("Shapes inpainting UNet: exact posterior-mean denoiser given the noisy latents and the known region (9 input channels; epsilon prediction).");
    }
}
