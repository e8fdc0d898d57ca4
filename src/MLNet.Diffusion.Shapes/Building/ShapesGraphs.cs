using System;
using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphBuilder;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>The four ONNX graphs of the Shapes model, each a few nodes with the math in the comments.</summary>
internal static class ShapesGraphs
{
    /// <summary>
    /// vae_encoder: <c>sample</c> [B,3,H,W] in [-1,1] → <c>latent_sample</c> [B,4,H/8,W/8] (unscaled).
    /// One Conv, kernel 8 stride 8: z = W·p − W·μ per patch.
    /// With <paramref name="latentParameters"/> the output is instead <c>latent_parameters</c> [B,8,H/8,W/8]:
    /// the same z as the mean, then a constant log-variance <see cref="LatentLogVariance"/> per channel
    /// (diffusers' DiagonalGaussianDistribution parameters, mean ‖ logvar along the channel axis).
    /// </summary>
    /// <param name="pca">The fitted patch PCA.</param>
    /// <param name="latentParameters">Whether to output the distribution's parameters instead of a latent.</param>
    public static byte[] VaeEncoder(PatchPca pca, bool latentParameters = false)
    {
        var g = new OnnxGraphBuilder("shapes_vae_encoder");
        g.Input("sample", DataType.Float, "batch", 3L, "height", "width");
        var weight = ToFloat(pca.ComponentsMatrix); // [4, 192] = [4, 3, 8, 8] in [c, i, j] order
        var bias = new float[PatchPca.Components];
        for (int c = 0; c < PatchPca.Components; c++)
        {
            double acc = 0;
            for (int i = 0; i < PatchPca.Length; i++)
                acc += pca.ComponentsMatrix[c * PatchPca.Length + i] * pca.Mean[i];
            bias[c] = (float)-acc;
        }
        string w = g.Initializer("encoder.weight", weight, PatchPca.Components, PatchPca.Channels, PatchPca.Patch, PatchPca.Patch);
        string b = g.Initializer("encoder.bias", bias, PatchPca.Components);
        string mean = g.Node("Conv", ["sample", w, b], latentParameters ? "mean" : "latent_sample",
            Attr("kernel_shape", [8L, 8L]), Attr("strides", [8L, 8L]));
        if (!latentParameters)
        {
            g.Output("latent_sample", DataType.Float, "batch", 4L, "latent_height", "latent_width");
            return g.ToModelBytes("Shapes VAE encoder: PCA of 8x8x3 patches to 4 channels (unscaled latents; multiply by scaling_factor).");
        }
        // logvar = 0·mean + c has the mean's shape, so Concat along the channel axis needs no shape arithmetic.
        string logVariance = g.Add(g.Mul(mean, g.Scalar("zero", 0f)), g.Scalar("log_variance", LatentLogVariance), "logvar");
        g.Node("Concat", [mean, logVariance], "latent_parameters", Attr("axis", 1L));
        g.Output("latent_parameters", DataType.Float, "batch", 8L, "latent_height", "latent_width");
        return g.ToModelBytes("Shapes VAE encoder: PCA of 8x8x3 patches; latent_parameters = mean (4 channels) and a constant log-variance (4 channels).");
    }

    /// <summary>The log-variance of the <c>latent_parameters</c> encoder: σ = e^(−6) ≈ 0.0025 on unscaled latents of std ≈ 5.</summary>
    public const float LatentLogVariance = -12f;

    /// <summary>
    /// vae_decoder: <c>latent_sample</c> [B,4,h,w] (unscaled) → <c>sample</c> [B,3,8h,8w].
    /// A 1×1 Conv 4 → 192 computes the patch μ + Wᵀz per latent pixel; DepthToSpace (blocksize 8, CRD) then places
    /// channel c·64 + i·8 + j at pixel (8y + i, 8x + j) of colour channel c — the same [c, i, j] order as the encoder.
    /// </summary>
    public static byte[] VaeDecoder(PatchPca pca)
    {
        var g = new OnnxGraphBuilder("shapes_vae_decoder");
        g.Input("latent_sample", DataType.Float, "batch", 4L, "latent_height", "latent_width");
        PcaDecoder(g, pca, "latent_sample");
        g.Output("sample", DataType.Float, "batch", 3L, "height", "width");
        return g.ToModelBytes("Shapes VAE decoder: inverse PCA of 8x8x3 patches (input unscaled latents: divide by scaling_factor first).");
    }

    /// <summary>The decoder's nodes (<see cref="VaeDecoder"/>) from <paramref name="input"/> [B,4,h,w] to the value <c>sample</c>.</summary>
    internal static void PcaDecoder(OnnxGraphBuilder g, PatchPca pca, string input)
    {
        var weight = new float[PatchPca.Length * PatchPca.Components]; // [192, 4, 1, 1] = Wᵀ
        for (int i = 0; i < PatchPca.Length; i++)
            for (int c = 0; c < PatchPca.Components; c++)
                weight[i * PatchPca.Components + c] = (float)pca.ComponentsMatrix[c * PatchPca.Length + i];
        string w = g.Initializer("decoder.weight", weight, PatchPca.Length, PatchPca.Components, 1, 1);
        string b = g.Initializer("decoder.bias", ToFloat(pca.Mean), PatchPca.Length);
        string patches = g.Node("Conv", [input, w, b], "patches", Attr("kernel_shape", [1L, 1L]));
        g.Node("DepthToSpace", [patches], "sample", Attr("blocksize", (long)PatchPca.Patch), Attr("mode", "CRD"));
    }

    /// <summary>
    /// text_encoder: <c>input_ids</c> int32 [B,77] → <c>last_hidden_state</c> [B,77,32], <c>pooler_output</c> [B,32].
    /// <code>
    /// obj, bg = E_obj[ids], E_bg[ids]                     token embeddings [B,77,D]
    /// m       = min(1, cumsum(on[ids]) + background[ids shifted left by one])
    ///           a token after "on", or right before "background", describes the background
    /// hidden  = obj + m·(bg − obj)                         = obj·(1 − m) + bg·m
    /// pooler  = Σ_seq hidden
    /// </code>
    /// </summary>
    /// <param name="vocab">The generated vocabulary.</param>
    /// <param name="int64Ids">Whether <c>input_ids</c> is int64 (some exports) instead of int32; Gather takes either.</param>
    public static byte[] TextEncoder(ShapesTokenizerFiles vocab, bool int64Ids = false)
    {
        const int d = AttributeSpace.Dimensions;
        var g = new OnnxGraphBuilder("shapes_text_encoder");
        AttributeStates(g, vocab, int64Ids, "last_hidden_state", "one");
        g.Node("ReduceSum", ["last_hidden_state", g.Ints("reduce.axes", 1)], "pooler_output", Attr("keepdims", 0L));
        g.Output("last_hidden_state", DataType.Float, "batch", (long)ShapesTokenizerFiles.MaxLength, (long)d);
        g.Output("pooler_output", DataType.Float, "batch", (long)d);
        return g.ToModelBytes("Shapes text encoder: attribute embeddings; pooler_output is the sum over the sequence.");
    }

    /// <summary>
    /// Declares the input <c>input_ids</c> [B,77] and adds the attribute states H [B,77,32] computed from it, as
    /// <see cref="TextEncoder"/> describes (hidden = obj + m·(bg − obj)); the SDXL-shaped encoders
    /// (<see cref="ShapesSdxlGraphs"/>) project H further.
    /// </summary>
    /// <param name="g">The graph.</param>
    /// <param name="vocab">The generated vocabulary.</param>
    /// <param name="int64Ids">Whether <c>input_ids</c> is int64 instead of int32.</param>
    /// <param name="output">The name of H.</param>
    /// <param name="oneName">
    /// The name of the scalar 1 that caps the background mask. The SD and SDXL encoders were first written with different
    /// names for it (and for H); they are kept, so that the built files, and so the Shapes cache key, stay the same.
    /// </param>
    /// <returns><paramref name="output"/>.</returns>
    internal static string AttributeStates(OnnxGraphBuilder g, ShapesTokenizerFiles vocab, bool int64Ids, string output, string oneName)
    {
        const int d = AttributeSpace.Dimensions;
        int v = vocab.Count;
        var obj = new float[v * d];
        var bg = new float[v * d];
        var on = new float[v];
        var backgroundWord = new float[v];
        foreach (string word in ShapesDataset.PromptWords)
        {
            int id = vocab.Id(word + ShapesTokenizerFiles.EndOfWord);
            if (ShapesDataset.TryParseShape(word, out var shape))
            {
                obj[id * d + AttributeSpace.Dim(shape)] = 1f;
                bg[id * d + AttributeSpace.Dim(shape)] = 1f;
            }
            if (ShapesDataset.TryParsePosition(word, out var position))
            {
                obj[id * d + AttributeSpace.Dim(position)] = 1f;
                bg[id * d + AttributeSpace.Dim(position)] = 1f;
            }
            bool isColor = ShapesDataset.TryParseColor(word, out var color);
            bool isBackground = ShapesDataset.TryParseBackground(word, out var background);
            if (isColor)
                obj[id * d + AttributeSpace.Dim(color)] = 1f;
            else if (isBackground)
                obj[id * d + AttributeSpace.Dim(background)] = 1f; // white/black/gray exist only as backgrounds
            if (isBackground)
                bg[id * d + AttributeSpace.Dim(background)] = 1f;
            if (word == "on")
                on[id] = 1f;
            if (word == "background")
                backgroundWord[id] = 1f;
        }

        g.Input("input_ids", int64Ids ? DataType.Int64 : DataType.Int32, "batch", (long)ShapesTokenizerFiles.MaxLength);
        string eObj = g.Initializer("embedding.object", obj, v, d);
        string eBg = g.Initializer("embedding.background", bg, v, d);
        string eOn = g.Initializer("indicator.on", on, v);
        string eBackground = g.Initializer("indicator.background", backgroundWord, v);

        string objH = g.Node("Gather", [eObj, "input_ids"], "object_states");   // [B,77,D]
        string bgH = g.Node("Gather", [eBg, "input_ids"], "background_states"); // [B,77,D]
        string onI = g.Node("Gather", [eOn, "input_ids"], "on_indicator");       // [B,77]
        string bwI = g.Node("Gather", [eBackground, "input_ids"], "background_indicator");
        // next[i] = bw[i + 1]: drop the first token, pad one 0 at the end of the sequence axis.
        string tail = g.Node("Slice", [bwI, g.Ints("slice.starts", 1), g.Ints("slice.ends", long.MaxValue), g.Ints("slice.axes", 1)]);
        string before = g.Node("Pad", [tail, g.Ints("pad.pads", 0, 0, 0, 1)], "before_background");
        string afterOn = g.Node("CumSum", [onI, g.Initializer("cumsum.axis", [1L])], "after_on");
        string m = g.Node("Min", [g.Add(afterOn, before), g.Scalar(oneName, 1f)], "background_mask");
        string m3 = g.Node("Unsqueeze", [m, g.Ints("unsqueeze.axes", 2)]);
        return g.Add(objH, g.Mul(m3, g.Sub(bgH, objH)), output);
    }

    /// <summary>
    /// unet: the exact posterior-mean denoiser for the item latents z_k (already × scaling_factor) under
    /// x_t = √ᾱ_t·z + √(1 − ᾱ_t)·ε with a prior ∝ exp(match_k):
    /// <code>
    /// σ(t)    = lerp(σ[⌊t⌋], σ[⌈t⌉]),  σ = √((1 − ᾱ)/ᾱ),  t clamped to [0, T−1];  ᾱ = 1/(1 + σ²), 1 − ᾱ = σ²/(1 + σ²)
    /// Z       = Resize(z, to sample's h×w) flattened [K,N]
    /// logit_k = −‖x − √ᾱ z_k‖² / (2(1 − ᾱ)) + match_k  =  (√ᾱ x·z_k − ½ᾱ‖z_k‖²) / (1 − ᾱ) + match_k + const(x)
    /// match_k = λ·(hw/s²)·Σ_d a_d attr_kd,  a = Σ_seq encoder_hidden_states
    /// x̂₀      = Σ_k softmax(logit)_k z_k,   out = ε̂ = (x − √ᾱ x̂₀) / √(1 − ᾱ)
    /// </code>
    /// </summary>
    /// <param name="latents">Scaled item latents [K,4,s,s].</param>
    /// <param name="itemCount">K.</param>
    /// <param name="latentSize">s.</param>
    /// <param name="sigmas">σ_t for t = 0 … T−1 from the scheduler's ᾱ table.</param>
    /// <param name="matchStrength">λ.</param>
    /// <param name="controlBlocks">
    /// The ControlNet variant's residual layout (<see cref="ShapesControlNetGraphs.ControlTerm"/>: residual inputs and a
    /// control term in the logits), or 0 for none.
    /// </param>
    public static byte[] Unet(float[] latents, int itemCount, int latentSize, float[] sigmas, float matchStrength, int controlBlocks = 0)
    {
        const int d = AttributeSpace.Dimensions;
        var g = new OnnxGraphBuilder("shapes_unet");
        g.Input("sample", DataType.Float, "batch", 4L, "height", "width");
        g.Input("timestep", DataType.Float, "batch");
        g.Input("encoder_hidden_states", DataType.Float, "batch", "sequence", (long)d); // dynamic sequence, as the standard export (long-prompt windows)

        string z = g.Initializer("item_latents", latents, itemCount, 4, latentSize, latentSize);
        string sigmaTable = g.Initializer("sigmas", sigmas, sigmas.Length);
        string attr = UnetMath.MatchWeights(g, itemCount, matchStrength); // λ·attrᵀ [D,K]
        string one = g.Scalar("one", 1f);

        // 1. Noise level at a (possibly fractional) timestep.
        var noise = UnetMath.Noise(g, sigmaTable, sigmas.Length, one);

        // 2. Item latents at the sample's spatial size (identity at the native size), flattened to [K,N].
        var items = UnetMath.Items(g, z, itemCount, g.Node("Shape", ["sample"]));

        // 3. Logits: (√ᾱ x·z_k − ½ ᾱ ‖z_k‖²)/(1 − ᾱ) + match_k, the prior scaled by hw/s².
        string fit = UnetMath.LogLikelihood(g, "sample", items, noise);
        string a = UnetMath.PromptAttributes(g, noise);                                        // [B,D]
        string sizeScale = UnetMath.PriorScale(g, items, latentSize);
        string match = g.Mul(g.Node("MatMul", [a, attr]), sizeScale, "match");                // [B,K]
        if (controlBlocks > 0)
            match = g.Add(match, ShapesControlNetGraphs.ControlTerm(g, items, itemCount, latentSize, controlBlocks), "match_and_control");
        string logits = g.Add(fit, match, "logits");

        // 4. Posterior mean x̂₀ and the noise prediction.
        UnetMath.NoisePrediction(g, logits, "sample", null, items, noise);
        return g.ToModelBytes(controlBlocks > 0 ? "Shapes UNet with ControlNet residual inputs: exact posterior-mean denoiser, the residuals' silhouette a prior term (epsilon prediction)." : "Shapes UNet: exact posterior-mean denoiser over the Shapes item latents (epsilon prediction).");
    }

    private static float[] ToFloat(double[] v) => Array.ConvertAll(v, x => (float)x);
}
