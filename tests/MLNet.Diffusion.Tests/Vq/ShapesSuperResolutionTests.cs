using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms.Image;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>
/// Latent-diffusion super-resolution (diffusers LDMSuperResolutionPipeline) on the Shapes super-resolution folder
/// (<see cref="ShapesVariant.SuperResolution"/>): the low-resolution image is concatenated with the latents at every step
/// (DenoiseLatentsOptions.LowResolutionImageColumnName) and the VQ decoder makes the picture the autoencoder's factor larger.
/// </summary>
[TestClass]
public sealed class ShapesSuperResolutionTests
{
    private const int Size = 256;
    private const int Low = Size / 8;

    private static readonly Lazy<string> s_folder = new(Build);

    private sealed class LowResRow
    {
        [ImageType(Low, Low)]
        public MLImage Image { get; set; } = null!;

        public int Seed { get; set; }
    }

    private static string Build()
    {
        string folder = Path.Combine(Path.GetTempPath(), "mlnet-shapes-sr-" + Guid.NewGuid().ToString("N"));
        ShapesModel.Build(folder, new ShapesModelOptions { Variant = ShapesVariant.SuperResolution });
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

    private static MLImage Image(byte[] rgb, int size)
    {
        var bgra = new byte[size * size * 4];
        for (int p = 0; p < size * size; p++)
        {
            bgra[4 * p] = rgb[3 * p + 2];
            bgra[4 * p + 1] = rgb[3 * p + 1];
            bgra[4 * p + 2] = rgb[3 * p];
            bgra[4 * p + 3] = 255;
        }
        return MLImage.CreateFromPixels(size, size, MLPixelFormat.Bgra32, bgra);
    }

    private static DenoiseLatentsOptions Options(int steps = 20) =>
        new() { Steps = steps, Width = Size, Height = Size, SeedColumnName = "Seed", LowResolutionImageColumnName = "Image", BatchSize = 2 };

    private static float[][] Upscale(MLContext ml, StableDiffusionModel model, LowResRow[] rows, DenoiseLatentsOptions options)
    {
        var data = ml.Data.LoadFromEnumerable(rows);
        var result = ml.Transforms.DenoiseLatents(model, "Latents", options)
            .Append(ml.Transforms.DecodeLatents(model, "Upscaled", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }))
            .Fit(data).Transform(data);
        return result.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToArray();
    }

    private static double MeanAbs(float[] a, float[] b) => a.Zip(b, (x, y) => (double)Math.Abs(x - y)).Average();

    [TestMethod]
    public void LoadsAsSuperResolutionWithTheImageChannelsAfterTheLatents()
    {
        StringAssert.Contains(File.ReadAllText(Path.Combine(s_folder.Value, "model_index.json")), "\"LDMSuperResolutionPipeline\"");
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), s_folder.Value);
        var info = model.Info;
        Assert.AreEqual(ModelKind.SuperResolution, info.Kind);
        Assert.IsFalse(info.IsConditional);
        Assert.AreEqual(AutoencoderKind.VQ, info.Autoencoder);
        Assert.AreEqual(4, info.LatentChannels);
        Assert.AreEqual(7, info.UnetInputChannels, "latents, then the 3 channels of the low-resolution image");
        Assert.AreEqual(1f, info.VaeScalingFactor, "LDMSuperResolutionPipeline decodes the latents as they are");
        Assert.AreEqual(8, info.VaeSpatialFactor);
    }

    [TestMethod]
    public void UpscalesAPictureDrawnSmallToThatPictureDeterministically()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, s_folder.Value);
        var items = new[] { ShapesDataset.Items[5], ShapesDataset.Items[140], ShapesDataset.Items[269] };
        var rows = items.Select((item, i) => new LowResRow { Image = Image(ShapesDataset.RenderRgb(item, Low), Low), Seed = 7 }).Append(
            new LowResRow { Image = Image(ShapesDataset.RenderRgb(items[0], Low), Low), Seed = 8 }).ToArray();
        var pixels = Upscale(ml, model, rows, Options());
        Assert.AreEqual(3 * Size * Size, pixels[0].Length, "8× the 32×32 input: the Shapes autoencoder's factor");
        var renderings = ShapesDataset.Items.Select(i => ShapesDataset.RenderTensor(i, Size)).ToArray();
        for (int r = 0; r < rows.Length; r++)
        {
            var expected = r < items.Length ? items[r] : items[0];
            var distances = renderings.Select(t => MeanAbs(pixels[r], t)).ToArray();
            int nearest = Array.IndexOf(distances, distances.Min());
            // The output is the full-size drawing of the item the small picture shows (up to the VQ autoencoder's edges).
            Assert.AreEqual(expected.Index, nearest, $"row {r}: upscaled {expected.Prompt} into {ShapesDataset.Items[nearest].Prompt}");
            Assert.IsTrue(distances[nearest] < 0.04, $"row {r}: {distances[nearest]} from {expected.Prompt}");
        }
        // Deterministic: the same rows give the same bits; another seed, the same picture (the image decides it).
        var again = Upscale(ml, model, rows.Take(1).ToArray(), Options());
        CollectionAssert.AreEqual(pixels[0], again[0]);
        Assert.IsTrue(MeanAbs(pixels[0], pixels[3]) < 0.02);
    }

    [TestMethod]
    public void TheImageDecidesWhatIsDrawnNotTheNoise()
    {
        // Without the image channels' evidence, one seed would give one item whatever the input: two inputs, one seed,
        // two different outputs, each its own input's item.
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, s_folder.Value);
        var a = ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Red, BackgroundColor.White, ShapePosition.Left);
        var b = ShapesDataset.GetItem(ShapeKind.Triangle, ShapeColor.Blue, BackgroundColor.Black, ShapePosition.Right);
        var pixels = Upscale(ml, model, new[]
        {
            new LowResRow { Image = Image(ShapesDataset.RenderRgb(a, Low), Low), Seed = 3 },
            new LowResRow { Image = Image(ShapesDataset.RenderRgb(b, Low), Low), Seed = 3 },
        }, Options(steps: 10));
        Assert.IsTrue(MeanAbs(pixels[0], ShapesDataset.RenderTensor(a, Size)) < 0.04);
        Assert.IsTrue(MeanAbs(pixels[1], ShapesDataset.RenderTensor(b, Size)) < 0.04);

        // diffusers' example runs the pipeline with eta = 1 (stochastic DDIM): other bits, the same picture.
        var stochastic = Upscale(ml, model, new[] { new LowResRow { Image = Image(ShapesDataset.RenderRgb(a, Low), Low), Seed = 3 } },
            new DenoiseLatentsOptions { Steps = 10, Width = Size, Height = Size, SeedColumnName = "Seed", LowResolutionImageColumnName = "Image", Scheduler = new DdimSchedulerOptions { Eta = 1f } });
        CollectionAssert.AreNotEqual(pixels[0], stochastic[0]);
        Assert.IsTrue(MeanAbs(stochastic[0], ShapesDataset.RenderTensor(a, Size)) < 0.04);
    }

    [TestMethod]
    public void TheLowResolutionColumnIsRequiredCheckedAndRefusedElsewhere()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, s_folder.Value);
        var missing = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(model, "Latents", new DenoiseLatentsOptions { Width = Size, Height = Size }));
        StringAssert.Contains(missing.Message, "LowResolutionImageColumnName");
        var size = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Transforms.DenoiseLatents(model, "Latents",
            new DenoiseLatentsOptions { Width = 128, Height = 128, LowResolutionImageColumnName = "Image" }));
        StringAssert.Contains(size.Message, "multiple of 32");

        // A row whose image is not Width/8 × Height/8 fails naming the row, the column and both sizes.
        var data = ml.Data.LoadFromEnumerable(new[] { new LowResRow { Image = Image(ShapesDataset.RenderRgb(ShapesDataset.Items[0], Low), Low), Seed = 1 } });
        var wrong = ml.Transforms.DenoiseLatents(model, "Latents", new DenoiseLatentsOptions { Width = 512, Height = 512, Steps = 1, LowResolutionImageColumnName = "Image" });
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => wrong.Fit(data).Transform(data).GetColumn<VBuffer<float>>("Latents").ToArray());
        StringAssert.Contains(e.Message, "Row 0");
        StringAssert.Contains(e.Message, "32×32");
        StringAssert.Contains(e.Message, "64×64");

        using var text = StableDiffusionModel.Load(ml, Shapes.ShapesTestModel.Folder);
        var other = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DenoiseLatents(text, "Latents", "Embeddings",
            new DenoiseLatentsOptions { Width = Size, Height = Size, LowResolutionImageColumnName = "Image" }));
        StringAssert.Contains(other.Message, "super-resolution");
    }

    [TestMethod]
    public void AUnetWhoseChannelsDoNotFitThePipelineClassIsRefusedNamingBoth()
    {
        string copy = UnconditionalModels.CopyToTemp(s_folder.Value);
        try
        {
            // The 7-channel UNet declared as LDMPipeline, then a 4-channel UNet declared as LDMSuperResolutionPipeline.
            string index = Path.Combine(copy, "model_index.json");
            File.WriteAllText(index, File.ReadAllText(index).Replace("LDMSuperResolutionPipeline", "LDMPipeline", StringComparison.Ordinal));
            var e = Assert.ThrowsExactly<MLNet.Diffusion.Onnx.ModelContractException>(() => StableDiffusionModel.Load(new MLContext(), copy));
            StringAssert.Contains(e.Message, "7 input channels");
            StringAssert.Contains(e.Message, "LDMSuperResolutionPipeline");

            File.WriteAllText(index, File.ReadAllText(index).Replace("LDMPipeline", "LDMSuperResolutionPipeline", StringComparison.Ordinal));
            string unconditional = Path.Combine(Path.GetTempPath(), "mlnet-shapes-uncond-" + Guid.NewGuid().ToString("N"));
            ShapesModel.Build(unconditional, new ShapesModelOptions { Variant = ShapesVariant.Vq });
            try
            {
                File.Copy(Path.Combine(unconditional, "unet", "model.onnx"), Path.Combine(copy, "unet", "model.onnx"), overwrite: true);
                File.Copy(Path.Combine(unconditional, "unet", "config.json"), Path.Combine(copy, "unet", "config.json"), overwrite: true);
            }
            finally
            {
                Directory.Delete(unconditional, recursive: true);
            }
            e = Assert.ThrowsExactly<MLNet.Diffusion.Onnx.ModelContractException>(() => StableDiffusionModel.Load(new MLContext(), copy));
            StringAssert.Contains(e.Message, "takes 4 input channels");
            StringAssert.Contains(e.Message, "low-resolution image (7)");
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [TestMethod]
    public void ADefinitionCarriesTheColumnAndAZipRefusesIt()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, s_folder.Value);
        var rows = new[] { new LowResRow { Image = Image(ShapesDataset.RenderRgb(ShapesDataset.Items[77], Low), Low), Seed = 2 } };
        var data = ml.Data.LoadFromEnumerable(rows);
        var fitted = ml.Transforms.DenoiseLatents(model, "Latents", Options(steps: 5))
            .Append(ml.Transforms.DecodeLatents(model, "Upscaled", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }))
            .Fit(data);
        var expected = fitted.Transform(data).GetColumn<VBuffer<float>>("Pixels").Single().DenseValues().ToArray();

        var definition = DiffusionPipelineDefinition.FromJson(DiffusionPipelineDefinition.FromTransformer(fitted, data.Schema).ToJson());
        Assert.AreEqual("Image", definition.Stages.OfType<DenoiseLatentsStageDefinition>().Single().LowResolutionImageColumnName);
        var loaded = definition.Build(model).Transform(data).GetColumn<VBuffer<float>>("Pixels").Single().DenseValues().ToArray();
        CollectionAssert.AreEqual(expected, loaded);

        using var stream = new MemoryStream();
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Model.Save(fitted, data.Schema, stream));
        StringAssert.Contains(e.Message, "DiffusionPipelineDefinition");
    }
}
