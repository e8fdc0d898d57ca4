using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Variants;

/// <summary>
/// The v-prediction export (SD 2.x's <c>prediction_type: v_prediction</c>): the UNet outputs
/// v = √ᾱ·ε − √(1 − ᾱ)·x₀ (Salimans &amp; Ho 2022, "Progressive distillation for fast sampling of diffusion models", §4),
/// and every scheduler turns it back into the same x̂₀ and ε̂ the epsilon model gives.
/// </summary>
[TestClass]
public sealed class VPredictionTests
{
    private const int Size = 64;

    private static readonly ShapesItem[] s_items =
    {
        ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Left),
        ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Yellow, BackgroundColor.Black, ShapePosition.Right),
    };

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    [TestMethod]
    public void TheFolderDeclaresVPrediction()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesVariantModels.Folder(ShapesVariant.VPrediction));
        Assert.AreEqual("v_prediction", model.Info.SchedulerConfig.PredictionType);
        using var standard = StableDiffusionModel.Load(new MLContext(1), ShapesVariantModels.Folder(ShapesVariant.Standard));
        Assert.AreEqual("epsilon", standard.Info.SchedulerConfig.PredictionType);
    }

    /// <summary>
    /// From x = √ᾱ·x₀ + √(1 − ᾱ)·ε and v = √ᾱ·ε − √(1 − ᾱ)·x₀ follows ε = √ᾱ·v + √(1 − ᾱ)·x (the conversion in
    /// diffusers' DDIMScheduler.step): the two UNets on the same input must satisfy it, with ᾱ from the scheduler's table.
    /// </summary>
    [TestMethod]
    public void TheUNetOutputIsTheVelocityOfTheEpsilonModelsPrediction()
    {
        string vFolder = ShapesVariantModels.Folder(ShapesVariant.VPrediction);
        using var vUnet = new InferenceSession(Path.Combine(vFolder, "unet", "model.onnx"));
        using var epsUnet = new InferenceSession(Path.Combine(ShapesVariantModels.Folder(ShapesVariant.Standard), "unet", "model.onnx"));
        var schedule = new NoiseSchedule(SchedulerConfig.Load(Path.Combine(vFolder, "scheduler", "scheduler_config.json")));
        const int h = 16;
        int n = 4 * h * h;
        var x = new float[2 * n];
        new GaussianNoise(77).NextGaussian(x);
        var states = new float[2 * 77 * 32];
        var timesteps = new[] { 901f, 101f }; // one noisy and one nearly clean row
        var v = ShapesTestModel.Run(vUnet, ("sample", x, new long[] { 2, 4, h, h }), ("timestep", timesteps, new long[] { 2 }),
            ("encoder_hidden_states", states, new long[] { 2, 77, 32 }))["out_sample"].Data;
        var eps = ShapesTestModel.Run(epsUnet, ("sample", x, new long[] { 2, 4, h, h }), ("timestep", timesteps, new long[] { 2 }),
            ("encoder_hidden_states", states, new long[] { 2, 77, 32 }))["out_sample"].Data;
        for (int r = 0; r < 2; r++)
        {
            double ab = schedule.AlphasCumprod[(int)timesteps[r]];
            double worst = 0, differs = 0;
            for (int i = r * n; i < (r + 1) * n; i++)
            {
                double fromV = Math.Sqrt(ab) * v[i] + Math.Sqrt(1 - ab) * x[i];
                worst = Math.Max(worst, Math.Abs(fromV - eps[i]));
                differs = Math.Max(differs, Math.Abs(v[i] - eps[i]));
            }
            // float32 arithmetic on values of order 1–4: a few ulps (2^-23 relative) each.
            Assert.IsTrue(worst < 1e-4, $"t = {timesteps[r]}: √ᾱ·v + √(1−ᾱ)·x differs from ε̂ by {worst:E2}");
            Assert.IsTrue(differs > 0.1, $"t = {timesteps[r]}: the v output is the ε output (max difference {differs:E2})");
        }
    }

    /// <summary>
    /// Every scheduler on the v-prediction model (64², 20 steps, guidance 7.5) ends on the prompted image; and since v and ε are two linear
    /// parameterisations of the same denoiser, each gives the epsilon model's latents up to float32 rounding (≤ 1e-4 on
    /// latents of scale ≈ 2: measured ≤ 3e-5, the most for the Karras-sigma LMS with its fractional timesteps) — the
    /// stochastic ones too, as the same seeds draw the same noise. The exception is PNDM: diffusers' PNDMScheduler
    /// converts v to ε after its linear multistep combination (_get_prev_sample, with the current ᾱ and sample), which
    /// is a different update from combining the ε of each step (here 0.02 apart), so only its picture is checked.
    /// </summary>
    [TestMethod]
    public void EverySchedulerDrawsThePromptAndMatchesTheEpsilonModel()
    {
        using var vModel = StableDiffusionModel.Load(new MLContext(1), ShapesVariantModels.Folder(ShapesVariant.VPrediction));
        using var epsModel = StableDiffusionModel.Load(new MLContext(1), ShapesVariantModels.Folder(ShapesVariant.Standard));
        var failures = new List<string>();
        foreach (string name in SchedulerFactory.Names)
        {
            // As EverySchedulerTests: LCM samples in 4 steps at low guidance.
            int steps = name == "lcm" ? 4 : 20;
            float guidance = name == "lcm" ? 1.5f : 7.5f;
            var options = new DenoiseLatentsOptions { Width = Size, Height = Size, Steps = steps, GuidanceScale = guidance, Scheduler = name, SeedColumnName = "Seed", BatchSize = 2 };
            var (vLatents, vImages) = Generate(vModel, options);
            var (epsLatents, _) = Generate(epsModel, options);
            for (int r = 0; r < s_items.Length; r++)
            {
                var item = s_items[r];
                var (inside, outside) = ImageChecks.RegionMeans(vImages[r], item.Shape, item.Position, margin: 3);
                var color = ImageChecks.NearestShapeColor(inside);
                var background = ImageChecks.NearestBackground(outside);
                if (color != item.Color || background != item.Background || ImageChecks.Distance(inside, ShapesDataset.GetRgb(item.Color)) > 45)
                    failures.Add($"{name}: '{item.Prompt}' gave {color} ({inside[0]:F0},{inside[1]:F0},{inside[2]:F0}) on {background}");
                if (name == "pndm")
                    continue;
                float worst = 0f;
                for (int i = 0; i < vLatents[r].Length; i++)
                    worst = MathF.Max(worst, MathF.Abs(vLatents[r][i] - epsLatents[r][i]));
                if (!(worst <= 1e-4f))
                    failures.Add($"{name}: '{item.Prompt}' latents differ from the epsilon model's by up to {worst:E2}");
            }
        }
        Assert.AreEqual(0, failures.Count, string.Join("\n", failures));
    }

    private static (float[][] Latents, MLImage[] Images) Generate(StableDiffusionModel model, DenoiseLatentsOptions options)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(s_items.Select((it, i) => new Row { Prompt = it.Prompt, Seed = 5 + i }).ToArray());
        var output = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"))
            .Fit(data).Transform(data);
        return (output.GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray(),
            output.GetColumn<MLImage>("Image").ToArray());
    }
}
