using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Tests.Vq;

namespace MLNet.Diffusion.Tests.Pixel;

/// <summary>
/// Pixel-space diffusion on ../shared/models/tiny-ddpm-pixel (diffusers DDPMPipeline layout, random weights): no
/// autoencoder, the UNet2DModel denoises RGB pixels with the library's DDPM scheduler, and the denoised tensor is the image.
/// </summary>
[TestClass]
public sealed class TinyDdpmPixelTests
{
    private sealed class SeedRow
    {
        public int Seed { get; set; }
    }

    [TestMethod]
    public void LoadsAsPixelSpaceDiffusion()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), UnconditionalModels.RequireDdpmPixel());
        var info = model.Info;
        Assert.AreEqual(ModelKind.PixelDiffusion, info.Kind);
        Assert.IsFalse(info.IsConditional);
        Assert.IsFalse(info.IsLatentSpace);
        Assert.AreEqual(AutoencoderKind.None, info.Autoencoder);
        Assert.AreEqual(3, info.LatentChannels);
        Assert.AreEqual(1, info.VaeSpatialFactor);
        Assert.AreEqual(1f, info.VaeScalingFactor);
        Assert.IsNull(info.CodebookSize);
        Assert.AreEqual("DDPMScheduler", info.SchedulerConfig.ClassName);
        Assert.IsTrue(info.SchedulerConfig.ClipSample); // DDPMPipeline keeps the config's clip_sample
        Assert.IsFalse(model.HasVaeEncoder);
    }

    [TestMethod]
    public void RefusesAFolderWithoutItsUnetNamingIt()
    {
        string copy = UnconditionalModels.CopyToTemp(UnconditionalModels.RequireDdpmPixel());
        try
        {
            File.Delete(Path.Combine(copy, "scheduler", "scheduler_config.json"));
            var e = Assert.ThrowsExactly<FileNotFoundException>(() => StableDiffusionModel.Load(new MLContext(), copy));
            StringAssert.Contains(e.Message, "scheduler/scheduler_config.json");
            StringAssert.Contains(e.Message, "DDPMPipeline");
            Directory.Delete(Path.Combine(copy, "unet"), recursive: true);
            e = Assert.ThrowsExactly<FileNotFoundException>(() => StableDiffusionModel.Load(new MLContext(), copy));
            StringAssert.Contains(e.Message, "unet/model.onnx");
        }
        finally
        {
            Directory.Delete(copy, recursive: true);
        }
    }

    [TestMethod]
    public void TheDenoisedTensorIsTheImage()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, UnconditionalModels.RequireDdpmPixel());
        var data = ml.Data.LoadFromEnumerable(new[] { new SeedRow { Seed = 4 }, new SeedRow { Seed = 4 }, new SeedRow { Seed = 9 } });
        var pipeline = ml.Transforms.DenoiseLatents(model, "Denoised", new DenoiseLatentsOptions { Steps = 5, Width = 32, Height = 32, SeedColumnName = "Seed", BatchSize = 2 })
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Denoised", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }));
        var result = pipeline.Fit(data).Transform(data);
        CollectionAssert.AreEqual(new[] { 3, 32, 32 }, ((VectorDataViewType)result.Schema["Denoised"].Type).Dimensions.ToArray());
        var denoised = result.GetColumn<VBuffer<float>>("Denoised").Select(v => v.DenseValues().ToArray()).ToArray();
        var pixels = result.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToArray();
        var images = result.GetColumn<MLImage>("Image").ToArray();
        for (int r = 0; r < 3; r++)
        {
            Assert.IsTrue(denoised[r].All(float.IsFinite));
            // clip_sample keeps x̂₀ in [−1, 1]; the last DDPM step (t = 0) adds no noise, so the image is x̂₀ itself.
            Assert.IsTrue(denoised[r].All(v => v >= -1f && v <= 1f), "the last DDPM step returns the clipped x̂₀");
            CollectionAssert.AreEqual(denoised[r], pixels[r], "pixel space: the decoded pixels are the denoised tensor");
            var expected = new byte[32 * 32 * 4];
            ImageTensor.ToRgba(denoised[r], 32, 32, expected);
            Assert.AreEqual(32, images[r].Width);
            CollectionAssert.AreEqual(expected, images[r].Pixels.ToArray(), "the image is diffusers' (x/2 + 0.5).clamp(0, 1)·255 of the tensor, as ImageTensor converts it");
        }
        CollectionAssert.AreEqual(denoised[0], denoised[1], "the same seed (initial noise and every step's DDPM noise) gives the same image");
        CollectionAssert.AreNotEqual(denoised[0], denoised[2]);
    }

    [TestMethod]
    public void VqOptionsAndEncodingAreRefusedWithoutAnAutoencoder()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, UnconditionalModels.RequireDdpmPixel());
        var e = Assert.ThrowsExactly<ArgumentException>(() => ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { QuantizeOnHost = true }));
        StringAssert.Contains(e.Message, "VQ autoencoders only");
        StringAssert.Contains(e.Message, "pixel space");
    }
}
