using System;
using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphBuilder;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// The Shapes ControlNet variant (<see cref="ShapesVariant.ControlNet"/>): the two graphs of ControlNet's ONNX form in
/// diffusers' naming (<c>controlnet/</c> a ControlNet, <c>unet/</c> a UNet with residual inputs, as the shared
/// tiny-sd-controlnet export), built so that the control image — a white silhouette on black — decides where and which
/// shape is drawn while the prompt decides the colours.
/// <code>
/// controlnet   m      = mean over RGB of controlnet_cond [B,3,H,W] (values in [0,1]), averaged over 8×8 pixel patches → [B,1,h,w]
///              r_j    = conditioning_scale · concat(m_dj, 1 − m_dj) [B,2,h/d_j,w/d_j],  m_d = m averaged over d×d latent pixels
///              for the residual layout of a diffusers UNet with block_out_channels (2, 2, 2, 2) and layers_per_block 2
///              (SD 1.x's 12 down residuals + mid; SDXL's (2, 2, 2): 9 + mid), SDXL's also gated by time_ids as its UNet
/// unet         the Shapes UNet with one more prior term in its logits,
///              control_k = γ/n · Σ_j d_j² · (r_j[0] − r_j[1]) · c_j(shape_k, position_k)
///              c_j = the item's shape coverage at the residual's resolution (latent-pixel averages of ShapesDataset.Coverage)
/// </code>
/// With the ControlNet's residuals, r[0] − r[1] = 2m − 1 and control_k = −γ/n·Σ_j d_j²(‖m_j − c_j‖² − ‖m_j‖²) for a
/// binary coverage: the items whose shape covers the silhouette best win, whatever their colours, so the prompt still picks
/// the colours (and, where it names them, shape or position only against the silhouette's γ). The term is linear in the
/// residuals, so zero residuals (conditioning scale 0, no ControlNet, outside the guidance window) give exactly the plain
/// UNet's logits, and several ControlNets' residuals sum as diffusers' MultiControlNetModel sums them.
/// </summary>
internal static class ShapesControlNetGraphs
{
    /// <summary>
    /// γ, nats of log-prior per latent pixel of silhouette agreement. A square and a circle at the same place differ on
    /// about 20 of the 1024 latent pixels at the native 32×32 latent; γ = 10 makes that ≈ 100 nats after the average
    /// over the residuals' resolutions — more than a prompt's shape word (±λ = 40 each way), so the silhouette decides.
    /// </summary>
    public const float ControlStrength = 10f;

    /// <summary>Channels of every residual: the silhouette and its complement.</summary>
    public const int Channels = 2;

    /// <summary>The VAE's spatial factor: the control image is at 8× the latent size.</summary>
    private const int VaeFactor = PatchPca.Patch;

    /// <summary>SD 1.x's UNet layout (diffusers' block_out_channels of 4 blocks, layers_per_block 2) with <see cref="Channels"/>-wide blocks.</summary>
    public static readonly int[] SdBlocks = [Channels, Channels, Channels, Channels];

    /// <summary>SDXL's UNet layout (3 blocks, layers_per_block 2).</summary>
    public static readonly int[] SdxlBlocks = [Channels, Channels, Channels];

    /// <summary>diffusers' layers_per_block of SD 1.x and SDXL.</summary>
    public const int LayersPerBlock = 2;

    /// <summary>
    /// The residuals' spatial downscales for a diffusers UNet2DConditionModel of <paramref name="blocks"/> down blocks:
    /// conv_in at 1, then per block i one per resnet at 2^i and one for its downsampler at 2^(i+1) (every block but the
    /// last has one); the mid residual last, at 2^(blocks − 1).
    /// </summary>
    public static int[] Downscales(int blocks)
    {
        var d = new int[1 + blocks * (LayersPerBlock + 1)];
        d[0] = 1;
        int k = 1;
        for (int i = 0; i < blocks; i++)
        {
            for (int j = 0; j < LayersPerBlock; j++)
                d[k++] = 1 << i;
            if (i < blocks - 1)
                d[k++] = 1 << (i + 1);
        }
        d[k] = 1 << (blocks - 1); // mid
        return d;
    }

    /// <summary>The residual names in order: <c>down_block_{j}_additional_residual</c>, then <c>mid_block_additional_residual</c>.</summary>
    public static string ResidualName(int j, int count) => j == count - 1
        ? "mid_block_additional_residual"
        : "down_block_" + j.ToString(System.Globalization.CultureInfo.InvariantCulture) + "_additional_residual";

    /// <summary>
    /// controlnet: <c>sample</c>, <c>timestep</c>, <c>encoder_hidden_states</c>, <c>controlnet_cond</c>, float64
    /// <c>conditioning_scale</c> [1] (OnnxStack's converter's inputs, as the shared tiny export) and, SDXL, <c>text_embeds</c>
    /// and <c>time_ids</c> (diffusers' added_cond_kwargs) → one residual per UNet skip connection and the mid one. The
    /// silhouette pyramid is all it computes from the image; the latents, timestep and text are the contract's inputs
    /// it does not need. SDXL's residuals are multiplied by the UNet's micro-conditioning gate (1 when the time ids are
    /// those of an uncropped picture at the sample's size), so a pipeline that feeds wrong time ids gets no control.
    /// </summary>
    /// <param name="blocks">The UNet layout's block count (<see cref="SdBlocks"/> or <see cref="SdxlBlocks"/>).</param>
    /// <param name="hidden">The width of <c>encoder_hidden_states</c>.</param>
    /// <param name="sdxl">Whether to take SDXL's added conditions.</param>
    public static byte[] ControlNet(int blocks, int hidden, bool sdxl)
    {
        var g = new OnnxGraphBuilder(sdxl ? "shapes_sdxl_controlnet" : "shapes_controlnet");
        g.Input("sample", DataType.Float, "batch", 4L, "height", "width");
        g.Input("timestep", DataType.Float, "batch");
        g.Input("encoder_hidden_states", DataType.Float, "batch", "sequence", (long)hidden);
        g.Input("controlnet_cond", DataType.Float, "batch", 3L, "cond_height", "cond_width");
        g.Input("conditioning_scale", DataType.Double, 1L);
        if (sdxl)
        {
            g.Input("text_embeds", DataType.Float, "batch", (long)ShapesSdxlGraphs.Pooled);
            g.Input("time_ids", DataType.Float, "batch", 6L);
        }

        // 1. The silhouette at the latent resolution: the mean of R, G, B, averaged over each 8×8 patch (the VAE's patch).
        string gray = g.Node("ReduceMean", ["controlnet_cond"], "silhouette_pixels", Attr("axes", [1L]), Attr("keepdims", 1L));
        string m = g.Node("AveragePool", [gray], "silhouette", Attr("kernel_shape", [(long)VaeFactor, VaeFactor]), Attr("strides", [(long)VaeFactor, VaeFactor]));
        string one = g.Scalar("one", 1f);

        // 2. The scale (float64 [1], cast as OnnxStack's graphs do), times SDXL's gate per row.
        string scale = g.Node("Cast", ["conditioning_scale"], "scale", Attr("to", (long)DataType.Float));
        if (sdxl)
        {
            string gate = TimeIdsGate(g);                                      // [B,1]
            scale = g.Mul(g.Node("Unsqueeze", [gate, g.Ints("gate.axes", 2, 3)]), scale, "gated_scale"); // [B,1,1,1]
        }

        // 3. Per residual: the silhouette and its complement at the residual's resolution, times the scale.
        int[] downscales = Downscales(blocks);
        for (int j = 0; j < downscales.Length; j++)
        {
            int d = downscales[j];
            string name = ResidualName(j, downscales.Length);
            string md = d == 1 ? m : g.Node("AveragePool", [m], null, Attr("kernel_shape", [(long)d, d]), Attr("strides", [(long)d, d]));
            string both = g.Node("Concat", [md, g.Sub(one, md)], null, Attr("axis", 1L));
            g.Mul(both, scale, name);
            g.Output(name, DataType.Float, "batch", (long)Channels, name + "_height", name + "_width");
        }
        return g.ToModelBytes(sdxl
            ? "Shapes SDXL ControlNet: the control image's silhouette at every residual's resolution (silhouette, complement) × conditioning_scale × the time-ids gate."
            : "Shapes ControlNet: the control image's silhouette at every residual's resolution (silhouette, complement) × conditioning_scale.");
    }

    /// <summary>
    /// Declares the UNet's residual inputs and adds the control term [B,K] of the logits (see the class remarks).
    /// </summary>
    /// <param name="g">The UNet graph.</param>
    /// <param name="items">The item latents at the sample's size (for its h, w).</param>
    /// <param name="itemCount">K.</param>
    /// <param name="latentSize">s, the native latent side.</param>
    /// <param name="blocks">The UNet layout's block count.</param>
    public static string ControlTerm(OnnxGraphBuilder g, ItemLatents items, int itemCount, int latentSize, int blocks)
    {
        int[] downscales = Downscales(blocks);
        foreach (string name in ResidualNames(downscales.Length))
            g.Input(name, DataType.Float, "batch", (long)Channels, name + "_height", name + "_width");

        // The 9 (shape, position) coverages at the native latent size, resized to the sample's (identity at the native size).
        const int combos = 9;
        var coverage = new float[combos * latentSize * latentSize];
        foreach (ShapeKind shape in Enum.GetValues<ShapeKind>())
        {
            foreach (ShapePosition position in Enum.GetValues<ShapePosition>())
                LatentCoverage(shape, position, latentSize).CopyTo(coverage, Combo(shape, position) * latentSize * latentSize);
        }
        var map = new float[combos * itemCount];
        foreach (var item in ShapesDataset.Items)
            map[Combo(item.Shape, item.Position) * itemCount + item.Index] = 1f;
        string cov = g.Initializer("control.coverage", coverage, combos, 1, latentSize, latentSize);
        string sizes = g.Node("Concat", [g.Ints("control.combo_dims", combos, 1), items.Hw], "control.coverage_sizes", Attr("axis", 0L));
        string covR = g.Node("Resize", [cov, string.Empty, string.Empty, sizes], "control.coverage_resized",
            Attr("mode", "linear"), Attr("coordinate_transformation_mode", "half_pixel"));
        string channel = g.Ints("control.channel_axis", 1);
        string c0 = g.Ints("control.c0", 0), c1 = g.Ints("control.c1", 1), c2 = g.Ints("control.c2", 2);

        string? sum = null;
        for (int j = 0; j < downscales.Length; j++)
        {
            int d = downscales[j];
            string residual = ResidualName(j, downscales.Length);
            string covD = d == 1 ? covR : g.Node("AveragePool", [covR], null, Attr("kernel_shape", [(long)d, d]), Attr("strides", [(long)d, d]));
            string covFlat = g.Node("Flatten", [covD], null, Attr("axis", 1L));                                       // [9,N_j]
            string inside = g.Node("Slice", [residual, c0, c1, channel]);
            string outside = g.Node("Slice", [residual, c1, c2, channel]);
            string diff = g.Node("Flatten", [g.Sub(inside, outside)], null, Attr("axis", 1L));                       // [B,N_j]
            float weight = ControlStrength * d * d / downscales.Length;
            string evidence = g.Node("Gemm", [diff, covFlat], null, Attr("transB", 1L), Attr("alpha", weight));      // [B,9]
            sum = sum is null ? evidence : g.Add(sum, evidence);
        }
        return g.Node("MatMul", [sum!, g.Initializer("control.item_map", map, combos, itemCount)], "control_match"); // [B,K]
    }

    /// <summary>The residual names of a layout of <paramref name="count"/> residuals.</summary>
    public static string[] ResidualNames(int count)
    {
        var names = new string[count];
        for (int j = 0; j < count; j++)
            names[j] = ResidualName(j, count);
        return names;
    }

    /// <summary>
    /// SDXL's micro-conditioning gate [B,1] as <see cref="ShapesSdxlGraphs.Unet"/> computes it: 1 when every
    /// |time_ids − (8h, 8w, 0, 0, 8h, 8w)| &lt; ½ for the sample's h×w, else 0.
    /// </summary>
    private static string TimeIdsGate(OnnxGraphBuilder g)
    {
        const string p = "gate";
        string hw = g.Node("Slice", [g.Node("Shape", ["sample"]), g.Ints(p + ".hw.starts", 2), g.Ints(p + ".hw.ends", 4)]);
        string pixels = g.Node("Cast", [g.Mul(hw, g.Ints(p + ".vae_factor", VaeFactor))], null, Attr("to", (long)DataType.Float));
        string expected = g.Node("Concat", [pixels, g.Initializer(p + ".crop", [0f, 0f], 2), pixels], p + ".expected_time_ids", Attr("axis", 0L));
        string off = g.Node("Abs", [g.Sub("time_ids", expected)]);
        string ok = g.Node("Cast", [g.Node("Less", [off, g.Scalar(p + ".tolerance", 0.5f)])], null, Attr("to", (long)DataType.Float));
        return g.Node("ReduceMin", [ok], p + ".time_ids_gate", Attr("axes", [1L]), Attr("keepdims", 1L));
    }

    private static int Combo(ShapeKind shape, ShapePosition position) => (int)shape * 3 + (int)position;

    /// <summary>A shape's coverage in [0,1] averaged over each 8×8 pixel patch: [s, s] for a latent side s.</summary>
    internal static float[] LatentCoverage(ShapeKind shape, ShapePosition position, int latentSize)
    {
        int size = latentSize * VaeFactor;
        byte[] pixels = ShapesDataset.Coverage(shape, position, size);
        var result = new float[latentSize * latentSize];
        for (int y = 0; y < size; y++)
        {
            for (int x = 0; x < size; x++)
                result[(y / VaeFactor) * latentSize + x / VaeFactor] += pixels[y * size + x];
        }
        float norm = 1f / (16f * VaeFactor * VaeFactor); // coverage counts 0 … 16 per pixel
        for (int i = 0; i < result.Length; i++)
            result[i] *= norm;
        return result;
    }
}
