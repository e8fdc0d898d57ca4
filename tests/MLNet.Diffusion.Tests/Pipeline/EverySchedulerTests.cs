using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Pipeline;

/// <summary>Every registered scheduler, selected by name in the Denoise stage, ends on an image that matches the prompt.</summary>
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
}
