using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Prompting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// A1111's prompt editing, alternation and <c>AND</c> from a prompt column, through the ML.NET stages EncodePrompt →
/// DenoiseLatents on the Shapes model. The expected runs are built with the lower-level API: the denoiser with an explicit
/// <see cref="ConditioningSchedule"/> written here from A1111's rules (<c>get_learned_conditioning_prompt_schedules</c>,
/// <c>reconstruct_cond_batch</c>, <c>combine_denoised</c>), on the conditionings the stage wrote. The Shapes text encoder's
/// states average to 0, so A1111's "Original" emphasis is 0/0 there; these tests use "No norm" (the prompts carry no weights,
/// so it changes nothing).
/// </summary>
[TestClass]
public sealed class PromptSchedulePipelineTests
{
    private const int Size = 64;
    private const int D = 32;
    private const int L = 77;

    internal sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private static StableDiffusionModel Load() => StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);

    private static EncodePromptOptions Encoding(int? scheduleSteps) => new()
    {
        OutputColumnName = "Embeddings", InputColumnName = "Prompt", NegativePromptColumnName = "NegativePrompt",
        PromptSyntax = PromptSyntax.A1111, Emphasis = PromptEmphasis.NoNorm,
        PromptScheduleColumnName = scheduleSteps is null ? null : "Schedule", ScheduleSteps = scheduleSteps,
    };

    private static DenoiseLatentsOptions Denoising(int steps, bool scheduled, DenoiseStepCallback? onStepEnd = null, SchedulerOptions? scheduler = null) => new()
    {
        Width = Size, Height = Size, Steps = steps, SeedColumnName = "Seed", OnStepEnd = onStepEnd,
        PromptScheduleColumnName = scheduled ? "Schedule" : null, Scheduler = scheduler,
    };

    /// <summary>EncodePrompt → DenoiseLatents over <paramref name="rows"/>; the cursor's columns.</summary>
    private static (float[][] Embeddings, float[][]? Schedules, float[][] Latents) Run(
        StableDiffusionModel model, Row[] rows, EncodePromptOptions encoding, DenoiseLatentsOptions denoising)
    {
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.EncodePrompt(model, encoding)
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", denoising));
        var output = pipeline.Fit(data).Transform(data);
        var embeddings = output.GetColumn<VBuffer<float>>("Embeddings").Select(v => v.DenseValues().ToArray()).ToArray();
        var schedules = encoding.PromptScheduleColumnName is { } s
            ? output.GetColumn<VBuffer<float>>(s).Select(v => v.DenseValues().ToArray()).ToArray()
            : null;
        var latents = output.GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
        return (embeddings, schedules, latents);
    }

    /// <summary>The lower-level run: the denoiser on one row's blocks with an explicit schedule (null: ordinary guidance); final and per-step latents.</summary>
    private static (float[] Final, List<float[]> PerStep) Denoise(StableDiffusionModel model, int steps, long seed, float[] embeddings, ConditioningSchedule? schedule)
    {
        var perStep = new List<float[]>();
        var settings = new DenoiseSettings(steps, 7.5f, Size, Size, SchedulerFactory.CreateDefault(model.Info.SchedulerConfig), null, default)
        {
            OnStepEnd = step => perStep.Add(step.Latents.ToArray()),
        };
        using var denoiser = new LatentDenoiser(model, settings);
        var latents = new float[denoiser.LatentLength];
        var batch = new DenoiseBatch(1, 0, embeddings, L, new[] { seed }, latents);
        denoiser.Run(schedule is null ? batch : batch with { Schedules = new ConditioningSchedule?[] { schedule } });
        return (latents, perStep);
    }

    /// <summary>A block of [77, D] states.</summary>
    private static float[] Block(float[] embeddings, int index) => embeddings.Skip(index * L * D).Take(L * D).ToArray();

    private static void AssertBitEqual(float[] expected, float[] actual, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}: value {i} is {actual[i]}, expected {expected[i]}");
        }
    }

    /// <summary>The conditioning index of part 0 at each call 0 … steps, read from the schedule column [steps, K, parts, w…, indexes…].</summary>
    private static int[] Indexes(float[] column, int parts = 1) =>
        Enumerable.Range(0, (int)column[0] + 1).Select(s => (int)column[3 + parts + (s * parts)]).ToArray();

    [TestMethod]
    public void PromptEditingSwitchesFromRedToBlueHalfwayThroughThePipeline()
    {
        using var model = Load();
        // The Shapes UNet is an exact denoiser: the text matters while the posterior is still undecided (mid-run), not at
        // t = 1 nor once it has settled on an item; 20 steps switching after call 10 lie in that range.
        const int steps = 20;
        var row = new Row { Prompt = "a [red:blue:0.5] circle", Seed = 11 };
        var steps0 = new List<float[]>();
        var (embeddings, schedules, latents) = Run(model, new[] { row }, Encoding(steps), Denoising(steps, scheduled: true, s => steps0.Add(s.Latents.ToArray())));

        // get_learned_conditioning_prompt_schedules: int(0.5 × 20) = 10 → [[10, "a red circle"], [20, "a blue circle"]];
        // reconstruct_cond_batch takes the first entry with call <= end_at_step, so calls 0–10 read "red", 11–19 "blue" (and
        // the schedule's call 20, which only PLMS/PNDM reach, "blue").
        var switched = Enumerable.Range(0, steps + 1).Select(c => c <= 10 ? 0 : 1).ToArray();
        CollectionAssert.AreEqual(switched, Indexes(schedules![0]));
        Assert.AreEqual(2f, schedules[0][1], "two conditionings");
        Assert.AreEqual(3 * L * D, embeddings[0].Length, "[uncond, red circle, blue circle]");

        // The conditionings are the ordinary encodings of the two texts (one text encoder call for both, as A1111).
        var (red, _, _) = Run(model, new[] { new Row { Prompt = "a red circle", Seed = 11 } }, Encoding(null), Denoising(steps, scheduled: false));
        var (blue, _, _) = Run(model, new[] { new Row { Prompt = "a blue circle", Seed = 11 } }, Encoding(null), Denoising(steps, scheduled: false));
        var uncond = Block(red[0], 0);
        AssertClose(uncond, Block(embeddings[0], 0), "negative prompt");
        AssertClose(Block(red[0], 1), Block(embeddings[0], 1), "red circle");
        AssertClose(Block(blue[0], 1), Block(embeddings[0], 2), "blue circle");

        // The stages' latents are the denoiser's with the hand-written schedule, bit for bit.
        var schedule = new ConditioningSchedule(steps, 2, new[] { 1f }, switched);
        var (expected, _) = Denoise(model, steps, 11, embeddings[0], schedule);
        AssertBitEqual(expected, latents[0], "latents");

        // Calls 0–10 are the red run's, call 11 is not: the switch lands at A1111's step.
        var (_, redSteps) = Denoise(model, steps, 11, Block(embeddings[0], 0).Concat(Block(embeddings[0], 1)).ToArray(), null);
        for (int s = 0; s <= 10; s++)
            AssertBitEqual(redSteps[s], steps0[s], $"call {s} reads a red circle");
        CollectionAssert.AreNotEqual(redSteps[11], steps0[11], "call 11 reads a blue circle");
    }

    [TestMethod]
    public void WithHeunRedTurnsBlueAtTheCallA1111Switches()
    {
        using var model = Load();
        // Heun calls the UNet twice per step (once in the last): 10 steps are 19 calls. A1111 computes the schedule with
        // total_steps = 2 × 10 (SamplerData.total_steps, "second_order") and CFGDenoiser.step counts calls, so
        // [red:blue:0.5] ends "red" at int(0.5 × 20) = 10: calls 0–10 (the first five steps and the first call of the sixth)
        // read "red", calls 11–18 "blue". The library's Heun lists one timestep per call, the loop index is the call.
        const int steps = 10;
        var row = new Row { Prompt = "a [red:blue:0.5] circle", Seed = 11 };
        var (embeddings, schedules, latents) = Run(model, new[] { row }, Encoding(2 * steps), Denoising(steps, scheduled: true, scheduler: "heun"));
        Assert.AreEqual(2f * steps, schedules![0][0], "the schedule is made for total_steps");
        var switched = Enumerable.Range(0, (2 * steps) + 1).Select(c => c <= 10 ? 0 : 1).ToArray();
        CollectionAssert.AreEqual(switched, Indexes(schedules[0]));

        // The same run through the denoiser with a spy on encoder_hidden_states: what each UNet call read.
        var schedule = ConditioningSchedule.TryRead(schedules[0], out string? error) ?? throw new AssertFailedException(error ?? "not a schedule");
        var spy = new ConditioningSpy(embeddings[0], L * D);
        var settings = new DenoiseSettings(steps, 7.5f, Size, Size, SchedulerFactory.Create("heun", model.Info.SchedulerConfig), null, default);
        using (var denoiser = new LatentDenoiser(model, settings, new IUnetConditioning[] { spy }))
        {
            var spied = new float[denoiser.LatentLength];
            denoiser.Run(new DenoiseBatch(1, 0, embeddings[0], L, new[] { 11L }, spied) { Schedules = new ConditioningSchedule?[] { schedule } });
            AssertBitEqual(latents[0], spied, "the spied run is the stage's run");
        }
        CollectionAssert.AreEqual(Enumerable.Range(0, (2 * steps) - 1).ToArray(), spy.Calls.Select(c => c.Index).ToArray(), "19 calls");
        CollectionAssert.AreEqual(switched.Take((2 * steps) - 1).ToArray(), spy.Calls.Select(c => c.Conditioning).ToArray(), "red for calls 0–10, blue from 11");

        // A schedule made for the steps, not A1111's total_steps, is refused with the count to use.
        var refused = Assert.ThrowsExactly<InvalidOperationException>(() => Run(model, new[] { row }, Encoding(steps), Denoising(steps, scheduled: true, scheduler: "heun")));
        StringAssert.Contains(refused.Message, "set ScheduleSteps to 20");
    }

    [TestMethod]
    public void AlternationSwitchesEveryCallAsA1111Counts()
    {
        using var model = Load();
        const int steps = 20;
        var row = new Row { Prompt = "a [red|blue] circle", Seed = 11 };
        var perStep = new List<float[]>();
        var (embeddings, schedules, latents) = Run(model, new[] { row }, Encoding(steps), Denoising(steps, scheduled: true, s => perStep.Add(s.Latents.ToArray())));

        // Alternation gives one entry per step 1..20 (red, blue, red, …: args[(step − 1) % 2]); call c reads the first entry
        // with c <= step, so calls 0 and 1 both read step 1's "red", call c ≥ 1 reads entry c − 1.
        var indexes = Indexes(schedules![0]);
        Assert.AreEqual(20f, schedules[0][1], "one conditioning per schedule entry");
        CollectionAssert.AreEqual(Enumerable.Range(0, steps + 1).Select(c => Math.Max(0, c - 1)).ToArray(), indexes);
        var (red, _, _) = Run(model, new[] { new Row { Prompt = "a red circle", Seed = 11 } }, Encoding(null), Denoising(steps, scheduled: false));
        var (blue, _, _) = Run(model, new[] { new Row { Prompt = "a blue circle", Seed = 11 } }, Encoding(null), Denoising(steps, scheduled: false));
        for (int k = 0; k < steps; k++)
            AssertClose(Block(k % 2 == 0 ? red[0] : blue[0], 1), Block(embeddings[0], 1 + k), $"conditioning {k} is {(k % 2 == 0 ? "red" : "blue")}");

        var schedule = new ConditioningSchedule(steps, steps, new[] { 1f }, indexes);
        var (expected, _) = Denoise(model, steps, 11, embeddings[0], schedule);
        AssertBitEqual(expected, latents[0], "latents");
        var (redOnly, redSteps) = Denoise(model, steps, 11, Block(embeddings[0], 0).Concat(Block(embeddings[0], 1)).ToArray(), null);
        AssertBitEqual(redSteps[1], perStep[1], "call 1 still reads red");
        CollectionAssert.AreNotEqual(redOnly, latents[0], "the blue calls change the picture");
    }

    [TestMethod]
    public void AndWithAPartWeightRunsBothPartsOnTheShapesModel()
    {
        using var model = Load();
        const int steps = 20;
        var rows = new[]
        {
            new Row { Prompt = "a red circle AND a blue square :0.5", Seed = 11 },
            new Row { Prompt = "a red circle", Seed = 11 },
        };
        var (embeddings, schedules, latents) = Run(model, rows, Encoding(steps), Denoising(steps, scheduled: true));
        // get_multicond_prompt_list: parts "a red circle" (weight 1) and " a blue square" (0.5), each its own conditioning.
        Assert.AreEqual(2f, schedules![0][1], "two conditionings");
        Assert.AreEqual(2f, schedules[0][2], "two parts");
        CollectionAssert.AreEqual(new[] { 1f, 0.5f }, schedules[0].Skip(3).Take(2).ToArray());
        CollectionAssert.AreEqual(new float[] { steps, 1, 1, 1 }, schedules[1].Take(4).ToArray(), "an ordinary row's schedule is the plain one");
        AssertBitEqual(embeddings[1], Block(embeddings[0], 0).Concat(Block(embeddings[0], 1)).ToArray(), "the first part is the ordinary prompt");

        // combine_denoised per call: ε_u + (ε_0 − ε_u)·1·g + (ε_1 − ε_u)·0.5·g, exactly the denoiser's two-part schedule.
        var indexes = Enumerable.Range(0, steps + 1).SelectMany(_ => new[] { 0, 1 }).ToArray();
        var (exact, _) = Denoise(model, steps, 11, embeddings[0], new ConditioningSchedule(steps, 2, new[] { 1f, 0.5f }, indexes));
        AssertBitEqual(exact, latents[0], "latents");
        CollectionAssert.AreNotEqual(latents[1], latents[0], "the second part changes the picture");
    }

    [TestMethod]
    public void AndIsTheWeightedSumOfTheSeparateGuidedRuns()
    {
        // tiny-sd: a real UNet architecture whose (random) cross-attention reads the text at every timestep; one DDIM step
        // of the Shapes model lands at t = 1, where its exact posterior no longer depends on the text.
        using var model = StableDiffusionModel.Load(new MLContext(1), TestSupport.SharedModels.RequireTinySd());
        const int steps = 1;
        // One row per run: the AND prompt, each part alone, and the empty prompt (whose cond equals its uncond: ε = ε_u).
        var rows = new[]
        {
            new Row { Prompt = "a red circle AND a blue square :0.5", Seed = 3 },
            new Row { Prompt = "a red circle", Seed = 3 },
            new Row { Prompt = "a blue square", Seed = 3 },
            new Row { Prompt = string.Empty, Seed = 3 },
        };
        var (_, schedules, latents) = Run(model, rows, Encoding(steps), Denoising(steps, scheduled: true));
        // [steps 1, K 2, parts 2, weights 1 and 0.5, calls 0 and 1: part 0 → conditioning 0, part 1 → conditioning 1].
        CollectionAssert.AreEqual(new[] { 1f, 2f, 2f, 1f, 0.5f, 0f, 1f, 0f, 1f }, schedules![0]);

        // One DDIM step is linear in the guided ε, and combine_denoised gives ε_u + (ε_a − ε_u)·g + (ε_b − ε_u)·0.5·g, so the
        // latents are X_a + 0.5·(X_b − X_u) of the separate runs.
        float[] both = latents[0], a = latents[1], b = latents[2], u = latents[3];
        for (int i = 0; i < both.Length; i++)
        {
            double expected = a[i] + (0.5 * (b[i] - u[i]));
            Assert.AreEqual(expected, both[i], 1e-4 * Math.Max(1, Math.Abs(expected)), $"latent value {i}");
        }
        double moved = both.Zip(a).Max(p => Math.Abs(p.First - p.Second));
        Assert.IsTrue(moved > 1e-3, $"the second part changes the result (largest change {moved})");
    }

    [TestMethod]
    public void OrdinaryPromptsAreBitIdenticalWithTheScheduleColumn()
    {
        using var model = Load();
        const int steps = 4;
        var rows = new[]
        {
            new Row { Prompt = "a (red:1.2) circle", NegativePrompt = "[blue] square", Seed = 1 },
            new Row { Prompt = "a green square BREAK on the left", Seed = 2 },
            new Row { Prompt = "[red:blue:25] circle", Seed = 3 }, // switches after step 25 of 4: "red" throughout, an ordinary prompt
        };
        var (withEmbeddings, schedules, withLatents) = Run(model, rows, Encoding(steps), Denoising(steps, scheduled: true));
        var plainRows = rows.Select(r => new Row { Prompt = r.Prompt.Replace("[red:blue:25]", "red", StringComparison.Ordinal), NegativePrompt = r.NegativePrompt, Seed = r.Seed }).ToArray();
        var (embeddings, _, latents) = Run(model, plainRows, Encoding(null), Denoising(steps, scheduled: false));
        for (int r = 0; r < rows.Length; r++)
        {
            AssertBitEqual(embeddings[r], withEmbeddings[r], $"row {r} embeddings");
            AssertBitEqual(latents[r], withLatents[r], $"row {r} latents");
            CollectionAssert.AreEqual(new float[] { steps, 1, 1, 1, 0, 0, 0, 0, 0 }, schedules![r], $"row {r} schedule (calls 0 … 4)");
        }
    }

    [TestMethod]
    public void AStepCountMismatchIsRefusedNamingTheRowAndBothCounts()
    {
        using var model = Load();
        var rows = new[] { new Row { Prompt = "a red circle", Seed = 1 }, new Row { Prompt = "[red:blue:0.5] circle", Seed = 1 } };
        var ex = Assert.ThrowsExactly<InvalidOperationException>(() => Run(model, rows, Encoding(8), Denoising(10, scheduled: true)));
        StringAssert.StartsWith(ex.Message, "Row 0: the prompt schedule in column 'Schedule' was made for 8 steps (EncodePromptOptions.ScheduleSteps), but DenoiseLatents runs 10");
    }

    [TestMethod]
    public void ScheduleOptionsAreCheckedWhenTheStageIsBuilt()
    {
        using var model = Load();
        var ml = model.MLContext;
        var noSteps = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.EncodePrompt(model, new EncodePromptOptions
        {
            PromptSyntax = PromptSyntax.A1111, PromptScheduleColumnName = "Schedule",
        }));
        StringAssert.Contains(noSteps.Message, "PromptScheduleColumnName needs ScheduleSteps");
        var compel = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.EncodePrompt(model, new EncodePromptOptions
        {
            PromptSyntax = PromptSyntax.Compel, PromptScheduleColumnName = "Schedule", ScheduleSteps = 8,
        }));
        StringAssert.Contains(compel.Message, "needs PromptSyntax = A1111, not Compel");
        var refused = Assert.ThrowsExactly<NotSupportedException>(() => Run(model, new[] { new Row { Prompt = "a circle", NegativePrompt = "[red:blue:0.5]", Seed = 1 } },
            Encoding(8), Denoising(8, scheduled: true)));
        StringAssert.StartsWith(refused.Message, "Row 0: the negative prompt uses prompt editing");
    }

    [TestMethod]
    public void ASchedulePipelineSavesAndLoadsWithTheSameLatents()
    {
        using var model = Load();
        const int steps = 6;
        var ml = model.MLContext;
        var rows = new[] { new Row { Prompt = "a [red:blue:0.5] circle", Seed = 2 }, new Row { Prompt = "a red circle AND a green square :0.7", Seed = 4 } };
        var data = ml.Data.LoadFromEnumerable(rows);
        var fitted = ml.Transforms.EncodePrompt(model, Encoding(steps))
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Denoising(steps, scheduled: true)))
            .Fit(data);
        float[][] Column(IDataView view, string name) => view.GetColumn<VBuffer<float>>(name).Select(v => v.DenseValues().ToArray()).ToArray();
        var expected = Column(fitted.Transform(data), "Latents");

        // The JSON definition carries both stages' schedule fields.
        var definition = DiffusionPipelineDefinition.FromJson(DiffusionPipelineDefinition.FromTransformer(fitted).ToJson());
        var encode = definition.Stages.OfType<EncodePromptStageDefinition>().Single();
        Assert.AreEqual("Schedule", encode.PromptScheduleColumnName);
        Assert.AreEqual(steps, encode.ScheduleSteps);
        Assert.AreEqual("Schedule", definition.Stages.OfType<DenoiseLatentsStageDefinition>().Single().PromptScheduleColumnName);
        var rebuilt = Column(definition.Build(model).Transform(data), "Latents");
        for (int r = 0; r < rows.Length; r++)
            AssertBitEqual(expected[r], rebuilt[r], $"row {r} from the JSON definition");

        // mlContext.Model.Save: the schedule rides in EncodePrompt's second output slot and DenoiseLatents' v4 schedule slot.
        string path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"mlnet-diffusion-schedule-{Environment.ProcessId}.zip");
        try
        {
            ml.Model.Save(fitted, data.Schema, path);
            var fresh = new MLContext(seed: 77);
            var loaded = fresh.Model.Load(path, out _).Transform(fresh.Data.LoadFromEnumerable(rows));
            // Read every output in one cursor (docs/persistence.md: a saved stage binds its inputs even when unread).
            var latents = new List<float[]>();
            using (var cursor = loaded.GetRowCursor(loaded.Schema))
            {
                var getters = new[] { "Embeddings", "Schedule", "Latents" }.Select(n => cursor.GetGetter<VBuffer<float>>(loaded.Schema[n])).ToArray();
                VBuffer<float> value = default;
                while (cursor.MoveNext())
                {
                    getters[0](ref value);
                    getters[1](ref value);
                    getters[2](ref value);
                    latents.Add(value.DenseValues().ToArray());
                }
            }
            for (int r = 0; r < rows.Length; r++)
                AssertBitEqual(expected[r], latents[r], $"row {r} from the saved zip");
        }
        finally
        {
            System.IO.File.Delete(path);
        }
    }

    [TestMethod]
    public void PaddingPromptAndNegativePromptIsOnByDefaultAndOffRefusesUnequalChunkCounts()
    {
        // A1111's "Pad prompt/negative prompt" (pad_cond_uncond): the stage pads by default; A1111's own default is off,
        // where it runs the two sides in separate UNet calls, which the [2, T, D] column cannot hold.
        Assert.IsTrue(new EncodePromptOptions().PadPromptAndNegativePrompt);
        using var model = Load();
        PromptEncoder Encoder(bool pad) => new(model,
            new PromptEncodingSettings(1, false, 8, false, PromptSyntax.A1111, PromptEmphasis.NoNorm, MaxChunks: 8, Pad: pad), PipelineLog.None);
        float[] Encode(PromptEncoder encoder, string prompt, string negative)
        {
            var embeddings = new float[]?[1];
            encoder.Encode(new[] { prompt }, new string?[] { negative }, new long[] { 5 }, embeddings, new float[]?[1]);
            return embeddings[0]!;
        }

        using var padded = Encoder(pad: true);
        using var unpadded = Encoder(pad: false);
        // Equal chunk counts: the same states either way.
        AssertBitEqual(Encode(padded, "a red BREAK circle", "a blue BREAK square"), Encode(unpadded, "a red BREAK circle", "a blue BREAK square"), "two chunks each");
        // Two chunks against one: padded, the negative's second chunk is the empty prompt's encoded chunk (pad_cond).
        var both = Encode(padded, "a red circle BREAK on the left", "a blue square");
        Assert.AreEqual(2 * 2 * L * D, both.Length);
        var empty = Encode(padded, string.Empty, string.Empty);
        AssertBitEqual(Block(empty, 0), Block(both, 1), "the negative prompt's padding chunk");
        var ex = Assert.ThrowsExactly<NotSupportedException>(() => Encode(unpadded, "a red circle BREAK on the left", "a blue square"));
        StringAssert.StartsWith(ex.Message, "Row 5: the prompt makes 2 chunk(s) of 75 tokens and the negative prompt 1.");
        var plain = Assert.ThrowsExactly<ArgumentException>(() => model.MLContext.Transforms.EncodePrompt(model, new EncodePromptOptions { PadPromptAndNegativePrompt = false }));
        StringAssert.Contains(plain.Message, "PadPromptAndNegativePrompt applies to A1111 and compel syntax");
    }

    private static void AssertClose(float[] expected, float[] actual, string what)
    {
        Assert.AreEqual(expected.Length, actual.Length, what);
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(expected[i], actual[i], 1e-5f * Math.Max(1f, Math.Abs(expected[i])), $"{what}: value {i}");
    }
}
