using System;
using System.Globalization;
using System.IO;
using System.Text;
using System.Text.Json;
using MLNet.Diffusion.Shapes.Building;

namespace MLNet.Diffusion.Shapes;

/// <summary>The ControlNet variant of the Shapes folder (<see cref="ShapesVariant.ControlNet"/>).</summary>
public static partial class ShapesModel
{
    /// <summary>The ControlNet's component folder in diffusers' naming.</summary>
    private const string ControlNetFolder = "controlnet";

    /// <summary>The UNet's residual layout (its block count) for the options: 0 without <see cref="ShapesVariant.ControlNet"/>.</summary>
    private static int ControlBlocks(ShapesModelOptions options, int[] blocks) =>
        options.Variant.HasFlag(ShapesVariant.ControlNet) ? blocks.Length : 0;

    /// <summary>
    /// Renders a control image for the ControlNet variant: a shape's silhouette, white on black, as 8-bit RGB (HWC, 3 bytes a
    /// pixel) — the picture a user would draw, anti-aliased as the dataset's items.
    /// </summary>
    /// <param name="shape">The shape.</param>
    /// <param name="position">Where it is.</param>
    /// <param name="size">Width and height in pixels, at least 8.</param>
    /// <returns>size × size × 3 bytes.</returns>
    public static byte[] RenderSilhouette(ShapeKind shape, ShapePosition position, int size)
    {
        byte[] coverage = ShapesDataset.Coverage(shape, position, size);
        var rgb = new byte[coverage.Length * 3];
        for (int p = 0; p < coverage.Length; p++)
        {
            // 0 … 16 → 0 … 255 with rounding.
            byte v = (byte)((coverage[p] * 255 + 8) / 16);
            rgb[3 * p] = rgb[3 * p + 1] = rgb[3 * p + 2] = v;
        }
        return rgb;
    }

    /// <summary>
    /// Writes the ControlNet part of the folder after its other files: <c>controlnet/model.onnx</c> and its diffusers
    /// <c>config.json</c> (ControlNetModel), the UNet layout keys (<c>block_out_channels</c>, <c>layers_per_block</c>) in
    /// <c>unet/config.json</c> from which the library reads the residuals' sizes, and model_index.json's ControlNet
    /// pipeline class and <c>controlnet</c> component, as diffusers' <c>save_pretrained</c> writes them.
    /// </summary>
    private static void WriteControlNet(string directory, bool sdxl)
    {
        int[] blocks = sdxl ? ShapesControlNetGraphs.SdxlBlocks : ShapesControlNetGraphs.SdBlocks;
        int hidden = sdxl ? ShapesSdxlGraphs.Hidden1 + ShapesSdxlGraphs.Hidden2 : AttributeSpace.Dimensions;
        WriteModel(directory, ControlNetFolder, ShapesControlNetGraphs.ControlNet(blocks.Length, hidden, sdxl));
        JsonFiles.Write(Path.Combine(directory, ControlNetFolder, "config.json"), w =>
        {
            w.WriteStartObject();
            w.WriteString("_class_name", "ControlNetModel");
            w.WriteString("_shapes_note", "Silhouette pyramid: each residual is (silhouette, 1 - silhouette) at its resolution, times conditioning_scale.");
            if (sdxl)
            {
                w.WriteString("addition_embed_type", "text_time");
                w.WriteNumber("projection_class_embeddings_input_dim", ShapesSdxlGraphs.Pooled);
            }
            BlockLayout(w, blocks);
            w.WriteNumber("conditioning_channels", 3);
            w.WriteString("controlnet_conditioning_channel_order", "rgb");
            w.WriteNumber("cross_attention_dim", hidden);
            w.WriteBoolean("global_pool_conditions", false);
            w.WriteNumber("in_channels", 4);
            w.WriteEndObject();
        });
        string unetConfig = Path.Combine(directory, "unet", "config.json");
        Rewrite(unetConfig, w => BlockLayout(w, blocks));
        Rewrite(Path.Combine(directory, "model_index.json"), w =>
        {
            w.WriteStartArray(ControlNetFolder);
            w.WriteStringValue("diffusers");
            w.WriteStringValue("ControlNetModel");
            w.WriteEndArray();
        }, sdxl ? "StableDiffusionXLControlNetPipeline" : "StableDiffusionControlNetPipeline");
        File.AppendAllText(Path.Combine(directory, "README.md"), string.Create(CultureInfo.InvariantCulture, $"""
            ## ControlNet

            `controlnet/` is a ControlNet in diffusers' naming (inputs sample, timestep, encoder_hidden_states, controlnet_cond in [0, 1],
            float64 conditioning_scale{(sdxl ? ", text_embeds, time_ids" : string.Empty)}); `unet/` takes its {ShapesControlNetGraphs.Downscales(blocks.Length).Length} residuals
            (down_block_0 … down_block_{ShapesControlNetGraphs.Downscales(blocks.Length).Length - 2}, mid_block) as inputs. The control image is a white silhouette on black:
            it decides where and which shape is drawn (prior strength {ShapesControlNetGraphs.ControlStrength.ToString("R", CultureInfo.InvariantCulture)} nats per latent pixel of agreement),
            the prompt decides the colours. Scale 0 — or zero residuals — is the plain Shapes UNet.

            """), new UTF8Encoding(false));
    }

    private static void BlockLayout(Utf8JsonWriter w, int[] blocks)
    {
        w.WriteStartArray("block_out_channels");
        foreach (int c in blocks)
            w.WriteNumberValue(c);
        w.WriteEndArray();
        w.WriteNumber("layers_per_block", ShapesControlNetGraphs.LayersPerBlock);
    }

    /// <summary>Rewrites a JSON object file with more properties at its end (and, when given, another <c>_class_name</c>).</summary>
    private static void Rewrite(string path, Action<Utf8JsonWriter> more, string? className = null)
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
        JsonFiles.Write(path, w =>
        {
            w.WriteStartObject();
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                if (className is not null && property.NameEquals("_class_name"))
                    w.WriteString("_class_name", className);
                else
                    property.WriteTo(w);
            }
            more(w);
            w.WriteEndObject();
        });
    }
}
