using System;
using System.Collections.Generic;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using static MLNet.Diffusion.Benchmarks.Pipeline.BenchSupport;

namespace MLNet.Diffusion.Benchmarks.Pipeline;

/// <summary>
/// A stopwatch breakdown of the overhead: each stage alone over N rows (its input cached in memory), against the raw
/// ONNX calls of that stage, interleaved. The difference is the stage's own work (tokenizing, scheduler, copies,
/// image conversion, cursor).
/// </summary>
internal static class StageProfile
{
    public static void Run(StringBuilder md, MLContext ml, StableDiffusionModel sd, int n, int size, int steps, int reps)
    {
        var data = Rows(ml, n);
        var encode = ml.Transforms.EncodePrompt(sd, new EncodePromptOptions { OutputColumnName = "Embeddings", InputColumnName = "Prompt", BatchSize = n }).Fit(data);
        var embeddings = ml.Data.Cache(encode.Transform(data), "Embeddings");
        var denoise = ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", new DenoiseLatentsOptions
        {
            Steps = steps, GuidanceScale = 7.5f, Width = size, Height = size, SeedColumnName = "Seed", BatchSize = n,
        }).Fit(embeddings);
        var latents = ml.Data.Cache(denoise.Transform(embeddings), "Latents");
        var decode = ml.Transforms.DecodeLatents(sd, "Image", "Latents", new DecodeLatentsOptions { BatchSize = n, PixelsColumnName = "Pixels" }).Fit(latents);
        using var raw = new RawOnnxPipeline(sd, n, size, steps);

        var cases = new (string Name, Func<double> MlNet, Action Raw)[]
        {
            ("EncodePrompt (read Embeddings) vs text encoder ×2", () => Read<VBuffer<float>>(encode, data, "Embeddings"), raw.RunTextEncoder),
            ("DenoiseLatents (read Latents) vs UNet ×" + steps, () => Read<VBuffer<float>>(denoise, embeddings, "Latents"), raw.RunUnetLoop),
            ("DecodeLatents (read Image) vs VAE", () => Read<MLImage>(decode, latents, "Image"), raw.RunVae),
            ("DecodeLatents (read Pixels only) vs VAE", () => Read<VBuffer<float>>(decode, latents, "Pixels"), raw.RunVae),
        };
        // Warm-up; also fills the caches.
        foreach (var c in cases)
        {
            c.MlNet();
            c.Raw();
        }
        var s = new Samples();
        for (int rep = 0; rep < reps; rep++)
            foreach (var c in cases)
            {
                // ABBA: each figure is the mean of two runs placed symmetrically (the first run after a switch is slower here).
                double aMl = 0, aRaw = 0;
                if (rep % 2 == 0)
                {
                    aMl += c.MlNet(); aRaw += Ms(c.Raw); aRaw += Ms(c.Raw); aMl += c.MlNet();
                }
                else
                {
                    aRaw += Ms(c.Raw); aMl += c.MlNet(); aMl += c.MlNet(); aRaw += Ms(c.Raw);
                }
                s.Add(c.Name + "|ml", aMl / 2);
                s.Add(c.Name + "|raw", aRaw / 2);
            }
        foreach (var c in cases)
        {
            double m = s.Median(c.Name + "|ml"), r = s.Median(c.Name + "|raw");
            md.AppendLine(Inv, $"| {n} | {c.Name} | {F(m, 2)} | {F(r, 2)} | {F(m - r, 2)} | {Raw(s[c.Name + "|ml"], 1)} / {Raw(s[c.Name + "|raw"], 1)} |");
        }
    }

    private static double Read<T>(ITransformer t, IDataView data, string column) => Ms(() =>
    {
        var view = t.Transform(data);
        var c = view.Schema[column];
        using var cursor = view.GetRowCursor(new[] { c });
        var getter = cursor.GetGetter<T>(c);
        T value = default!;
        while (cursor.MoveNext())
        {
            getter(ref value);
            (value as IDisposable)?.Dispose();
        }
    });

    public static void Section(StringBuilder md, MLContext ml, StableDiffusionModel sd, int size, int steps, int reps)
    {
        md.AppendLine("### Profile: each stage alone vs its raw ONNX calls");
        md.AppendLine();
        md.AppendLine($"Stopwatch breakdown: each stage over N rows with its input cached in memory (`mlContext.Data.Cache`), against the same stage's raw ONNX calls, {reps} interleaved repetitions in ABBA order (each figure the mean of its two runs), medians. "
            + "The difference is the stage's own work.");
        md.AppendLine();
        md.AppendLine("| N | stage | ML.NET ms | raw ms | difference ms | raw (ML.NET / raw) |");
        md.AppendLine("|---|---|---|---|---|---|");
        foreach (int n in new[] { 1, 4 })
            Run(md, ml, sd, n, size, steps, reps);
        md.AppendLine();
    }
}
