using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>
/// The unconditional Shapes folders (<see cref="ShapesVariant.Unconditional"/>: LDMPipeline with the KL-shaped PCA
/// autoencoder; <see cref="ShapesVariant.Vq"/>: the same with a VQ autoencoder whose codebook is k-means over the
/// dataset's patch latents) load through the library's normal path and run end to end; the VQ decoder of the latents is
/// close to the KL decoder of the same latents.
/// </summary>
[TestClass]
public sealed class ShapesUnconditionalTests
{
    private const int Size = 256;
    private const int LatentSize = Size / 8;
    private const int Plane = 3 * Size * Size;

    private static readonly Lazy<string> s_kl = new(() => Build(ShapesVariant.Unconditional));
    private static readonly Lazy<string> s_vq = new(() => Build(ShapesVariant.Vq));

    private sealed class SeedRow
    {
        public int Seed { get; set; }
    }

    private sealed class LatentRow
    {
        [VectorType(4, LatentSize, LatentSize)]
        public float[] Latents { get; set; } = Array.Empty<float>();
    }

    private static string Build(ShapesVariant variant)
    {
        string folder = Path.Combine(Path.GetTempPath(), $"mlnet-shapes-{variant.ToString().ToLowerInvariant()}-{Guid.NewGuid():N}");
        ShapesModel.Build(folder, new ShapesModelOptions { Variant = variant });
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return folder;
    }

    private static DenoiseLatentsOptions Options(int steps = 20) =>
        new() { Steps = steps, Width = Size, Height = Size, SeedColumnName = "Seed", BatchSize = 3 };

    private static IDataView Seeds(MLContext ml, params int[] seeds) => ml.Data.LoadFromEnumerable(seeds.Select(s => new SeedRow { Seed = s }).ToArray());

    private static float[][] Column(IDataView view, string name) => view.GetColumn<VBuffer<float>>(name).Select(v => v.DenseValues().ToArray()).ToArray();

    /// <summary>Denoises the seeds and decodes them; returns the latents and the pixels [3,H,W] in [−1, 1].</summary>
    private static (float[][] Latents, float[][] Pixels) Generate(string folder, DecodeLatentsOptions? decode, params int[] seeds)
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, folder);
        var data = Seeds(ml, seeds);
        var result = ml.Transforms.DenoiseLatents(model, "Latents", Options())
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", decode ?? new DecodeLatentsOptions { PixelsColumnName = "Pixels" }))
            .Fit(data).Transform(data);
        return (Column(result, "Latents"), Column(result, "Pixels"));
    }

    /// <summary>Decodes given latents [4,32,32] (× scaling factor) through a folder's DecodeLatents stage.</summary>
    private static float[][] Decode(string folder, float[][] latents, DecodeLatentsOptions options)
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, folder);
        var data = ml.Data.LoadFromEnumerable(latents.Select(l => new LatentRow { Latents = l }).ToArray());
        return Column(ml.Transforms.DecodeLatents(model, "Image", "Latents", options).Fit(data).Transform(data), "Pixels");
    }

    /// <summary>The scaled latents of items drawn at 256² (EncodeImage through the folder's encoder).</summary>
    private static float[][] Encode(string folder, params ShapesItem[] items)
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, folder);
        var data = ml.Data.LoadFromEnumerable(items.Select(i => new ImageRow { Image = ToImage(ShapesDataset.RenderRgb(i, Size)) }).ToArray());
        return Column(ml.Transforms.EncodeImage(model, "Latents", "Image", new EncodeImageOptions { Width = Size, Height = Size }).Fit(data).Transform(data), "Latents");
    }

    private static double MeanAbs(float[] a, float[] b) => a.Zip(b, (x, y) => (double)Math.Abs(x - y)).Average();

    /// <summary>The dataset item nearest to a decoded image (mean absolute difference over [−1, 1] pixels).</summary>
    private static (ShapesItem Item, double Distance) NearestItem(float[] pixels) =>
        ShapesDataset.Items.Select(i => (i, MeanAbs(pixels, s_renderings.Value[i.Index]))).MinBy(p => p.Item2);

    private static readonly Lazy<float[][]> s_itemLatents = new(() => Encode(s_kl.Value, ShapesDataset.Items.ToArray()));

    private static readonly Lazy<float[][]> s_renderings = new(() => ShapesDataset.Items.Select(i => ShapesDataset.RenderTensor(i, Size)).ToArray());

    /// <summary>
    /// How far (mean |Δ| over [−1, 1] pixels) a decoded item may be from its drawing: the 4-component PCA blurs the shape's
    /// edges (about 0.02 measured for the KL-shaped decoder). The shape covers little of the picture, so a square of the same
    /// colour at the same place is about 0.024 away: the tests check the latents too.
    /// </summary>
    private const double ItemTolerance = 0.04;

    /// <summary>
    /// How far the VQ decoder's image may be from the KL decoder's of the same latents: <see cref="ShapesModel.CodebookSize"/> codebook
    /// vectors replace each latent pixel's vector (about 0.017 measured).
    /// </summary>
    private const double QuantisationTolerance = 0.03;

    [TestMethod]
    public void TheUnconditionalFolderLoadsAsAnLdmPipelineWithoutText()
    {
        string folder = s_kl.Value;
        Assert.IsFalse(Directory.Exists(Path.Combine(folder, "text_encoder")));
        Assert.IsFalse(Directory.Exists(Path.Combine(folder, "tokenizer")));
        StringAssert.Contains(File.ReadAllText(Path.Combine(folder, "model_index.json")), "\"LDMPipeline\"");
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder);
        var info = model.Info;
        Assert.AreEqual(ModelKind.LatentDiffusion, info.Kind);
        Assert.IsFalse(info.IsConditional);
        Assert.AreEqual(AutoencoderKind.KL, info.Autoencoder);
        Assert.AreEqual(4, info.LatentChannels);
        Assert.AreEqual(4, info.UnetInputChannels);
        Assert.AreEqual(8, info.VaeSpatialFactor);
        Assert.IsTrue(model.HasVaeEncoder);
        Assert.ThrowsExactly<InvalidOperationException>(() => model.Tokenizer);
    }

    [TestMethod]
    public void TheVqFolderLoadsThroughTheVqRoute()
    {
        string folder = s_vq.Value;
        foreach (string part in new[] { "vqvae_encoder/model.onnx", "vqvae_decoder/model.onnx", "vqvae_decoder/codebook.npy", "vqvae_decoder_no_quantize/model.onnx" })
            Assert.IsTrue(File.Exists(Path.Combine(folder, part)), part);
        Assert.IsFalse(Directory.Exists(Path.Combine(folder, "vae_decoder")));
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder);
        var info = model.Info;
        Assert.AreEqual(ModelKind.LatentDiffusion, info.Kind);
        Assert.AreEqual(AutoencoderKind.VQ, info.Autoencoder);
        Assert.AreEqual(ShapesModel.CodebookSize, info.CodebookSize);
        Assert.AreEqual(8, info.VaeSpatialFactor);
        Assert.IsTrue(model.VqDecoderQuantizes, "vqvae_decoder quantises in its graph (ArgMin)");
        Assert.IsTrue(model.HasVaeEncoder);
        // The same scaling factor as the KL-shaped folder (both are the data's 1/std), so the UNet's latents mean the same.
        using var kl = StableDiffusionModel.Load(new MLContext(seed: 1), s_kl.Value);
        Assert.AreEqual(kl.Info.VaeScalingFactor, info.VaeScalingFactor);

        var (codebook, shape) = MLNet.Diffusion.Onnx.NpyFile.ReadFloat32(Path.Combine(folder, "vqvae_decoder", "codebook.npy"));
        CollectionAssert.AreEqual(new[] { ShapesModel.CodebookSize, 4 }, shape);
        Assert.AreEqual(ShapesModel.CodebookSize, codebook.Chunk(4).Select(v => string.Join(",", v)).Distinct().Count(), "k-means centres are distinct");
    }

    [TestMethod]
    public void GeneratesCirclesDeterministically()
    {
        var (latents, pixels) = Generate(s_kl.Value, null, 7, 7, 8, 9, 10);
        CollectionAssert.AreEqual(latents[0], latents[1], "the same seed must give the same latents");
        CollectionAssert.AreEqual(pixels[0], pixels[1], "the same seed must give the same image");
        CollectionAssert.AreNotEqual(latents[0], latents[2]);
        for (int r = 0; r < pixels.Length; r++)
        {
            Assert.AreEqual(Plane, pixels[r].Length);
            var (item, distance) = NearestItem(pixels[r]);
            // The denoiser's class is every circle: the image is a circle item, up to the 4-component PCA's blur of its edges.
            Assert.AreEqual(ShapesModel.UnconditionalShape, item.Shape, $"row {r}: nearest item {item.Prompt}");
            Assert.IsTrue(distance < ItemTolerance, $"row {r}: {distance} from the nearest item {item.Prompt}");
            // In latent space too the sample is that item (the posterior mean settled on it; DDIM's last step keeps
            // √(1 − ᾱ₀) ≈ 0.03 of predicted noise), far nearer to it than to any other item.
            var errors = s_itemLatents.Value.Select(z => TestSupport.ImageChecks.RelativeL2(latents[r], z)).ToArray();
            var order = Enumerable.Range(0, errors.Length).OrderBy(k => errors[k]).ToArray();
            Assert.AreEqual(item.Index, order[0], $"row {r}: nearest latents are those of {ShapesDataset.Items[order[0]].Prompt}");
            Assert.IsTrue(errors[order[0]] < 0.1 && errors[order[1]] > 2 * errors[order[0]],
                $"row {r}: latents {errors[order[0]]} (relative L2) from {item.Prompt}, {errors[order[1]]} from {ShapesDataset.Items[order[1]].Prompt}");
        }
        // Across seeds the class shows more than one picture.
        Assert.IsTrue(pixels.Skip(1).Select(p => NearestItem(p).Item.Index).Distinct().Count() > 1);
    }

    [TestMethod]
    public void TheVqRouteDenoisesTheSameLatentsAndDecodesThemCloseToTheKlDecoder()
    {
        int[] seeds = { 3, 4, 5 };
        var (klLatents, klPixels) = Generate(s_kl.Value, null, seeds);
        var (vqLatents, vqPixels) = Generate(s_vq.Value, null, seeds);
        for (int r = 0; r < seeds.Length; r++)
        {
            // Same UNet, scheduler and scaling factor: the latents are the same bits; only the decoders differ.
            CollectionAssert.AreEqual(klLatents[r], vqLatents[r], $"row {r}");
            double difference = MeanAbs(klPixels[r], vqPixels[r]);
            Assert.IsTrue(difference > 0, $"row {r}: the VQ decoder quantises, so it must not equal the KL decoder exactly");
            Assert.IsTrue(difference < QuantisationTolerance, $"row {r}: VQ and KL decoders differ by {difference} on average");
            var (item, distance) = NearestItem(vqPixels[r]);
            Assert.AreEqual(ShapesModel.UnconditionalShape, item.Shape, $"row {r}");
            Assert.IsTrue(distance < ItemTolerance, $"row {r}: VQ image {distance} from the nearest item {item.Prompt}");
        }
    }

    [TestMethod]
    public void VqDecodingOfEncodedItemsIsCloseToKlDecodingAndHostQuantisationAgreesWithTheGraph()
    {
        // Encode two items through vqvae_encoder (VQModel.encode: no quantisation), then decode those latents four ways;
        // a circle and a triangle: the autoencoder is the whole dataset's.
        var latents = Encode(s_vq.Value, ShapesDataset.Items[17], ShapesDataset.Items[200]);
        var kl = Decode(s_kl.Value, latents, new DecodeLatentsOptions { PixelsColumnName = "Pixels" });
        var graph = Decode(s_vq.Value, latents, new DecodeLatentsOptions { PixelsColumnName = "Pixels" });
        var host = Decode(s_vq.Value, latents, new DecodeLatentsOptions { PixelsColumnName = "Pixels", QuantizeOnHost = true });
        var raw = Decode(s_vq.Value, latents, new DecodeLatentsOptions { PixelsColumnName = "Pixels", ForceNotQuantize = true });
        for (int r = 0; r < latents.Length; r++)
        {
            CollectionAssert.AreEqual(kl[r], raw[r], $"row {r}: force_not_quantize is the KL-shaped PCA decoder");
            float hostDiff = graph[r].Zip(host[r], (a, b) => Math.Abs(a - b)).Max();
            Assert.IsTrue(hostDiff < 1e-5f, $"row {r}: host quantisation differs from the graph's by {hostDiff}");
            double vqDiff = MeanAbs(graph[r], kl[r]);
            Assert.IsTrue(vqDiff > 0 && vqDiff < QuantisationTolerance, $"row {r}: the VQ decoder differs from the KL decoder by {vqDiff} on average");
        }
    }

    [TestMethod]
    public void ReportsCodebookIndicesWithOneCodeForTheFlatBackground()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, s_vq.Value);
        var (latents, _) = Generate(s_vq.Value, null, 11);
        var data = ml.Data.LoadFromEnumerable(latents.Select(l => new LatentRow { Latents = l }).ToArray());
        var decoded = ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { CodebookIndicesColumnName = "Codes" }).Fit(data).Transform(data);
        int[] codes = decoded.GetColumn<VBuffer<int>>("Codes").Single().DenseValues().ToArray();
        Assert.AreEqual(LatentSize * LatentSize, codes.Length);
        Assert.IsTrue(codes.All(c => c >= 0 && c < ShapesModel.CodebookSize));
        // The background is flat: the corner patches (far from any shape) share one code; the shape's edges use others.
        Assert.AreEqual(codes[0], codes[LatentSize - 1]);
        Assert.AreEqual(codes[0], codes[LatentSize * LatentSize - 1]);
        Assert.IsTrue(codes.Distinct().Count() > 2, $"{codes.Distinct().Count()} distinct codes");
    }

    [TestMethod]
    public void TheVqBuildIsDeterministic()
    {
        string again = Build(ShapesVariant.Vq);
        foreach (string file in Directory.GetFiles(s_vq.Value, "*", SearchOption.AllDirectories))
        {
            string relative = Path.GetRelativePath(s_vq.Value, file);
            CollectionAssert.AreEqual(File.ReadAllBytes(file), File.ReadAllBytes(Path.Combine(again, relative)), relative);
        }
    }

    [TestMethod]
    public void OtherFlagsAreRefusedWithTheUnconditionalVariantsNamingThem()
    {
        string folder = Path.Combine(Path.GetTempPath(), "mlnet-shapes-never-" + Guid.NewGuid().ToString("N"));
        var e = Assert.ThrowsExactly<NotSupportedException>(() => ShapesModel.Build(folder, new ShapesModelOptions { Variant = ShapesVariant.Vq | ShapesVariant.Float16 }));
        StringAssert.Contains(e.Message, "Float16");
        StringAssert.Contains(e.Message, "Unconditional");
        e = Assert.ThrowsExactly<NotSupportedException>(() => ShapesModel.Build(folder, new ShapesModelOptions { Variant = ShapesVariant.Unconditional | ShapesVariant.Inpainting }));
        StringAssert.Contains(e.Message, "Inpainting");
        Assert.IsFalse(Directory.Exists(folder));
    }

    private sealed class ImageRow
    {
        [Microsoft.ML.Transforms.Image.ImageType(Size, Size)]
        public MLImage Image { get; set; } = null!;
    }

    private static MLImage ToImage(byte[] rgb)
    {
        var bgra = new byte[Size * Size * 4];
        for (int p = 0; p < Size * Size; p++)
        {
            bgra[4 * p] = rgb[3 * p + 2];
            bgra[4 * p + 1] = rgb[3 * p + 1];
            bgra[4 * p + 2] = rgb[3 * p];
            bgra[4 * p + 3] = 255;
        }
        return MLImage.CreateFromPixels(Size, Size, MLPixelFormat.Bgra32, bgra);
    }
}
