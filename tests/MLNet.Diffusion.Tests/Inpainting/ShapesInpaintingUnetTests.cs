using System;
using System.IO;
using System.Linq;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>
/// The Shapes inpainting UNet (<see cref="ShapesVariant.Inpainting"/>) against its definition: the input layout of
/// diffusers' StableDiffusionInpaintPipeline (sample = concat(latents 4, mask 1, masked-image latents 4)), the
/// text-to-image UNet when nothing is known, and a posterior that keeps only items agreeing with the known region.
/// </summary>
[TestClass]
public sealed class ShapesInpaintingUnetTests
{
    private const int S = ShapesTestModel.LatentSize;
    private const int N = ShapesTestModel.LatentLength;
    private const int Plane = S * S;

    [TestMethod]
    public void Folder_DescribesAnInpaintingUnet()
    {
        var s = InpaintingTestModel.Unet;
        CollectionAssert.AreEqual(new[] { "sample", "timestep", "encoder_hidden_states" }, s.InputNames.ToArray());
        Assert.AreEqual(TensorElementType.Float, s.InputMetadata["sample"].ElementDataType);
        CollectionAssert.AreEqual(new[] { -1, 9, -1, -1 }, s.InputMetadata["sample"].Dimensions);
        CollectionAssert.AreEqual(new[] { -1, 4, -1, -1 }, s.OutputMetadata["out_sample"].Dimensions);

        // diffusers reads unet.config.in_channels (9) to pick the inpainting path; the ONNX pipeline class says inpainting.
        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(InpaintingTestModel.Folder, "unet", "config.json")));
        Assert.AreEqual(9, config.RootElement.GetProperty("in_channels").GetInt32());
        Assert.AreEqual(4, config.RootElement.GetProperty("out_channels").GetInt32());
        using var index = JsonDocument.Parse(File.ReadAllText(Path.Combine(InpaintingTestModel.Folder, "model_index.json")));
        Assert.AreEqual("OnnxStableDiffusionInpaintPipeline", index.RootElement.GetProperty("_class_name").GetString());

        // Everything but the UNet and its descriptions is the standard folder's, byte for byte.
        foreach (string f in new[] { "text_encoder/model.onnx", "vae_encoder/model.onnx", "vae_decoder/model.onnx", "vae_decoder/config.json", "scheduler/scheduler_config.json" })
            CollectionAssert.AreEqual(File.ReadAllBytes(Path.Combine(ShapesTestModel.Folder, f)), File.ReadAllBytes(Path.Combine(InpaintingTestModel.Folder, f)), f);
    }

    [TestMethod]
    public void WithEverythingMasked_ItIsTheTextToImageUnet()
    {
        // m = 1 everywhere: the known-region term −‖(1 − m)⊙(z_k − y)‖²/(2τ²) is 0 for every item, whatever y holds.
        var x = new float[2 * N];
        new GaussianNoise(17).NextGaussian(x);
        var hidden = ShapesTestModel.Encode("a red circle", "");
        var expected = ShapesTestModel.PredictNoise(x, [700f, 120f], hidden, batch: 2);
        var y = new float[4 * Plane];
        new GaussianNoise(18).NextGaussian(y);
        var sample = new float[2 * 9 * Plane];
        for (int b = 0; b < 2; b++)
            Concat(sample, b, x.AsSpan(b * N, N), Ones(), y);
        var actual = InpaintingTestModel.PredictNoise(sample, [700f, 120f], hidden, batch: 2);
        for (int i = 0; i < expected.Length; i++)
            Assert.AreEqual(expected[i], actual[i], 1e-4f * (1 + Math.Abs(expected[i])), $"value {i}");
    }

    [TestMethod]
    public void TheKnownRegion_DecidesThePosterior_OutsideTheMask()
    {
        // "A red circle in the center on a blue background", repainted inside the box [64, 192)² that holds any centred
        // shape (the triangle spans 67…189); from pure noise at t = 999 with the empty prompt, x̂₀ outside the box is the
        // masked image's latents there: every item the known region allows has the same blue background outside it.
        var item = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Center);
        var (mask, y) = MaskedLatents(item, 8, 24);
        var x = new float[N];
        new GaussianNoise(23).NextGaussian(x);
        var hidden = ShapesTestModel.Encode("");
        var sample = new float[9 * Plane];
        Concat(sample, 0, x, mask, y);
        var epsInpaint = InpaintingTestModel.PredictNoise(sample, [999f], hidden, batch: 1);
        var epsPlain = ShapesTestModel.PredictNoise(x, [999f], hidden, batch: 1);

        float ab = new NoiseSchedule(SchedulerConfig.Load(Path.Combine(ShapesTestModel.Folder, "scheduler", "scheduler_config.json"))).AlphasCumprod[999];
        double inpaintError = KnownRegionError(X0(x, epsInpaint, ab), y, mask);
        double plainError = KnownRegionError(X0(x, epsPlain, ab), y, mask);
        double scale = KnownRegionError(new float[N], y, mask);
        Console.WriteLine($"‖(1 − m)(x̂₀ − y)‖: inpainting UNet {inpaintError:E3}, text-to-image UNet {plainError:F2}, ‖(1 − m) y‖ = {scale:F2}");
        Assert.IsTrue(inpaintError < 1e-3 * scale, $"inpainting UNet: {inpaintError}");
        Assert.IsTrue(plainError > 0.1 * scale, "the text-to-image UNet agrees with the known region by chance: the check cannot tell them apart");
    }

    [TestMethod]
    public void Ddim20Steps_RepaintsTheMaskedShape_AsThePromptSays_AndKeepsTheRest()
    {
        // The same red circle, its box masked, prompt "a green circle on a blue background": the loop ends on the item
        // that has a green circle there (DDIM, 20 steps, guidance 7.5; diffusers' inpainting loop with a 9-channel UNet).
        var item = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Center);
        var target = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Green, BackgroundColor.Blue, ShapePosition.Center);
        var (mask, y) = MaskedLatents(item, 8, 24);
        var scheduler = SchedulerFactory.CreateDefault(SchedulerConfig.Load(Path.Combine(ShapesTestModel.Folder, "scheduler", "scheduler_config.json")));
        scheduler.SetTimesteps(20);
        var x = new float[N];
        new GaussianNoise(5).NextGaussian(x);
        var hidden = ShapesTestModel.Encode("", "a green circle on a blue background");
        var sample = new float[2 * 9 * Plane];
        var scaled = new float[N];
        var eps = new float[N];
        for (int s = 0; s < scheduler.Timesteps.Length; s++)
        {
            scheduler.ScaleModelInput(x, scaled, s);
            Concat(sample, 0, scaled, mask, y);
            Concat(sample, 1, scaled, mask, y);
            float t = scheduler.Timesteps[s];
            var both = InpaintingTestModel.PredictNoise(sample, [t, t], hidden, batch: 2);
            for (int i = 0; i < N; i++)
                eps[i] = both[i] + 7.5f * (both[N + i] - both[i]);
            scheduler.Step(eps, s, x);
        }
        var (nearest, distances) = ShapesTestModel.Nearest(x);
        double median = distances.OrderBy(d => d).ElementAt(distances.Length / 2);
        Console.WriteLine($"ended on '{ShapesDataset.Items[nearest].Prompt}' at {distances[nearest]:F3} ({100 * distances[nearest] / median:F2} % of the median distance to items)");
        Assert.AreEqual(target.Index, nearest);
        Assert.IsTrue(distances[nearest] < 0.1 * median, $"not on an item: {distances[nearest]} vs median {median}");
    }

    /// <summary>A mask that repaints latent rows and columns [lo, hi) (pixels [8·lo, 8·hi)) and the scaled latents of the item drawn with that box gray (0).</summary>
    internal static (float[] Mask, float[] MaskedLatents) MaskedLatents(ShapesItem item, int lo, int hi)
    {
        const int size = ShapesTestModel.ImageSize;
        var image = ShapesTestModel.RenderTensor(item);
        for (int c = 0; c < 3; c++)
            for (int py = 8 * lo; py < 8 * hi; py++)
                image.AsSpan((c * size + py) * size + 8 * lo, 8 * (hi - lo)).Clear();
        var z = ShapesTestModel.Run(ShapesTestModel.VaeEncoder, ("sample", image, new long[] { 1, 3, size, size }))["latent_sample"].Data;
        float scale = ShapesTestModel.ScalingFactor;
        for (int i = 0; i < z.Length; i++)
            z[i] *= scale;
        var mask = new float[Plane];
        for (int r = lo; r < hi; r++)
            mask.AsSpan(r * S + lo, hi - lo).Fill(1f);
        return (mask, z);
    }

    private static float[] Ones()
    {
        var m = new float[Plane];
        m.AsSpan().Fill(1f);
        return m;
    }

    private static void Concat(float[] sample, int row, ReadOnlySpan<float> x, ReadOnlySpan<float> mask, ReadOnlySpan<float> y)
    {
        var r = sample.AsSpan(row * 9 * Plane, 9 * Plane);
        x.CopyTo(r);
        mask.CopyTo(r.Slice(4 * Plane));
        y.CopyTo(r.Slice(5 * Plane));
    }

    private static float[] X0(float[] x, float[] eps, float alphaBar)
    {
        var x0 = new float[N];
        for (int i = 0; i < N; i++)
            x0[i] = (x[i] - MathF.Sqrt(1 - alphaBar) * eps[i]) / MathF.Sqrt(alphaBar);
        return x0;
    }

    private static double KnownRegionError(float[] x0, float[] y, float[] mask)
    {
        double s = 0;
        for (int c = 0; c < 4; c++)
            for (int p = 0; p < Plane; p++)
            {
                double d = (1 - mask[p]) * (x0[c * Plane + p] - y[c * Plane + p]);
                s += d * d;
            }
        return Math.Sqrt(s);
    }
}
