using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Prompting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// The denoising loop with a <see cref="ConditioningSchedule"/> (A1111's prompt editing and AND) on the Shapes model:
/// the conditioning switches at the call A1111's <c>reconstruct_cond_batch</c> picks, AND sums
/// <c>uncond + Σ_k (cond_k − uncond)·w_k·g</c> (<c>CFGDenoiser.combine_denoised</c>), and ordinary rows are unchanged.
/// </summary>
[TestClass]
public sealed class PromptScheduleDenoisingTests
{
    private const int Size = 64;

    private static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);

    /// <summary>Plain [2, 77, D] encodings of (negative, prompt) pairs, from the library's plain recipe.</summary>
    private static float[] States(StableDiffusionModel model, params string[] texts)
    {
        using var encoder = new PromptEncoder(model, new PromptEncodingSettings(8, false, 8, false), PipelineLog.None);
        var embeddings = new float[]?[texts.Length];
        encoder.Encode(texts, texts.Select(_ => (string?)string.Empty).ToArray(), texts.Select((_, i) => (long)i).ToArray(), embeddings, Array.Empty<float[]?>());
        // Row i's prompt states are the second half of its [2, 77, D].
        return embeddings.SelectMany(e => e!.Skip(e!.Length / 2)).ToArray();
    }

    private static DenoiseSettings Settings(StableDiffusionModel model, int steps, float strength, DenoiseStepCallback? onStepEnd = null) =>
        new(steps, 7.5f, Size, Size, SchedulerFactory.Create("ddim", model.Info.SchedulerConfig), null, default, strength) { OnStepEnd = onStepEnd };

    /// <summary>Runs rows of [uncond, cond...] blocks; returns the final latents and each step's latents.</summary>
    private static (float[] Final, List<float[]> PerStep) Run(StableDiffusionModel model, int steps, int rows, float[] embeddings, ConditioningSchedule?[]? schedules, float strength = 1f)
    {
        var perStep = new List<float[]>();
        using var denoiser = new LatentDenoiser(model, Settings(model, steps, strength, step => perStep.Add(step.Latents.ToArray())));
        var latents = new float[rows * denoiser.LatentLength];
        var initial = Enumerable.Range(0, latents.Length).Select(i => (float)Math.Sin(i * 0.37)).ToArray();
        var batch = new DenoiseBatch(rows, 0, embeddings, model.Info.SequenceLength, Enumerable.Repeat(11L, rows).ToArray(), latents)
        {
            InitialLatents = strength < 1f ? initial : ReadOnlyMemory<float>.Empty,
        };
        denoiser.Run(schedules is null ? batch : batch with { Schedules = schedules });
        return (latents, perStep);
    }

    [TestMethod]
    public void PromptEditingSwitchesAtA1111sStep()
    {
        using var model = Load();
        var chunker = new A1111PromptChunker(model.Tokenizer);
        const int steps = 20;
        var plan = A1111PromptPlan.ForPrompt("a [red:blue:0.5] circle", steps, chunker, PromptEmphasis.Original);
        var entries = plan.Texts[0].Schedule;
        Assert.AreEqual(2, entries.Count);
        // get_learned_conditioning_prompt_schedules: 0.5 of 20 steps → "red" ends at step 10; reconstruct_cond_batch uses
        // the first entry with call <= end_at_step, so calls 0–10 use "a red circle" and calls 11–19 "a blue circle".
        Assert.AreEqual(10, entries[0].EndAtStep);
        var schedule = ConditioningSchedule.FromPlan(plan, steps);
        Assert.AreEqual(0, schedule.IndexAt(10, 0));
        Assert.AreEqual(1, schedule.IndexAt(11, 0));

        var uncond = States(model, string.Empty);
        var red = States(model, entries[0].Text);
        var blue = States(model, entries[1].Text);
        var (edited, editedSteps) = Run(model, steps, 1, uncond.Concat(red).Concat(blue).ToArray(), new[] { schedule });
        var (_, redSteps) = Run(model, steps, 1, uncond.Concat(red).ToArray(), null);
        var (blueOnly, _) = Run(model, steps, 1, uncond.Concat(blue).ToArray(), null);
        for (int s = 0; s <= 10; s++)
            CollectionAssert.AreEqual(redSteps[s], editedSteps[s], $"call {s} uses the red prompt");
        CollectionAssert.AreNotEqual(redSteps[11], editedSteps[11], "call 11 uses the blue prompt");
        CollectionAssert.AreNotEqual(blueOnly, edited);
    }

    [TestMethod]
    public void ImageToImageCountsCallsFromItsFirstExecutedCall()
    {
        // A1111's img2img computes the schedule with p.steps (setup_conds; img2img_fix_steps is off by default, so
        // setup_img2img_steps keeps steps = p.steps) and Sampler.initialize sets CFGDenoiser.step = 0 before the first call
        // it executes. [red:blue:0.25] at 20 steps ends "red" at step 5; at strength 0.5 the 10 executed calls (loop indexes
        // 10–19) read "red" for calls 0–5 and "blue" for 6–9, not "blue" throughout as the position in the full schedule would.
        using var model = Load();
        const int steps = 20;
        var plan = A1111PromptPlan.ForPrompt("a [red:blue:0.25] circle", steps, new A1111PromptChunker(model.Tokenizer), PromptEmphasis.Original);
        var schedule = ConditioningSchedule.FromPlan(plan, steps);
        var embeddings = States(model, string.Empty).Concat(States(model, plan.Texts[0].Schedule[0].Text)).Concat(States(model, plan.Texts[0].Schedule[1].Text)).ToArray();
        var spy = new ConditioningSpy(embeddings, model.Info.SequenceLength * model.Info.HiddenSize);
        using var denoiser = new LatentDenoiser(model, Settings(model, steps, 0.5f), new IUnetConditioning[] { spy });
        var latents = new float[denoiser.LatentLength];
        var initial = Enumerable.Range(0, latents.Length).Select(i => (float)Math.Sin(i * 0.37)).ToArray();
        denoiser.Run(new DenoiseBatch(1, 0, embeddings, model.Info.SequenceLength, new[] { 11L }, latents) { InitialLatents = initial, Schedules = new ConditioningSchedule?[] { schedule } });
        CollectionAssert.AreEqual(Enumerable.Range(10, 10).ToArray(), spy.Calls.Select(c => c.Index).ToArray(), "loop indexes 10–19");
        CollectionAssert.AreEqual(new[] { 0, 0, 0, 0, 0, 0, 1, 1, 1, 1 }, spy.Calls.Select(c => c.Conditioning).ToArray());
    }

    [TestMethod]
    public void AndSumsTheWeightedGuidanceOfEachPart()
    {
        // tiny-sd: a real UNet architecture whose (random) cross-attention always reads the text; the Shapes UNet is an
        // exact denoiser whose posterior can settle on one item whatever the text says.
        using var model = StableDiffusionModel.Load(new MLContext(1), TestSupport.SharedModels.RequireTinySd());
        var chunker = new A1111PromptChunker(model.Tokenizer);
        var plan = A1111PromptPlan.ForPrompt("a red circle AND a blue square :0.5", 1, chunker, PromptEmphasis.Original);
        Assert.AreEqual(2, plan.Parts.Count);
        Assert.AreEqual(0.5, plan.Parts[1].Weight);
        var schedule = ConditioningSchedule.FromPlan(plan, 1);
        var uncond = States(model, string.Empty);
        var a = States(model, plan.Texts[0].Text);
        var b = States(model, plan.Texts[1].Text);

        // One DDIM step is x' = α·x + β·ε, linear in the guided ε. Separate runs of the UNet give X_a
        // (ε = u + (c_a − u)·g), X_b, and X_u (cond = uncond: ε = u); combine_denoised's
        // u + (c_a − u)·g + (c_b − u)·0.5·g is then X_a + 0.5·(X_b − X_u).
        var (both, _) = Run(model, 1, 1, uncond.Concat(a).Concat(b).ToArray(), new[] { schedule });
        var (onlyA, _) = Run(model, 1, 1, uncond.Concat(a).ToArray(), null);
        var (onlyB, _) = Run(model, 1, 1, uncond.Concat(b).ToArray(), null);
        var (onlyU, _) = Run(model, 1, 1, uncond.Concat(uncond).ToArray(), null);
        for (int i = 0; i < both.Length; i++)
        {
            double expected = onlyA[i] + (0.5 * (onlyB[i] - onlyU[i]));
            Assert.AreEqual(expected, both[i], 1e-4 * Math.Max(1, Math.Abs(expected)), $"latent value {i}");
        }
        double moved = both.Zip(onlyA).Max(p => Math.Abs(p.First - p.Second));
        Assert.IsTrue(moved > 1e-3, $"the second part changes the result (largest change {moved})");
    }

    [TestMethod]
    public void AnOrdinaryRowInAScheduledBatchIsBitIdentical()
    {
        using var model = Load();
        var chunker = new A1111PromptChunker(model.Tokenizer);
        const int steps = 4;
        var plan = A1111PromptPlan.ForPrompt("a [red|blue] circle", steps, chunker, PromptEmphasis.Original);
        var schedule = ConditioningSchedule.FromPlan(plan, steps);
        var uncond = States(model, string.Empty);
        var plain = States(model, "a green square");
        var alternating = plan.Texts[0].Schedule.SelectMany(e => States(model, e.Text)).ToArray();
        var (mixed, _) = Run(model, steps, 2, uncond.Concat(plain).Concat(uncond).Concat(alternating).ToArray(), new[] { null, schedule });
        var (reference, _) = Run(model, steps, 1, uncond.Concat(plain).ToArray(), null);
        CollectionAssert.AreEqual(reference, mixed.Take(reference.Length).ToArray());
        Assert.ThrowsExactly<ArgumentException>(() => Run(model, steps + 1, 1, uncond.Concat(alternating).ToArray(), new[] { schedule }));
    }
}
