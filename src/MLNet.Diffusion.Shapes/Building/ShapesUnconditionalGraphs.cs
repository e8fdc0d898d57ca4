using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphBuilder;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// The graphs of the unconditional Shapes folders (<see cref="ShapesVariant.Unconditional"/>, <see cref="ShapesVariant.Vq"/>):
/// a <c>UNet2DModel</c>-shaped denoiser with no text input and the quantising VQ decoder, with the math in the comments.
/// </summary>
internal static class ShapesUnconditionalGraphs
{
    /// <summary>
    /// unet: <c>sample</c> [B,4,h,w], <c>timestep</c> float32 [B] → <c>out_sample</c> [B,4,h,w], the contract of diffusers'
    /// <c>UNet2DModel</c> export (LDMPipeline: <c>unet(latents, t).sample</c>). The exact posterior-mean denoiser over the
    /// class's item latents z_k (already × scaling_factor) under a uniform prior — <see cref="ShapesGraphs.Unet"/> without
    /// the prompt's match term:
    /// <code>
    /// logit_k = (√ᾱ x·z_k − ½ᾱ‖z_k‖²) / (1 − ᾱ)
    /// x̂₀      = Σ_k softmax(logit)_k z_k,   out = ε̂ = (x − √ᾱ x̂₀) / √(1 − ᾱ)
    /// </code>
    /// </summary>
    /// <param name="latents">Scaled item latents of the class [K,4,s,s].</param>
    /// <param name="itemCount">K.</param>
    /// <param name="latentSize">s.</param>
    /// <param name="sigmas">σ_t for t = 0 … T−1 from the scheduler's ᾱ table.</param>
    public static byte[] Unet(float[] latents, int itemCount, int latentSize, float[] sigmas)
    {
        var g = new OnnxGraphBuilder("shapes_unconditional_unet");
        g.Input("sample", DataType.Float, "batch", 4L, "height", "width");
        g.Input("timestep", DataType.Float, "batch");
        string z = g.Initializer("item_latents", latents, itemCount, 4, latentSize, latentSize);
        string sigmaTable = g.Initializer("sigmas", sigmas, sigmas.Length);
        string one = g.Scalar("one", 1f);
        var noise = UnetMath.Noise(g, sigmaTable, sigmas.Length, one);
        var items = UnetMath.Items(g, z, itemCount, g.Node("Shape", ["sample"]));
        string logits = UnetMath.LogLikelihood(g, "sample", items, noise);
        UnetMath.NoisePrediction(g, logits, "sample", null, items, noise);
        return g.ToModelBytes("Shapes unconditional UNet (UNet2DModel contract): exact posterior-mean denoiser over one class of Shapes item latents (epsilon prediction).");
    }

    /// <summary>
    /// vqvae_decoder: <c>latent_sample</c> [B,4,h,w] (unscaled) → <c>sample</c> [B,3,8h,8w], diffusers'
    /// <c>VQModel.decode(h, force_not_quantize=False)</c>: each latent pixel's 4-vector z snaps to its nearest codebook
    /// vector (<c>VectorQuantizer.forward</c>: <c>argmin(cdist(z, E))</c>; ArgMin keeps the first of equal distances, as
    /// <c>torch.argmin</c>), then the PCA decoder (<see cref="ShapesGraphs.VaeDecoder"/>) draws the patch:
    /// <code>
    /// d_k   = Σ_c (z_c − E_kc)²          [B,K,h,w]   (Unsqueeze z to [B,1,4,h,w], E to [1,K,4,1,1], ReduceSumSquare over c)
    /// k*    = argmin_k d_k                [B,h,w]
    /// z_q   = E[k*] transposed to [B,4,h,w]; sample = PCA decoder(z_q)
    /// </code>
    /// The quantised value is E[k*] itself, not diffusers' straight-through z + (E[k*] − z) (equal up to the last bit).
    /// </summary>
    /// <param name="pca">The fitted patch PCA.</param>
    /// <param name="codebook">E [K,4] (unscaled latent units).</param>
    /// <param name="codebookSize">K.</param>
    public static byte[] VqDecoder(PatchPca pca, float[] codebook, int codebookSize)
    {
        var g = new OnnxGraphBuilder("shapes_vqvae_decoder");
        g.Input("latent_sample", DataType.Float, "batch", 4L, "latent_height", "latent_width");
        string e = g.Initializer("quantize.embedding.weight", codebook, codebookSize, PatchPca.Components);
        string e5 = g.Node("Reshape", [e, g.Ints("codebook.shape5", 1, codebookSize, PatchPca.Components, 1, 1)], "codebook5");
        string z5 = g.Node("Unsqueeze", ["latent_sample", g.Ints("axes.1", 1)], "latent5");          // [B,1,4,h,w]
        string diff = g.Sub(z5, e5, "codebook_difference");                                          // [B,K,4,h,w]
        string distance = g.Node("ReduceSumSquare", [diff], "codebook_distance", Attr("axes", [2L]), Attr("keepdims", 0L)); // [B,K,h,w]
        string chosen = g.Node("ArgMin", [distance], "codebook_indices", Attr("axis", 1L), Attr("keepdims", 0L)); // [B,h,w]
        string gathered = g.Node("Gather", [e, chosen], "quantized_hwc");                              // [B,h,w,4]
        string quantized = g.Node("Transpose", [gathered], "quantized", Attr("perm", [0L, 3L, 1L, 2L])); // [B,4,h,w]
        ShapesGraphs.PcaDecoder(g, pca, quantized);
        g.Output("sample", DataType.Float, "batch", 3L, "height", "width");
        return g.ToModelBytes("Shapes VQ decoder: nearest codebook vector per latent pixel (ArgMin), then the inverse PCA of 8x8x3 patches (input unscaled latents: divide by scaling_factor first).");
    }

    /// <summary>
    /// τ, the noise level (in [−1, 1] pixel units) at which the super-resolution UNet observes the low-resolution image:
    /// small against the colour differences between items, large enough that a picture drawn at the low resolution (whose
    /// anti-aliased edges differ a little from the average of the full-size drawing's 8×8 blocks) still selects its item.
    /// </summary>
    public const float LowResolutionSigma = 0.1f;

    /// <summary>
    /// unet of the super-resolution folder (<see cref="ShapesVariant.SuperResolution"/>): <c>sample</c> [B,7,h,w] — the
    /// latents x (4 channels, unscaled: LDMSuperResolutionPipeline decodes them as they are) then the low-resolution
    /// image y [3,h,w] in [−1, 1] (<c>torch.cat([latents, image], dim=1)</c>) —, <c>timestep</c> [B] → <c>out_sample</c>
    /// [B,4,h,w]. The exact posterior-mean denoiser given x and y, y seen as the item's low-resolution picture d_k (the mean
    /// of each 8×8 block of its drawing) plus noise of level τ:
    /// <code>
    /// logit_k = (√ᾱ x·z_k − ½ᾱ‖z_k‖²) / (1 − ᾱ) + (y·d_k − ½‖d_k‖²) / τ²
    /// x̂₀      = Σ_k softmax(logit)_k z_k,   out = ε̂ = (x − √ᾱ x̂₀) / √(1 − ᾱ)
    /// </code>
    /// y is read as given: DDIM (the pipeline's scheduler) leaves the concatenation unscaled.
    /// </summary>
    /// <param name="latents">Unscaled item latents [K,4,s,s].</param>
    /// <param name="lowResolution">The items' low-resolution pictures d [K,3,s,s] in [−1, 1].</param>
    /// <param name="itemCount">K.</param>
    /// <param name="latentSize">s.</param>
    /// <param name="sigmas">σ_t for t = 0 … T−1 from the scheduler's ᾱ table.</param>
    public static byte[] SuperResolutionUnet(float[] latents, float[] lowResolution, int itemCount, int latentSize, float[] sigmas)
    {
        var g = new OnnxGraphBuilder("shapes_super_resolution_unet");
        g.Input("sample", DataType.Float, "batch", 7L, "height", "width");
        g.Input("timestep", DataType.Float, "batch");
        string z = g.Initializer("item_latents", latents, itemCount, 4, latentSize, latentSize);
        string d = g.Initializer("item_low_resolution", lowResolution, itemCount, 3, latentSize, latentSize);
        string sigmaTable = g.Initializer("sigmas", sigmas, sigmas.Length);
        string one = g.Scalar("one", 1f);

        // 0. The two parts of the input (channels 0–3 and 4–6).
        string channelAxis = g.Ints("channel_axis", 1);
        string x = g.Node("Slice", ["sample", g.Ints("x.starts", 0), g.Ints("x.ends", 4), channelAxis], "noisy_latents");
        string y = g.Node("Slice", ["sample", g.Ints("y.starts", 4), g.Ints("y.ends", 7), channelAxis], "low_resolution_image");

        // 1.–2. Noise level and the item latents at the sample's size, as the other UNets.
        var noise = UnetMath.Noise(g, sigmaTable, sigmas.Length, one);
        string xShape = g.Node("Shape", [x], "latent_shape");
        var items = UnetMath.Items(g, z, itemCount, xShape);
        string fit = UnetMath.LogLikelihood(g, x, items, noise);

        // 3. The low-resolution evidence: d at the sample's size, (y·d_k − ½‖d_k‖²)/τ².
        string dSizes = g.Node("Concat", [g.Ints("kc.low", itemCount, 3), items.Hw], "low_resolution_sizes", Attr("axis", 0L));
        string dr = g.Node("Resize", [d, string.Empty, string.Empty, dSizes], "item_low_resolution_resized",
            Attr("mode", "linear"), Attr("coordinate_transformation_mode", "half_pixel"));
        string df = g.Node("Flatten", [dr], "low_resolution_flat", Attr("axis", 1L));                 // [K,M]
        string dd = g.Node("ReduceSumSquare", [df], "low_resolution_norm2", Attr("axes", [1L]), Attr("keepdims", 0L)); // [K]
        string yf = g.Node("Flatten", [y], "image_flat", Attr("axis", 1L));                          // [B,M]
        string yd = g.Node("Gemm", [yf, df], "image_dot", Attr("transB", 1L));                      // [B,K]
        string evidence = g.Mul(g.Sub(yd, g.Mul(dd, g.Scalar("half.low", 0.5f))),
            g.Scalar("inv_tau2", 1f / (LowResolutionSigma * LowResolutionSigma)), "low_resolution_evidence");
        string logits = g.Add(fit, evidence, "logits");

        // 4. Posterior mean and the noise prediction.
        UnetMath.NoisePrediction(g, logits, x, xShape, items, noise);
        return g.ToModelBytes("Shapes super-resolution UNet (UNet2DModel contract, LDMSuperResolutionPipeline): exact posterior-mean denoiser given the noisy latents and the low-resolution image (7 input channels; epsilon prediction).");
    }
}
