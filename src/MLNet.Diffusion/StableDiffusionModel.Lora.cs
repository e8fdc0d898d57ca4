using System;
using System.Collections.Generic;
using System.IO;
using System.Threading;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.SafeTensors;

namespace MLNet.Diffusion;

// LoRA: merged weights handed to ONNX Runtime as replaced initializers (WeightVariant), one session set per LoRA set,
// cached with a byte budget (LoraSessionCache); WithLoras and per-row prompt tags choose the set.
public sealed partial class StableDiffusionModel
{
    private StableDiffusionModel(StableDiffusionModel parent, LoraSessionSet? loras, TextualInversionSet? inversions)
    {
        parent._shared.AddReference();
        _shared = parent._shared;
        _loraCache = parent._loraCache;
        _loras = loras;
        _host = parent._host;
        _sessions = parent._sessions;
        _textEncoderThreadsSpin = parent._textEncoderThreadsSpin;
        MLContext = parent.MLContext;
        Directory = parent.Directory;
        Info = parent.Info;
        Tokenizer2 = parent.Tokenizer2 is null ? null : InversionTokenizer(ModelFolder.TextEncoder2, inversions, parent.Tokenizer2);
        _tokenizer = parent._tokenizer is null ? null
            : InversionTokenizer(Info.Kind == ModelKind.StableDiffusionXLRefiner ? ModelFolder.TextEncoder2 : ModelFolder.TextEncoder, inversions, parent._tokenizer);
        _textEncoder = parent._textEncoder;
        TextEncoder2 = parent.TextEncoder2;
        _vaeDecoder = parent._vaeDecoder;
        _codebook = parent._codebook;
        _vqDecoderQuantizes = parent._vqDecoderQuantizes;
        ControlNet = parent.ControlNet;
        LoadTimes = parent.LoadTimes;
        DefaultSeed = parent.DefaultSeed;
        LoraDirectory = parent.LoraDirectory;
        _inversions = inversions;
        _textEncoders = BindInversions(BindTextEncoders(_shared.TextEncoderBindings, loras), inversions, loras);
    }

    /// <summary>
    /// The folder <c>&lt;lora:name:scale&gt;</c> prompt tags are looked up in (<see cref="StableDiffusionModelOptions.LoraDirectory"/>);
    /// null when prompt tags are not allowed.
    /// </summary>
    public string? LoraDirectory { get; }

    /// <summary>The LoRAs merged into this model's weights (full paths and scales, in a canonical order); empty for the base weights.</summary>
    public IReadOnlyList<LoraReference> Loras
    {
        get
        {
            var set = LoraSet;
            var list = new LoraReference[set.Entries.Count];
            for (int i = 0; i < list.Length; i++)
                list[i] = new LoraReference(set.Entries[i].Path, set.Entries[i].Scale);
            return list;
        }
    }

    /// <summary>
    /// The modules and keys of this model's LoRA files that changed nothing (<c>file: key (reason)</c>): modules whose
    /// weight this model does not have (a LoRA for another architecture, a typo) and tensors in no LoRA form. They are
    /// also logged as a warning when the LoRAs are applied. Empty when every key was applied.
    /// </summary>
    public IReadOnlyList<string> UnmatchedLoraKeys
    {
        get
        {
            if (_loras is null)
                return Array.Empty<string>();
            var list = new string[_loras.Unmatched.Count];
            for (int i = 0; i < list.Length; i++)
            {
                var u = _loras.Unmatched[i];
                list[i] = $"{u.File}: {u.Key} ({u.Reason})";
            }
            return list;
        }
    }

    /// <summary>Whether the session of the UNet without LoRA is open (a model loaded with UNet LoRAs opens it only when needed).</summary>
    internal bool IsBaseUnetOpen => _shared.BaseUnet.IsValueCreated;

    /// <summary>This model's LoRA set.</summary>
    internal LoraSet LoraSet => _loras?.Set ?? LoraSet.Empty;

    /// <summary>The LoRA session cache shared with this model's relatives (tests read what it holds).</summary>
    internal LoraSessionCache LoraSessions => _shared.Loras;

    /// <summary>
    /// A model with <paramref name="loras"/> merged into the base weights (replacing this model's LoRAs, if any; no LoRA
    /// gives the base model). The new model shares every session the LoRAs leave unchanged (the VAE, and the text encoder
    /// or the UNet when no LoRA targets it) and the LoRA session cache; it opens sessions only for the components the set
    /// changes, or reuses them when the set is cached. Dispose it when done: disposing it never closes sessions this
    /// model still uses, and this model may be disposed first (the shared sessions close with the last of them).
    /// </summary>
    /// <param name="loras">The LoRA files and their scales.</param>
    /// <exception cref="FileNotFoundException">A LoRA file does not exist.</exception>
    /// <exception cref="InvalidDataException">A LoRA file is malformed or does not fit a weight's shape (the message names the file and tensor).</exception>
    /// <exception cref="NotSupportedException">A file is pickled, holds DoRA/LoHa/LoKr modules, or targets attention projections the export packed (QKV fused).</exception>
    public StableDiffusionModel WithLoras(params LoraReference[] loras) => WithLoras((IEnumerable<LoraReference>)loras);

    /// <inheritdoc cref="WithLoras(LoraReference[])"/>
    public StableDiffusionModel WithLoras(IEnumerable<LoraReference> loras)
    {
        ArgumentNullException.ThrowIfNull(loras);
        ThrowIfDisposed();
        return ForLoraSet(CreateLoraSet(loras));
    }

    /// <summary>
    /// AUTOMATIC1111's <c>Lora hashes</c> PNG parameter value for an image of this model generated from
    /// <paramref name="prompt"/>: the model's LoRAs and those the prompt's <c>&lt;lora:name:scale&gt;</c> tags name, as
    /// <c>name: &lt;first 12 hex digits of the file's data SHA-256&gt;, …</c> (A1111 writes it quoted:
    /// <c>Lora hashes: "name: 0123456789ab"</c>). Null when no LoRA applies.
    /// </summary>
    /// <param name="prompt">The row's prompt text (tags included), or null for the model's own LoRAs only.</param>
    public string? FormatLoraHashes(string? prompt = null)
    {
        ThrowIfDisposed();
        var tags = new List<LoraPromptTag>();
        if (prompt is not null)
            LoraPromptTags.Extract(prompt, tags, "Prompt");
        return LoraSet.Union(ResolveTags(tags)).FormatA1111Hashes();
    }

    /// <summary>
    /// A model (caller disposes it) whose weights carry <paramref name="set"/>: shares this model's sessions and pins
    /// the set's sessions in the cache until it is disposed.
    /// </summary>
    internal StableDiffusionModel ForLoraSet(LoraSet set)
    {
        ThrowIfDisposed();
        var sessions = set.IsEmpty ? null : _shared.Loras.Acquire(set);
        try
        {
            if (sessions is not null)
                ReportUnmatched(sessions);
            if (_inversions is not null)
                OpenInversionEncoders(_inversions, sessions);
            return new StableDiffusionModel(this, sessions, _inversions);
        }
        catch
        {
            if (sessions is not null)
                _shared.Loras.Release(sessions);
            throw;
        }
    }

    /// <summary>
    /// The LoRA set of a row: the files its prompt tags name, found in <see cref="LoraDirectory"/> as
    /// <c>&lt;name&gt;.safetensors</c> (searched in subfolders too, as A1111 does), added to nothing (the caller unions
    /// with the model's set).
    /// </summary>
    /// <exception cref="InvalidOperationException">Tags are used but the model has no LoRA folder.</exception>
    /// <exception cref="FileNotFoundException">No file, or several, match a tag's name.</exception>
    internal LoraSet ResolveTags(IReadOnlyList<LoraPromptTag> tags)
    {
        if (tags.Count == 0)
            return LoraSet.Empty;
        if (LoraDirectory is null)
            throw new InvalidOperationException($"The prompt names LoRA '{tags[0].Name}' (<lora:…> tag), but the model was loaded without StableDiffusionModelOptions.LoraDirectory to look LoRAs up in.");
        var references = new List<LoraReference>(tags.Count);
        foreach (var tag in tags)
            references.Add(new LoraReference(FindLora(tag.Name), tag.Scale));
        return CreateLoraSet(references);
    }

    private string FindLora(string name)
    {
        // A prompt is untrusted text: a name is a file stem, never a path (no separators, no '..').
        if (name.IndexOfAny(['/', '\\']) >= 0 || name.Contains("..", StringComparison.Ordinal) || name.IndexOfAny(Path.GetInvalidFileNameChars()) >= 0)
            throw new FileNotFoundException($"LoRA tag name '{name}' is not a file name; tags name a .safetensors file of '{LoraDirectory}' without its extension.");
        string direct = Path.Combine(LoraDirectory!, name + ".safetensors");
        if (File.Exists(direct))
            return direct;
        var matches = System.IO.Directory.Exists(LoraDirectory)
            ? System.IO.Directory.GetFiles(LoraDirectory!, name + ".safetensors", SearchOption.AllDirectories)
            : Array.Empty<string>();
        return matches.Length switch
        {
            1 => matches[0],
            0 => throw new FileNotFoundException($"No LoRA named '{name}' ('{name}.safetensors') in '{LoraDirectory}' or its subfolders.", direct),
            _ => throw new FileNotFoundException($"LoRA name '{name}' matches {matches.Length} files under '{LoraDirectory}' ({string.Join(", ", matches)}); rename one."),
        };
    }

    private LoraSet CreateLoraSet(IEnumerable<LoraReference> loras) => LoraSet.Create(loras, HashOf);

    private string HashOf(string path)
    {
        var info = new FileInfo(path);
        var key = (info.FullName, info.Length, info.LastWriteTimeUtc);
        lock (_loraCache.FileHashes)
        {
            if (_loraCache.FileHashes.TryGetValue(key, out string? hash))
                return hash;
        }
        string computed;
        using (var file = SafeTensorsFile.Open(path))
            computed = file.ComputeDataSha256();
        lock (_loraCache.FileHashes)
            _loraCache.FileHashes[key] = computed;
        return computed;
    }

    private void ReportUnmatched(LoraSessionSet sessions)
    {
        if (sessions.Unmatched.Count == 0)
            return;
        var byFile = new Dictionary<string, List<string>>(StringComparer.Ordinal);
        foreach (var u in sessions.Unmatched)
        {
            if (!byFile.TryGetValue(u.File, out var keys))
                byFile.Add(u.File, keys = []);
            keys.Add($"{u.Key} ({u.Reason})");
        }
        foreach (var (file, keys) in byFile)
            Warn($"LoRA '{file}': {keys.Count} module(s) changed nothing: {string.Join("; ", keys)}.");
    }

    private TextEncoderBinding[] BindTextEncoders(TextEncoderBinding[] bindings, LoraSessionSet? loras)
    {
        if (loras is null || (loras.TextEncoder is null && loras.TextEncoder2 is null))
            return bindings;
        var bound = new TextEncoderBinding[bindings.Length];
        for (int i = 0; i < bound.Length; i++)
        {
            var b = bindings[i];
            bound[i] = ReferenceEquals(b.Encoder, _shared.TextEncoder) && loras.TextEncoder is { } te ? b with { Encoder = te }
                : ReferenceEquals(b.Encoder, _shared.TextEncoder2) && loras.TextEncoder2 is { } te2 ? b with { Encoder = te2 }
                : b;
        }
        return bound;
    }

    /// <summary>
    /// Merges <paramref name="set"/> into every component it targets and opens a session per changed component. Only
    /// the changed initializers are read and copied (float32 while merging, then the model's element type in native
    /// memory that the session uses in place); every other weight the session loads from the model files as usual.
    /// </summary>
    private LoraSessionSet BuildLoraSessions(LoraSet set)
    {
        var applications = new List<LoraApplication>(set.Entries.Count);
        var needed = new HashSet<LoraComponent>();
        foreach (var entry in set.Entries)
        {
            var file = LoraFile.Read(entry.Path);
            applications.Add(new LoraApplication(file, entry.Scale));
            foreach (var module in file.Modules)
                needed.Add(module.Component);
        }
        var readers = new Dictionary<LoraComponent, (string Folder, OnnxModelReader Reader)>();
        var targets = new List<LoraMergeTarget>();
        foreach (var component in needed)
        {
            string folder = LoraModule.ComponentName(component);
            // The SDXL refiner's only text encoder is text_encoder_2/; a lora_te_ module has nothing to change there.
            string path = ModelFolder.ModelPath(Directory, folder);
            if (!File.Exists(path))
                continue;
            var reader = OnnxModelReader.Open(path);
            readers.Add(component, (folder, reader));
            targets.Add(new LoraMergeTarget(component, LoraTargetIndex.Build(LoraGraphReader.Build(reader, path)), LoraGraphReader.WeightReader(reader)));
        }
        var result = LoraMerger.Merge(targets, applications);
        applications.Clear();

        var opened = new Dictionary<LoraComponent, OnnxComponent>();
        long bytes = 0;
        try
        {
            foreach (var (component, (folder, reader)) in readers)
            {
                WeightVariant? variant = null;
                try
                {
                    variant = ToVariant(result, component, "lora-" + set.Id);
                    if (variant is null)
                        continue;
                    opened.Add(component, OpenSession(folder, variant));
                    bytes += LoraGraphReader.WeightBytes(reader);
                }
                finally
                {
                    // The session's lease keeps the merged weights alive; the cache entry owns the session.
                    variant?.Dispose();
                }
            }
        }
        catch
        {
            foreach (var component in opened.Values)
                component.Dispose();
            throw;
        }
        return new LoraSessionSet(set, opened.GetValueOrDefault(LoraComponent.Unet), opened.GetValueOrDefault(LoraComponent.TextEncoder),
            opened.GetValueOrDefault(LoraComponent.TextEncoder2), bytes, result.Unmatched);
    }

    /// <summary>The initializers <paramref name="result"/> changed in <paramref name="component"/>, as a variant (caller disposes), or null when none.</summary>
    private static WeightVariant? ToVariant(LoraMergeResult result, LoraComponent component, string id)
    {
        WeightVariant? variant = null;
        try
        {
            foreach (var weight in result.Weights)
            {
                if (weight.Component != component)
                    continue;
                variant ??= new WeightVariant(id);
                var type = weight.Initializer.DataType == LoraWeightType.Float16 ? TensorElementType.Float16 : TensorElementType.Float;
                variant.Add(weight.Initializer.Name, weight.Initializer.Dims, type, weight.Values);
            }
            return variant;
        }
        catch
        {
            variant?.Dispose();
            throw;
        }
    }

    /// <summary>
    /// <paramref name="set"/> merged into one text encoder only, as the replaced initializers of a variant (caller disposes;
    /// null when the set changes none of its weights): what a session from textual inversion's rewritten graph of that
    /// encoder needs, since that graph keeps every initializer name but the token table's, which no LoRA targets.
    /// </summary>
    private WeightVariant? MergeTextEncoderLora(LoraSet set, LoraComponent component, string id)
    {
        var applications = new List<LoraApplication>(set.Entries.Count);
        foreach (var entry in set.Entries)
            applications.Add(new LoraApplication(LoraFile.Read(entry.Path), entry.Scale));
        string path = ModelFolder.ModelPath(Directory, LoraModule.ComponentName(component));
        var reader = OnnxModelReader.Open(path);
        var target = new LoraMergeTarget(component, LoraTargetIndex.Build(LoraGraphReader.Build(reader, path)), LoraGraphReader.WeightReader(reader));
        return ToVariant(LoraMerger.Merge([target], applications), component, id);
    }
}
