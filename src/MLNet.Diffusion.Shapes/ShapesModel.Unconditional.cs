using System;
using System.Globalization;
using System.IO;
using MLNet.Diffusion.Shapes.Building;

namespace MLNet.Diffusion.Shapes;

/// <summary>The unconditional Shapes folders (<see cref="ShapesVariant.Unconditional"/>, <see cref="ShapesVariant.Vq"/>).</summary>
public static partial class ShapesModel
{
    /// <summary>The number of codebook vectors of the <see cref="ShapesVariant.Vq"/> autoencoder (<c>num_vq_embeddings</c>).</summary>
    public const int CodebookSize = 256;

    /// <summary>The one class of images the unconditional folders generate: every circle (6 colours × 5 backgrounds × 3 positions).</summary>
    public const ShapeKind UnconditionalShape = ShapeKind.Circle;

    /// <summary>
    /// Writes an LDMPipeline folder (diffusers' unconditional latent diffusion, the layout of CompVis/ldm-celebahq-256's ONNX
    /// export): model_index.json, scheduler/, unet/ (UNet2DModel contract, over the items of <see cref="UnconditionalShape"/>)
    /// and the autoencoder — the PCA VAE in vae_encoder/ + vae_decoder/, or for <see cref="ShapesVariant.Vq"/> the VQ
    /// autoencoder in vqvae_encoder/, vqvae_decoder/ (quantising, with codebook.npy) and vqvae_decoder_no_quantize/.
    /// The UNet and the scaling factor are the same in both, so the same seed gives the same latents and only the decoders differ.
    /// </summary>
    private static void WriteUnconditional(string directory, ShapesModelOptions options, PatchPca pca, byte[][] images, float[] latents, int latentSize,
        float[] sigmas, float scalingFactor, string schedulerJson)
    {
        if (options.Variant.HasFlag(ShapesVariant.SuperResolution))
        {
            WriteSuperResolution(directory, options, images, pca, latents, latentSize, sigmas, scalingFactor, schedulerJson);
            return;
        }
        bool vq = options.Variant.HasFlag(ShapesVariant.Vq);
        int perItem = 4 * latentSize * latentSize;

        // The class's items, in dataset order (the dataset is ordered by shape first, but select by value, not by range).
        var items = ShapesDataset.Items;
        int count = 0;
        foreach (var item in items)
            count += item.Shape == UnconditionalShape ? 1 : 0;
        var classLatents = new float[count * perItem];
        int k = 0;
        foreach (var item in items)
        {
            if (item.Shape == UnconditionalShape)
                Array.Copy(latents, item.Index * perItem, classLatents, k++ * perItem, perItem);
        }

        WriteFolderFiles(directory, UnconditionalModelIndexJson(vq), UnconditionalReadme(options, scalingFactor, count, vq), schedulerJson);
        WriteModel(directory, "unet", ShapesUnconditionalGraphs.Unet(classLatents, count, latentSize, sigmas));
        JsonFiles.Write(Path.Combine(directory, "unet", "config.json"), w =>
        {
            w.WriteStartObject();
            w.WriteString("_class_name", "UNet2DModel");
            w.WriteNumber("in_channels", 4);
            w.WriteNumber("out_channels", 4);
            w.WriteNumber("sample_size", latentSize);
            w.WriteEndObject();
        });
        if (!vq)
        {
            WriteVae(directory, ShapesGraphs.VaeEncoder(pca), ShapesGraphs.VaeDecoder(pca), options.ImageSize, scalingFactor);
            return;
        }

        WriteVq(directory, options, pca, latents, latentSize, scalingFactor, scalingFactor);
    }

    /// <summary>
    /// The VQ autoencoder's folders: vqvae_encoder/, vqvae_decoder/ (quantising, with codebook.npy), vqvae_decoder_no_quantize/,
    /// each with the VQModel config stating <paramref name="configScalingFactor"/>.
    /// </summary>
    private static void WriteVq(string directory, ShapesModelOptions options, PatchPca pca, float[] latents, int latentSize, float scalingFactor, float configScalingFactor)
    {
        // The codebook is learned from every item's patches (the autoencoder is the dataset's, as the PCA is), not a class's.
        float[] codebook = PatchCodebook.Learn(latents, ShapesDataset.ItemCount, 4, latentSize, scalingFactor, CodebookSize);
        WriteModel(directory, "vqvae_encoder", ShapesGraphs.VaeEncoder(pca));
        WriteModel(directory, "vqvae_decoder", ShapesUnconditionalGraphs.VqDecoder(pca, codebook, CodebookSize));
        WriteModel(directory, "vqvae_decoder_no_quantize", ShapesGraphs.VaeDecoder(pca));
        PatchCodebook.WriteNpy(Path.Combine(directory, "vqvae_decoder", "codebook.npy"), codebook, CodebookSize, 4);
        foreach (string component in new[] { "vqvae_encoder", "vqvae_decoder", "vqvae_decoder_no_quantize" })
            JsonFiles.Write(Path.Combine(directory, component, "config.json"), w => VqConfig(w, options.ImageSize, configScalingFactor));
    }

    /// <summary>
    /// Writes an LDMSuperResolutionPipeline folder (the layout of CompVis/ldm-super-resolution-4x-openimages): model_index.json,
    /// scheduler/, unet/ (7 input channels, over all items, in unscaled latents) and the VQ autoencoder. The pipeline decodes
    /// the latents with no scaling factor, so the VQ config states 1.
    /// </summary>
    private static void WriteSuperResolution(string directory, ShapesModelOptions options, byte[][] images, PatchPca pca, float[] latents, int latentSize,
        float[] sigmas, float scalingFactor, string schedulerJson)
    {
        int count = ShapesDataset.ItemCount, plane = latentSize * latentSize;
        var unscaled = new float[latents.Length];
        for (int i = 0; i < latents.Length; i++)
            unscaled[i] = (float)(latents[i] / (double)scalingFactor);
        // d_k: the mean of each 8×8 block of the item's drawing, in [−1, 1] (v / 127.5 − 1 as the VAE's input), [K,3,s,s].
        var lowResolution = new float[count * 3 * plane];
        int size = options.ImageSize, patch = PatchPca.Patch;
        for (int k = 0; k < count; k++)
        {
            for (int c = 0; c < 3; c++)
            {
                for (int by = 0; by < latentSize; by++)
                {
                    for (int bx = 0; bx < latentSize; bx++)
                    {
                        long sum = 0;
                        for (int i = 0; i < patch; i++)
                            for (int j = 0; j < patch; j++)
                                sum += images[k][((by * patch + i) * size + bx * patch + j) * 3 + c];
                        lowResolution[((k * 3 + c) * latentSize + by) * latentSize + bx] = (float)(sum / (127.5 * patch * patch) - 1.0);
                    }
                }
            }
        }
        WriteFolderFiles(directory, SuperResolutionModelIndexJson(), SuperResolutionReadme(options, latentSize), schedulerJson);
        WriteModel(directory, "unet", ShapesUnconditionalGraphs.SuperResolutionUnet(unscaled, lowResolution, count, latentSize, sigmas));
        JsonFiles.Write(Path.Combine(directory, "unet", "config.json"), w =>
        {
            w.WriteStartObject();
            w.WriteString("_class_name", "UNet2DModel");
            w.WriteNumber("in_channels", 7);
            w.WriteNumber("out_channels", 4);
            w.WriteNumber("sample_size", latentSize);
            w.WriteEndObject();
        });
        WriteVq(directory, options, pca, latents, latentSize, scalingFactor, 1f);
    }

    private static string SuperResolutionModelIndexJson() => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("_class_name", "LDMSuperResolutionPipeline");
        w.WriteString("_diffusers_version", "0.35.2");
        w.WriteString("_name_or_path", "MLNet.Diffusion.Shapes.SuperResolution");
        Pair(w, "scheduler", "diffusers", "DDIMScheduler");
        Pair(w, "unet", "diffusers", "OnnxRuntimeModel");
        Pair(w, "vqvae_decoder", "diffusers", "OnnxRuntimeModel");
        Pair(w, "vqvae_encoder", "diffusers", "OnnxRuntimeModel");
        w.WriteEndObject();
    });

    private static string SuperResolutionReadme(ShapesModelOptions options, int latentSize) => string.Create(CultureInfo.InvariantCulture, $"""
        # Shapes, super-resolution — a miniature LDMSuperResolutionPipeline model built in code

        Written by MLNet.Diffusion.Shapes {BuilderVersion} (`ShapesModel.Build`, variant {options.Variant}). diffusers' LDMSuperResolutionPipeline
        layout: give it a Shapes picture of {latentSize}x{latentSize} pixels, get it back at {options.ImageSize}x{options.ImageSize} (the autoencoder's factor 8).

        - unet: UNet2DModel contract, 7 input channels (`torch.cat([latents, image], dim=1)`: 4 latent channels, then the low-resolution
          image in [-1, 1]): the exact posterior-mean denoiser over all {ShapesDataset.ItemCount} items given both, the image seen as the item's
          8x8 block means plus noise of level {ShapesUnconditionalGraphs.LowResolutionSigma.ToString("R", CultureInfo.InvariantCulture)}. Latents are unscaled: the pipeline decodes them as they are.
        - vqvae_encoder / vqvae_decoder / vqvae_decoder_no_quantize: the Shapes VQ autoencoder ({CodebookSize} codebook vectors,
          vqvae_decoder/codebook.npy); its config states scaling_factor 1.
        - scheduler: DDIM with Stable Diffusion 1.5 settings.

        """);


    /// <summary>diffusers' <c>VQModel</c> config for the Shapes VQ autoencoder.</summary>
    private static void VqConfig(System.Text.Json.Utf8JsonWriter w, int size, float scalingFactor)
    {
        w.WriteStartObject();
        w.WriteString("_class_name", "VQModel");
        w.WriteString("_shapes_note", "Linear autoencoder: PCA of 8x8x3 pixel patches to 4 channels (spatial factor 8); the codebook is k-means over the latents of all dataset patches.");
        // Four blocks: diffusers derives the spatial factor 2^(len − 1) = 8 from this list.
        w.WriteStartArray("block_out_channels");
        for (int i = 0; i < 4; i++)
            w.WriteNumberValue(PatchPca.Length);
        w.WriteEndArray();
        w.WriteNumber("in_channels", 3);
        w.WriteNumber("latent_channels", 4);
        w.WriteBoolean("lookup_from_codebook", false);
        w.WriteString("norm_type", "group");
        w.WriteNumber("num_vq_embeddings", CodebookSize);
        w.WriteNumber("out_channels", 3);
        w.WriteNumber("sample_size", size);
        w.WritePropertyName("scaling_factor");
        w.WriteRawValue(scalingFactor.ToString("R", CultureInfo.InvariantCulture));
        w.WriteNull("vq_embed_dim");
        w.WriteEndObject();
    }

    private static string UnconditionalModelIndexJson(bool vq) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("_class_name", "LDMPipeline");
        w.WriteString("_diffusers_version", "0.35.2");
        w.WriteString("_name_or_path", vq ? "MLNet.Diffusion.Shapes.Vq" : "MLNet.Diffusion.Shapes.Unconditional");
        Pair(w, "scheduler", "diffusers", "DDIMScheduler");
        Pair(w, "unet", "diffusers", "OnnxRuntimeModel");
        string prefix = vq ? "vqvae" : "vae";
        Pair(w, prefix + "_decoder", "diffusers", "OnnxRuntimeModel");
        Pair(w, prefix + "_encoder", "diffusers", "OnnxRuntimeModel");
        w.WriteEndObject();
    });

    private static string UnconditionalReadme(ShapesModelOptions options, float scalingFactor, int count, bool vq)
    {
        string scaling = scalingFactor.ToString("R", CultureInfo.InvariantCulture);
        string autoencoder = vq
            ? string.Create(CultureInfo.InvariantCulture, $"""
                - vqvae_encoder: PCA of 8x8x3 patches to 4 channels, no quantisation (VQModel.encode).
                - vqvae_decoder: nearest of {CodebookSize} codebook vectors per latent pixel (ArgMin in the graph), then the inverse PCA
                  (VQModel.decode with force_not_quantize=False); the codebook, k-means over the latents of all dataset patches
                  (k-means++ seeding, fixed seed), is also in vqvae_decoder/codebook.npy (float32 [{CodebookSize}, 4]).
                - vqvae_decoder_no_quantize: the inverse PCA alone (force_not_quantize=True).
                - scaling_factor {scaling} (vqvae_decoder/config.json), the same as the KL-shaped folders'.
                """)
            : $"- vae_encoder / vae_decoder: PCA of 8x8x3 patches to 4 channels; scaling_factor {scaling}.";
        return string.Create(CultureInfo.InvariantCulture, $"""
            # Shapes, unconditional{(vq ? " with a VQ autoencoder" : string.Empty)} — a miniature LDMPipeline model built in code

            Written by MLNet.Diffusion.Shapes {BuilderVersion} (`ShapesModel.Build`, variant {options.Variant}). diffusers' LDMPipeline layout
            (unconditional latent diffusion, as CompVis/ldm-celebahq-256): no tokenizer, no text encoder, no prompt.

            - Data: one class, the {count} {ShapesDataset.Word(UnconditionalShape)}s of {options.ImageSize}x{options.ImageSize} pixels (6 colours × 5 backgrounds × 3 positions).
            - unet: UNet2DModel contract (`sample`, `timestep` → `out_sample`): the exact posterior-mean denoiser over the class's item latents.
            {autoencoder}
            - scheduler: DDIM with Stable Diffusion 1.5 settings.

            Run DenoiseLatents without an embeddings column, then DecodeLatents, with 20 steps.

            """);
    }
}
