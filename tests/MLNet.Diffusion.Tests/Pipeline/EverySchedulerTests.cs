using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Pipeline;

/// <summary>
/// Every registered scheduler, selected by name in the Denoise stage, ends on an image that matches the prompt; a
/// scheduler's options (DDIM's η) reach the stage and its saved definition.
/// </summary>
[TestClass]
public sealed class EverySchedulerTests
{
    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    [TestMethod]
    public void EverySchedulerMatchesThePrompt()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var items = new[]
        {
            ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Left),
            ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Yellow, BackgroundColor.Black, ShapePosition.Right),
        };
        var data = ml.Data.LoadFromEnumerable(items.Select((it, i) => new Row { Prompt = it.Prompt, Seed = 5 + i }).ToArray());
        var failures = new List<string>();
        foreach (string name in SchedulerFactory.Names)
        {
            // LCM samples in 4 steps and is used with low guidance (LCM-LoRA's guidance range is 1–2); 7.5 over-saturates
            // a 4-step sample (navy overshoots to black here), so it runs at 1.5.
            int steps = name == "lcm" ? 4 : 20;
            float guidance = name == "lcm" ? 1.5f : 7.5f;
            var images = ml.Transforms.EncodePrompt(model, "E", "Prompt")
                .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 128, Height = 128, Steps = steps, GuidanceScale = guidance, Scheduler = name, SeedColumnName = "Seed", BatchSize = 2 }))
                .Append(ml.Transforms.DecodeLatents(model, "Image", "L"))
                .Fit(data).Transform(data).GetColumn<MLImage>("Image").ToArray();
            for (int i = 0; i < items.Length; i++)
            {
                var (inside, outside) = ImageChecks.RegionMeans(images[i], items[i].Shape, items[i].Position, margin: 6);
                var color = ImageChecks.NearestShapeColor(inside);
                var background = ImageChecks.NearestBackground(outside);
                if (color != items[i].Color || background != items[i].Background || ImageChecks.Distance(inside, ShapesDataset.GetRgb(items[i].Color)) > 45)
                    failures.Add($"{name} ({steps} steps): '{items[i].Prompt}' gave {color} ({inside[0]:F0},{inside[1]:F0},{inside[2]:F0}) on {background}");
            }
        }
        Assert.AreEqual(0, failures.Count, string.Join("\n", failures));
    }
    private static float[][] Latents(StableDiffusionModel model, SchedulerOptions? scheduler, int seed = 5)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a red circle on the left on a blue background", Seed = seed } });
        return ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 8, Scheduler = scheduler, SeedColumnName = "Seed" }))
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("L").Select(v => v.DenseValues().ToArray()).ToArray();
    }

    [TestMethod]
    public void DdimEtaReachesTheStageAndItsSavedDefinition()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var byName = Latents(model, "ddim");
        CollectionAssert.AreEqual(byName[0], Latents(model, "DDIMScheduler")[0], "by diffusers class name");
        CollectionAssert.AreEqual(byName[0], Latents(model, new DdimSchedulerOptions())[0], "η = 0 is the named default");
        CollectionAssert.AreEqual(byName[0], Latents(model, null)[0], "the Shapes folder's _class_name is DDIMScheduler");
        var eta = Latents(model, new DdimSchedulerOptions { Eta = 1f });
        CollectionAssert.AreNotEqual(byName[0], eta[0], "η = 1 draws fresh noise every step");
        CollectionAssert.AreEqual(eta[0], Latents(model, new DdimSchedulerOptions { Eta = 1f })[0], "…from the row's seed");

        var ml = model.MLContext;
        var fitted = ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Scheduler = new DdimSchedulerOptions { Eta = 1f }, Seed = 2 }))
            .Fit(ml.Data.LoadFromEnumerable(new[] { new Row() }));
        var definition = DiffusionPipelineDefinition.FromJson(DiffusionPipelineDefinition.FromTransformer(fitted).ToJson());
        Assert.AreEqual(new DdimSchedulerOptions { Eta = 1f }, ((DenoiseLatentsStageDefinition)definition.Stages[1]).Scheduler);
    }

    [TestMethod]
    public void AFolderWithAnUnknownSchedulerClassNeedsASchedulerByName()
    {
        string dir = Path.Combine(Path.GetTempPath(), "mlnet-shapes-unipc-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            foreach (string file in Directory.EnumerateFiles(ShapesTestModel.Folder, "*", SearchOption.AllDirectories))
            {
                string target = Path.Combine(dir, Path.GetRelativePath(ShapesTestModel.Folder, file));
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(file, target);
            }
            string config = Path.Combine(dir, "scheduler", "scheduler_config.json");
            File.WriteAllText(config, File.ReadAllText(config).Replace("\"DDIMScheduler\"", "\"UniPCMultistepScheduler\"", StringComparison.Ordinal));
            using var model = StableDiffusionModel.Load(new MLContext(1), dir);
            Assert.AreEqual("UniPCMultistepScheduler", model.Info.SchedulerConfig.ClassName);
            var e = Assert.ThrowsExactly<ArgumentException>(() => model.MLContext.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 64, Height = 64 }));
            StringAssert.Contains(e.Message, "UniPCMultistepScheduler");
            StringAssert.Contains(e.Message, "euler-a");
            var ml = model.MLContext;
            var fitted = ml.Transforms.EncodePrompt(model, "E", "Prompt")
                .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = 64, Height = 64, Scheduler = "euler-a" }))
                .Fit(ml.Data.LoadFromEnumerable(new[] { new Row() }));
            Assert.AreEqual("euler-a", fitted.LastTransformer.SchedulerName);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
