using System;
using System.IO;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Shapes;

[TestClass]
public sealed class ShapesUnetTests
{
    private const int N = ShapesTestModel.LatentLength;

    private static SchedulerConfig Config => SchedulerConfig.Load(Path.Combine(ShapesTestModel.Folder, "scheduler", "scheduler_config.json"));

    [TestMethod]
    public void RecoversTheNoise_OfANoisedItem_AtSmallTimesteps()
    {
        var schedule = new NoiseSchedule(Config);
        var item = ShapesDataset.GetItem(ShapeKind.Triangle, ShapeColor.Orange, BackgroundColor.Gray, ShapePosition.Right);
        var z = ShapesTestModel.ItemLatents.AsSpan(item.Index * N, N);
        var noise = new float[N];
        new GaussianNoise(7).NextGaussian(noise);
        foreach (int t in new[] { 1, 20, 100 })
        {
            float ab = schedule.AlphasCumprod[t];
            var x = new float[N];
            for (int i = 0; i < N; i++)
                x[i] = MathF.Sqrt(ab) * z[i] + MathF.Sqrt(1 - ab) * noise[i];
            // Batch of two, the prompt and the empty prompt, with a single timestep broadcast over the batch.
            var hidden = ShapesTestModel.Encode(item.Prompt, "");
            var eps = ShapesTestModel.PredictNoise([.. x, .. x], [t], hidden, batch: 2);
            for (int b = 0; b < 2; b++)
            {
                double cos = Cosine(eps.AsSpan(b * N, N), noise);
                Console.WriteLine($"t={t} {(b == 0 ? "prompt" : "empty")}: cosine(ε̂, ε) = {cos:F6}");
                Assert.IsTrue(cos > 0.99, $"t={t}: cosine {cos}");
            }
        }
    }

    [TestMethod]
    public void FractionalTimesteps_InterpolateSigma()
    {
        // σ is linear between integer steps: ε̂ at t = 500.5 for x built with σ(500.5) recovers the noise exactly
        // as at integer steps, while a wrong ᾱ would leave a residual of the item.
        var schedule = new NoiseSchedule(Config);
        double Sigma(int t) => Math.Sqrt((1 - schedule.AlphasCumprod[t]) / schedule.AlphasCumprod[t]);
        double sigma = (Sigma(500) + Sigma(501)) / 2;
        float ab = (float)(1 / (1 + sigma * sigma));
        var item = ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Blue, BackgroundColor.White, ShapePosition.Left);
        var z = ShapesTestModel.ItemLatents.AsSpan(item.Index * N, N);
        var noise = new float[N];
        new GaussianNoise(3).NextGaussian(noise);
        var x = new float[N];
        for (int i = 0; i < N; i++)
            x[i] = MathF.Sqrt(ab) * z[i] + MathF.Sqrt(1 - ab) * noise[i];
        var eps = ShapesTestModel.PredictNoise(x, [500.5f], ShapesTestModel.Encode(item.Prompt), batch: 1);
        double cos = Cosine(eps, noise);
        Console.WriteLine($"t=500.5: cosine(ε̂, ε) = {cos:F6}");
        Assert.IsTrue(cos > 0.999, $"cosine {cos}");
    }

    [TestMethod]
    public void AtTheLastTimestep_EmptyPromptPrediction_IsAveragedOverManyItems()
    {
        var schedule = new NoiseSchedule(Config);
        float ab = schedule.AlphasCumprod[999];
        var items = ShapesTestModel.ItemLatents;
        var dataMean = new double[N];
        for (int k = 0; k < ShapesDataset.ItemCount; k++)
            for (int i = 0; i < N; i++)
                dataMean[i] += items[k * N + i] / (double)ShapesDataset.ItemCount;
        double typicalItemToMean = Enumerable.Range(0, ShapesDataset.ItemCount)
            .Select(k => Distance(items.AsSpan(k * N, N), dataMean)).OrderBy(d => d).ElementAt(ShapesDataset.ItemCount / 2);

        const int batch = 4;
        var x = new float[batch * N];
        new GaussianNoise(11).NextGaussian(x);
        var eps = ShapesTestModel.PredictNoise(x, [999f], ShapesTestModel.Encode("", "", "", ""), batch);
        for (int b = 0; b < batch; b++)
        {
            var x0 = new float[N];
            for (int i = 0; i < N; i++)
                x0[i] = (x[b * N + i] - MathF.Sqrt(1 - ab) * eps[b * N + i]) / MathF.Sqrt(ab);
            double toMean = Distance(x0, dataMean);
            var (nearest, distances) = ShapesTestModel.Nearest(x0);
            Console.WriteLine($"seed row {b}: ‖x̂₀ − mean‖ = {toMean:F2}, nearest item {distances[nearest]:F2}, median item-to-mean {typicalItemToMean:F2}");
            // x̂₀ is a blend: closer to the data mean than a typical item is, and not a copy of any one item.
            Assert.IsTrue(toMean < 0.8 * typicalItemToMean, $"‖x̂₀ − mean‖ = {toMean}, median item {typicalItemToMean}");
            Assert.IsTrue(distances[nearest] > 0.2 * typicalItemToMean, "x̂₀ at t = 999 already equals an item");
        }
    }

    [TestMethod]
    [DataRow("a red circle on a blue background", 1L)]
    [DataRow("a yellow triangle on the left", 2L)]
    [DataRow("a blue square in the center on a green background", 3L)]
    [DataRow("a purple circle on the right, on a white background", 4L)]
    public void Ddim20StepsWithGuidance_EndsOnAnItemWithThePromptedAttributes(string prompt, long seed)
    {
        const float guidance = 7.5f;
        var scheduler = SchedulerFactory.CreateDefault(Config);
        scheduler.SetTimesteps(20);
        var x = new float[N];
        new GaussianNoise(seed).NextGaussian(x);
        for (int i = 0; i < N; i++)
            x[i] *= scheduler.InitNoiseSigma;
        var hidden = ShapesTestModel.Encode("", prompt);
        var input = new float[2 * N];
        var eps = new float[N];
        for (int s = 0; s < scheduler.Timesteps.Length; s++)
        {
            scheduler.ScaleModelInput(x, input.AsSpan(0, N), s);
            input.AsSpan(0, N).CopyTo(input.AsSpan(N));
            float t = scheduler.Timesteps[s];
            var both = ShapesTestModel.PredictNoise(input, [t, t], hidden, batch: 2);
            for (int i = 0; i < N; i++)
                eps[i] = both[i] + guidance * (both[N + i] - both[i]);
            scheduler.Step(eps, s, x);
        }

        var (nearest, distances) = ShapesTestModel.Nearest(x);
        var item = ShapesDataset.Items[nearest];
        double others = distances.Where((_, k) => k != nearest).OrderBy(d => d).ElementAt(distances.Length / 2);
        Console.WriteLine($"'{prompt}' → item {nearest} '{item.Prompt}', distance {distances[nearest]:F3} ({100 * distances[nearest] / others:F2} % of the median to other items)");
        Assert.IsTrue(distances[nearest] < 0.1 * others, $"the result is not an item: distance {distances[nearest]} vs median {others}");
        foreach (string word in prompt.Split(' ', ','))
        {
            if (ShapesDataset.TryParseShape(word, out var shape))
                Assert.AreEqual(shape, item.Shape, prompt);
            if (ShapesDataset.TryParsePosition(word, out var position))
                Assert.AreEqual(position, item.Position, prompt);
        }
        if (prompt.Contains(" on a ", StringComparison.Ordinal))
        {
            string bg = prompt[(prompt.LastIndexOf(" on a ", StringComparison.Ordinal) + 6)..].Split(' ')[0];
            Assert.IsTrue(ShapesDataset.TryParseBackground(bg, out var background));
            Assert.AreEqual(background, item.Background, prompt);
        }
        Assert.IsTrue(ShapesDataset.TryParseColor(prompt.Split(" ")[1], out var color));
        Assert.AreEqual(color, item.Color, prompt);
    }

    [TestMethod]
    public void At512x512_DdimEndsOnAnUpscaledItem_ThatDecodesToThePromptedColours()
    {
        // 64×64 latents: the item latents are upsampled bilinearly in the graph and the prior scales with the pixel count.
        const int s = 64, n = 4 * s * s;
        var scheduler = SchedulerFactory.CreateDefault(Config);
        scheduler.SetTimesteps(20);
        var x = new float[n];
        new GaussianNoise(21).NextGaussian(x);
        var hidden = ShapesTestModel.Encode("", "a red circle on a blue background");
        var eps = new float[n];
        for (int step = 0; step < scheduler.Timesteps.Length; step++)
        {
            float t = scheduler.Timesteps[step];
            var both = ShapesTestModel.PredictNoise([.. x, .. x], [t, t], hidden, batch: 2, s, s);
            for (int i = 0; i < n; i++)
                eps[i] = both[i] + 7.5f * (both[n + i] - both[i]);
            scheduler.Step(eps, step, x);
        }

        // 2×2 average pooling brings the result back to the items' 32×32 grid.
        var pooled = new float[N];
        for (int c = 0; c < 4; c++)
            for (int y = 0; y < 32; y++)
                for (int xx = 0; xx < 32; xx++)
                    pooled[(c * 32 + y) * 32 + xx] = 0.25f * (x[(c * s + 2 * y) * s + 2 * xx] + x[(c * s + 2 * y + 1) * s + 2 * xx]
                        + x[(c * s + 2 * y) * s + 2 * xx + 1] + x[(c * s + 2 * y + 1) * s + 2 * xx + 1]);
        var (nearest, distances) = ShapesTestModel.Nearest(pooled);
        var item = ShapesDataset.Items[nearest];
        Console.WriteLine($"512×512: nearest item '{item.Prompt}' at {distances[nearest]:F2}");
        Assert.AreEqual(ShapeKind.Circle, item.Shape);
        Assert.AreEqual(ShapeColor.Red, item.Color);
        Assert.AreEqual(BackgroundColor.Blue, item.Background);

        float scale = ShapesTestModel.ScalingFactor;
        var image = ShapesTestModel.Run(ShapesTestModel.VaeDecoder, ("latent_sample", x.Select(v => v / scale).ToArray(), new long[] { 1, 4, s, s }))["sample"];
        CollectionAssert.AreEqual(new long[] { 1, 3, 512, 512 }, image.Shape);
        int cx = item.Position switch { ShapePosition.Left => 118, ShapePosition.Center => 256, _ => 394 };
        AssertPixel(image.Data, cx, 256, ShapesDataset.GetRgb(ShapeColor.Red));
        AssertPixel(image.Data, 8, 8, ShapesDataset.GetRgb(BackgroundColor.Blue));
        AssertPixel(image.Data, cx, 480, ShapesDataset.GetRgb(BackgroundColor.Blue));

        static void AssertPixel(float[] chw, int px, int py, Rgb expected)
        {
            byte[] e = [expected.R, expected.G, expected.B];
            for (int c = 0; c < 3; c++)
            {
                float v = Math.Clamp(chw[(c * 512 + py) * 512 + px], -1f, 1f) * 127.5f + 127.5f;
                Assert.AreEqual(e[c], v, 8f, $"pixel ({px}, {py}) channel {c}");
            }
        }
    }

    [TestMethod]
    public void AnyMultipleOf8Size_Works_AndNativeSizeIsUnchangedByTheResize()
    {
        // 24×40 latents (a 192×320 image): the item latents are resized inside the graph.
        const int h = 24, w = 40;
        var x = new float[4 * h * w];
        new GaussianNoise(5).NextGaussian(x);
        var eps = ShapesTestModel.PredictNoise(x, [500f], ShapesTestModel.Encode("a green triangle"), batch: 1, h, w);
        Assert.AreEqual(x.Length, eps.Length);
        Assert.IsTrue(eps.All(float.IsFinite));

        // At the native size and t = 1 the prediction of a noised item uses the item latents unchanged.
        var item = ShapesDataset.Items[100];
        var z = ShapesTestModel.ItemLatents.AsSpan(item.Index * N, N);
        float ab = new NoiseSchedule(Config).AlphasCumprod[1];
        var noise = new float[N];
        new GaussianNoise(9).NextGaussian(noise);
        var xt = new float[N];
        for (int i = 0; i < N; i++)
            xt[i] = MathF.Sqrt(ab) * z[i] + MathF.Sqrt(1 - ab) * noise[i];
        var e = ShapesTestModel.PredictNoise(xt, [1f], ShapesTestModel.Encode(""), batch: 1);
        double maxErr = 0;
        for (int i = 0; i < N; i++)
            maxErr = Math.Max(maxErr, Math.Abs(e[i] - noise[i]));
        Console.WriteLine($"native size, t = 1: max |ε̂ − ε| = {maxErr:E2}");
        Assert.IsTrue(maxErr < 0.05, $"max error {maxErr}");
    }

    private static double Cosine(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double ab = 0, aa = 0, bb = 0;
        for (int i = 0; i < a.Length; i++)
        {
            ab += a[i] * (double)b[i];
            aa += a[i] * (double)a[i];
            bb += b[i] * (double)b[i];
        }
        return ab / Math.Sqrt(aa * bb);
    }

    private static double Distance(ReadOnlySpan<float> a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++)
            s += (a[i] - b[i]) * (a[i] - b[i]);
        return Math.Sqrt(s);
    }
}
