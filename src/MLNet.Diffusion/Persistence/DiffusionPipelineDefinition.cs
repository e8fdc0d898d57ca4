using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion.Persistence;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>
/// A diffusion pipeline as data: the model folder (absolute path) and the stages' records, saved as JSON. It holds no
/// weights. Save it with <see cref="Save"/>, read it with <see cref="Load"/>, and turn it back into the exact stage types
/// with <see cref="Build"/>. It can also be read from a fitted chain or from a model loaded with
/// <c>mlContext.Model.Load</c> (<see cref="FromTransformer"/>). Format version 2 writes each stage as its record with a
/// <c>kind</c> discriminator; format version 1 (one property per stage kind) is still read. See docs/persistence.md.
/// </summary>
public sealed class DiffusionPipelineDefinition
{
    /// <summary>The current format version written to the JSON.</summary>
    public const int CurrentFormatVersion = 2;

    private static readonly JsonSerializerOptions s_json = CreateJsonOptions(indented: true);
    private static readonly JsonSerializerOptions s_compactJson = CreateJsonOptions(indented: false);

    /// <summary>The format version of the JSON this definition was read from (or <see cref="CurrentFormatVersion"/>).</summary>
    public int FormatVersion { get; init; } = CurrentFormatVersion;

    /// <summary>The model folder's absolute path.</summary>
    public string ModelDirectory { get; init; } = string.Empty;

    /// <summary>The diffusion stages in pipeline order.</summary>
    public IReadOnlyList<DiffusionStageDefinition> Stages { get; init; } = Array.Empty<DiffusionStageDefinition>();

    /// <summary>
    /// Reads the diffusion stages of a transformer: one of our stages, a <see cref="TransformerChain{TLastTransformer}"/>
    /// holding them (other transformers in the chain are skipped), or a model loaded with <c>mlContext.Model.Load</c>,
    /// whose stages are found through the configuration they saved (pass the input schema Load returned).
    /// </summary>
    /// <param name="transformer">The fitted or loaded pipeline.</param>
    /// <param name="inputSchema">The pipeline's input schema; required for a model loaded with <c>mlContext.Model.Load</c>.</param>
    /// <exception cref="ArgumentException">No diffusion stage was found, or the stages use different model folders.</exception>
    public static DiffusionPipelineDefinition FromTransformer(ITransformer transformer, DataViewSchema? inputSchema = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        var found = new List<(DiffusionStageDefinition Stage, string Folder)>();
        SurrogateChain.Walk(transformer, inputSchema, (stage, folder, _) => found.Add((stage, folder)), _ => { });
        if (found.Count == 0)
            throw new ArgumentException("The transformer holds no diffusion stage (EncodePrompt, DenoiseLatents, DecodeLatents, EncodeImage, AddDiffusionNoise, PrepareInpainting)"
                + (inputSchema is null ? "; for a model loaded with mlContext.Model.Load, pass the input schema Load returned." : "."), nameof(transformer));
        string folder = found[0].Folder;
        foreach (var f in found)
            if (!string.Equals(f.Folder, folder, StringComparison.Ordinal))
                throw new ArgumentException($"The stages use different model folders ('{folder}' and '{f.Folder}'); a definition holds one.", nameof(transformer));
        var stages = new DiffusionStageDefinition[found.Count];
        for (int i = 0; i < stages.Length; i++)
            stages[i] = found[i].Stage;
        return new DiffusionPipelineDefinition { ModelDirectory = folder, Stages = stages };
    }

    /// <summary>
    /// Builds the stages on <paramref name="model"/> as a chain of <see cref="PromptEncodingTransformer"/>,
    /// <see cref="LatentDenoisingTransformer"/>, <see cref="LatentDecodingTransformer"/>, <see cref="ImageEncodingTransformer"/>,
    /// <see cref="DiffusionNoisingTransformer"/> and <see cref="InpaintingPreparationTransformer"/>, in the saved order.
    /// </summary>
    /// <param name="model">The loaded model (normally loaded from <see cref="ModelDirectory"/>; a different folder with the same layout works too).</param>
    /// <param name="progress">Runtime-only: receives DenoiseLatents' step reports.</param>
    /// <param name="cancellationToken">Runtime-only: cancels DenoiseLatents between steps.</param>
    public TransformerChain<ITransformer> Build(StableDiffusionModel model, IProgress<DenoiseProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        var stages = new ITransformer[Stages.Count];
        for (int i = 0; i < stages.Length; i++)
            stages[i] = Stages[i].Build(model, progress, cancellationToken);
        return new TransformerChain<ITransformer>(stages);
    }

    /// <summary>The definition as indented JSON (the current format version).</summary>
    public string ToJson() => JsonSerializer.Serialize(With(CurrentFormatVersion), s_json);

    /// <summary>The definition as one line of JSON (the surrogate's configuration column).</summary>
    internal string ToCompactJson() => JsonSerializer.Serialize(With(CurrentFormatVersion), s_compactJson);

    private DiffusionPipelineDefinition With(int formatVersion) => new() { FormatVersion = formatVersion, ModelDirectory = ModelDirectory, Stages = Stages };

    /// <summary>Reads a definition from JSON of format version 1 or 2.</summary>
    /// <param name="json">The JSON text.</param>
    /// <exception cref="InvalidDataException">The JSON is malformed, of an unknown format version, or holds a stage record of an unknown kind or version.</exception>
    public static DiffusionPipelineDefinition FromJson(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        DiffusionPipelineDefinition? d;
        try
        {
            var node = JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException("Not a diffusion pipeline definition: the JSON is not an object.");
            int version = node[nameof(FormatVersion)]?.GetValue<int>() ?? CurrentFormatVersion;
            if (version < 1 || version > CurrentFormatVersion)
                throw new InvalidDataException($"Unknown diffusion pipeline definition format version {version}; this library reads up to {CurrentFormatVersion}.");
            if (version == 1)
                LegacyDefinitionV1.Upgrade(node);
            CheckKinds(node);
            d = node.Deserialize<DiffusionPipelineDefinition>(s_json);
            if (d is not null)
                d = d.With(version);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException or NotSupportedException)
        {
            throw new InvalidDataException($"Not a diffusion pipeline definition: {e.Message}", e);
        }
        if (d is null)
            throw new InvalidDataException("Not a diffusion pipeline definition: the JSON is null.");
        foreach (var stage in d.Stages)
            if (stage is null || stage.Version < 1 || stage.Version > stage.CurrentVersion)
                throw new InvalidDataException(stage is null ? "A diffusion pipeline definition holds a null stage."
                    : $"The {stage.Kind} stage record has version {stage.Version}; this library reads versions 1 to {stage.CurrentVersion}.");
        return d;
    }

    /// <summary>Each stage names a kind this library knows, first (System.Text.Json reads the discriminator only there).</summary>
    private static void CheckKinds(JsonObject definition)
    {
        if (definition[nameof(Stages)] is not JsonArray stages)
            return;
        for (int i = 0; i < stages.Count; i++)
        {
            var first = stages[i] is JsonObject o && o.Count > 0 ? o.First() : default;
            if (first.Key != "kind")
                throw new InvalidDataException($"Stage {i} of the diffusion pipeline definition does not start with its \"kind\".");
            string? kind = first.Value is JsonValue v && v.TryGetValue(out string? k) ? k : null;
            if (kind is null || !Enum.TryParse<DiffusionStageKind>(kind, ignoreCase: false, out _) || int.TryParse(kind, out _))
                throw new InvalidDataException($"Stage {i} of the diffusion pipeline definition has the unknown kind '{kind}'; this library knows {string.Join(", ", Enum.GetNames<DiffusionStageKind>())}.");
        }
    }

    /// <summary>This definition with another model folder (for a folder that moved; docs/persistence.md).</summary>
    /// <param name="modelDirectory">The model folder's new path.</param>
    public DiffusionPipelineDefinition WithModelDirectory(string modelDirectory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(modelDirectory);
        return new DiffusionPipelineDefinition { FormatVersion = FormatVersion, ModelDirectory = Path.GetFullPath(modelDirectory), Stages = Stages };
    }

    /// <summary>Writes the definition as JSON to <paramref name="path"/>.</summary>
    /// <param name="path">The file to write.</param>
    public void Save(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        File.WriteAllText(path, ToJson());
    }

    /// <summary>Reads a definition from a JSON file written by <see cref="Save"/> (any format version this library reads).</summary>
    /// <param name="path">The file to read.</param>
    public static DiffusionPipelineDefinition Load(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        return FromJson(File.ReadAllText(path));
    }

    private static JsonSerializerOptions CreateJsonOptions(bool indented) => new()
    {
        WriteIndented = indented,
        // Absent optional inputs are written as null column names: a record says what a stage reads.
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        Converters = { new JsonStringEnumConverter() },
    };
}

/// <summary>
/// Reads format version 1 of <see cref="DiffusionPipelineDefinition"/>: each stage was an object with <c>Kind</c>, the
/// stage's options under one property per kind (<c>EncodePromptOptions</c>, <c>DenoiseOptions</c>, <c>DecodeLatentsOptions</c>,
/// <c>EncodeImageOptions</c>, <c>AddNoiseOptions</c>, <c>PrepareInpaintingOptions</c>) and, for most kinds,
/// <c>OutputColumnName</c>/<c>InputColumnName</c>; null values were left out. The options' property names are the fields
/// of the version-1 stage records, so a stage is upgraded by flattening it under its <c>kind</c>.
/// </summary>
internal static class LegacyDefinitionV1
{
    private static readonly Dictionary<string, string> s_optionsKeys = new(StringComparer.Ordinal)
    {
        [nameof(DiffusionStageKind.EncodePrompt)] = "EncodePromptOptions",
        [nameof(DiffusionStageKind.DenoiseLatents)] = "DenoiseOptions",
        [nameof(DiffusionStageKind.DecodeLatents)] = "DecodeLatentsOptions",
        [nameof(DiffusionStageKind.EncodeImage)] = "EncodeImageOptions",
        [nameof(DiffusionStageKind.AddDiffusionNoise)] = "AddNoiseOptions",
        [nameof(DiffusionStageKind.PrepareInpainting)] = "PrepareInpaintingOptions",
    };

    /// <summary>Rewrites a version-1 definition's stages, in place, as version-1 stage records.</summary>
    public static void Upgrade(JsonObject definition)
    {
        if (definition["Stages"] is not JsonArray stages)
            return;
        for (int i = 0; i < stages.Count; i++)
        {
            if (stages[i] is not JsonObject old)
                throw new InvalidDataException($"Stage {i} of the version-1 definition is not an object.");
            string kind = old["Kind"]?.GetValue<string>() ?? throw new InvalidDataException($"Stage {i} of the version-1 definition has no Kind.");
            if (!s_optionsKeys.TryGetValue(kind, out string? key))
                throw new InvalidDataException($"Stage {i} of the version-1 definition has the unknown kind '{kind}'.");
            if (old[key] is not JsonObject options)
                throw new InvalidDataException($"The {kind} stage definition has no {key}.");
            // The discriminator must come first for System.Text.Json.
            var record = new JsonObject { ["kind"] = kind, ["Version"] = 1 };
            foreach (var (name, value) in options)
                record[name] = value?.DeepClone();
            foreach (string column in new[] { "OutputColumnName", "InputColumnName" })
                if (old[column] is { } c)
                    record[column] = c.DeepClone();
            stages[i] = record;
        }
    }
}
