using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Prompting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// Which conditioning each UNet call reads, against <c>a1111_calls.json</c>: A1111's prompt parser and
/// <c>reconstruct_multicond_batch</c> driven by k-diffusion's own <c>sample_euler</c>/<c>sample_heun</c> loops with
/// A1111's step counting (Fixtures/make_a1111_call_fixtures.py): schedules computed with <c>total_steps</c> (twice the
/// steps for Heun), the denoiser's <c>step</c> counting calls from 0, image-to-image included.
/// </summary>
[TestClass]
public sealed class A1111CallScheduleTests
{
    private static SchedulerConfig Config => SchedulerConfig.Load(Path.Combine(ShapesTestModel.Folder, "scheduler", "scheduler_config.json"));

    [TestMethod]
    public void EveryExecutedCallReadsTheConditioningA1111sDenoiserReads()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var chunker = new A1111PromptChunker(model.Tokenizer);
        int cases = 0, heunImg2Img = 0;
        foreach (var c in PromptFixtures.A1111Calls.GetProperty("cases").EnumerateArray())
        {
            string prompt = c.GetProperty("prompt").GetString()!, sampler = c.GetProperty("sampler").GetString()!;
            int steps = c.GetProperty("steps").GetInt32(), total = c.GetProperty("total_steps").GetInt32();
            float strength = (float)c.GetProperty("strength").GetDouble();
            string what = $"'{prompt}', {sampler}, {steps} steps, strength {strength}";

            // The library's schedule as EncodePrompt makes it (for total_steps) and the calls the denoising loop executes.
            var scheduler = SchedulerFactory.Create(sampler == "Heun" ? "heun" : "euler", Config);
            Assert.AreEqual(total, A1111SamplerSteps.TotalSteps(scheduler, steps), $"{what}: total_steps");
            var plan = A1111PromptPlan.ForPrompt(prompt, total, chunker, PromptEmphasis.Original);
            var schedule = ConditioningSchedule.FromPlan(plan, total);
            var conditionings = ConditioningSchedule.Conditionings(plan);
            scheduler.SetTimesteps(steps);
            int start = strength < 1f ? scheduler.GetStartIndex(strength) : 0;
            int calls = scheduler.Timesteps.Length - start;

            // A1111's img2img samples t_enc + 1 = int(min(strength, 0.999)·steps) + 1 steps (sigmas[steps − t_enc − 1:]);
            // the library's image-to-image runs diffusers' int(steps·strength), one step (Heun: two calls) fewer. That is
            // the sampling, not the schedule: every call both execute reads the same conditioning, counted from 0.
            var expected = c.GetProperty("calls");
            int callsPerStep = sampler == "Heun" ? 2 : 1;
            Assert.AreEqual(expected.GetArrayLength() - (strength < 1f ? callsPerStep : 0), calls, $"{what}: executed calls");
            var weights = c.GetProperty("weights").EnumerateArray().Select(w => (float)w.GetDouble()).ToArray();
            CollectionAssert.AreEqual(weights, Enumerable.Range(0, schedule.Parts).Select(schedule.Weight).ToArray(), $"{what}: AND weights");
            for (int j = 0; j < calls; j++)
            {
                var call = expected[j];
                Assert.AreEqual(j, call.GetProperty("step").GetInt32(), $"{what}: CFGDenoiser.step of call {j}");
                var parts = call.GetProperty("parts");
                Assert.AreEqual(parts.GetArrayLength(), schedule.Parts, what);
                for (int k = 0; k < schedule.Parts; k++)
                {
                    var (text, entry) = conditionings[schedule.IndexAt(j, k)];
                    Assert.AreEqual(parts[k].GetString(), plan.Texts[text].Schedule[entry].Text, $"{what}: call {j}, part {k}");
                }
            }
            cases++;
            if (sampler == "Heun" && strength < 1f)
                heunImg2Img++;
        }
        Assert.AreEqual(112, cases, "every fixture case");
        Assert.AreEqual(42, heunImg2Img, "Heun image-to-image cases");
    }

    [TestMethod]
    public void HeunSwitchesHalfwayThroughItsCallsNotAfterHalfItsSteps()
    {
        // processing.setup_conds: total_steps = sampler_config.total_steps(self.steps), and SamplerData.total_steps doubles
        // the steps for "second_order" samplers (Heun). [red:blue:0.5] at 20 Heun steps ends "red" at int(0.5·40) = 20, and
        // CFGDenoiser.step counts the 39 calls of sample_heun (2 per step, 1 for the last): calls 0–20 red, 21–38 blue.
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var heun = SchedulerFactory.Create("heun", Config);
        Assert.AreEqual(40, A1111SamplerSteps.TotalSteps(heun, 20));
        Assert.AreEqual(20, A1111SamplerSteps.TotalSteps(SchedulerFactory.Create("euler", Config), 20));
        Assert.AreEqual(40, A1111SamplerSteps.ScheduleSteps("heun-karras", Config, 20), "the public helper, from scheduler options");
        Assert.AreEqual(20, A1111SamplerSteps.ScheduleSteps("dpmpp-2m", Config, 20));
        var plan = A1111PromptPlan.ForPrompt("a [red:blue:0.5] circle", 40, new A1111PromptChunker(model.Tokenizer), PromptEmphasis.Original);
        var schedule = ConditioningSchedule.FromPlan(plan, 40);
        heun.SetTimesteps(20);
        Assert.AreEqual(39, heun.Timesteps.Length, "one loop index per UNet call");
        CollectionAssert.AreEqual(Enumerable.Range(0, 39).Select(c => c <= 20 ? 0 : 1).ToArray(), Enumerable.Range(0, 39).Select(c => schedule.IndexAt(c, 0)).ToArray());
    }

    [TestMethod]
    public void TheCallAfterTheLastStepReadsTheLastEntryAndLaterCallsTheFirst()
    {
        // reconstruct_cond_batch: `target_index = 0; for current, entry in enumerate(cond_schedule): if current_step <=
        // entry.end_at_step: target_index = current; break`. The last entry ends at total_steps, so call total_steps (PLMS's
        // and PNDM's N + 1st call: the first step evaluates the model again at t_next) still reads it; a later call matches
        // no entry and reads entry 0.
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var plan = A1111PromptPlan.ForPrompt("a [red:blue:19] circle", 20, new A1111PromptChunker(model.Tokenizer), PromptEmphasis.Original);
        var schedule = ConditioningSchedule.FromPlan(plan, 20);
        Assert.AreEqual(0, schedule.IndexAt(19, 0), "call 19 <= 19: red");
        Assert.AreEqual(1, schedule.IndexAt(20, 0), "call 20 <= 20: blue");
        Assert.AreEqual(0, schedule.IndexAt(21, 0), "call 21 matches no entry: entry 0");
        var pndm = SchedulerFactory.Create("pndm", Config with { SkipPrkSteps = true });
        pndm.SetTimesteps(20);
        Assert.AreEqual(21, pndm.Timesteps.Length, "PNDM with skip_prk_steps (SD's setting) calls the UNet 21 times in 20 steps");
    }
}
