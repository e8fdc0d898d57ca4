using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>
/// The VQ route of latent diffusion on ../shared/models/tiny-ldm-vq (diffusers LDMPipeline layout, random weights): the
/// folder loads as unconditional latent diffusion with a VQ autoencoder, the UNet2DModel runs with no embeddings column,
/// and host quantisation from codebook.npy agrees with the quantising decoder graph.
/// </summary>
[TestClass]
public sealed class TinyLdmVqTests
{
    private sealed class SeedRow
    {
        public int Seed { get; set; }
    }

    private static IDataView Seeds(MLContext ml, params int[] seeds) => ml.Data.LoadFromEnumerable(seeds.Select(s => new SeedRow { Seed = s }).ToArray());

    private static DenoiseLatentsOptions Options(int steps = 3) => new() { Steps = steps, Width = 32, Height = 32, SeedColumnName = "Seed", BatchSize = 2 };

    [TestMethod]
    public void LoadsAsUnconditionalVqLatentDiffusion()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), UnconditionalModels.RequireLdmVq());
        var info = model.Info;
        Assert.AreEqual(ModelKind.LatentDiffusion, info.Kind);
        Assert.IsFalse(info.IsConditional);
        Assert.IsTrue(info.IsLatentSpace);
        Assert.AreEqual(AutoencoderKind.VQ, info.Autoencoder);
        Assert.AreEqual(3, info.LatentChannels);
        Assert.AreEqual(3, info.UnetInputChannels);
        Assert.AreEqual(2, info.VaeSpatialFactor); // two encoder blocks: factor 2 (README: 16×16 latents, 32×32 images)
        Assert.AreEqual(0.18215f, info.VaeScalingFactor); // vqvae_decoder/config.json
        Assert.AreEqual(64, info.CodebookSize);
        // LDMPipeline uses the scheduler config as written (no SD correction): clip_sample true, steps_offset 0.
        Assert.IsTrue(info.SchedulerConfig.ClipSample);
        Assert.AreEqual(0, info.SchedulerConfig.StepsOffset);
        Assert.IsTrue(model.HasVaeEncoder);
        var tokenizer = Assert.ThrowsExactly<InvalidOperationException>(() => model.Tokenizer);
        StringAssert.Contains(tokenizer.Message, "unconditional");
    }

    [TestMethod]
    public void RefusesFoldersMissingAPartNamingIt()
    {
        string copy = UnconditionalModels.CopyToTemp(UnconditionalModels.RequireLdmVq());
        try
        {
            Directory.Delete(Path.Combine(copy, "vqvae_decoder"), recursive: true);
            var e = Assert.ThrowsExactly<FileNotFoundException>(() => StableDiffusionModel.Load(new MLContext(), copy));
            StringAssert.Contains(e.Message, "vqvae_decoder/model.onnx");
            StringAssert.Contains(e.Message, "LDMPipeline");
            File.Delete(Path.Combine(copy, "unet", "model.onnx"));
            e = Assert.ThrowsExactly<FileNotFoundException>(() => StableDiffusionModel.Load(new MLContext(), copy));
            StringAssert.Contains(e.Message, "unet/model.onnx");
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [TestMethod]
    public void HostQuantisationNeedsTheCodebookAndForceNotQuantizeTheUnquantisedGraph()
    {
        string copy = UnconditionalModels.CopyToTemp(UnconditionalModels.RequireLdmVq());
        try
        {
            File.Delete(Path.Combine(copy, "vqvae_decoder", "codebook.npy"));
            Directory.Delete(Path.Combine(copy, "vqvae_decoder_no_quantize"), recursive: true);
            var ml = new MLContext(seed: 1);
            using var model = StableDiffusionModel.Load(ml, copy);
            var host = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { QuantizeOnHost = true }));
            StringAssert.Contains(host.Message, "vqvae_decoder/codebook.npy");
            var indices = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { CodebookIndicesColumnName = "Codes" }));
            StringAssert.Contains(indices.Message, "codebook.npy");
            var force = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { ForceNotQuantize = true }));
            StringAssert.Contains(force.Message, "vqvae_decoder_no_quantize/model.onnx");
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [TestMethod]
    public void DenoisesWithoutAnEmbeddingsColumn()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, UnconditionalModels.RequireLdmVq());
        var data = Seeds(ml, 5, 5, 6);
        var denoise = ml.Transforms.DenoiseLatents(model, "Latents", Options());
        Assert.IsNull(denoise.Fit(data).InputColumnName);
        var result = denoise.Fit(data).Transform(data);
        CollectionAssert.AreEqual(new[] { 3, 16, 16 }, ((VectorDataViewType)result.Schema["Latents"].Type).Dimensions.ToArray());
        var latents = result.GetColumn<VBuffer<float>>("Latents").Select(v => v.DenseValues().ToArray()).ToArray();
        Assert.IsTrue(latents.All(l => l.Length == 3 * 16 * 16 && l.All(float.IsFinite)));
        CollectionAssert.AreEqual(latents[0], latents[1], "the same seed must give the same latents");
        CollectionAssert.AreNotEqual(latents[0], latents[2]);

        // The text-conditioned overload is refused for this UNet, naming the fix; EncodePrompt has no text encoder to run.
        var embeddings = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", Options()));
        StringAssert.Contains(embeddings.Message, "DenoiseLatents(model, outputColumnName, options)");
        var prompt = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt"));
        StringAssert.Contains(prompt.Message, "unconditional");
    }

    [TestMethod]
    public void TextConditionedModelsRefuseTheOverloadWithoutEmbeddings()
    {
        string dir = TestSupport.SharedModels.RequireTinySd();
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, dir);
        Assert.IsTrue(model.Info.IsConditional);
        Assert.AreEqual(AutoencoderKind.KL, model.Info.Autoencoder);
        var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", new DenoiseLatentsOptions { Steps = 2 }));
        StringAssert.Contains(e.Message, "embeddings column");
    }

    [TestMethod]
    public void HostQuantisationWithTheUnquantisedDecoderEqualsTheQuantisingGraph()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, UnconditionalModels.RequireLdmVq());
        var data = Seeds(ml, 11, 12);
        var latents = ml.Transforms.DenoiseLatents(model, "Latents", Options()).Fit(data).Transform(data);
        float[][] Decode(DecodeLatentsOptions o, string? indicesColumn = null)
        {
            var decoded = ml.Transforms.DecodeLatents(model, "Image", "Latents", o).Fit(latents).Transform(latents);
            return decoded.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToArray();
        }
        var graph = Decode(new DecodeLatentsOptions { PixelsColumnName = "Pixels" });
        var host = Decode(new DecodeLatentsOptions { PixelsColumnName = "Pixels", QuantizeOnHost = true });
        var raw = Decode(new DecodeLatentsOptions { PixelsColumnName = "Pixels", ForceNotQuantize = true });
        for (int r = 0; r < graph.Length; r++)
        {
            Assert.AreEqual(3 * 32 * 32, graph[r].Length);
            // diffusers returns the straight-through z + (E[k] − z), which can differ from E[k] in the last bit: float32 rounding.
            float maxDiff = graph[r].Zip(host[r], (a, b) => Math.Abs(a - b)).Max();
            Assert.IsTrue(maxDiff < 1e-4f, $"row {r}: host quantisation differs from the graph's by {maxDiff}");
            float rawDiff = graph[r].Zip(raw[r], (a, b) => Math.Abs(a - b)).Max();
            Assert.IsTrue(rawDiff > 1e-2f, $"row {r}: force_not_quantize must decode other latents than the quantised ones (max diff {rawDiff})");
        }
    }

    [TestMethod]
    public void ADecoderGraphWithoutQuantisationIsQuantisedForOnTheHost()
    {
        string source = UnconditionalModels.RequireLdmVq();
        var ml = new MLContext(seed: 1);
        float[][] graph, raw;
        using (var model = StableDiffusionModel.Load(ml, source))
        {
            // The shared export quantises in vqvae_decoder's graph (ArgMin) and not in vqvae_decoder_no_quantize's.
            Assert.IsTrue(model.VqDecoderQuantizes);
            (graph, raw) = DecodeBoth(ml, model);
        }
        string copy = UnconditionalModels.CopyToTemp(source);
        try
        {
            // A folder whose only VQ decoder is post_quant_conv + decoder: LDMPipeline's decode still quantises (on the host),
            // and force_not_quantize uses that graph as it is.
            File.Copy(Path.Combine(copy, "vqvae_decoder_no_quantize", "model.onnx"), Path.Combine(copy, "vqvae_decoder", "model.onnx"), overwrite: true);
            Directory.Delete(Path.Combine(copy, "vqvae_decoder_no_quantize"), recursive: true);
            using var model = StableDiffusionModel.Load(ml, copy);
            Assert.IsFalse(model.VqDecoderQuantizes);
            var (host, hostRaw) = DecodeBoth(ml, model);
            for (int r = 0; r < graph.Length; r++)
            {
                Assert.IsTrue(graph[r].Zip(host[r], (a, b) => Math.Abs(a - b)).Max() < 1e-4f, $"row {r}");
                CollectionAssert.AreEqual(raw[r], hostRaw[r], $"row {r}: force_not_quantize runs the same graph");
            }
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    private static (float[][] Quantized, float[][] Raw) DecodeBoth(MLContext ml, StableDiffusionModel model)
    {
        var data = Seeds(ml, 31, 32);
        var latents = ml.Transforms.DenoiseLatents(model, "Latents", Options(steps: 2)).Fit(data).Transform(data);
        float[][] Decode(DecodeLatentsOptions o) => ml.Transforms.DecodeLatents(model, "Image", "Latents", o).Fit(latents).Transform(latents)
            .GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToArray();
        return (Decode(new DecodeLatentsOptions { PixelsColumnName = "Pixels" }), Decode(new DecodeLatentsOptions { PixelsColumnName = "Pixels", ForceNotQuantize = true }));
    }

    [TestMethod]
    public void ReportsTheChosenCodebookIndices()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, UnconditionalModels.RequireLdmVq());
        var data = Seeds(ml, 3);
        var latents = ml.Transforms.DenoiseLatents(model, "Latents", Options()).Fit(data).Transform(data);
        var decoded = ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { CodebookIndicesColumnName = "Codes" }).Fit(latents).Transform(latents);
        CollectionAssert.AreEqual(new[] { 16, 16 }, ((VectorDataViewType)decoded.Schema["Codes"].Type).Dimensions.ToArray());
        Assert.AreEqual(NumberDataViewType.Int32, ((VectorDataViewType)decoded.Schema["Codes"].Type).ItemType);
        int[] codes = decoded.GetColumn<VBuffer<int>>("Codes").Single().DenseValues().ToArray();
        float[] z = decoded.GetColumn<VBuffer<float>>("Latents").Single().DenseValues().ToArray();

        // Each index is the argmin of the squared distance from latents / scaling_factor, computed here independently in double.
        var (codebook, shape) = MLNet.Diffusion.Onnx.NpyFile.ReadFloat32(Path.Combine(model.Directory, "vqvae_decoder", "codebook.npy"));
        int plane = 16 * 16;
        for (int p = 0; p < plane; p++)
        {
            int best = 0;
            double bestD = double.MaxValue;
            for (int k = 0; k < shape[0]; k++)
            {
                double d = 0;
                for (int c = 0; c < 3; c++)
                {
                    double diff = z[c * plane + p] / (double)0.18215f - codebook[k * 3 + c];
                    d += diff * diff;
                }
                if (d < bestD)
                {
                    bestD = d;
                    best = k;
                }
            }
            Assert.AreEqual(best, codes[p], $"latent pixel {p}");
        }
        Assert.IsTrue(codes.Distinct().Count() > 1);
    }

    [TestMethod]
    public void RunsTheWholeLdmPipelineAndEncodesImagesWithoutQuantisation()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, UnconditionalModels.RequireLdmVq());
        var data = Seeds(ml, 1, 2);
        var pipeline = ml.Transforms.DenoiseLatents(model, "Latents", Options(steps: 4))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }))
            .Append(ml.Transforms.EncodeImage(model, "Encoded", "Image", new EncodeImageOptions { Width = 32, Height = 32 }));
        var result = pipeline.Fit(data).Transform(data);
        var images = result.GetColumn<MLImage>("Image").ToArray();
        Assert.AreEqual(2, images.Length);
        Assert.IsTrue(images.All(i => i.Width == 32 && i.Height == 32));
        var encoded = result.GetColumn<VBuffer<float>>("Encoded").Select(v => v.DenseValues().ToArray()).ToArray();
        Assert.IsTrue(encoded.All(e => e.Length == 3 * 16 * 16 && e.All(float.IsFinite)));
        // VQModel.encode does not quantise: the encoder's latents are (almost surely) not codebook vectors.
        var (codebook, _) = MLNet.Diffusion.Onnx.NpyFile.ReadFloat32(Path.Combine(model.Directory, "vqvae_decoder", "codebook.npy"));
        var quantised = new float[encoded[0].Length];
        var scaled = encoded[0].Select(v => v / model.Info.VaeScalingFactor).ToArray();
        VqCodebook.Create(codebook, new[] { 64, 3 }, 3, "codebook").Quantize(scaled, 1, 256, quantised, default);
        Assert.IsTrue(scaled.Zip(quantised, (a, b) => Math.Abs(a - b)).Max() > 1e-3f);
    }
}
