using System;
using System.Collections.Generic;
using System.IO;
using System.Text.Json;
using System.Text.RegularExpressions;
using MLNet.Diffusion.SafeTensors;

namespace MLNet.Diffusion.Lora;

/// <summary>
/// A LoRA file read into <see cref="LoraModule"/>s: kohya/sd-scripts and LyCORIS LoCon keys
/// (<c>lora_unet_…</c>, <c>lora_te_…</c>, <c>lora_te1_…</c>/<c>lora_te2_…</c> with <c>.lora_down.weight</c>,
/// <c>.lora_up.weight</c>, <c>.alpha</c>; SDXL's original-layout block names remapped), and diffusers keys: PEFT
/// (<c>unet.&lt;path&gt;.lora_A.weight</c>/<c>lora_B.weight</c>, alpha from the <c>lora_adapter_metadata</c>
/// entry of <c>__metadata__</c> or from <c>&lt;component&gt;.&lt;path&gt;.alpha</c> network alphas), the
/// LoRACompatible layers' <c>.lora.down/up.weight</c> and <c>.lora_linear_layer.down/up.weight</c>, and the older
/// attention processors' <c>….processor.to_q_lora.down.weight</c>.
/// </summary>
/// <remarks>
/// DoRA, LoHa, LoKr, LyCORIS Tucker (<c>lora_mid</c>), full-difference and OFT modules change weights in ways this
/// merge does not compute; they are refused with a <see cref="NotSupportedException"/> naming the type and the key,
/// never half-applied. Keys in no known form are listed in <see cref="UnrecognizedKeys"/> for the caller to report.
/// </remarks>
internal sealed class LoraFile
{
    private static readonly string[] s_kohyaPrefixes = ["lora_unet_", "lora_te1_", "lora_te2_", "lora_te_"];

    private LoraFile(string name, IReadOnlyList<LoraModule> modules, IReadOnlyList<string> unrecognizedKeys)
    {
        Name = name;
        Modules = modules;
        UnrecognizedKeys = unrecognizedKeys;
    }

    /// <summary>The file name (for messages and reports).</summary>
    public string Name { get; }

    /// <summary>The low-rank updates, in the file's key order.</summary>
    public IReadOnlyList<LoraModule> Modules { get; }

    /// <summary>Tensor names in no LoRA form this reader knows (e.g. bundled embeddings); never applied.</summary>
    public IReadOnlyList<string> UnrecognizedKeys { get; }

    /// <summary>
    /// Reads the <c>.safetensors</c> LoRA at <paramref name="path"/>. <paramref name="layersPerBlock"/> is the UNet's
    /// <c>layers_per_block</c>, needed only to remap SDXL-style original block names (2 for SD 1.x/2.x and SDXL).
    /// </summary>
    public static LoraFile Read(string path, int layersPerBlock = 2)
    {
        using var file = SafeTensorsFile.Open(path);
        return Read(file, layersPerBlock);
    }

    /// <summary>Reads the LoRA modules of an open <paramref name="file"/>.</summary>
    public static LoraFile Read(SafeTensorsFile file, int layersPerBlock = 2)
    {
        ArgumentNullException.ThrowIfNull(file);
        var parts = new Dictionary<(LoraComponent, string), Parts>();
        var order = new List<(LoraComponent, string)>();
        var unrecognized = new List<string>();
        foreach (string key in SortedKeys(file))
        {
            RefuseUnsupportedType(file.FileName, key);
            if (!TryClassify(key, layersPerBlock, out var component, out string module, out string? flat, out Role role))
            {
                unrecognized.Add(key);
                continue;
            }
            if (!parts.TryGetValue((component, module), out var entry))
            {
                parts.Add((component, module), entry = new Parts(key, flat));
                order.Add((component, module));
            }
            switch (role)
            {
                case Role.Down: entry.Down = Set(file, key, entry.Down); break;
                case Role.Up: entry.Up = Set(file, key, entry.Up); break;
                case Role.Alpha: entry.Alpha = Set(file, key, entry.Alpha); break;
            }
        }
        var adapter = AdapterMetadata.Parse(file);
        var modules = new List<LoraModule>(order.Count);
        foreach (var (component, module) in order)
        {
            var entry = parts[(component, module)];
            if (entry.Down is null || entry.Up is null)
            {
                // A lone network alpha for a module without matrices changes nothing; anything else is a broken file.
                if (entry.Down is null && entry.Up is null)
                {
                    unrecognized.Add(entry.Alpha!);
                    continue;
                }
                throw new InvalidDataException($"LoRA file '{file.FileName}': module '{entry.SourceKey}' has "
                    + (entry.Down is null ? "an up matrix but no down matrix" : "a down matrix but no up matrix") + ".");
            }
            modules.Add(Build(file, component, module, entry, adapter));
        }
        return new LoraFile(file.FileName, modules, unrecognized);
    }

    private static List<string> SortedKeys(SafeTensorsFile file)
    {
        var keys = new List<string>(file.Tensors.Keys);
        keys.Sort(StringComparer.Ordinal);
        return keys;
    }

    private static string Set(SafeTensorsFile file, string key, string? existing)
    {
        if (existing is not null)
            throw new InvalidDataException($"LoRA file '{file.FileName}': tensors '{existing}' and '{key}' both give the same matrix of one module.");
        return key;
    }

    private static void RefuseUnsupportedType(string file, string key)
    {
        string? type =
            key.Contains("dora_scale", StringComparison.Ordinal) || key.Contains("lora_magnitude_vector", StringComparison.Ordinal) ? "DoRA (weight-decomposed LoRA)"
            : key.Contains(".hada_", StringComparison.Ordinal) ? "LoHa (LyCORIS Hadamard product)"
            : key.Contains(".lokr_", StringComparison.Ordinal) ? "LoKr (LyCORIS Kronecker product)"
            : key.Contains(".lora_mid.", StringComparison.Ordinal) ? "LoCon with Tucker decomposition (LyCORIS lora_mid)"
            : key.Contains(".oft_", StringComparison.Ordinal) || key.EndsWith(".oft_blocks", StringComparison.Ordinal) ? "OFT (orthogonal fine-tuning)"
            : key.EndsWith(".diff", StringComparison.Ordinal) || key.EndsWith(".diff_b", StringComparison.Ordinal) ? "a full weight difference (LyCORIS full)"
            : key.EndsWith(".lora_A.bias", StringComparison.Ordinal) || key.EndsWith(".lora_B.bias", StringComparison.Ordinal) ? "LoRA with bias terms (PEFT lora_bias)"
            : null;
        if (type is not null)
            throw new NotSupportedException($"LoRA file '{file}' holds {type} (tensor '{key}'); only plain LoRA and LoCon (down/up matrices with alpha) can be applied.");
    }

    private enum Role
    {
        Down,
        Up,
        Alpha,
    }

    private static bool TryClassify(string key, int layersPerBlock, out LoraComponent component, out string module, out string? flat, out Role role)
    {
        component = default;
        module = flat = null!;
        role = default;
        foreach (string prefix in s_kohyaPrefixes)
        {
            if (!key.StartsWith(prefix, StringComparison.Ordinal))
                continue;
            int dot = key.IndexOf('.', StringComparison.Ordinal);
            if (dot < 0)
                return false;
            string suffix = key[(dot + 1)..];
            if (!TryRole(suffix, "lora_down.weight", "lora_up.weight", out role))
                return false;
            component = prefix switch
            {
                "lora_unet_" => LoraComponent.Unet,
                "lora_te2_" => LoraComponent.TextEncoder2,
                _ => LoraComponent.TextEncoder,
            };
            flat = key[prefix.Length..dot];
            try
            {
                module = LoraKeyNames.ToModulePath(flat, layersPerBlock);
            }
            catch (FormatException)
            {
                // Kept for the report: the flattened name may still match the graph, and if not it is listed unmatched.
                module = flat;
            }
            return true;
        }
        return TryClassifyDiffusers(key, out component, out module, out role);
    }

    private static bool TryRole(string suffix, string down, string up, out Role role)
    {
        role = suffix == down ? Role.Down : suffix == up ? Role.Up : Role.Alpha;
        return suffix == down || suffix == up || suffix == "alpha";
    }

    private static bool TryClassifyDiffusers(string key, out LoraComponent component, out string module, out Role role)
    {
        module = null!;
        role = default;
        string rest;
        if (key.StartsWith("unet.", StringComparison.Ordinal))
            (component, rest) = (LoraComponent.Unet, key[5..]);
        else if (key.StartsWith("text_encoder.", StringComparison.Ordinal))
            (component, rest) = (LoraComponent.TextEncoder, key[13..]);
        else if (key.StartsWith("text_encoder_2.", StringComparison.Ordinal))
            (component, rest) = (LoraComponent.TextEncoder2, key[15..]);
        else if (key.StartsWith("down_blocks.", StringComparison.Ordinal) || key.StartsWith("mid_block.", StringComparison.Ordinal)
            || key.StartsWith("up_blocks.", StringComparison.Ordinal))
            (component, rest) = (LoraComponent.Unet, key); // diffusers' save_attn_procs wrote UNet keys unprefixed
        else
        {
            component = default;
            return false;
        }
        string[][] forms =
        [
            [".lora_A.weight", ".lora_B.weight"],
            [".lora.down.weight", ".lora.up.weight"],
            [".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"],
        ];
        foreach (var form in forms)
        {
            for (int i = 0; i < 2; i++)
            {
                if (rest.EndsWith(form[i], StringComparison.Ordinal))
                {
                    module = rest[..^form[i].Length];
                    role = i == 0 ? Role.Down : Role.Up;
                    return module.Length > 0;
                }
            }
        }
        if (rest.EndsWith(".alpha", StringComparison.Ordinal))
        {
            module = rest[..^6];
            role = Role.Alpha;
            return module.Length > 0;
        }
        return TryAttentionProcessor(component, rest, out module, out role);
    }

    /// <summary>
    /// diffusers' attention processors (LoRAAttnProcessor, before PEFT) saved <c>&lt;attn&gt;.processor.to_q_lora.down.weight</c>
    /// for the UNet and <c>&lt;self_attn&gt;.to_q_lora.down.weight</c> for CLIP; the module is the projection itself
    /// (<c>to_out_lora</c> → <c>to_out.0</c> in the UNet, <c>out_proj</c> in CLIP).
    /// </summary>
    private static bool TryAttentionProcessor(LoraComponent component, string rest, out string module, out Role role)
    {
        module = null!;
        role = default;
        int lora = rest.LastIndexOf("_lora.", StringComparison.Ordinal);
        if (lora < 0)
            return false;
        string suffix = rest[(lora + 6)..];
        if (suffix is not ("down.weight" or "up.weight"))
            return false;
        role = suffix == "down.weight" ? Role.Down : Role.Up;
        int start = rest.LastIndexOf('.', lora) + 1;
        string projection = rest[start..lora];
        string parent = rest[..Math.Max(0, start - 1)];
        if (parent.EndsWith(".processor", StringComparison.Ordinal))
            parent = parent[..^10];
        bool clip = component != LoraComponent.Unet;
        string? name = projection switch
        {
            "to_q" => clip ? "q_proj" : "to_q",
            "to_k" => clip ? "k_proj" : "to_k",
            "to_v" => clip ? "v_proj" : "to_v",
            "to_out" => clip ? "out_proj" : "to_out.0",
            _ => null,
        };
        if (name is null || parent.Length == 0)
            return false;
        module = parent + "." + name;
        return true;
    }

    private static LoraModule Build(SafeTensorsFile file, LoraComponent component, string module, Parts entry, AdapterMetadata adapter)
    {
        var down = file.Tensors[entry.Down!];
        var up = file.Tensors[entry.Up!];
        string where = $"LoRA file '{file.FileName}': module '{entry.SourceKey}'";
        if (down.Shape.Length is not (2 or 4) || up.Shape.Length != down.Shape.Length)
            throw new InvalidDataException($"{where} has down shape [{string.Join(", ", down.Shape)}] and up shape [{string.Join(", ", up.Shape)}]; "
                + "expected down [r, in] and up [out, r], or down [r, in, kh, kw] and up [out, r, 1, 1].");
        if (Array.Exists(down.Shape, d => d > int.MaxValue) || Array.Exists(up.Shape, d => d > int.MaxValue))
            throw new InvalidDataException($"{where} has a dimension larger than {int.MaxValue}.");
        long rank = down.Shape[0];
        if (rank == 0 || up.Shape[1] != rank || (up.Shape.Length == 4 && (up.Shape[2] != 1 || up.Shape[3] != 1)))
            throw new InvalidDataException($"{where} has down shape [{string.Join(", ", down.Shape)}] and up shape [{string.Join(", ", up.Shape)}], "
                + "which do not share a rank (up must be [out, r] or [out, r, 1, 1] for down [r, …]).");
        bool conv = down.Shape.Length == 4;
        int kh = conv ? checked((int)down.Shape[2]) : 1, kw = conv ? checked((int)down.Shape[3]) : 1;
        float alpha;
        if (entry.Alpha is not null)
        {
            var alphaInfo = file.Tensors[entry.Alpha];
            if (alphaInfo.ElementCount != 1)
                throw new InvalidDataException($"{where} has an alpha of shape [{string.Join(", ", alphaInfo.Shape)}]; alpha is one number.");
            alpha = file.ReadFloat32(entry.Alpha)[0];
        }
        else
        {
            alpha = adapter.AlphaFor(file.FileName, component, module) ?? rank;
        }
        return new LoraModule(entry.SourceKey, component, module, entry.Flat,
            file.ReadFloat32(entry.Up!), file.ReadFloat32(entry.Down!),
            checked((int)up.Shape[0]), checked((int)down.Shape[1]), (int)rank, alpha,
            adapter.RankStabilized(component), conv ? LoraLayerKind.Conv : LoraLayerKind.Linear, kh, kw);
    }

    private sealed class Parts(string sourceKey, string? flat)
    {
        public string SourceKey { get; } = TrimSuffix(sourceKey);
        public string? Flat { get; } = flat;
        public string? Down { get; set; }
        public string? Up { get; set; }
        public string? Alpha { get; set; }

        private static string TrimSuffix(string key)
        {
            foreach (string suffix in (ReadOnlySpan<string>)[".lora_down.weight", ".lora_up.weight", ".alpha", ".lora_A.weight", ".lora_B.weight",
                ".lora.down.weight", ".lora.up.weight", ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight", ".down.weight", ".up.weight"])
            {
                if (key.EndsWith(suffix, StringComparison.Ordinal))
                    return key[..^suffix.Length];
            }
            return key;
        }
    }

    /// <summary>
    /// The LoraConfig arguments diffusers (≥ 0.34, <c>LoraBaseMixin.write_lora_layers</c>) stores as the JSON string
    /// <c>lora_adapter_metadata</c>, keys prefixed by component (<c>unet.lora_alpha</c>). PEFT's scale is
    /// <c>alpha_pattern</c>'s value for the first pattern matching the module (<c>re.match(rf"(.*\.)?({pattern})$")</c>,
    /// PEFT <c>get_pattern_key</c>), else <c>lora_alpha</c>; divided by r, or √r with <c>use_rslora</c>.
    /// </summary>
    private sealed class AdapterMetadata
    {
        private static readonly TimeSpan s_patternTimeout = TimeSpan.FromMilliseconds(200);
        private readonly Dictionary<string, JsonElement> _entries = new(StringComparer.Ordinal);

        public static AdapterMetadata Parse(SafeTensorsFile file)
        {
            var result = new AdapterMetadata();
            if (!file.Metadata.TryGetValue("lora_adapter_metadata", out string? json))
                return result;
            try
            {
                using var document = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 8 });
                if (document.RootElement.ValueKind != JsonValueKind.Object)
                    throw new InvalidDataException($"LoRA file '{file.FileName}': __metadata__ entry lora_adapter_metadata is not a JSON object.");
                foreach (var property in document.RootElement.EnumerateObject())
                    result._entries[property.Name] = property.Value.Clone();
            }
            catch (JsonException e)
            {
                throw new InvalidDataException($"LoRA file '{file.FileName}': __metadata__ entry lora_adapter_metadata is not valid JSON ({e.Message}).", e);
            }
            foreach (LoraComponent component in Enum.GetValues<LoraComponent>())
            {
                if (result.Get(component, "use_dora") is { ValueKind: JsonValueKind.True })
                    throw new NotSupportedException($"LoRA file '{file.FileName}' holds DoRA (weight-decomposed LoRA) for {LoraModule.ComponentName(component)} "
                        + "(lora_adapter_metadata use_dora = true); only plain LoRA can be applied.");
            }
            return result;
        }

        public bool RankStabilized(LoraComponent component) => Get(component, "use_rslora") is { ValueKind: JsonValueKind.True };

        public float? AlphaFor(string file, LoraComponent component, string module)
        {
            if (Get(component, "alpha_pattern") is { ValueKind: JsonValueKind.Object } patterns)
            {
                foreach (var pattern in patterns.EnumerateObject())
                {
                    bool match;
                    try
                    {
                        match = Regex.IsMatch(module, $@"^(.*\.)?({pattern.Name})$", RegexOptions.CultureInvariant, s_patternTimeout);
                    }
                    catch (Exception e) when (e is ArgumentException or RegexMatchTimeoutException)
                    {
                        throw new InvalidDataException($"LoRA file '{file}': alpha_pattern '{pattern.Name}' of lora_adapter_metadata is not a usable pattern ({e.Message}).", e);
                    }
                    if (match)
                        return Number(file, "alpha_pattern." + pattern.Name, pattern.Value);
                }
            }
            return Get(component, "lora_alpha") is { } alpha ? Number(file, "lora_alpha", alpha) : null;
        }

        private JsonElement? Get(LoraComponent component, string name) =>
            _entries.TryGetValue(LoraModule.ComponentName(component) + "." + name, out var value) ? value
            : _entries.TryGetValue(name, out value) ? value
            : null;

        private static float Number(string file, string name, JsonElement value)
        {
            if (value.ValueKind != JsonValueKind.Number || !float.IsFinite(value.GetSingle()))
                throw new InvalidDataException($"LoRA file '{file}': lora_adapter_metadata {name} is {value.GetRawText()}, not a finite number.");
            return value.GetSingle();
        }
    }
}
