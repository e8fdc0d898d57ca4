using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Imaging;

/// <summary>
/// AUTOMATIC1111's infotext (<see cref="GenerationParameters"/>): written as its <c>create_infotext</c>, parsed as its
/// <c>parse_generation_parameters</c>, carried in a PNG's <c>parameters</c> chunk, and enough to generate the same image again.
/// </summary>
[TestClass]
public sealed class GenerationParametersTests
{
    [TestMethod]
    public void ToInfotext_HasCreateInfotextsLayoutAndOrder()
    {
        var p = new GenerationParameters
        {
            Prompt = "a red circle, on the left",
            NegativePrompt = "blurry",
            Steps = 20,
            Sampler = "Euler a",
            ScheduleType = "Karras",
            CfgScale = 7.5f,
            Seed = 42,
            Width = 512,
            Height = 768,
            ModelHash = "6ce0161689",
            Rng = "CPU",
        };
        Assert.AreEqual(
            "a red circle, on the left\nNegative prompt: blurry\n"
            + "Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 512x768, Model hash: 6ce0161689, RNG: CPU",
            p.ToInfotext());
        // No negative prompt line when there is none; CFG 7 is written "7"; GPU (the default source) is not written.
        Assert.AreEqual("x\nSteps: 5, CFG scale: 7, Seed: 1", new GenerationParameters { Prompt = "x", Steps = 5, CfgScale = 7f, Seed = 1, Rng = "GPU" }.ToInfotext());
    }

    [TestMethod]
    public void Values_WithCommasColonsOrNewlines_AreJsonQuoted_AndReadBack()
    {
        // infotext_utils.quote: json.dumps(text, ensure_ascii=False) when the value holds ',', '\n' or ':'.
        var p = new GenerationParameters
        {
            Prompt = "p",
            Steps = 1,
            Seed = 2,
            Model = "models/a:b",
            Extra = new[] { new KeyValuePair<string, string>("Lora hashes", "detail: 7c6bad76eb54, \"x\\y\": 1\nüber") },
        };
        string text = p.ToInfotext();
        StringAssert.Contains(text, "Model: \"models/a:b\"");
        StringAssert.Contains(text, "Lora hashes: \"detail: 7c6bad76eb54, \\\"x\\\\y\\\": 1\\nüber\"");
        var back = GenerationParameters.Parse(text);
        Assert.AreEqual("models/a:b", back.Model);
        Assert.AreEqual(p.Extra[0], back.Extra.Single());
    }

    [TestMethod]
    public void Parse_ReadsTheDocstringOfParseGenerationParameters()
    {
        // modules/infotext_utils.py, parse_generation_parameters' docstring.
        const string text =
            "girl with an artist's beret, determined, blue eyes, desert scene, computer monitors, heavy makeup, by Alphonse Mucha and Charlie Bowater, ((eyeshadow)), (coquettish), detailed, intricate\n"
            + "Negative prompt: ugly, fat, obese, chubby, (((deformed))), [blurry], bad anatomy, disfigured, poorly drawn face, mutation, mutated, (extra_limb), (ugly), (poorly drawn hands), messy drawing\n"
            + "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b";
        var p = GenerationParameters.Parse(text);
        StringAssert.StartsWith(p.Prompt, "girl with an artist's beret");
        StringAssert.EndsWith(p.NegativePrompt, "messy drawing");
        Assert.AreEqual(20, p.Steps);
        Assert.AreEqual("Euler a", p.Sampler);
        Assert.AreEqual(7f, p.CfgScale);
        Assert.AreEqual(965400086L, p.Seed);
        Assert.AreEqual(512, p.Width);
        Assert.AreEqual(512, p.Height);
        Assert.AreEqual("45dee52b", p.ModelHash);
        Assert.AreEqual(0, p.Extra.Count);
        Assert.AreEqual(NoiseGenerator.Philox, p.ToNoiseOptions().Generator, "no RNG key: the GPU source");
        Assert.AreEqual("euler-a", A1111Samplers.ToScheduler(p.Sampler!, p.ScheduleType));
    }

    [TestMethod]
    public void Parse_ReadsAModernInfotext_WithQuotedHashes_EnsdAndRng()
    {
        // The shape of an AUTOMATIC1111 1.10 infotext (hires fix, LoRA, ENSD, NV source).
        const string text =
            "masterpiece, 1girl, <lora:add_detail:0.6>\nmultiline prompt\n"
            + "Negative prompt: (worst quality:1.4), EasyNegative\n"
            + "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 512x768, Model hash: 6ce0161689, "
            + "Model: v1-5-pruned-emaonly, Denoising strength: 0.45, Clip skip: 2, ENSD: 31337, RNG: NV, Hires upscale: 2, Hires upscaler: Latent, "
            + "Lora hashes: \"add_detail: 7c6bad76eb54\", TI hashes: \"EasyNegative: c74b4e810b03\", Version: v1.10.1";
        var p = GenerationParameters.Parse(text);
        Assert.AreEqual("masterpiece, 1girl, <lora:add_detail:0.6>\nmultiline prompt", p.Prompt);
        Assert.AreEqual("(worst quality:1.4), EasyNegative", p.NegativePrompt);
        Assert.AreEqual(28, p.Steps);
        Assert.AreEqual("dpmpp-2m-karras", A1111Samplers.ToScheduler(p.Sampler!, p.ScheduleType));
        Assert.AreEqual(6.5f, p.CfgScale);
        Assert.AreEqual(1234567890L, p.Seed);
        Assert.AreEqual((512, 768), (p.Width!.Value, p.Height!.Value));
        Assert.AreEqual(0.45f, p.DenoisingStrength);
        Assert.AreEqual(2, p.ClipSkip);
        Assert.AreEqual(31337L, p.EtaNoiseSeedDelta);
        Assert.AreEqual("NV", p.Rng);
        CollectionAssert.AreEqual(
            new[] { "Hires upscale=2", "Hires upscaler=Latent", "Lora hashes=add_detail: 7c6bad76eb54", "TI hashes=EasyNegative: c74b4e810b03", "Version=v1.10.1" },
            p.Extra.Select(kv => $"{kv.Key}={kv.Value}").ToArray());
        var noise = p.ToNoiseOptions();
        Assert.AreEqual((NoiseGenerator.Philox, 31337L), (noise.Generator, noise.StepNoiseSeedOffset!.Value));
        // Written again, the same text (keys this type names first, the others after, in order).
        Assert.AreEqual(text, p.ToInfotext());
    }

    [TestMethod]
    public void Parse_TreatsALastLineWithFewerThanThreeParameters_AsPrompt_AndKeepsOddValues()
    {
        var p = GenerationParameters.Parse("a cat: fluffy\nNegative prompt: dog\nSteps: 3");
        Assert.AreEqual("a cat: fluffy", p.Prompt);
        Assert.AreEqual("dog\nSteps: 3", p.NegativePrompt);
        Assert.IsNull(p.Steps);
        var odd = GenerationParameters.Parse("x\nSteps: many, Seed: 5, Size: big, Model:");
        Assert.IsNull(odd.Steps);
        Assert.AreEqual(5L, odd.Seed);
        CollectionAssert.AreEqual(new[] { "Steps=many", "Size=big" }, odd.Extra.Select(kv => $"{kv.Key}={kv.Value}").ToArray());
    }

    [TestMethod]
    public void SamplerNames_MapBothWays()
    {
        foreach (string scheduler in A1111Samplers.SchedulerNames)
        {
            Assert.IsTrue(A1111Samplers.TryGetSampler(scheduler, out string sampler, out string schedule), scheduler);
            Assert.AreEqual(scheduler, A1111Samplers.ToScheduler(sampler, schedule), $"{sampler}, {schedule}");
            Assert.IsNotNull(A1111Samplers.ToDiffusersClass(scheduler));
        }
        Assert.AreEqual("lms-karras", A1111Samplers.ToScheduler("LMS Karras"), "pre-1.9 names carry the schedule");
        Assert.IsNull(A1111Samplers.ToScheduler("DPM++ 2M SDE"));
        Assert.IsNull(A1111Samplers.ToScheduler("Euler a", "Karras"));
        Assert.IsFalse(A1111Samplers.TryGetSampler("ddpm", out _, out _));
        Assert.AreEqual("DDPMScheduler", A1111Samplers.ToDiffusersClass("ddpm"));
    }

    [TestMethod]
    public void Png_CarriesTheParameters_AsTextForLatin1_AndItxtOtherwise()
    {
        var rgba = Enumerable.Repeat((byte)255, 4 * 2 * 2).ToArray();
        using var image = MLImage.CreateFromPixels(2, 2, MLPixelFormat.Rgba32, rgba);
        foreach (var (prompt, chunk) in new[] { ("a café, red", "tEXt"), ("a cat 猫", "iTXt") })
        {
            var p = new GenerationParameters { Prompt = prompt, Steps = 4, Sampler = "DDIM", CfgScale = 7.5f, Seed = 9, Width = 2, Height = 2 };
            string path = Path.Combine(Path.GetTempPath(), "mlnet-a1111-" + Guid.NewGuid().ToString("N")[..8] + ".png");
            try
            {
                PngFile.Save(image, path, p, new Dictionary<string, string> { ["seed"] = "9" });
                byte[] bytes = File.ReadAllBytes(path);
                Assert.IsTrue(IndexOf(bytes, System.Text.Encoding.ASCII.GetBytes(chunk + "parameters\0")) > 0, $"{prompt}: a {chunk} chunk");
                Assert.AreEqual(p, PngFile.ReadParameters(path));
                Assert.AreEqual("9", PngFile.ReadText(path)["seed"]);
            }
            finally
            {
                File.Delete(path);
            }
        }
    }

    [TestMethod]
    public void GenerateReadTheParametersGenerateAgain_GivesTheSameBytes()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);
        string path = Path.Combine(Path.GetTempPath(), "mlnet-a1111-" + Guid.NewGuid().ToString("N")[..8] + ".png");
        try
        {
            // Euler a is stochastic: the same bytes need the same seed for the initial and the steps' noise.
            A1111Samplers.TryGetSampler("euler-a", out string sampler, out string schedule);
            var first = new GenerationParameters
            {
                Prompt = "a red circle on the left on a blue background", NegativePrompt = "green",
                Steps = 6, Sampler = sampler, ScheduleType = schedule, CfgScale = 5f, Seed = 1234, Width = 64, Height = 64,
            };
            using (var image = Generate(model, first))
                PngFile.Save(image, path, first);

            var read = PngFile.ReadParameters(path)!;
            Assert.AreEqual(first, read);
            byte[] original = File.ReadAllBytes(path);
            using var again = Generate(model, read);
            CollectionAssert.AreEqual(original, PngFileBytes(again, read));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private static MLImage Generate(StableDiffusionModel model, GenerationParameters p)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = p.Prompt, NegativePrompt = p.NegativePrompt, Seed = checked((int)p.Seed!.Value) } });
        var options = new DenoiseLatentsOptions
        {
            Width = p.Width!.Value,
            Height = p.Height!.Value,
            Steps = p.Steps!.Value,
            GuidanceScale = p.CfgScale!.Value,
            Scheduler = A1111Samplers.ToScheduler(p.Sampler!, p.ScheduleType),
            SeedColumnName = "Seed",
        };
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt", "NegativePrompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", options))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents"));
        return pipeline.Fit(data).Transform(data).GetColumn<MLImage>("Image").Single();
    }

    private static byte[] PngFileBytes(MLImage image, GenerationParameters p)
    {
        string path = Path.Combine(Path.GetTempPath(), "mlnet-a1111-" + Guid.NewGuid().ToString("N")[..8] + ".png");
        try
        {
            PngFile.Save(image, path, p);
            return File.ReadAllBytes(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
        {
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle))
                return i;
        }
        return -1;
    }
}
