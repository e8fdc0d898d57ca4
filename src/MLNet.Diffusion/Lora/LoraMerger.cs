using System;
using System.Collections.Generic;
using System.IO;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;

namespace MLNet.Diffusion.Lora;

/// <summary>A LoRA file to apply and the user's multiplier for it (A1111's <c>&lt;lora:name:0.8&gt;</c>, kohya's <c>multiplier</c>).</summary>
/// <param name="File">The LoRA.</param>
/// <param name="Scale">The multiplier (0 = no effect, 1 = as trained).</param>
internal sealed record LoraApplication(LoraFile File, float Scale);

/// <summary>One component of a model to merge into: its target index and a reader of its weights.</summary>
/// <param name="Component">Which component.</param>
/// <param name="Index">The component graph's module → weight index.</param>
/// <param name="ReadWeight">Returns a fresh float32 copy of an initializer's values (row-major; float16/bfloat16 widened).</param>
internal sealed record LoraMergeTarget(LoraComponent Component, LoraTargetIndex Index, Func<LoraGraphInitializer, float[]> ReadWeight);

/// <summary>A LoRA module (or key) that changed nothing, and why.</summary>
/// <param name="File">The LoRA file.</param>
/// <param name="Key">The key or module key as the file spells it.</param>
/// <param name="ModulePath">The module path it was read as (empty for a key in no known form).</param>
/// <param name="Reason">Why nothing was changed.</param>
internal sealed record LoraUnmatchedModule(string File, string Key, string ModulePath, string Reason);

/// <summary>
/// A patched initializer: the merged weight in float32, to be handed to ONNX Runtime in place of the original
/// (<c>SessionOptions.AddInitializer</c>) in the initializer's own element type (<see cref="ToRawData"/>).
/// </summary>
internal sealed class LoraPatchedWeight
{
    internal LoraPatchedWeight(LoraComponent component, LoraGraphInitializer initializer, float[] values, IReadOnlyList<string> modules)
    {
        Component = component;
        Initializer = initializer;
        Values = values;
        Modules = modules;
    }

    /// <summary>The component whose graph holds the initializer.</summary>
    public LoraComponent Component { get; }

    /// <summary>The initializer replaced (name, dims, element type).</summary>
    public LoraGraphInitializer Initializer { get; }

    /// <summary>The merged values, float32, in the initializer's layout.</summary>
    public float[] Values { get; }

    /// <summary>The LoRA module keys merged into it (file: key).</summary>
    public IReadOnlyList<string> Modules { get; }

    /// <summary>
    /// The merged values as little-endian bytes of the initializer's element type: float32 as is, float16 and
    /// bfloat16 rounded to nearest even (the merge is done in float32 and cast back, as diffusers/PEFT merge
    /// <c>W.float()</c> then <c>.to(dtype)</c>).
    /// </summary>
    public byte[] ToRawData()
    {
        switch (Initializer.DataType)
        {
            case LoraWeightType.Float32:
                return MemoryMarshal.AsBytes(Values.AsSpan()).ToArray();
            case LoraWeightType.Float16:
            {
                var bytes = new byte[Values.Length * 2];
                TensorPrimitives.ConvertToHalf(Values, MemoryMarshal.Cast<byte, Half>(bytes.AsSpan()));
                return bytes;
            }
            case LoraWeightType.BFloat16:
            {
                var bytes = new byte[Values.Length * 2];
                Span<ushort> bf16 = MemoryMarshal.Cast<byte, ushort>(bytes.AsSpan());
                ReadOnlySpan<uint> bits = MemoryMarshal.Cast<float, uint>(Values.AsSpan());
                for (int i = 0; i < bits.Length; i++)
                    bf16[i] = (ushort)((bits[i] + 0x7FFFu + ((bits[i] >> 16) & 1u)) >> 16); // round to nearest even (values are finite)
                return bytes;
            }
            default:
                throw new InvalidOperationException($"Initializer '{Initializer.Name}' has element type {Initializer.DataType}, which a LoRA cannot patch.");
        }
    }
}

/// <summary>The merged weights and every LoRA module or key that changed nothing.</summary>
/// <param name="Weights">The patched initializers (none when every scale is 0 or nothing matched).</param>
/// <param name="Unmatched">Modules that map to no weight of the model and keys in no known form, in file order.</param>
internal sealed record LoraMergeResult(IReadOnlyList<LoraPatchedWeight> Weights, IReadOnlyList<LoraUnmatchedModule> Unmatched);

/// <summary>
/// Merges LoRAs into a model's weights: <c>W' = W + Σ multiplier · (alpha/rank) · up · down</c>, in float32
/// (kohya sd-scripts <c>networks/lora.py</c> <c>LoRAModule.merge_to</c> and <c>networks/merge_lora.py</c>; PEFT
/// <c>Linear.get_delta_weight</c>/<c>Conv2d.get_delta_weight</c>): Linear <c>ΔW[out,in] = up[out,r]·down[r,in]</c>,
/// added transposed to a Wᵀ initializer; 1×1 convolution the same on the squeezed matrices; k×k convolution (LoCon)
/// <c>ΔW[o,i,h,w] = Σ_r up[o,r]·down[r,i,h,w]</c>, which is the same product with down flattened to [r, in·kh·kw].
/// </summary>
/// <remarks>
/// <para>Only initializers a LoRA changes are read and copied; the result holds one float32 copy of each.</para>
/// <para>
/// Shared initializers: exporters deduplicate identical initializers, so one tensor may feed several modules (at
/// initialisation every LayerNorm weight is all ones). ONNX Runtime replaces an initializer by name for every node
/// that reads it, and cannot give one consumer a private copy without rewriting the graph. Patching a weight that
/// another module also reads would change that module too, so it is refused (<see cref="InvalidOperationException"/>
/// naming the initializer and its modules); a weight read by several nodes of the same module (the module called
/// more than once) is patched, because the LoRA changes that module wherever it runs.
/// </para>
/// </remarks>
internal static class LoraMerger
{
    /// <summary>
    /// Merges <paramref name="loras"/> into the components in <paramref name="targets"/>. Modules of a component not
    /// in <paramref name="targets"/>, modules with no weight in their graph, and keys in no known form are reported in
    /// <see cref="LoraMergeResult.Unmatched"/>, never silently dropped. Throws <see cref="NotSupportedException"/>
    /// when an attention projection is targeted in a graph whose projections are packed (QKV fused),
    /// <see cref="InvalidOperationException"/> for a shared initializer, and <see cref="InvalidDataException"/> when a
    /// module's shape does not fit its weight (a LoRA for another model family).
    /// </summary>
    public static LoraMergeResult Merge(IReadOnlyList<LoraMergeTarget> targets, IReadOnlyList<LoraApplication> loras)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentNullException.ThrowIfNull(loras);
        var byComponent = new Dictionary<LoraComponent, LoraMergeTarget>();
        foreach (var target in targets)
        {
            if (!byComponent.TryAdd(target.Component, target))
                throw new ArgumentException($"Component {LoraModule.ComponentName(target.Component)} is listed twice.", nameof(targets));
        }
        var unmatched = new List<LoraUnmatchedModule>();
        var buffers = new Dictionary<(LoraComponent, string), (LoraGraphInitializer Initializer, float[] Values, List<string> Modules)>();
        var order = new List<(LoraComponent, string)>();
        foreach (var lora in loras)
        {
            if (!float.IsFinite(lora.Scale))
                throw new ArgumentOutOfRangeException(nameof(loras), lora.Scale, $"The scale of LoRA '{lora.File.Name}' must be finite.");
            foreach (string key in lora.File.UnrecognizedKeys)
                unmatched.Add(new LoraUnmatchedModule(lora.File.Name, key, "", "not a LoRA key in any known form (kohya, LoCon, diffusers/PEFT)"));
            foreach (var module in lora.File.Modules)
            {
                string component = LoraModule.ComponentName(module.Component);
                if (!byComponent.TryGetValue(module.Component, out var target))
                {
                    unmatched.Add(new LoraUnmatchedModule(lora.File.Name, module.SourceKey, module.ModulePath, $"the model has no {component} to apply it to"));
                    continue;
                }
                if (!target.Index.TryResolve(module, out var weight))
                {
                    ThrowIfPacked(lora.File.Name, module, target.Index);
                    unmatched.Add(new LoraUnmatchedModule(lora.File.Name, module.SourceKey, module.ModulePath, $"{component} has no weight for module '{module.ModulePath}'"));
                    continue;
                }
                CheckShape(lora.File.Name, module, weight);
                CheckNotShared(lora.File.Name, module, weight, target.Index);
                if (lora.Scale == 0f)
                    continue;
                var key = (module.Component, weight.Initializer.Name);
                if (!buffers.TryGetValue(key, out var buffer))
                {
                    float[] values = target.ReadWeight(weight.Initializer);
                    if (values.Length != weight.Initializer.ElementCount)
                        throw new InvalidOperationException($"Reading initializer '{weight.Initializer.Name}' gave {values.Length} values; its dims hold {weight.Initializer.ElementCount}.");
                    buffers.Add(key, buffer = (weight.Initializer, values, []));
                    order.Add(key);
                }
                AddDelta(buffer.Values, weight.Layout, module, lora.Scale * module.AlphaScale);
                buffer.Modules.Add(lora.File.Name + ": " + module.SourceKey);
            }
        }
        var weights = new List<LoraPatchedWeight>(order.Count);
        foreach (var key in order)
        {
            var (initializer, values, modules) = buffers[key];
            CheckRepresentable(initializer, values, modules);
            weights.Add(new LoraPatchedWeight(key.Item1, initializer, values, modules));
        }
        return new LoraMergeResult(weights, unmatched);
    }

    /// <summary>
    /// Adds <c>factor · up · down</c> of <paramref name="module"/> to <paramref name="weight"/> stored as
    /// <paramref name="layout"/>. Each row of <c>up · down</c> is accumulated over r in float32 before it is scaled
    /// and added, as <c>W + (up @ down) * scale</c> evaluates it.
    /// </summary>
    public static void AddDelta(Span<float> weight, LoraWeightLayout layout, LoraModule module, float factor)
    {
        int rows = module.OutFeatures, rank = module.Rank, length = module.RowLength;
        if (weight.Length != (long)rows * length)
            throw new ArgumentException($"A weight of {weight.Length} values cannot take the {rows}×{length} update of LoRA module '{module.SourceKey}'.", nameof(weight));
        ReadOnlySpan<float> up = module.Up, down = module.Down;
        if (layout == LoraWeightLayout.OutIn)
        {
            var row = new float[length];
            for (int o = 0; o < rows; o++)
            {
                Array.Clear(row);
                for (int r = 0; r < rank; r++)
                    TensorPrimitives.MultiplyAdd(down.Slice(r * length, length), up[o * rank + r], row, row);
                Span<float> w = weight.Slice(o * length, length);
                TensorPrimitives.MultiplyAdd(row, factor, w, w);
            }
            return;
        }
        // Wᵀ [in, out]: row k of Wᵀ gains factor · Σ_r down[r, k] · up[:, r]; up transposed once makes that a sum of rows.
        var upT = new float[rank * rows];
        for (int o = 0; o < rows; o++)
        {
            for (int r = 0; r < rank; r++)
                upT[r * rows + o] = up[o * rank + r];
        }
        var column = new float[rows];
        for (int k = 0; k < length; k++)
        {
            Array.Clear(column);
            for (int r = 0; r < rank; r++)
                TensorPrimitives.MultiplyAdd(upT.AsSpan(r * rows, rows), down[r * length + k], column, column);
            Span<float> w = weight.Slice(k * rows, rows);
            TensorPrimitives.MultiplyAdd(column, factor, w, w);
        }
    }

    private static void CheckShape(string file, LoraModule module, LoraTarget target)
    {
        long[] dims = target.Initializer.Dims;
        bool fits = target.Layout == LoraWeightLayout.InOut
            ? dims.Length == 2 && dims[0] == module.InFeatures && dims[1] == module.OutFeatures && module.KernelHeight == 1 && module.KernelWidth == 1
            : dims.Length switch
            {
                2 => dims[0] == module.OutFeatures && dims[1] == module.InFeatures && module.KernelHeight == 1 && module.KernelWidth == 1,
                4 => dims[0] == module.OutFeatures && dims[1] == module.InFeatures && dims[2] == module.KernelHeight && dims[3] == module.KernelWidth,
                _ => false,
            };
        if (!fits)
        {
            string shape = module.Kind == LoraLayerKind.Conv
                ? $"[{module.OutFeatures}, {module.InFeatures}, {module.KernelHeight}, {module.KernelWidth}]"
                : $"[{module.OutFeatures}, {module.InFeatures}]";
            throw new InvalidDataException($"LoRA '{file}' module '{module.SourceKey}' updates a weight of shape {shape} (out, in), but '{module.ModulePath}' "
                + $"in {target.Initializer.Name} has dims [{string.Join(", ", dims)}] stored as {(target.Layout == LoraWeightLayout.InOut ? "Wᵀ [in, out]" : "W [out, in, …]")}: "
                + "the LoRA was trained for another model.");
        }
    }

    private static void CheckNotShared(string file, LoraModule module, LoraTarget target, LoraTargetIndex index)
    {
        var consumers = index.ConsumersOf(target.Initializer.Name);
        foreach (var (node, other) in consumers)
        {
            // The target's own node is never another module, even when its name carries no scope (graphs whose weights
            // are named <path>.weight but whose nodes are Conv_45, as the Shapes builder writes them).
            if (other != target.ModulePath && node != target.NodeName)
                throw new InvalidOperationException($"LoRA '{file}' module '{module.SourceKey}' targets initializer '{target.Initializer.Name}' of graph '{index.GraphName}', "
                    + $"which module '{target.ModulePath}' shares with node '{node}' of '{other}' (the exporter merged identical weights). "
                    + "ONNX Runtime replaces an initializer for every node that reads it, so patching it would change the other module too; "
                    + "re-export the model without initializer deduplication to apply this LoRA.");
        }
    }

    private static void ThrowIfPacked(string file, LoraModule module, LoraTargetIndex index)
    {
        int dot = module.ModulePath.LastIndexOf('.');
        string last = module.ModulePath[(dot + 1)..];
        if (index.PackedAttentionNodes.Count > 0 && last is "to_q" or "to_k" or "to_v" or "q_proj" or "k_proj" or "v_proj")
            throw new NotSupportedException($"LoRA '{file}' module '{module.SourceKey}' changes the attention projection '{module.ModulePath}', but graph '{index.GraphName}' "
                + $"computes attention from packed Q/K/V weights (node '{index.PackedAttentionNodes[0]}'), an optimized export with no separate {last} weight. "
                + "Apply LoRAs to an unoptimized export (torch.onnx / Optimum without the transformer optimizer), or fuse the LoRA before optimizing.");
    }

    private static void CheckRepresentable(LoraGraphInitializer initializer, float[] values, List<string> modules)
    {
        // bfloat16's largest finite value is 0x7F7F (3.3895314e38): anything above rounds to infinity.
        float limit = initializer.DataType switch
        {
            LoraWeightType.Float16 => (float)Half.MaxValue,
            LoraWeightType.BFloat16 => 3.3895314e38f,
            _ => float.MaxValue,
        };
        float largest = TensorPrimitives.MaxMagnitude(values);
        if (!float.IsFinite(largest) || Math.Abs(largest) > limit)
            throw new InvalidDataException($"Merging {string.Join(", ", modules)} into initializer '{initializer.Name}' gives {largest}, "
                + $"which {initializer.DataType} cannot hold; lower the LoRA scale.");
    }
}
