using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Benchmarks.Pipeline;

/// <summary>One input row of the generation pipeline.</summary>
internal sealed class PromptRow
{
    public string Prompt { get; set; } = string.Empty;

    public int Seed { get; set; }
}

/// <summary>Prompts, pipelines and statistics shared by the whole-pipeline harness sections.</summary>
internal static class BenchSupport
{
    private static readonly string[] s_colors = { "red", "green", "blue", "yellow", "purple", "orange" };
    private static readonly string[] s_shapes = { "circle", "square", "triangle" };
    private static readonly string[] s_positions = { "on the left", "in the center", "on the right" };
    private static readonly string[] s_backgrounds = { "white", "black", "gray", "blue", "green" };

    public static CultureInfo Inv => CultureInfo.InvariantCulture;

    /// <summary>All 270 distinct Shapes prompts ("a red circle on the left on a blue background"), in a fixed order.</summary>
    public static string[] Prompts()
    {
        var list = new List<string>();
        foreach (string bg in s_backgrounds)
            foreach (string pos in s_positions)
                foreach (string shape in s_shapes)
                    foreach (string color in s_colors)
                        list.Add($"a {color} {shape} {pos} on a {bg} background");
        // Interleave so consecutive rows differ in every attribute.
        var rng = new Random(7);
        return list.OrderBy(_ => rng.Next()).ToArray();
    }

    public static IDataView Rows(MLContext ml, int count, int firstSeed = 1000)
    {
        var prompts = Prompts();
        var rows = new PromptRow[count];
        for (int i = 0; i < count; i++)
            rows[i] = new PromptRow { Prompt = prompts[i % prompts.Length], Seed = firstSeed + i };
        return ml.Data.LoadFromEnumerable(rows);
    }

    /// <summary>EncodePrompt → DenoiseLatents → DecodeLatents, every stage at <paramref name="batch"/> rows per ONNX call.</summary>
    public static ITransformer Generation(MLContext ml, StableDiffusionModel sd, IDataView data, int batch, int size, int steps,
        IProgress<DenoiseProgress>? progress = null) =>
        ml.Transforms.EncodePrompt(sd, new EncodePromptOptions { OutputColumnName = "Embeddings", InputColumnName = "Prompt", BatchSize = batch })
            .Append(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", new DenoiseLatentsOptions
            {
                Steps = steps, GuidanceScale = 7.5f, Width = size, Height = size, SeedColumnName = "Seed", BatchSize = batch, Progress = progress,
            }))
            .Append(ml.Transforms.DecodeLatents(sd, "Image", "Latents", new DecodeLatentsOptions { BatchSize = batch }))
            .Fit(data);

    /// <summary>Reads every row's image through a cursor (disposing each image, as a consumer would); returns the row count.</summary>
    public static int Generate(ITransformer pipeline, IDataView data, Action<int>? afterRow = null)
    {
        var view = pipeline.Transform(data);
        var column = view.Schema["Image"];
        using var cursor = view.GetRowCursor(new[] { column });
        var getter = cursor.GetGetter<MLImage>(column);
        MLImage image = null!;
        int n = 0;
        while (cursor.MoveNext())
        {
            getter(ref image);
            image.Dispose();
            n++;
            afterRow?.Invoke(n);
        }
        return n;
    }

    public static double Ms(Action action)
    {
        long start = Stopwatch.GetTimestamp();
        action();
        return Stopwatch.GetElapsedTime(start).TotalMilliseconds;
    }

    public static double Median(IReadOnlyList<double> values)
    {
        var sorted = values.OrderBy(v => v).ToArray();
        int n = sorted.Length;
        return n == 0 ? double.NaN : n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    public static string F(double v, int digits = 1) => v.ToString("F" + digits, Inv);

    public static string Raw(IEnumerable<double> values, int digits = 1) => string.Join(", ", values.Select(v => F(v, digits)));

    /// <summary>Collects the median of repeated interleaved measurements, named.</summary>
    internal sealed class Samples
    {
        private readonly Dictionary<string, List<double>> _values = new(StringComparer.Ordinal);

        public void Add(string name, double value)
        {
            if (!_values.TryGetValue(name, out var list))
                _values[name] = list = new List<double>();
            list.Add(value);
        }

        public IReadOnlyList<double> this[string name] => _values[name];

        public double Median(string name) => BenchSupport.Median(_values[name]);
    }

    /// <summary>Finds the repository root (the folder holding MLNet.Diffusion.sln) from the current directory upwards.</summary>
    public static string RepositoryRoot()
    {
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MLNet.Diffusion.sln")))
                return dir.FullName;
        return Directory.GetCurrentDirectory();
    }
}
