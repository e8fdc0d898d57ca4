using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using MLNet.Diffusion.Lora;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Benchmarks.Lora;

/// <summary>
/// Issue 16, point 6: what applying a LoRA costs on the SD-sized synthetic UNet (SyntheticUnet, 860 M parameters),
/// against loading the model without one. Each measurement runs in its own process (<c>lora-cost MODE FOLDER</c>) so
/// that its peak working set (Linux VmHWM, <see cref="Process.PeakWorkingSet64"/>) is its own:
/// <list type="bullet">
/// <item><c>base</c>: load the model folder without LoRA;</item>
/// <item><c>load-with</c>: load it with LoRA A (<see cref="StableDiffusionModelOptions.Loras"/>: merge, then only the merged UNet opens);</item>
/// <item><c>switch</c>: load without LoRA, then <c>WithLoras(A)</c>, <c>WithLoras(B)</c>, and A again (cached).</item>
/// </list>
/// The LoRAs are generated here for the UNet's module paths: kohya keys, float16, rank 32, alpha 16, on every Linear and
/// 1×1 projection of the transformer blocks (attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj, ff.net.2, proj_in,
/// proj_out) — the modules a typical SD 1.5 LoRA trains.
/// Run: <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- lora-cost [--fp16] [FOLDER]</c>.
/// </summary>
internal static class LoraCostHarness
{
    private static readonly string[] s_typical = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"];

    public static int Run(string[] args)
    {
        bool fp16 = args.Contains("--fp16");
        string folder = args.Where((a, i) => !a.StartsWith("--", StringComparison.Ordinal) && (i == 0 || args[i - 1] != "--modes")).FirstOrDefault()
            ?? Path.Combine(Path.GetTempPath(), fp16 ? "mlnet-sd-synthetic-fp16" : "mlnet-sd-synthetic");
        var options = new SyntheticUnetOptions { Float16 = fp16 };
        if (!File.Exists(Path.Combine(folder, "unet", "model.onnx")))
        {
            var build = Stopwatch.StartNew();
            long parameters = SyntheticUnet.BuildModelFolder(folder, options);
            Console.WriteLine($"Built {folder}: {parameters:N0} UNet parameters in {build.Elapsed.TotalSeconds:F0} s");
        }
        string a = Path.Combine(folder, "lora_a.safetensors"), b = Path.Combine(folder, "lora_b.safetensors");
        var reader = OnnxModelReader.Open(Path.Combine(folder, "unet", "model.onnx"));
        long unetBytes = LoraGraphReader.WeightBytes(reader);
        int modules = WriteLora(reader, a, seed: 1);
        WriteLora(reader, b, seed: 2);
        Console.WriteLine($"UNet weights {unetBytes / 1e9:F2} GB; LoRA files: {modules} modules, {new FileInfo(a).Length / 1e6:F0} MB each (float16, rank 32)");
        // --modes a,b runs a subset (each mode loads the SD-sized UNet at least once: minutes on a small CPU).
        int modesAt = Array.IndexOf(args, "--modes");
        string[] modes = modesAt >= 0 ? args[modesAt + 1].Split(',') : ["base", "load-with", "switch"];
        foreach (string mode in modes)
        {
            // Under `dotnet X.dll` the host needs the assembly; the apphost does not.
            string host = Environment.ProcessPath!;
            string[] childArgs = Path.GetFileNameWithoutExtension(host) == "dotnet"
                ? [typeof(LoraCostHarness).Assembly.Location, "lora-cost-child", mode, folder]
                : ["lora-cost-child", mode, folder];
            using var child = Process.Start(new ProcessStartInfo(host, childArgs) { UseShellExecute = false })!;
            child.WaitForExit();
            if (child.ExitCode != 0)
                return child.ExitCode;
        }
        return 0;
    }

    public static int Child(string[] args)
    {
        string mode = args[0], folder = args[1];
        string a = Path.Combine(folder, "lora_a.safetensors"), b = Path.Combine(folder, "lora_b.safetensors");
        var ml = new MLContext(seed: 1);
        var clock = Stopwatch.StartNew();
        var lines = new List<string>();
        switch (mode)
        {
            case "base":
            {
                using var model = StableDiffusionModel.Load(ml, folder);
                lines.Add($"load without LoRA: {clock.Elapsed.TotalSeconds:F2} s ({model.LoadTimes})");
                break;
            }
            case "load-with":
            {
                using var model = StableDiffusionModel.Load(ml, folder, new StableDiffusionModelOptions { Loras = [new LoraReference(a, 0.8f)] });
                lines.Add($"load with LoRA A (merge + merged UNet session only): {clock.Elapsed.TotalSeconds:F2} s ({model.LoadTimes}); unmatched keys {model.UnmatchedLoraKeys.Count}");
                break;
            }
            case "switch":
            {
                using var model = StableDiffusionModel.Load(ml, folder, new StableDiffusionModelOptions { LoraSessionCacheBytes = 16L << 30 });
                lines.Add($"load without LoRA: {clock.Elapsed.TotalSeconds:F2} s");
                long afterLoad = Process.GetCurrentProcess().WorkingSet64;
                clock.Restart();
                using (var withA = model.WithLoras(new LoraReference(a, 0.8f)))
                    lines.Add($"WithLoras(A), first time (hash, merge, session): {clock.Elapsed.TotalSeconds:F2} s");
                clock.Restart();
                using (var withB = model.WithLoras(new LoraReference(b, 0.8f)))
                    lines.Add($"switch to WithLoras(B), first time: {clock.Elapsed.TotalSeconds:F2} s");
                clock.Restart();
                using (var again = model.WithLoras(new LoraReference(a, 0.8f)))
                    lines.Add($"switch back to WithLoras(A), cached: {clock.Elapsed.TotalSeconds * 1000:F1} ms");
                lines.Add($"working set after the base load {afterLoad / 1e9:F2} GB");
                break;
            }
            default:
                throw new ArgumentException($"unknown lora-cost mode '{mode}'");
        }
        using var self = Process.GetCurrentProcess();
        self.Refresh();
        lines.Add($"peak working set {self.PeakWorkingSet64 / 1e9:F2} GB");
        foreach (string line in lines)
            Console.WriteLine($"[{mode}] {line}");
        return 0;
    }

    /// <summary>A kohya LoRA (float16, rank 32, alpha 16, seeded) for the UNet's typical LoRA modules; returns the module count.</summary>
    private static int WriteLora(OnnxModelReader reader, string path, int seed)
    {
        const int rank = 32;
        var index = LoraTargetIndex.Build(LoraGraphReader.Build(reader, reader.ModelPath));
        var random = new Random(seed);
        var tensors = new SortedDictionary<string, (long[] Shape, Half[] Data)>(StringComparer.Ordinal);
        int modules = 0;
        foreach (var (modulePath, target) in index.Targets)
        {
            if (!modulePath.Contains(".attentions.", StringComparison.Ordinal) || !s_typical.Any(s => modulePath.EndsWith("." + s, StringComparison.Ordinal)))
                continue;
            var dims = target.Initializer.Dims;
            long inFeatures = target.Layout == LoraWeightLayout.InOut ? dims[0] : dims[1];
            long outFeatures = target.Layout == LoraWeightLayout.InOut ? dims[1] : dims[0];
            bool conv = dims.Length == 4;
            string key = "lora_unet_" + LoraKeyNames.Flatten(modulePath);
            tensors[key + ".lora_down.weight"] = (conv ? [rank, inFeatures, 1, 1] : [rank, inFeatures], RandomHalf(random, rank * inFeatures, 0.01f));
            tensors[key + ".lora_up.weight"] = (conv ? [outFeatures, rank, 1, 1] : [outFeatures, rank], RandomHalf(random, outFeatures * rank, 0.01f));
            tensors[key + ".alpha"] = ([], [(Half)16f]);
            modules++;
        }
        var header = new StringBuilder("{\"__metadata__\":{\"ss_network_dim\":\"32\",\"ss_network_alpha\":\"16\"}");
        long offset = 0;
        foreach (var (name, (shape, data)) in tensors)
        {
            header.Append(CultureInfo.InvariantCulture, $",{JsonSerializer.Serialize(name)}:{{\"dtype\":\"F16\",\"shape\":[{string.Join(",", shape)}],\"data_offsets\":[{offset},{offset + data.Length * 2}]}}");
            offset += data.Length * 2;
        }
        header.Append('}');
        while (header.Length % 8 != 0)
            header.Append(' ');
        using var stream = File.Create(path);
        stream.Write(BitConverter.GetBytes((ulong)header.Length));
        stream.Write(Encoding.UTF8.GetBytes(header.ToString()));
        foreach (var (_, (_, data)) in tensors)
            stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.AsSpan()));
        return modules;
    }

    private static Half[] RandomHalf(Random random, long count, float scale)
    {
        var values = new Half[count];
        for (long i = 0; i < count; i++)
            values[i] = (Half)((float)(random.NextDouble() * 2 - 1) * scale);
        return values;
    }
}
