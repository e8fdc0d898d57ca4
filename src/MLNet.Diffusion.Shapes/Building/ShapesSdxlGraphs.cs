using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphBuilder;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// The SDXL-shaped Shapes graphs (<see cref="ShapesVariant.Sdxl"/>, <see cref="ShapesVariant.SdxlRefiner"/>). The prompt's
/// attributes are split over SDXL's conditioning paths so that every wiring mistake changes the picture:
/// <code>
/// text_encoder    penultimate hidden_states.1 [B,77,32]: shape and position (AttributeSpace layout)
/// text_encoder_2  penultimate hidden_states.1 [B,77,40]: colour at 0…5, shape at 6…8, position at 9…11;
///                 dim 39 marks each &lt;|endoftext|&gt; token (once with tokenizer_2's "!" padding)
///                 text_embeds [B,24]: the background colour at 0…4
/// other layers    hidden_states.0 and hidden_states.2 (= last_hidden_state) hold the same attributes rotated within
///                 their blocks (a circle reads as a square…), so a pipeline using the wrong layer draws the wrong picture
/// unet            base: encoder_hidden_states [B,S,72] = text_encoder's 32 then text_encoder_2's 40 features, reading
///                 shape and position from the first and colour from the second; refiner: [B,S,40] from text_encoder_2
///                 alone; both read the background from text_embeds, and the prompt counts only when time_ids are
///                 those of an uncropped picture at the sample's own size (and, refiner, aesthetic score 6)
/// </code>
/// With these the match term equals the SD Shapes UNet's exactly, so a correctly wired SDXL pipeline draws the same
/// pictures as the SD model for the same prompt and seed.
/// </summary>
internal static class ShapesSdxlGraphs
{
    /// <summary>Width of text_encoder's states (as the SD Shapes text encoder).</summary>
    public const int Hidden1 = AttributeSpace.Dimensions;

    /// <summary>Width of text_encoder_2's states.</summary>
    public const int Hidden2 = 40;

    /// <summary>Width of text_encoder_2's pooled <c>text_embeds</c>.</summary>
    public const int Pooled = 24;

    /// <summary>Encoder layers: outputs hidden_states.0 … hidden_states.Layers; the penultimate is Layers − 1.</summary>
    public const int Layers = 2;

    /// <summary>text_encoder_2 dimensions.</summary>
    public const int Color2 = 0, Shape2 = 6, Position2 = 9, EndMarker2 = 39;

    /// <summary>text_embeds dimension of the first background colour.</summary>
    public const int PooledBackground = 0;

    /// <summary>
    /// text_encoder: <c>input_ids</c> [B,77] → <c>last_hidden_state</c> [B,77,32], <c>pooler_output</c> [B,32],
    /// <c>hidden_states.0 … 2</c> [B,77,32] (optimum's CLIPTextModel export with output_hidden_states). With H the SD
    /// Shapes text encoder's attribute states, hidden_states.k = H·M_k where M_1 keeps shape and position and M_0, M_2
    /// also rotate them within their blocks; last_hidden_state = hidden_states.2; pooler_output = Σ_seq last_hidden_state.
    /// </summary>
    public static byte[] TextEncoder(ShapesTokenizerFiles vocab, bool int64Ids)
    {
        var g = new OnnxGraphBuilder("shapes_sdxl_text_encoder");
        string h = ShapesGraphs.AttributeStates(g, vocab, int64Ids, "attribute_states", "mask.one");
        for (int k = 0; k <= Layers; k++)
        {
            var m = new float[AttributeSpace.Dimensions * Hidden1];
            int shift = LayerShift(k);
            for (int s = 0; s < 3; s++)
                m[(AttributeSpace.ShapeOffset + s) * Hidden1 + AttributeSpace.ShapeOffset + (s + shift) % 3] = 1f;
            for (int p = 0; p < 3; p++)
                m[(AttributeSpace.PositionOffset + p) * Hidden1 + AttributeSpace.PositionOffset + (p + shift) % 3] = 1f;
            g.Node("MatMul", [h, g.Initializer($"layer{k}.weight", m, AttributeSpace.Dimensions, Hidden1)], $"hidden_states.{k}");
        }
        g.Node("Identity", [$"hidden_states.{Layers}"], "last_hidden_state");
        g.Node("ReduceSum", ["last_hidden_state", g.Ints("pool.axes", 1)], "pooler_output", Attr("keepdims", 0L));
        g.Output("last_hidden_state", DataType.Float, "batch", (long)ShapesTokenizerFiles.MaxLength, (long)Hidden1);
        g.Output("pooler_output", DataType.Float, "batch", (long)Hidden1);
        for (int k = 0; k <= Layers; k++)
            g.Output($"hidden_states.{k}", DataType.Float, "batch", (long)ShapesTokenizerFiles.MaxLength, (long)Hidden1);
        return g.ToModelBytes("Shapes SDXL text encoder 1: shape and position in the penultimate hidden states; other layers rotated.");
    }

    /// <summary>
    /// text_encoder_2: <c>input_ids</c> [B,77] → <c>text_embeds</c> [B,24], <c>last_hidden_state</c> [B,40],
    /// <c>hidden_states.0 … 2</c> [B,77,40] (optimum's CLIPTextModelWithProjection export). hidden_states.k = H·B_k + E,
    /// B_1 placing colour, shape and position at their text_encoder_2 dimensions (B_0, B_2 rotated), E marking
    /// &lt;|endoftext|&gt; tokens at dimension 39; text_embeds = (Σ_seq H)·C, C taking the background colour.
    /// </summary>
    public static byte[] TextEncoder2(ShapesTokenizerFiles vocab, bool int64Ids)
    {
        var g = new OnnxGraphBuilder("shapes_sdxl_text_encoder_2");
        string h = ShapesGraphs.AttributeStates(g, vocab, int64Ids, "attribute_states", "mask.one");
        var marker = new float[Hidden2];
        marker[EndMarker2] = 1f;
        string ids64 = g.Node("Cast", ["input_ids"], "ids_int64", Attr("to", (long)DataType.Int64));
        string isEnd = g.Node("Cast", [g.Node("Equal", [ids64, g.Initializer("end_id", [(long)vocab.EndId])])], "is_end", Attr("to", (long)DataType.Float));
        string ends = g.Mul(g.Node("Unsqueeze", [isEnd, g.Ints("marker.axes", 2)]), g.Initializer("marker", marker, Hidden2), "end_marker"); // [B,77,40]
        for (int k = 0; k <= Layers; k++)
        {
            var m = new float[AttributeSpace.Dimensions * Hidden2];
            int shift = LayerShift(k);
            for (int c = 0; c < 6; c++)
                m[(AttributeSpace.ColorOffset + c) * Hidden2 + Color2 + (c + shift) % 6] = 1f;
            for (int s = 0; s < 3; s++)
                m[(AttributeSpace.ShapeOffset + s) * Hidden2 + Shape2 + (s + shift) % 3] = 1f;
            for (int p = 0; p < 3; p++)
                m[(AttributeSpace.PositionOffset + p) * Hidden2 + Position2 + (p + shift) % 3] = 1f;
            string states = g.Node("MatMul", [h, g.Initializer($"layer{k}.weight", m, AttributeSpace.Dimensions, Hidden2)]);
            g.Add(states, ends, $"hidden_states.{k}");
        }
        g.Node("Identity", [$"hidden_states.{Layers}"], "last_hidden_state");
        var projection = new float[AttributeSpace.Dimensions * Pooled];
        for (int b = 0; b < 5; b++)
            projection[(AttributeSpace.BackgroundOffset + b) * Pooled + PooledBackground + b] = 1f;
        string sum = g.Node("ReduceSum", [h, g.Ints("pool.axes", 1)], "attribute_sum", Attr("keepdims", 0L));
        g.Node("MatMul", [sum, g.Initializer("text_projection", projection, AttributeSpace.Dimensions, Pooled)], "text_embeds");
        g.Output("text_embeds", DataType.Float, "batch", (long)Pooled);
        g.Output("last_hidden_state", DataType.Float, "batch", (long)ShapesTokenizerFiles.MaxLength, (long)Hidden2);
        for (int k = 0; k <= Layers; k++)
            g.Output($"hidden_states.{k}", DataType.Float, "batch", (long)ShapesTokenizerFiles.MaxLength, (long)Hidden2);
        return g.ToModelBytes("Shapes SDXL text encoder 2: colour (and shape, position) in the penultimate hidden states, background in text_embeds.");
    }

    /// <summary>
    /// unet: the SD Shapes UNet's exact posterior-mean denoiser (<see cref="ShapesGraphs.Unet"/>) with SDXL's inputs:
    /// <code>
    /// match_k = gate · λ·(hw/s²)·(Σ_seq encoder_hidden_states · W_seq + text_embeds · W_pool)_k
    /// gate    = 1 when every |time_ids − expected| &lt; ½, else 0 (the prompt is ignored: an unconditional sample)
    /// expected = (8h, 8w, 0, 0, 8h, 8w)  base: original size, crop top-left, target size = the sample's size in pixels
    ///          = (8h, 8w, 0, 0, 6)       refiner: original size, crop top-left, aesthetic score 6
    /// </code>
    /// W_seq reads shape and position from text_encoder's features and colour from text_encoder_2's (refiner: all from
    /// text_encoder_2), W_pool the background from text_embeds, each ±λ as <see cref="AttributeSpace.ItemAttributes"/>.
    /// </summary>
    /// <param name="latents">Scaled item latents [K,4,s,s].</param>
    /// <param name="itemCount">K.</param>
    /// <param name="latentSize">s.</param>
    /// <param name="sigmas">σ_t for t = 0 … T−1 from the scheduler's ᾱ table.</param>
    /// <param name="matchStrength">λ.</param>
    /// <param name="refiner">Whether to build the refiner-style UNet (text_encoder_2 states only, 5 time ids).</param>
    /// <param name="controlBlocks">
    /// The ControlNet variant's residual layout (<see cref="ShapesControlNetGraphs.ControlTerm"/>: residual inputs and a
    /// control term in the logits), or 0 for none.
    /// </param>
    public static byte[] Unet(float[] latents, int itemCount, int latentSize, float[] sigmas, float matchStrength, bool refiner, int controlBlocks = 0)
    {
        int hidden = refiner ? Hidden2 : Hidden1 + Hidden2;
        int slot2 = refiner ? 0 : Hidden1;
        int timeIds = refiner ? 5 : 6;
        var g = new OnnxGraphBuilder(refiner ? "shapes_sdxl_refiner_unet" : "shapes_sdxl_unet");
        g.Input("sample", DataType.Float, "batch", 4L, "height", "width");
        g.Input("timestep", DataType.Float, "batch");
        g.Input("encoder_hidden_states", DataType.Float, "batch", "sequence", (long)hidden);
        g.Input("text_embeds", DataType.Float, "batch", (long)Pooled);
        g.Input("time_ids", DataType.Float, "batch", (long)timeIds);

        string z = g.Initializer("item_latents", latents, itemCount, 4, latentSize, latentSize);
        string sigmaTable = g.Initializer("sigmas", sigmas, sigmas.Length);
        var seqWeights = new float[hidden * itemCount];
        var pooledWeights = new float[Pooled * itemCount];
        foreach (var item in ShapesDataset.Items)
        {
            float[] attr = AttributeSpace.ItemAttributes(item);
            void Seq(int row, int attribute) => seqWeights[row * itemCount + item.Index] = matchStrength * attr[attribute];
            for (int s = 0; s < 3; s++)
                Seq(refiner ? Shape2 + s : AttributeSpace.ShapeOffset + s, AttributeSpace.ShapeOffset + s);
            for (int p = 0; p < 3; p++)
                Seq(refiner ? Position2 + p : AttributeSpace.PositionOffset + p, AttributeSpace.PositionOffset + p);
            for (int c = 0; c < 6; c++)
                Seq(slot2 + Color2 + c, AttributeSpace.ColorOffset + c);
            for (int b = 0; b < 5; b++)
                pooledWeights[(PooledBackground + b) * itemCount + item.Index] = matchStrength * attr[AttributeSpace.BackgroundOffset + b];
        }
        string seqAttr = g.Initializer("match_weights", seqWeights, hidden, itemCount);
        string pooledAttr = g.Initializer("pooled_match_weights", pooledWeights, Pooled, itemCount);
        string one = g.Scalar("one", 1f);

        // 1. Noise level at a (possibly fractional) timestep, as ShapesGraphs.Unet.
        var noise = UnetMath.Noise(g, sigmaTable, sigmas.Length, one);

        // 2. Item latents at the sample's spatial size, flattened to [K,N].
        var items = UnetMath.Items(g, z, itemCount, g.Node("Shape", ["sample"]));

        // 3. Logits: (√ᾱ x·z_k − ½ ᾱ ‖z_k‖²)/(1 − ᾱ) + gate·match_k.
        string fit = UnetMath.LogLikelihood(g, "sample", items, noise);
        string a = UnetMath.PromptAttributes(g, noise); // [B,D]
        string prompt = g.Add(g.Node("MatMul", [a, seqAttr]), g.Node("MatMul", ["text_embeds", pooledAttr]), "prompt_match"); // [B,K]
        string sizeScale = UnetMath.PriorScale(g, items, latentSize);

        // The micro-conditioning gate: the expected time ids for this sample, compared value by value.
        string sizePixels = g.Node("Cast", [g.Mul(items.Hw, g.Ints("vae_factor", PatchPca.Patch))], "sample_pixels", Attr("to", (long)DataType.Float)); // (8h, 8w)
        string tail = refiner ? g.Initializer("aesthetic_score", [6f], 1) : sizePixels;
        string expected = g.Node("Concat", [sizePixels, g.Initializer("crop", [0f, 0f], 2), tail], "expected_time_ids", Attr("axis", 0L));
        string off = g.Node("Abs", [g.Sub("time_ids", expected)]);
        string ok = g.Node("Cast", [g.Node("Less", [off, g.Scalar("tolerance", 0.5f)])], null, Attr("to", (long)DataType.Float));
        string gate = g.Node("ReduceMin", [ok], "time_ids_gate", Attr("axes", [1L]), Attr("keepdims", 1L)); // [B,1]
        string match = g.Mul(g.Mul(prompt, sizeScale), gate, "match");
        if (controlBlocks > 0)
            match = g.Add(match, ShapesControlNetGraphs.ControlTerm(g, items, itemCount, latentSize, controlBlocks), "match_and_control");
        string logits = g.Add(fit, match, "logits");

        // 4. Posterior mean x̂₀ and the noise prediction.
        UnetMath.NoisePrediction(g, logits, "sample", null, items, noise);
        return g.ToModelBytes(refiner
            ? "Shapes SDXL refiner UNet: exact posterior-mean denoiser conditioned on text_encoder_2 states, text_embeds and 5 time ids."
            : "Shapes SDXL UNet: exact posterior-mean denoiser conditioned on both text encoders' states, text_embeds and 6 time ids.");
    }

    /// <summary>The rotation within each attribute block of layer k: none for the penultimate layer.</summary>
    private static int LayerShift(int k) => (k - (Layers - 1) + 3) % 3;
}
