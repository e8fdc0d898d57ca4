using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Lora;

/// <summary>
/// LoRAs chosen when loading (<see cref="StableDiffusionModelOptions.Loras"/>) and with
/// <see cref="StableDiffusionModel.WithLoras(LoraReference[])"/>, run end to end on the shared tiny-sd export with the
/// tiny-sd-lora files (random weights: the images are noise, so the tests compare pixels bit for bit).
/// </summary>
[TestClass]
public sealed class LoraModelTests
{
    internal sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    internal static float[][] Generate(StableDiffusionModel model, params Row[] rows)
    {
        var ml = model.MLContext;
        int f = model.Info.VaeSpatialFactor;
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Steps = 2, Width = 8 * f, Height = 8 * f, SeedColumnName = "Seed", BatchSize = 2 }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }));
        var result = pipeline.Fit(data).Transform(data);
        return result.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToArray();
    }

    internal static float[] GenerateOne(StableDiffusionModel model, string prompt = "a photo of a cat", int seed = 7) =>
        Generate(model, new Row { Prompt = prompt, Seed = seed })[0];

    internal static StableDiffusionModel Load(params LoraReference[] loras) =>
        StableDiffusionModel.Load(new MLContext(seed: 1), SharedModels.RequireTinySd(), new StableDiffusionModelOptions { Loras = loras, LoraDirectory = LoraFiles.SharedFolder() });

    private static LoraReference File(string name, float scale = 1f) => new(LoraFiles.Shared(name), scale);

    [TestMethod]
    public void KohyaAndPeftFilesWithTheSameDeltasGiveIdenticalImages()
    {
        using var baseModel = Load();
        float[] plain = GenerateOne(baseModel);
        using var kohya = Load(File("tiny_lora_kohya.safetensors"));
        float[] expected = GenerateOne(kohya);
        Assert.IsFalse(plain.AsSpan().SequenceEqual(expected), "the kohya LoRA must change the image");
        Assert.AreEqual(0, kohya.UnmatchedLoraKeys.Count, string.Join("\n", kohya.UnmatchedLoraKeys));
        foreach (string name in new[] { "tiny_lora_peft.safetensors", "tiny_lora_peft_nometa.safetensors" })
        {
            using var peft = baseModel.WithLoras(File(name));
            CollectionAssert.AreEqual(expected, GenerateOne(peft), name);
        }
    }

    [TestMethod]
    public void ScaleZeroEqualsNoLoraBitForBit()
    {
        using var baseModel = Load();
        using var zero = Load(File("tiny_locon_kohya_fp16.safetensors", 0f));
        CollectionAssert.AreEqual(GenerateOne(baseModel), GenerateOne(zero));
        Assert.AreEqual(0, zero.UnmatchedLoraKeys.Count);
        Assert.AreEqual(1, zero.Loras.Count);
    }

    [TestMethod]
    public void Float16LoConChangesTheImage()
    {
        using var baseModel = Load();
        using var locon = baseModel.WithLoras(File("tiny_locon_kohya_fp16.safetensors"));
        using var kohya = baseModel.WithLoras(File("tiny_lora_kohya.safetensors"));
        float[] plain = GenerateOne(baseModel), withLocon = GenerateOne(locon);
        Assert.IsFalse(plain.AsSpan().SequenceEqual(withLocon));
        Assert.IsFalse(GenerateOne(kohya).AsSpan().SequenceEqual(withLocon), "different LoRA files give different images");
        Assert.IsTrue(withLocon.All(float.IsFinite));
    }

    [TestMethod]
    public void ReportsTheKeysOfTheUnmatchedFile()
    {
        using var baseModel = Load();
        using var unmatched = baseModel.WithLoras(File("tiny_lora_unmatched.safetensors"));
        Assert.AreEqual(6, unmatched.UnmatchedLoraKeys.Count, string.Join("\n", unmatched.UnmatchedLoraKeys));
        Assert.IsTrue(unmatched.UnmatchedLoraKeys.All(k => k.StartsWith("tiny_lora_unmatched.safetensors: lora_unet_", StringComparison.Ordinal)), string.Join("\n", unmatched.UnmatchedLoraKeys));
        Assert.IsTrue(unmatched.UnmatchedLoraKeys.All(k => k.Contains("unet has no weight", StringComparison.Ordinal)));
        // Nothing matched, so nothing changed: the base UNet serves.
        Assert.AreSame(baseModel.Unet, unmatched.Unet);
        CollectionAssert.AreEqual(GenerateOne(baseModel), GenerateOne(unmatched));
    }

    [TestMethod]
    public void WithLorasSharesTheUnchangedSessionsAndEitherMayBeDisposedFirst()
    {
        var parent = Load();
        float[] plain = GenerateOne(parent);
        var child = parent.WithLoras(File("tiny_lora_kohya.safetensors"));
        Assert.AreSame(parent.VaeDecoder, child.VaeDecoder);
        Assert.AreSame(parent.TextEncoders[0].Encoder, child.TextEncoders[0].Encoder, "a UNet-only LoRA leaves the text encoder shared");
        Assert.AreNotSame(parent.Unet, child.Unet);
        float[] withLora = GenerateOne(child);

        parent.Dispose();
        Assert.ThrowsExactly<ObjectDisposedException>(() => parent.WithLoras());
        CollectionAssert.AreEqual(withLora, GenerateOne(child), "the child keeps working after its parent is disposed");
        using (var sibling = child.WithLoras())
            CollectionAssert.AreEqual(plain, GenerateOne(sibling), "WithLoras() gives the base weights back");
        child.Dispose();
        child.Dispose();

        using var second = Load();
        var grandchild = second.WithLoras(File("tiny_lora_kohya.safetensors"));
        grandchild.Dispose();
        CollectionAssert.AreEqual(plain, GenerateOne(second), "disposing a derived model leaves its parent's sessions open");
        Assert.ThrowsExactly<ObjectDisposedException>(() => GenerateOne(grandchild));
    }

    [TestMethod]
    public void LoadingWithLorasOpensOnlyTheMergedUnet()
    {
        using var model = Load(File("tiny_lora_kohya.safetensors"));
        Assert.IsFalse(model.IsBaseUnetOpen, "loading with a UNet LoRA costs one UNet session, not two");
        GenerateOne(model);
        Assert.IsFalse(model.IsBaseUnetOpen);
        using var again = model.WithLoras(File("tiny_lora_kohya.safetensors"));
        Assert.AreSame(model.Unet, again.Unet, "the same set reuses its cached sessions");
        Assert.AreEqual(1, model.LoraSessions.CachedIds.Count);
        using var plain = model.WithLoras();
        Assert.AreNotSame(model.Unet, plain.Unet, "a model without LoRA runs the base UNet, not the merged one");
        Assert.IsTrue(model.IsBaseUnetOpen, "the base UNet opens when a model without UNet LoRA needs it");
    }

    [TestMethod]
    public void EvictsTheLeastRecentlyUsedSetNotInUseWhenOverTheBudget()
    {
        string dir = SharedModels.RequireTinySd();
        // One UNet's weights: room for one set's sessions.
        long unetBytes = MLNet.Diffusion.Lora.LoraGraphReader.WeightBytes(MLNet.Diffusion.Onnx.OnnxModelReader.Open(Path.Combine(dir, "unet", "model.onnx")));
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), dir, new StableDiffusionModelOptions { LoraSessionCacheBytes = unetBytes });
        var kohya = model.WithLoras(File("tiny_lora_kohya.safetensors"));
        string kohyaId = kohya.LoraSet.Id;
        var locon = model.WithLoras(File("tiny_locon_kohya_fp16.safetensors"));
        string loconId = locon.LoraSet.Id;
        CollectionAssert.AreEqual(new[] { kohyaId, loconId }, model.LoraSessions.CachedIds.ToArray(), "sets in use are kept over the budget");
        float[] withKohya = GenerateOne(kohya);

        kohya.Dispose();
        CollectionAssert.AreEqual(new[] { loconId }, model.LoraSessions.CachedIds.ToArray(), "the idle set goes as soon as it is over the budget");
        locon.Dispose();
        CollectionAssert.AreEqual(new[] { loconId }, model.LoraSessions.CachedIds.ToArray(), "one idle set fits the budget");

        using var again = model.WithLoras(File("tiny_lora_kohya.safetensors"));
        CollectionAssert.AreEqual(new[] { kohyaId }, model.LoraSessions.CachedIds.ToArray(), "the least recently used idle set is evicted for a new one");
        CollectionAssert.AreEqual(withKohya, GenerateOne(again), "a rebuilt set gives the same image");
    }

    [TestMethod]
    public void SetIdDependsOnContentAndScaleNotOnOrderOrPath()
    {
        using var model = Load();
        string copy = PersistenceRoundTrip.TempFile("renamed_lora.safetensors");
        System.IO.File.Copy(LoraFiles.Shared("tiny_lora_kohya.safetensors"), copy, overwrite: true);
        try
        {
            using var a = model.WithLoras(File("tiny_lora_kohya.safetensors", 0.5f), File("tiny_locon_kohya_fp16.safetensors"));
            using var b = model.WithLoras(File("tiny_locon_kohya_fp16.safetensors"), new LoraReference(copy, 0.5f));
            using var c = model.WithLoras(File("tiny_lora_kohya.safetensors", 0.6f), File("tiny_locon_kohya_fp16.safetensors"));
            Assert.AreEqual(a.LoraSet.Id, b.LoraSet.Id);
            Assert.AreNotEqual(a.LoraSet.Id, c.LoraSet.Id);
            Assert.AreSame(a.Unet, b.Unet);
        }
        finally
        {
            System.IO.File.Delete(copy);
        }
    }

    [TestMethod]
    public void TextEncoderAttentionLoraOnThePackedOpenClipEncoderIsRefusedWithAnExplanation()
    {
        // tiny-sd's text encoder packs Q, K and V into nn.MultiheadAttention's in_proj_weight: a q_proj LoRA has no weight
        // of its own there, so the set is refused (not half-applied), and the model stays usable.
        var tensors = new Dictionary<string, SafeTensors.SafeTensorsWriter.Entry>();
        LoraFiles.AddPair(tensors, "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight",
            "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", [4, 32], [32, 4], 1);
        string path = PersistenceRoundTrip.TempFile("te_lora.safetensors");
        System.IO.File.WriteAllBytes(path, SafeTensors.SafeTensorsWriter.Build(tensors));
        try
        {
            using var model = Load();
            var error = Assert.ThrowsExactly<NotSupportedException>(() => model.WithLoras(new LoraReference(path)));
            StringAssert.Contains(error.Message, "packed");
            StringAssert.Contains(error.Message, "text_model.encoder.layers.0.self_attn.q_proj");
            Assert.AreEqual(0, model.LoraSessions.CachedIds.Count);
            CollectionAssert.AreEqual(GenerateOne(model), GenerateOne(model));
        }
        finally
        {
            System.IO.File.Delete(path);
        }
    }

    [TestMethod]
    public void FormatsA1111LoraHashes()
    {
        using var model = Load(File("tiny_lora_kohya.safetensors", 0.8f));
        // README of tiny-sd-lora: SHA-256 of the whole files; A1111 hashes the data after the header, computed here.
        string kohya, locon;
        using (var f = MLNet.Diffusion.SafeTensors.SafeTensorsFile.Open(LoraFiles.Shared("tiny_lora_kohya.safetensors")))
            kohya = f.ComputeDataSha256()[..12];
        using (var f = MLNet.Diffusion.SafeTensors.SafeTensorsFile.Open(LoraFiles.Shared("tiny_locon_kohya_fp16.safetensors")))
            locon = f.ComputeDataSha256()[..12];
        Assert.AreEqual($"tiny_lora_kohya: {kohya}", model.FormatLoraHashes());
        string both = model.FormatLoraHashes("a cat <lora:tiny_locon_kohya_fp16:0.5>")!;
        CollectionAssert.AreEquivalent(new[] { $"tiny_lora_kohya: {kohya}", $"tiny_locon_kohya_fp16: {locon}" }, both.Split(", "));
        using var plain = model.WithLoras();
        Assert.IsNull(plain.FormatLoraHashes("a cat"));
    }
}
