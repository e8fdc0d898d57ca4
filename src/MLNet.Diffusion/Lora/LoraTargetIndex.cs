using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Lora;

/// <summary>How an initializer stores a module's weight W [out, in(, kh, kw)].</summary>
internal enum LoraWeightLayout
{
    /// <summary>W as PyTorch holds it: [out, in] (Gemm with transB=1) or [out, in, kh, kw] (Conv).</summary>
    OutIn,

    /// <summary>Wᵀ, [in, out]: the anonymous initializer a traced Linear leaves as MatMul's B (or Gemm with transB=0).</summary>
    InOut,
}

/// <summary>Where one module's weight lives in a graph.</summary>
/// <param name="ModulePath">The module path (diffusers naming).</param>
/// <param name="NodeName">The MatMul/Gemm/Conv node that reads the weight.</param>
/// <param name="OpType">That node's operator.</param>
/// <param name="Initializer">The initializer holding the weight.</param>
/// <param name="Layout">W or Wᵀ.</param>
internal sealed record LoraTarget(string ModulePath, string NodeName, string OpType, LoraGraphInitializer Initializer, LoraWeightLayout Layout);

/// <summary>
/// Maps module paths to the initializers holding their weights in an exported graph. TorchScript exports
/// (torch.onnx, as the diffusers/Optimum exporters run it) keep each module's path in the node name,
/// <c>/down_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q/MatMul</c>: the path is the name without its
/// leading '/' and last segment, with '/' read as '.'. A Linear becomes MatMul(x, Wᵀ) with an anonymous transposed
/// initializer, or Gemm with a named W and transB=1; a convolution Conv with a named W. A weight reached through
/// Cast (float16 models) or Transpose nodes is followed back to its initializer. Named weights
/// (<c>&lt;path&gt;.weight</c>) also index their path, for exports whose node names carry no scope.
/// </summary>
internal sealed class LoraTargetIndex
{
    private static readonly HashSet<string> s_fusedAttentionOps = new(StringComparer.Ordinal)
    {
        "Attention", "MultiHeadAttention", "PackedAttention", "PackedMultiHeadAttention", "GroupQueryAttention",
    };

    private readonly Dictionary<string, LoraTarget> _byPath = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _byFlatName = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<string>> _ambiguous = new(StringComparer.Ordinal);
    private readonly Dictionary<string, List<(string Node, string Module)>> _consumers = new(StringComparer.Ordinal);

    private LoraTargetIndex(string graphName) => GraphName = graphName;

    /// <summary>The graph's name, for messages.</summary>
    public string GraphName { get; }

    /// <summary>Every module with exactly one weight, by path.</summary>
    public IReadOnlyDictionary<string, LoraTarget> Targets => _byPath;

    /// <summary>
    /// Nodes that compute attention from packed projections (ONNX Runtime's fused <c>Attention</c> family, or a
    /// packed projection, see <see cref="IsPackedProjection"/>): their Q, K and V weights are slices of one
    /// initializer, so a LoRA for <c>to_q</c> has no weight of its own to change.
    /// </summary>
    public IReadOnlyList<string> PackedAttentionNodes { get; private set; } = [];

    /// <summary>Indexes <paramref name="graph"/>.</summary>
    public static LoraTargetIndex Build(LoraGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var index = new LoraTargetIndex(graph.Name);
        var initializers = new Dictionary<string, LoraGraphInitializer>(StringComparer.Ordinal);
        foreach (var initializer in graph.Initializers)
            initializers[initializer.Name] = initializer;
        var producers = new Dictionary<string, LoraGraphNode>(StringComparer.Ordinal);
        var consumers = new Dictionary<string, List<LoraGraphNode>>(StringComparer.Ordinal);
        foreach (var node in graph.Nodes)
        {
            foreach (string output in node.Outputs)
                producers[output] = node;
            foreach (string input in node.Inputs)
            {
                if (input.Length == 0)
                    continue;
                if (!consumers.TryGetValue(input, out var list))
                    consumers.Add(input, list = []);
                list.Add(node);
            }
        }

        var packed = new List<string>();
        var found = new Dictionary<string, List<LoraTarget>>(StringComparer.Ordinal);
        foreach (var node in graph.Nodes)
        {
            if (s_fusedAttentionOps.Contains(node.OpType))
                packed.Add(node.Name);
            if (node.Domain.Length != 0 || node.OpType is not ("MatMul" or "Gemm" or "Conv") || node.Inputs.Count < 2)
                continue;
            if (!TryResolveWeight(node.Inputs[1], initializers, producers, out var initializer, out bool transposed))
                continue;
            bool storedTransposed = node.OpType switch
            {
                "MatMul" => true,
                "Gemm" => !(node.IntAttributes.TryGetValue("transB", out long transB) && transB != 0),
                _ => false,
            };
            if (node.OpType == "Conv" && transposed)
                continue;
            var layout = storedTransposed ^ transposed ? LoraWeightLayout.InOut : LoraWeightLayout.OutIn;
            string? path = ModulePathOfNode(node.Name);
            string? named = initializer.Name.EndsWith(".weight", StringComparison.Ordinal) ? initializer.Name[..^7] : null;
            if (IsPackedProjection(path, initializer, layout))
                packed.Add(node.Name);
            foreach (string? candidate in (ReadOnlySpan<string?>)[path, named != path ? named : null])
            {
                if (candidate is null)
                    continue;
                if (!found.TryGetValue(candidate, out var list))
                    found.Add(candidate, list = []);
                if (!list.Exists(t => t.Initializer.Name == initializer.Name))
                    list.Add(new LoraTarget(candidate, node.Name, node.OpType, initializer, layout));
            }
        }
        foreach (var (path, targets) in found)
        {
            if (targets.Count == 1)
            {
                index._byPath.Add(path, targets[0]);
                string flat = LoraKeyNames.Flatten(path);
                if (!index._byFlatName.TryGetValue(flat, out var paths))
                    index._byFlatName.Add(flat, paths = []);
                paths.Add(path);
            }
            else
            {
                index._ambiguous.Add(path, targets.ConvertAll(t => $"{t.NodeName} ({t.Initializer.Name})"));
            }
        }
        foreach (var target in index._byPath.Values)
        {
            if (!index._consumers.ContainsKey(target.Initializer.Name))
                index._consumers.Add(target.Initializer.Name, EffectiveConsumers(target.Initializer.Name, consumers));
        }
        index.PackedAttentionNodes = packed;
        return index;
    }

    /// <summary>
    /// Finds the weight of <paramref name="module"/>: its module path, else (kohya keys) the unique graph path whose
    /// flattened form equals the key's. Throws <see cref="InvalidOperationException"/> when the path has several
    /// weights (the graph reuses the module in ways a single patch cannot follow).
    /// </summary>
    public bool TryResolve(LoraModule module, out LoraTarget target)
    {
        ArgumentNullException.ThrowIfNull(module);
        if (_byPath.TryGetValue(module.ModulePath, out target!))
            return true;
        ThrowIfAmbiguous(module.ModulePath, module.SourceKey);
        if (module.FlatName is not null && _byFlatName.TryGetValue(module.FlatName, out var paths) && paths.Count == 1)
        {
            target = _byPath[paths[0]];
            return true;
        }
        return false;
    }

    /// <summary>
    /// The nodes (and their module paths) that read initializer <paramref name="initializer"/>, following Cast and
    /// Transpose nodes; exporters deduplicate identical initializers, so one may feed several modules.
    /// </summary>
    public IReadOnlyList<(string Node, string Module)> ConsumersOf(string initializer) =>
        _consumers.TryGetValue(initializer, out var list) ? list : [];

    private void ThrowIfAmbiguous(string path, string key)
    {
        if (_ambiguous.TryGetValue(path, out var nodes))
            throw new InvalidOperationException($"LoRA module '{key}' targets '{path}', which reads several weights in graph '{GraphName}' "
                + $"({string.Join(", ", nodes)}); a LoRA changes one weight per module, so this graph cannot take it.");
    }

    /// <summary>
    /// The module path of a TorchScript-scoped node name (<c>/a.0/b/Op</c> → <c>a.0.b</c>), or null for an unscoped name.
    /// </summary>
    internal static string? ModulePathOfNode(string nodeName)
    {
        if (nodeName.Length < 2 || nodeName[0] != '/')
            return null;
        int last = nodeName.LastIndexOf('/');
        if (last <= 1)
            return null;
        return nodeName[1..last].Replace('/', '.');
    }

    /// <summary>
    /// A projection that computes Q, K and V (or K and V) in one product: named so (<c>to_qkv</c>, <c>qkv</c>,
    /// <c>in_proj</c>; PyTorch <c>nn.MultiheadAttention.in_proj_weight</c>, which OpenCLIP text encoders use), or
    /// an attention module's own weight with three times as many outputs as inputs.
    /// </summary>
    private static bool IsPackedProjection(string? path, LoraGraphInitializer initializer, LoraWeightLayout layout)
    {
        if (initializer.Name.EndsWith("in_proj_weight", StringComparison.Ordinal) || initializer.Name.EndsWith("qkv.weight", StringComparison.Ordinal))
            return true;
        if (path is null)
            return false;
        string last = path[(path.LastIndexOf('.') + 1)..];
        if (last is "to_qkv" or "qkv" or "to_kv" or "in_proj" or "qkv_proj")
            return true;
        if (initializer.Dims.Length != 2 || last is not ("attn" or "self_attn" or "attn1" or "attn2" or "attention"))
            return false;
        long inputs = layout == LoraWeightLayout.InOut ? initializer.Dims[0] : initializer.Dims[1];
        long outputs = layout == LoraWeightLayout.InOut ? initializer.Dims[1] : initializer.Dims[0];
        return outputs == 3 * inputs;
    }

    private static bool TryResolveWeight(string value, Dictionary<string, LoraGraphInitializer> initializers,
        Dictionary<string, LoraGraphNode> producers, out LoraGraphInitializer initializer, out bool transposed)
    {
        transposed = false;
        // Cast (float16 weights computed in float32) and Transpose are the only nodes exporters put between a weight
        // and its consumer; a few hops bound the walk.
        for (int hop = 0; hop < 4; hop++)
        {
            if (initializers.TryGetValue(value, out initializer!))
                return initializer.DataType != LoraWeightType.Other;
            if (!producers.TryGetValue(value, out var producer) || producer.Inputs.Count == 0)
                break;
            if (producer.OpType == "Cast")
            {
                value = producer.Inputs[0];
            }
            else if (producer.OpType == "Transpose")
            {
                if (producer.IntListAttributes.TryGetValue("perm", out var perm) && !(perm.Length == 2 && perm[0] == 1 && perm[1] == 0))
                    break;
                transposed = !transposed;
                value = producer.Inputs[0];
            }
            else
            {
                break;
            }
        }
        initializer = null!;
        return false;
    }

    private static List<(string, string)> EffectiveConsumers(string value, Dictionary<string, List<LoraGraphNode>> consumers)
    {
        var result = new List<(string, string)>();
        var pending = new Stack<(string Value, int Depth)>();
        pending.Push((value, 0));
        while (pending.Count > 0)
        {
            var (current, depth) = pending.Pop();
            if (!consumers.TryGetValue(current, out var nodes))
                continue;
            foreach (var node in nodes)
            {
                if (node.OpType is "Cast" or "Transpose" && depth < 4)
                {
                    foreach (string output in node.Outputs)
                        pending.Push((output, depth + 1));
                    continue;
                }
                result.Add((node.Name, ModulePathOfNode(node.Name) ?? node.Name));
            }
        }
        return result;
    }
}
