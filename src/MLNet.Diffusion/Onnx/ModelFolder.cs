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

    /// <summary>Files without which no text-to-image run is possible.</summary>
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

    public static string ModelPath(string directory, string component) => Path.Combine(directory, component, "model.onnx");

    /// <summary>Validates the folder and returns its full path; the error lists every missing file.</summary>
    public static string Validate(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        string full = Path.GetFullPath(directory);
        if (!Directory.Exists(full))
            throw new DirectoryNotFoundException($"Model folder '{full}' does not exist.");
        var missing = new System.Collections.Generic.List<string>();
        foreach (string f in RequiredFiles)
            if (!File.Exists(Path.Combine(full, f)))
                missing.Add(f);
        if (missing.Count > 0)
            throw new FileNotFoundException(
                $"Model folder '{full}' is not a Stable Diffusion ONNX folder: missing {string.Join(", ", missing)}. "
                + "Expected the diffusers ONNX export layout (model_index.json, scheduler/, tokenizer/, text_encoder/, unet/, vae_decoder/, optional vae_encoder/).",
                Path.Combine(full, missing[0]));
        foreach (string f in RequiredFiles)
        {
            if (new FileInfo(Path.Combine(full, f)).Length == 0)
                throw new InvalidDataException($"Model folder file '{Path.Combine(full, f)}' is empty.");
        }
        ReadJson(Path.Combine(full, ModelIndex)).Dispose();
        return full;
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
