using System;
using System.IO;
using System.Text.Json;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// The Stable Diffusion ONNX folder contract (the diffusers ONNX export layout): which files must exist, and small
/// JSON readers whose errors name the file and the problem.
/// </summary>
internal static class ModelFolder
{
    public const string ModelIndex = "model_index.json";
    public const string SchedulerConfig = "scheduler/scheduler_config.json";
    public const string TextEncoder = "text_encoder";
    public const string Unet = "unet";
    public const string VaeDecoder = "vae_decoder";
    public const string VaeEncoder = "vae_encoder";
    public const string Tokenizer = "tokenizer";
    public const string TextEncoder2 = "text_encoder_2";
    public const string Tokenizer2 = "tokenizer_2";
    public const string VqvaeDecoder = "vqvae_decoder";
    public const string VqvaeDecoderNoQuantize = "vqvae_decoder_no_quantize";
    public const string VqvaeEncoder = "vqvae_encoder";

    /// <summary>The VQ codebook (<c>quantize.embedding.weight</c>, float32 [K, C]) next to the VQ decoder.</summary>
    public const string Codebook = "vqvae_decoder/codebook.npy";
    public const string ControlNet = "controlnet";

    /// <summary>Files without which no text-to-image run is possible (Stable Diffusion 1.x/2.x).</summary>
    public static readonly string[] RequiredFiles =
    {
        ModelIndex,
        SchedulerConfig,
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "text_encoder/model.onnx",
        "unet/model.onnx",
        "vae_decoder/model.onnx",
    };

    /// <summary>SDXL base folders also need the second tokenizer and text encoder.</summary>
    public static readonly string[] RequiredFilesXL = [.. RequiredFiles, "tokenizer_2/vocab.json", "tokenizer_2/merges.txt", "text_encoder_2/model.onnx"];

    /// <summary>The SDXL refiner layout has the second tokenizer and text encoder only.</summary>
    public static readonly string[] RequiredFilesXLRefiner =
    [
        ModelIndex,
        SchedulerConfig,
        "tokenizer_2/vocab.json",
        "tokenizer_2/merges.txt",
        "text_encoder_2/model.onnx",
        "unet/model.onnx",
        "vae_decoder/model.onnx",
    ];

    /// <summary>
    /// diffusers <c>LDMPipeline</c> (unconditional latent diffusion): the UNet and a VQ decoder (<c>vqvae_decoder/</c>);
    /// a folder with a KL <c>vae_decoder/</c> instead needs that (<see cref="RequiredFilesFor"/>).
    /// </summary>
    public static readonly string[] RequiredFilesLdm = [ModelIndex, SchedulerConfig, "unet/model.onnx", "vqvae_decoder/model.onnx"];

    /// <summary>diffusers <c>DDPMPipeline</c>/<c>DDIMPipeline</c> (pixel space): the UNet only.</summary>
    public static readonly string[] RequiredFilesPixel = [ModelIndex, SchedulerConfig, "unet/model.onnx"];

    /// <summary>
    /// <c>_class_name</c> values (without diffusers' <c>Onnx</c> or optimum's <c>ORT</c> prefix) of the Stable Diffusion 1.x/2.x
    /// pipelines whose folders this library runs; SDXL pipelines are recognised by <c>StableDiffusionXL</c> in the name.
    /// </summary>
    private static readonly string[] s_sdClassNames =
    [
        "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
        "LatentConsistencyModelPipeline", "LatentConsistencyModelImg2ImgPipeline",
    ];

    public static string ModelPath(string directory, string component) => Path.Combine(directory, component, "model.onnx");

    /// <summary>Describes a kind for messages.</summary>
    public static string Describe(ModelKind kind) => kind switch
    {
        ModelKind.StableDiffusionXL => "SDXL",
        ModelKind.StableDiffusionXLRefiner => "SDXL refiner",
        ModelKind.LatentDiffusion => "unconditional latent diffusion (LDMPipeline)",
        ModelKind.PixelDiffusion => "pixel-space diffusion (DDPMPipeline)",
        ModelKind.SuperResolution => "latent-diffusion super-resolution (LDMSuperResolutionPipeline)",
        _ => "Stable Diffusion",
    };

    /// <summary>Whether the kind's UNet is a text-conditioned one (SD, SDXL) rather than an unconditional <c>UNet2DModel</c>.</summary>
    public static bool IsConditional(ModelKind kind) => kind is not (ModelKind.LatentDiffusion or ModelKind.PixelDiffusion or ModelKind.SuperResolution);

    /// <summary>The files a folder of <paramref name="kind"/> needs; an LDM folder with a KL <c>vae_decoder/</c> and no <c>vqvae_decoder/</c> needs that one.</summary>
    private static string[] RequiredFilesFor(string full, ModelKind kind) => kind switch
    {
        ModelKind.StableDiffusionXL => RequiredFilesXL,
        ModelKind.StableDiffusionXLRefiner => RequiredFilesXLRefiner,
        ModelKind.LatentDiffusion when File.Exists(ModelPath(full, VaeDecoder)) && !Directory.Exists(Path.Combine(full, VqvaeDecoder))
            => [ModelIndex, SchedulerConfig, "unet/model.onnx", "vae_decoder/model.onnx"],
        ModelKind.LatentDiffusion or ModelKind.SuperResolution => RequiredFilesLdm,
        ModelKind.PixelDiffusion => RequiredFilesPixel,
        _ => RequiredFiles,
    };

    /// <summary>
    /// Validates the folder: tells its kind from <c>model_index.json</c> (<c>_class_name</c>, the declared components) and
    /// the files present, then checks every file that kind needs. The errors list every missing file and name the
    /// pipeline class when the folder is of a kind this library does not run.
    /// </summary>
    public static FolderLayout Validate(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        string full = Path.GetFullPath(directory);
        if (!Directory.Exists(full))
            throw new DirectoryNotFoundException($"Model folder '{full}' does not exist.");
        string indexPath = Path.Combine(full, ModelIndex);
        using var index = File.Exists(indexPath) && new FileInfo(indexPath).Length > 0 ? ReadJson(indexPath) : null;
        var root = index?.RootElement;
        string? className = root is { } r && r.TryGetProperty("_class_name", out var c) && c.ValueKind == JsonValueKind.String ? c.GetString() : null;
        var kind = DetectKind(full, root, className);
        string[] required = RequiredFilesFor(full, kind);
        var missing = new System.Collections.Generic.List<string>();
        foreach (string f in required)
            if (!File.Exists(Path.Combine(full, f)))
                missing.Add(f);
        if (missing.Count > 0)
            throw new FileNotFoundException(
                $"Model folder '{full}' is not a complete {Describe(kind)} ONNX folder{(className is null ? string.Empty : $" (model_index.json _class_name '{className}')")}: "
                + $"missing {string.Join(", ", missing)}. Expected the diffusers/optimum ONNX export layout ({string.Join(", ", LayoutOf(kind))}).",
                Path.Combine(full, missing[0]));
        foreach (string f in required)
        {
            if (new FileInfo(Path.Combine(full, f)).Length == 0)
                throw new InvalidDataException($"Model folder file '{Path.Combine(full, f)}' is empty.");
        }
        bool xl = kind is ModelKind.StableDiffusionXL or ModelKind.StableDiffusionXLRefiner;
        // diffusers: StableDiffusionXLPipeline(force_zeros_for_empty_prompt=True), StableDiffusionXLImg2ImgPipeline(requires_aesthetics_score=False);
        // the folder's model_index.json records the values the pipeline was saved with.
        bool forceZeros = xl && (ReadBool(indexPath, root!.Value, "force_zeros_for_empty_prompt") ?? true);
        bool aesthetics = xl && (ReadBool(indexPath, root!.Value, "requires_aesthetics_score") ?? false);
        return new FolderLayout(full, kind, className, forceZeros, aesthetics);
    }

    private static string[] LayoutOf(ModelKind kind) => kind switch
    {
        ModelKind.StableDiffusionXL => ["model_index.json", "scheduler/", "tokenizer/", "tokenizer_2/", "text_encoder/", "text_encoder_2/", "unet/", "vae_decoder/", "optional vae_encoder/"],
        ModelKind.StableDiffusionXLRefiner => ["model_index.json", "scheduler/", "tokenizer_2/", "text_encoder_2/", "unet/", "vae_decoder/", "optional vae_encoder/"],
        ModelKind.LatentDiffusion => ["model_index.json", "scheduler/", "unet/", "vqvae_decoder/ (or a KL vae_decoder/)", "optional vqvae_decoder/codebook.npy, vqvae_decoder_no_quantize/, vqvae_encoder/"],
        ModelKind.PixelDiffusion => ["model_index.json", "scheduler/", "unet/"],
        ModelKind.SuperResolution => ["model_index.json", "scheduler/", "unet/ (latents + 3 low-resolution image channels in)", "vqvae_decoder/", "optional vqvae_decoder/codebook.npy, vqvae_decoder_no_quantize/, vqvae_encoder/"],
        _ => ["model_index.json", "scheduler/", "tokenizer/", "text_encoder/", "unet/", "vae_decoder/", "optional vae_encoder/"],
    };

    /// <summary>
    /// The kind of folder: SDXL when <c>_class_name</c> names an SDXL pipeline (or names none we know and the folder has
    /// <c>text_encoder_2/</c>), the refiner layout when such a folder declares no <c>text_encoder</c> (<c>[null, null]</c>,
    /// as stabilityai/stable-diffusion-xl-refiner-1.0) or, declaring nothing, has none; otherwise Stable Diffusion.
    /// A pipeline class we do not know whose folder has no UNet (SD3, Flux and other transformer pipelines) is refused here.
    /// </summary>
    private static ModelKind DetectKind(string full, JsonElement? root, string? className)
    {
        // diffusers' unconditional pipelines: LDMPipeline (latent space) and DDPMPipeline/DDIMPipeline (pixel space).
        switch (className is null ? null : StripPrefix(className))
        {
            case "LDMPipeline":
                return ModelKind.LatentDiffusion;
            case "DDPMPipeline" or "DDIMPipeline":
                return ModelKind.PixelDiffusion;
            case "LDMSuperResolutionPipeline":
                return ModelKind.SuperResolution;
        }
        bool xlClass = className is not null && className.Contains("StableDiffusionXL", StringComparison.Ordinal);
        bool sdClass = className is not null && Array.IndexOf(s_sdClassNames, StripPrefix(className)) >= 0;
        if (className is not null && !xlClass && !sdClass && !File.Exists(ModelPath(full, Unet)))
        {
            string found = File.Exists(ModelPath(full, "transformer")) || Directory.Exists(Path.Combine(full, "transformer"))
                ? " It has a transformer/ instead of a unet/ (a diffusion-transformer pipeline such as SD3 or Flux)." : string.Empty;
            throw new ModelContractException(
                $"Model folder '{full}': model_index.json _class_name '{className}' is not a pipeline MLNet.Diffusion runs, and the folder has no unet/model.onnx.{found} "
                + "Supported: Stable Diffusion 1.x/2.x (StableDiffusionPipeline and its Img2Img/Inpaint forms), SDXL (StableDiffusionXLPipeline, "
                + "StableDiffusionXLImg2ImgPipeline), LDMPipeline, LDMSuperResolutionPipeline and DDPMPipeline/DDIMPipeline ONNX folders, with or without the Onnx/ORT prefix.");
        }
        bool xl = xlClass || (!sdClass && File.Exists(ModelPath(full, TextEncoder2)));
        if (!xl)
            return ModelKind.StableDiffusion;
        bool declared = root is { } r && r.TryGetProperty(TextEncoder, out var te) && te.ValueKind == JsonValueKind.Array && te.GetArrayLength() > 0;
        bool declaredNull = declared && root!.Value.GetProperty(TextEncoder)[0].ValueKind == JsonValueKind.Null;
        bool refiner = declaredNull || (!declared && !File.Exists(ModelPath(full, TextEncoder)));
        return refiner ? ModelKind.StableDiffusionXLRefiner : ModelKind.StableDiffusionXL;
    }

    private static string StripPrefix(string className) =>
        className.StartsWith("Onnx", StringComparison.Ordinal) ? className[4..]
        : className.StartsWith("ORT", StringComparison.Ordinal) ? className[3..]
        : className;

    private static bool? ReadBool(string path, JsonElement root, string key)
    {
        if (!root.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return null;
        return v.ValueKind switch
        {
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            _ => throw new InvalidDataException($"'{path}': key '{key}' must be true or false, not {v.GetRawText()}."),
        };
    }

    /// <summary>Parses a JSON object file; the error names the file.</summary>
    public static JsonDocument ReadJson(string path)
    {
        try
        {
            var doc = JsonDocument.Parse(File.ReadAllBytes(path), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
            {
                doc.Dispose();
                throw new InvalidDataException($"'{path}' must contain a JSON object.");
            }
            return doc;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"'{path}' is not valid JSON: {e.Message}", e);
        }
    }

    /// <summary>Reads a number from an optional JSON config (e.g. <c>vae_decoder/config.json</c>'s scaling_factor).</summary>
    public static double? ReadNumber(string path, string key)
    {
        if (!File.Exists(path))
            return null;
        using var doc = ReadJson(path);
        if (!doc.RootElement.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null)
            return null;
        if (v.ValueKind != JsonValueKind.Number)
            throw new InvalidDataException($"'{path}': key '{key}' must be a number, not {v.GetRawText()}.");
        return v.GetDouble();
    }

    /// <summary>The length of an array value in an optional JSON config (e.g. block_out_channels).</summary>
    public static int? ReadArrayLength(string path, string key)
    {
        if (!File.Exists(path))
            return null;
        using var doc = ReadJson(path);
        return doc.RootElement.TryGetProperty(key, out var v) && v.ValueKind == JsonValueKind.Array ? v.GetArrayLength() : null;
    }
}

/// <summary>What <see cref="ModelFolder.Validate"/> found: the folder's full path, kind and pipeline flags.</summary>
/// <param name="Directory">The full path.</param>
/// <param name="Kind">The kind of folder.</param>
/// <param name="ClassName">model_index.json's <c>_class_name</c>, when present.</param>
/// <param name="ForceZerosForEmptyPrompt">SDXL: zeros instead of the encoded empty prompt for an empty negative prompt.</param>
/// <param name="RequiresAestheticsScore">SDXL: time ids carry an aesthetic score instead of the target size (refiner).</param>
internal sealed record FolderLayout(string Directory, ModelKind Kind, string? ClassName, bool ForceZerosForEmptyPrompt, bool RequiresAestheticsScore);
