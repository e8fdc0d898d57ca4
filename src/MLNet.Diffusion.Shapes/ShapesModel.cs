using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Security.Cryptography;
using System.Text;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes.Building;

namespace MLNet.Diffusion.Shapes;

/// <summary>
/// Builds the Shapes model: a miniature but working Stable Diffusion model folder in the standard diffusers ONNX layout
/// (<c>model_index.json</c>, <c>scheduler/</c>, <c>tokenizer/</c>, <c>text_encoder/</c>, <c>unet/</c>,
/// <c>vae_encoder/</c>, <c>vae_decoder/</c>), generated from code in seconds with no download. Prompts such as
/// "a red circle on a blue background" produce that picture: the UNet is the exact optimal denoiser for the
/// <see cref="ShapesDataset"/> items, the VAE a PCA of 8×8 patches, the text encoder attribute embeddings.
/// </summary>
/// <remarks>
/// The same options give byte-identical files on every machine. The folder is about 5 MB for the default options.
/// </remarks>
public static partial class ShapesModel
{
    /// <summary>Version of the builder's output; part of the cache key, changed whenever the files would change.</summary>
    public const string BuilderVersion = "1.0";

    /// <summary>The file <see cref="EnsureBuilt"/> writes last into a complete folder.</summary>
    public const string CompletionMarkerFileName = ".shapes-complete";

    /// <summary>Writes the complete model folder into <paramref name="directory"/> (created if needed; files of the same names are replaced).</summary>
    /// <param name="directory">The folder to write.</param>
    /// <param name="options">The model settings; defaults when null.</param>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    /// <exception cref="NotSupportedException">The options ask for a variant this version does not build.</exception>
    /// <exception cref="ArgumentException">The variant combines flags that exclude each other.</exception>
    public static void Build(string directory, ShapesModelOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        options ??= new ShapesModelOptions();
        options.Validate();
        int size = options.ImageSize;
        int latentSize = size / PatchPca.Patch;
        var items = ShapesDataset.Items;

        // 1. The data: 9 coverage masks (shape × position), coloured per item.
        var masks = new Dictionary<(ShapeKind, ShapePosition), byte[]>();
        var images = new byte[items.Count][];
        foreach (var item in items)
        {
            if (!masks.TryGetValue((item.Shape, item.Position), out byte[]? mask))
                masks.Add((item.Shape, item.Position), mask = ShapesDataset.Coverage(item.Shape, item.Position, size));
            images[item.Index] = ShapesDataset.Blend(item, mask);
        }

        // 2. The VAE and the item latents; scaling_factor = 1/std of all latent values (as SD's 0.18215 was chosen).
        var pca = PatchPca.Fit(images, size);
        int perItem = 4 * latentSize * latentSize;
        var latents = new float[items.Count * perItem];
        for (int k = 0; k < items.Count; k++)
            pca.Encode(images[k], size).CopyTo(latents, k * perItem);
        double sum = 0, sumSq = 0;
        foreach (float v in latents)
        {
            sum += v;
            sumSq += (double)v * v;
        }
        double mean = sum / latents.Length;
        float scalingFactor = (float)(1.0 / Math.Sqrt(sumSq / latents.Length - mean * mean));
        for (int i = 0; i < latents.Length; i++)
            latents[i] *= scalingFactor;

        // 3. The scheduler, and σ_t from its own ᾱ table so the UNet and every sampler agree on the noise levels.
        string schedulerJson = SchedulerJson(options.Variant);
        var schedule = new NoiseSchedule(SchedulerConfig.Parse(schedulerJson));
        var sigmas = new float[schedule.Length];
        for (int t = 0; t < sigmas.Length; t++)
        {
            double ab = schedule.AlphasCumprod[t];
            sigmas[t] = (float)Math.Sqrt((1.0 - ab) / ab);
        }

        // 4. The tokenizer.
        var vocab = ShapesTokenizerFiles.Create();

        // 5. The files.
        Directory.CreateDirectory(directory);
        if ((options.Variant & (ShapesVariant.Sdxl | ShapesVariant.SdxlRefiner)) != 0)
        {
            WriteSdxl(directory, options, vocab, pca, latents, latentSize, sigmas, scalingFactor, schedulerJson);
            return;
        }
        if ((options.Variant & ShapesModelOptions.UnconditionalCombinations) != 0)
        {
            WriteUnconditional(directory, options, pca, images, latents, latentSize, sigmas, scalingFactor, schedulerJson);
            return;
        }
        bool inpainting = options.Variant.HasFlag(ShapesVariant.Inpainting);
        WriteFolderFiles(directory, ModelIndexJson(inpainting), Readme(options, scalingFactor), schedulerJson);
        vocab.Write(Path.Combine(directory, "tokenizer"));
        WriteModel(directory, "text_encoder", ShapesGraphs.TextEncoder(vocab, options.Variant.HasFlag(ShapesVariant.Int64InputIds)));
        WriteModel(directory, "unet", inpainting
            ? ShapesInpaintingGraphs.Unet(latents, items.Count, latentSize, sigmas, options.MatchStrength)
            : ShapesGraphs.Unet(latents, items.Count, latentSize, sigmas, options.MatchStrength, ControlBlocks(options, ShapesControlNetGraphs.SdBlocks)));
        WriteVae(directory, ShapesGraphs.VaeEncoder(pca, options.Variant.HasFlag(ShapesVariant.LatentParameters)), ShapesGraphs.VaeDecoder(pca), size, scalingFactor);
        JsonFiles.Write(Path.Combine(directory, "unet", "config.json"), w =>
        {
            w.WriteStartObject();
            w.WriteString("_class_name", "UNet2DConditionModel");
            w.WriteNumber("cross_attention_dim", AttributeSpace.Dimensions);
            w.WriteNumber("in_channels", inpainting ? 9 : 4); // latents, mask, masked-image latents
            w.WriteNumber("out_channels", 4);
            w.WriteNumber("sample_size", latentSize);
            w.WriteEndObject();
        });

        if (options.Variant.HasFlag(ShapesVariant.ControlNet))
            WriteControlNet(directory, sdxl: false);

        // 6. The export variant's passes over the written graphs (float16, timestep form, v-prediction, external weights).
        ShapesVariants.Apply(directory, options.Variant);
    }

    /// <summary>
    /// Returns a folder holding the built model, building it on first use: under
    /// <paramref name="cacheDirectory"/> (default: the user's local application data, <c>MLNet.Diffusion/models</c>;
    /// the temporary folder when that is not usable) in a subfolder <c>shapes-&lt;hash of builder version and options&gt;</c>.
    /// The model is built into a temporary sibling folder, marked complete, then renamed into place, so concurrent
    /// callers (threads or processes) never see a half-written folder.
    /// </summary>
    /// <param name="cacheDirectory">The parent folder of the cached model folders, or null for the default.</param>
    /// <param name="options">The model settings; defaults when null.</param>
    /// <returns>The full path of the model folder.</returns>
    public static string EnsureBuilt(string? cacheDirectory = null, ShapesModelOptions? options = null)
    {
        options ??= new ShapesModelOptions();
        options.Validate();
        if (cacheDirectory is not null)
            return EnsureBuiltIn(cacheDirectory, options);
        string local = Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData);
        string fallback = Path.Combine(Path.GetTempPath(), "MLNet.Diffusion", "models");
        if (string.IsNullOrEmpty(local))
            return EnsureBuiltIn(fallback, options);
        try
        {
            return EnsureBuiltIn(Path.Combine(local, "MLNet.Diffusion", "models"), options);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return EnsureBuiltIn(fallback, options);
        }
    }

    /// <summary>The cache subfolder name for the options: <c>shapes-</c> and 12 hex digits of a SHA-256.</summary>
    internal static string CacheFolderName(ShapesModelOptions options)
    {
        byte[] hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{BuilderVersion}|{options.Describe()}"));
        return "shapes-" + Convert.ToHexString(hash, 0, 6).ToLowerInvariant();
    }

    private static bool IsComplete(string folder) => File.Exists(Path.Combine(folder, CompletionMarkerFileName));

    private static string EnsureBuiltIn(string root, ShapesModelOptions options)
    {
        string final = Path.GetFullPath(Path.Combine(root, CacheFolderName(options)));
        for (int attempt = 0; ; attempt++)
        {
            if (IsComplete(final))
                return final;
            Directory.CreateDirectory(root);
            string temp = $"{final}.tmp-{Guid.NewGuid():N}";
            try
            {
                Build(temp, options);
                // The marker is the last file written: a folder with it is complete.
                WriteText(Path.Combine(temp, CompletionMarkerFileName), $"{BuilderVersion}\n{options.Describe()}\n");
                if (Directory.Exists(final) && !IsComplete(final))
                {
                    // Not ours to finish (a copy interrupted by hand, say): move it aside and drop it.
                    string stale = $"{final}.stale-{Guid.NewGuid():N}";
                    Directory.Move(final, stale);
                    TryDelete(stale);
                }
                Directory.Move(temp, final); // atomic rename on the same volume
                return final;
            }
            catch (IOException) when (attempt < 3)
            {
                // Another process renamed its copy into place first (or moved the stale folder): use theirs.
            }
            finally
            {
                TryDelete(temp);
            }
        }
    }

    private static void TryDelete(string folder)
    {
        try
        {
            if (Directory.Exists(folder))
                Directory.Delete(folder, recursive: true);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private static void WriteModel(string directory, string component, byte[] onnx)
    {
        string folder = Path.Combine(directory, component);
        Directory.CreateDirectory(folder);
        File.WriteAllBytes(Path.Combine(folder, "model.onnx"), onnx);
    }

    private static void WriteText(string path, string text) => File.WriteAllBytes(path, new UTF8Encoding(false).GetBytes(text));

    /// <summary>Writes the files every layout has: model_index.json, README.md and scheduler/scheduler_config.json.</summary>
    private static void WriteFolderFiles(string directory, string modelIndexJson, string readme, string schedulerJson)
    {
        WriteText(Path.Combine(directory, "model_index.json"), modelIndexJson);
        WriteText(Path.Combine(directory, "README.md"), readme);
        string scheduler = Path.Combine(directory, "scheduler");
        Directory.CreateDirectory(scheduler);
        WriteText(Path.Combine(scheduler, "scheduler_config.json"), schedulerJson);
    }

    /// <summary>Writes vae_encoder/ and vae_decoder/: the graphs and the same config.json (<see cref="VaeConfig"/>) in each.</summary>
    private static void WriteVae(string directory, byte[] encoder, byte[] decoder, int size, float scalingFactor)
    {
        WriteModel(directory, "vae_encoder", encoder);
        WriteModel(directory, "vae_decoder", decoder);
        foreach (string vae in new[] { "vae_encoder", "vae_decoder" })
            JsonFiles.Write(Path.Combine(directory, vae, "config.json"), w => VaeConfig(w, size, scalingFactor));
    }

    private static void VaeConfig(System.Text.Json.Utf8JsonWriter w, int size, float scalingFactor)
    {
        w.WriteStartObject();
        w.WriteString("_class_name", "AutoencoderKL");
        w.WriteString("_shapes_note", "Linear autoencoder: PCA of 8x8x3 pixel patches to 4 channels (spatial factor 8).");
        // Four blocks as in SD: diffusers derives the spatial factor 2^(len − 1) = 8 from this list.
        w.WriteStartArray("block_out_channels");
        for (int i = 0; i < 4; i++)
            w.WriteNumberValue(PatchPca.Length);
        w.WriteEndArray();
        w.WriteNumber("in_channels", 3);
        w.WriteNumber("latent_channels", 4);
        w.WriteNumber("out_channels", 3);
        w.WriteNumber("sample_size", size);
        w.WritePropertyName("scaling_factor");
        w.WriteRawValue(scalingFactor.ToString("R", CultureInfo.InvariantCulture));
        w.WriteEndObject();
    }

    /// <summary>DDIM with Stable Diffusion 1.5's settings (SD 2.x's v_prediction for <see cref="ShapesVariant.VPrediction"/>).</summary>
    private static string SchedulerJson(ShapesVariant variant) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("_class_name", "DDIMScheduler");
        w.WriteString("_diffusers_version", "0.35.2");
        w.WriteNumber("beta_end", 0.012);
        w.WriteString("beta_schedule", "scaled_linear");
        w.WriteNumber("beta_start", 0.00085);
        w.WriteBoolean("clip_sample", false);
        w.WriteNumber("clip_sample_range", 1.0);
        w.WriteNumber("dynamic_thresholding_ratio", 0.995);
        w.WriteNumber("num_train_timesteps", 1000);
        w.WriteString("prediction_type", variant.HasFlag(ShapesVariant.VPrediction) ? "v_prediction" : "epsilon");
        w.WriteBoolean("rescale_betas_zero_snr", false);
        w.WriteNumber("sample_max_value", 1.0);
        w.WriteBoolean("set_alpha_to_one", false);
        w.WriteNumber("steps_offset", 1);
        w.WriteBoolean("thresholding", false);
        w.WriteString("timestep_spacing", "leading");
        w.WriteNull("trained_betas");
        w.WriteEndObject();
    });

    private static string ModelIndexJson(bool inpainting) => Json(w =>
    {
        w.WriteStartObject();
        w.WriteString("_class_name", inpainting ? "OnnxStableDiffusionInpaintPipeline" : "OnnxStableDiffusionPipeline");
        w.WriteString("_diffusers_version", "0.35.2");
        w.WriteString("_name_or_path", "MLNet.Diffusion.Shapes");
        NullPair(w, "feature_extractor");
        w.WriteBoolean("requires_safety_checker", false);
        NullPair(w, "safety_checker");
        Pair(w, "scheduler", "diffusers", "DDIMScheduler");
        Pair(w, "text_encoder", "diffusers", "OnnxRuntimeModel");
        Pair(w, "tokenizer", "transformers", "CLIPTokenizer");
        UnetAndVaePairs(w);
        w.WriteEndObject();
    });

    /// <summary>model_index.json's last components, the same in every layout (keys in alphabetical order, as diffusers writes them).</summary>
    private static void UnetAndVaePairs(System.Text.Json.Utf8JsonWriter w)
    {
        Pair(w, "unet", "diffusers", "OnnxRuntimeModel");
        Pair(w, "vae_decoder", "diffusers", "OnnxRuntimeModel");
        Pair(w, "vae_encoder", "diffusers", "OnnxRuntimeModel");
    }

    private static void Pair(System.Text.Json.Utf8JsonWriter w, string name, string library, string type)
    {
        w.WriteStartArray(name);
        w.WriteStringValue(library);
        w.WriteStringValue(type);
        w.WriteEndArray();
    }

    private static void NullPair(System.Text.Json.Utf8JsonWriter w, string name)
    {
        w.WriteStartArray(name);
        w.WriteNullValue();
        w.WriteNullValue();
        w.WriteEndArray();
    }

    private static string Json(Action<System.Text.Json.Utf8JsonWriter> write) => JsonFiles.ToText(write);

    private static string Readme(ShapesModelOptions options, float scalingFactor) => string.Create(CultureInfo.InvariantCulture, $"""
        # Shapes — a miniature Stable Diffusion model built in code

        Written by MLNet.Diffusion.Shapes {BuilderVersion} (`ShapesModel.Build`). Standard diffusers ONNX layout; {ShapesVariants.Describe(options.Variant)}.

        - Data: {ShapesDataset.ItemCount} images of {options.ImageSize}x{options.ImageSize} pixels: a circle, square or triangle in red, green,
          blue, yellow, purple or orange, on the left, in the center or on the right, on a white, black, gray, blue or green background.
        - vae_encoder / vae_decoder: PCA of 8x8x3 patches to 4 channels; scaling_factor {scalingFactor.ToString("R", CultureInfo.InvariantCulture)}.
        - text_encoder: attribute embeddings (hidden size {AttributeSpace.Dimensions}); a colour after "on" or right before "background" is the background colour.
        - unet: the exact posterior-mean denoiser over the item latents, prompt match strength {options.MatchStrength.ToString("R", CultureInfo.InvariantCulture)}.{(options.Variant.HasFlag(ShapesVariant.Inpainting) ? " Inpainting: 9 input channels (latents, mask, masked-image latents)." : "")}
        - scheduler: DDIM with Stable Diffusion 1.5 settings.

        Try "a red circle on a blue background" with 20 steps and guidance 7.5.

        """);
}
