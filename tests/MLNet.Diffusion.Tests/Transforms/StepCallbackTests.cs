using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Transforms;

/// <summary>
/// <see cref="DenoiseLatentsOptions.OnStepEnd"/>, diffusers' <c>callback_on_step_end</c>: a caller can reconstruct every
/// step's latents from what it sees — the last step's view is the stage's output, and replaying the UNet and the
/// scheduler on the recorded latents of one step gives the recorded latents of the next.
/// </summary>
[TestClass]
public sealed class StepCallbackTests
{
    private const int Size = 64;
    private const int Steps = 4;

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;
    }

    private sealed record Recorded(int StepIndex, int StepCount, float Timestep, long FirstRow, int RowCount, float[] Latents);

    [TestMethod]
    public void EveryStepsLatentsCanBeReconstructedFromTheCallback()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { "a red circle", "a blue square", "a green triangle" }.Select(p => new Row { Prompt = p }).ToArray());
        var steps = new List<Recorded>();
        var options = new DenoiseLatentsOptions
        {
            Width = Size,
            Height = Size,
            Steps = Steps,
            GuidanceScale = 1f, // one UNet batch of the prompts' rows: the replay below needs no guidance combine
            Scheduler = "ddim",
            Seed = 7,
            BatchSize = 2,
            OnStepEnd = step => steps.Add(new Recorded(step.StepIndex, step.StepCount, step.Timestep, step.FirstRow, step.RowCount, step.Latents.ToArray())),
        };
        var result = ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", options))
            .Fit(data).Transform(data);
        var embeddings = result.GetColumn<VBuffer<float>>("E").Select(v => v.DenseValues().ToArray()).ToArray();
        var output = result.GetColumn<VBuffer<float>>("L").Select(v => v.DenseValues().ToArray()).ToArray();

        // Two mini-batches (rows 0–1, then row 2), each reported after every step, in order.
        Assert.AreEqual(2 * Steps, steps.Count);
        CollectionAssert.AreEqual(new long[] { 0, 0, 0, 0, 2, 2, 2, 2 }, steps.Select(s => s.FirstRow).ToArray());
        CollectionAssert.AreEqual(new[] { 2, 2, 2, 2, 1, 1, 1, 1 }, steps.Select(s => s.RowCount).ToArray());
        CollectionAssert.AreEqual(new[] { 0, 1, 2, 3, 0, 1, 2, 3 }, steps.Select(s => s.StepIndex).ToArray());
        Assert.IsTrue(steps.All(s => s.StepCount == Steps));

        var scheduler = SchedulerFactory.Create("ddim", model.Info.SchedulerConfig);
        scheduler.SetTimesteps(Steps);
        CollectionAssert.AreEqual(scheduler.Timesteps.ToArray(), steps.Take(Steps).Select(s => s.Timestep).ToArray());

        int len = output[0].Length;
        foreach (var batch in steps.GroupBy(s => s.FirstRow))
        {
            var recorded = batch.OrderBy(s => s.StepIndex).ToArray();
            int first = (int)batch.Key, rows = recorded[0].RowCount;

            // The last step's view is the stage's output, bit for bit.
            for (int r = 0; r < rows; r++)
                CollectionAssert.AreEqual(output[first + r], recorded[^1].Latents.AsSpan(r * len, len).ToArray(), $"row {first + r}");

            // Replay: x₀ = the rows' seeded noise (base seed 7 + position; DDIM's init sigma is 1), then every step
            // x_{k+1} = DDIM.step(UNet(x_k, t_k, prompt), k, x_k) must give the recorded latents exactly.
            var x = new float[rows * len];
            for (int r = 0; r < rows; r++)
                new GaussianNoise(7 + first + r).NextGaussian(x.AsSpan(r * len, len));
            var prompt = Conditional(embeddings, first, rows);
            var replay = SchedulerFactory.Create("ddim", model.Info.SchedulerConfig);
            replay.SetTimesteps(Steps);
            for (int k = 0; k < Steps; k++)
            {
                var scaled = new float[x.Length];
                replay.ScaleModelInput(x, scaled, k);
                var epsilon = Unet(model, scaled, rows, replay.Timesteps[k], prompt);
                replay.Step(epsilon, k, x, new GaussianNoise(0));
                CollectionAssert.AreEqual(recorded[k].Latents, x, $"rows {first}–{first + rows - 1}, step {k}");
            }
        }
    }

    [TestMethod]
    public void TheViewIsTheBatchsLatentsRowByRow()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a circle" }, new Row { Prompt = "a square" } });
        int shapeChecks = 0;
        var options = new DenoiseLatentsOptions
        {
            Width = Size,
            Height = Size,
            Steps = 2,
            OnStepEnd = step =>
            {
                Assert.AreEqual(model.Info.LatentChannels, step.Channels);
                Assert.AreEqual(Size / model.Info.VaeSpatialFactor, step.LatentHeight);
                Assert.AreEqual(Size / model.Info.VaeSpatialFactor, step.LatentWidth);
                Assert.AreEqual(step.RowCount * step.Channels * step.LatentHeight * step.LatentWidth, step.Latents.Length);
                Assert.IsTrue(step.Row(1).SequenceEqual(step.Latents.Slice(step.Latents.Length / 2)));
                StringAssert.Contains(RowError(step, 2), "2 rows");
                shapeChecks++;
            },
        };
        _ = ml.Transforms.EncodePrompt(model, "E", "Prompt").Append(ml.Transforms.DenoiseLatents(model, "L", "E", options))
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("L").ToArray();
        Assert.AreEqual(2, shapeChecks);
    }

    [TestMethod]
    public void TheCallbackIsRuntimeOnlyAndNotSaved()
    {
        using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder);
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a circle" } });
        int calls = 0;
        var fitted = ml.Transforms.EncodePrompt(model, "E", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "L", "E", new DenoiseLatentsOptions { Width = Size, Height = Size, Steps = 2, Seed = 3, OnStepEnd = _ => calls++ }))
            .Fit(data);
        var json = DiffusionPipelineDefinition.FromTransformer(fitted, data.Schema).ToJson();
        StringAssert.DoesNotMatch(json, new System.Text.RegularExpressions.Regex(nameof(DenoiseLatentsOptions.OnStepEnd)));
        var expected = fitted.Transform(data).GetColumn<VBuffer<float>>("L").Single().DenseValues().ToArray();
        Assert.AreEqual(2, calls);

        // Rebuilt from its definition the pipeline gives the same latents, and the callback is gone.
        var rebuilt = DiffusionPipelineDefinition.FromJson(json).Build(model);
        var actual = rebuilt.Transform(data).GetColumn<VBuffer<float>>("L").Single().DenseValues().ToArray();
        CollectionAssert.AreEqual(expected, actual);
        Assert.AreEqual(2, calls);
    }

    /// <summary>The message of the error a row outside the batch gives (a ref struct cannot be captured by Assert.ThrowsExactly's lambda).</summary>
    private static string RowError(DenoiseStepEnd step, int row)
    {
        try
        {
            _ = step.Row(row);
        }
        catch (ArgumentOutOfRangeException e)
        {
            return e.Message;
        }
        throw new AssertFailedException($"Row({row}) of a {step.RowCount}-row batch did not throw.");
    }

    /// <summary>The conditional halves of rows [first, first + rows): each row's column holds [uncond, cond] states.</summary>
    private static float[] Conditional(float[][] embeddings, int first, int rows)
    {
        var result = new List<float>();
        for (int r = 0; r < rows; r++)
        {
            var e = embeddings[first + r];
            result.AddRange(e.Skip(e.Length / 2));
        }
        return result.ToArray();
    }

    /// <summary>One UNet evaluation on its own session inputs (no IO binding, no denoiser code).</summary>
    private static float[] Unet(StableDiffusionModel model, float[] sample, int rows, float t, float[] prompt)
    {
        var info = model.Info;
        int h = Size / info.VaeSpatialFactor;
        var session = model.Unet.Session;
        var ts = session.InputMetadata["timestep"];
        int tsRows = ts.Dimensions.Length == 0 ? 0 : rows;
        var tsShape = ts.Dimensions.Length == 0 ? Array.Empty<int>() : new[] { tsRows };
        NamedOnnxValue timestep = ts.ElementDataType == TensorElementType.Int64
            ? NamedOnnxValue.CreateFromTensor("timestep", new DenseTensor<long>(Enumerable.Repeat((long)t, Math.Max(tsRows, 1)).ToArray(), tsShape))
            : NamedOnnxValue.CreateFromTensor("timestep", new DenseTensor<float>(Enumerable.Repeat(t, Math.Max(tsRows, 1)).ToArray(), tsShape));
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("sample", new DenseTensor<float>(sample, new[] { rows, info.LatentChannels, h, h })),
            timestep,
            NamedOnnxValue.CreateFromTensor("encoder_hidden_states", new DenseTensor<float>(prompt, new[] { rows, prompt.Length / rows / info.HiddenSize, info.HiddenSize })),
        };
        using var outputs = session.Run(inputs);
        return outputs.First().AsEnumerable<float>().ToArray();
    }
}
