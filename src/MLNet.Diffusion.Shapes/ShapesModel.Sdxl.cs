using System.Globalization;
using System.IO;
using MLNet.Diffusion.Shapes.Building;

namespace MLNet.Diffusion.Shapes;

/// <summary>The SDXL-shaped Shapes folder (<see cref="ShapesVariant.Sdxl"/>, <see cref="ShapesVariant.SdxlRefiner"/>).</summary>
public static partial class ShapesModel
{
    /// <summary>The VAE scaling factor of SDXL's VAE (stabilityai/stable-diffusion-xl-base-1.0, vae/config.json).</summary>
    internal const float SdxlScalingFactor = 0.13025f;

    /// <summary>
    /// Writes the SDXL-shaped folder from the built data: the layout of an optimum SDXL export (model_index.json of
    /// StableDiffusionXLPipeline, tokenizer/ + text_encoder/, tokenizer_2/ padding with "!" + text_encoder_2/, unet/ with
    /// text_embeds and time_ids, the VAE) or of the refiner (tokenizer_2/ + text_encoder_2/ only, 5 time ids). The VAE
    /// config states SDXL's scaling factor 0.13025 instead of the data's own (<paramref name="scalingFactor"/>), so the VAE
    /// graphs fold the ratio in: the encoder's latents × 0.13025 and the decoder's input ÷ 0.13025 are the same unit-variance
    /// latents the UNet's items are stored in, and the pictures are unchanged.
    /// </summary>
    private static void WriteSdxl(string directory, ShapesModelOptions options, ShapesTokenizerFiles vocab, PatchPca pca, float[] latents,
        int latentSize, float[] sigmas, float scalingFactor, string schedulerJson)
    {
        bool refiner = options.Variant.HasFlag(ShapesVariant.SdxlRefiner);
        bool int64Ids = options.Variant.HasFlag(ShapesVariant.Int64InputIds);
        var items = ShapesDataset.Items;
        WriteFolderFiles(directory, SdxlModelIndexJson(refiner), SdxlReadme(options, refiner), schedulerJson);
        if (!refiner)
        {
            vocab.Write(Path.Combine(directory, "tokenizer"));
            WriteModel(directory, "text_encoder", ShapesSdxlGraphs.TextEncoder(vocab, int64Ids));
        }
        // SDXL's tokenizer_2 pads with "!" (id 0) where tokenizer pads with <|endoftext|>.
        vocab.Write(Path.Combine(directory, "tokenizer_2"), padToken: "!");
        WriteModel(directory, "text_encoder_2", ShapesSdxlGraphs.TextEncoder2(vocab, int64Ids));
        WriteModel(directory, "unet", ShapesSdxlGraphs.Unet(latents, items.Count, latentSize, sigmas, options.MatchStrength, refiner,
            ControlBlocks(options, ShapesControlNetGraphs.SdxlBlocks)));
        // Library: z = encoder(x)·0.13025 and decoder(z / 0.13025); the items are s·z_pca (s = scalingFactor). So the encoder
        // outputs z_pca·s/0.13025 and the decoder reads its input × 0.13025/s.
        double ratio = scalingFactor / SdxlScalingFactor;
        WriteVae(directory, ShapesGraphs.VaeEncoder(pca.Scaled(ratio)), ShapesGraphs.VaeDecoder(pca.Scaled(1.0 / ratio)), options.ImageSize, SdxlScalingFactor);
        JsonFiles.Write(Path.Combine(directory, "unet", "config.json"), w =>
        {
            w.WriteStartObject();
            w.WriteString("_class_name", "UNet2DConditionModel");
            w.WriteString("addition_embed_type", "text_time");
            w.WriteNumber("cross_attention_dim", refiner ? ShapesSdxlGraphs.Hidden2 : ShapesSdxlGraphs.Hidden1 + ShapesSdxlGraphs.Hidden2);
            w.WriteNumber("in_channels", 4);
            w.WriteNumber("out_channels", 4);
            w.WriteNumber("projection_class_embeddings_input_dim", ShapesSdxlGraphs.Pooled);
            w.WriteNumber("sample_size", latentSize);
            w.WriteEndObject();
        });
        if (options.Variant.HasFlag(ShapesVariant.ControlNet))
            WriteControlNet(directory, sdxl: true);
    }

    private static string SdxlModelIndexJson(bool refiner) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("_class_name", refiner ? "StableDiffusionXLImg2ImgPipeline" : "StableDiffusionXLPipeline");
        w.WriteString("_diffusers_version", "0.35.2");
        w.WriteString("_name_or_path", refiner ? "MLNet.Diffusion.Shapes.SdxlRefiner" : "MLNet.Diffusion.Shapes.Sdxl");
        // As stabilityai's SDXL base and refiner folders: the base zeroes an empty negative prompt, the refiner encodes it.
        w.WriteBoolean("force_zeros_for_empty_prompt", !refiner);
        if (refiner)
            w.WriteBoolean("requires_aesthetics_score", true);
        Pair(w, "scheduler", "diffusers", "DDIMScheduler");
        if (refiner)
        {
            NullPair(w, "text_encoder");
            NullPair(w, "tokenizer");
        }
        else
        {
            Pair(w, "text_encoder", "diffusers", "OnnxRuntimeModel");
            Pair(w, "tokenizer", "transformers", "CLIPTokenizer");
        }
        Pair(w, "text_encoder_2", "diffusers", "OnnxRuntimeModel");
        Pair(w, "tokenizer_2", "transformers", "CLIPTokenizer");
        UnetAndVaePairs(w);
        w.WriteEndObject();
    });

    private static string SdxlReadme(ShapesModelOptions options, bool refiner) => string.Create(CultureInfo.InvariantCulture, $"""
        # Shapes, SDXL-shaped{(refiner ? " (refiner layout)" : string.Empty)} — a miniature SDXL model built in code

        Written by MLNet.Diffusion.Shapes {BuilderVersion} (`ShapesModel.Build`, variant {options.Variant}). The Shapes data and denoiser
        ({ShapesDataset.ItemCount} items of {options.ImageSize}x{options.ImageSize} pixels, match strength {options.MatchStrength.ToString("R", CultureInfo.InvariantCulture)}) in the layout of an
        optimum SDXL ONNX export. The prompt's attributes are split over SDXL's conditioning paths:

        {(refiner ? string.Empty : "- text_encoder: shape and position, in the penultimate hidden states (hidden_states.1 of 0…2).\n")}- text_encoder_2 (tokenizer_2 pads with "!"): colour{(refiner ? ", shape and position" : string.Empty)} in the penultimate hidden states;
          the background colour in text_embeds. The other layers, and last_hidden_state, hold rotated attributes.
        - unet: encoder_hidden_states of width {(refiner ? ShapesSdxlGraphs.Hidden2 : ShapesSdxlGraphs.Hidden1 + ShapesSdxlGraphs.Hidden2)}, text_embeds of width {ShapesSdxlGraphs.Pooled}, time_ids of {(refiner ? 5 : 6)} values. The prompt
          counts only for the time ids of an uncropped picture at the output size{(refiner ? " with aesthetic score 6" : string.Empty)}.
        - vae: scaling_factor {SdxlScalingFactor.ToString("R", CultureInfo.InvariantCulture)} as SDXL's, folded into the PCA graphs.
        - scheduler: DDIM with Stable Diffusion 1.5 settings (SDXL's betas are the same).

        Try "a red circle on a blue background" with 20 steps and guidance 7.5.

        """);
}
