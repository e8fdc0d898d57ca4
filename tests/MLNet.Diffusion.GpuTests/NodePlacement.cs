using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text.Json;

namespace MLNet.Diffusion.GpuTests;

/// <summary>One executed node of an ONNX Runtime profile: operator, execution provider, output bytes.</summary>
public sealed record NodeRun(string Node, string Op, string Provider, long OutputBytes);

/// <summary>
/// Reads the node events of an ONNX Runtime profile (the Chrome-trace JSON that <c>SessionOptions.EnableProfiling</c>
/// writes: <c>"cat": "Node"</c> events whose <c>args</c> carry <c>op_name</c>, <c>provider</c> and <c>output_size</c>).
/// That is where a silent CPU fallback shows: a node ONNX Runtime assigned to the CPU execution provider.
/// </summary>
public static class NodePlacement
{
    /// <summary>The node runs recorded in <paramref name="profileFile"/>.</summary>
    public static IReadOnlyList<NodeRun> Read(string profileFile)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(profileFile));
        var runs = new List<NodeRun>();
        foreach (var e in doc.RootElement.EnumerateArray())
        {
            if (!e.TryGetProperty("cat", out var cat) || cat.GetString() != "Node" || !e.TryGetProperty("args", out var args))
                continue;
            if (!args.TryGetProperty("provider", out var provider) || !args.TryGetProperty("op_name", out var op))
                continue;
            string name = e.TryGetProperty("name", out var n) ? n.GetString() ?? string.Empty : string.Empty;
            runs.Add(new NodeRun(name, op.GetString() ?? string.Empty, provider.GetString() ?? string.Empty, Number(args, "output_size")));
        }
        return runs;
    }

    /// <summary>A one-line summary: runs per provider, and the CPU nodes with their operators and sizes.</summary>
    public static string Describe(IReadOnlyList<NodeRun> runs)
    {
        var perProvider = runs.GroupBy(r => r.Provider).Select(g => $"{g.Key}: {g.Count()}");
        var cpu = runs.Where(r => r.Provider.StartsWith("CPU", StringComparison.Ordinal))
            .GroupBy(r => r.Op).Select(g => $"{g.Key}×{g.Count()} (≤{g.Max(r => r.OutputBytes)} B)");
        return $"node runs {string.Join(", ", perProvider)}; on the CPU: {string.Join(", ", cpu.DefaultIfEmpty("none"))}";
    }

    private static long Number(JsonElement args, string name)
    {
        if (!args.TryGetProperty(name, out var v))
            return 0;
        return v.ValueKind switch
        {
            JsonValueKind.Number => v.GetInt64(),
            JsonValueKind.String when long.TryParse(v.GetString(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long l) => l,
            _ => 0,
        };
    }
}
