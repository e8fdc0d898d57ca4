using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Lora;

namespace MLNet.Diffusion.Tests.Lora;

/// <summary>Per-row LoRAs: A1111 <c>&lt;lora:name:scale&gt;</c> tags in prompts, grouped by set through both stages.</summary>
[TestClass]
public sealed class LoraRowTests
{
    private static float[][] GenerateTagged(StableDiffusionModel model, int batchSize, params LoraModelTests.Row[] rows)
    {
        var ml = model.MLContext;
        int f = model.Info.VaeSpatialFactor;
        var data = ml.Data.LoadFromEnumerable(rows);
        var pipeline = ml.Transforms.EncodePrompt(model, new EncodePromptOptions { OutputColumnName = "Embeddings", InputColumnName = "Prompt", LoraColumnName = "Loras", BatchSize = batchSize })
            .Append(ml.Transforms.DenoiseLatents(model, "Latents", "Embeddings", new DenoiseLatentsOptions { Steps = 2, Width = 8 * f, Height = 8 * f, SeedColumnName = "Seed", BatchSize = batchSize, LoraColumnName = "Loras" }))
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { PixelsColumnName = "Pixels" }));
        var result = pipeline.Fit(data).Transform(data);
        return result.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToArray();
    }

    [TestMethod]
    public void TaggedAndUntaggedRowsInOneBatchEachEqualTheirSingleRowRuns()
    {
        using var model = LoraModelTests.Load();
        var batch = GenerateTagged(model, 3,
            new LoraModelTests.Row { Prompt = "a cat <lora:tiny_lora_kohya:0.8>", Seed = 7 },
            new LoraModelTests.Row { Prompt = "a cat", Seed = 7 },
            new LoraModelTests.Row { Prompt = "<lora:tiny_locon_kohya_fp16> a cat", Seed = 7 });
        float[] plain = LoraModelTests.GenerateOne(model, "a cat");
        using var kohya = model.WithLoras(new LoraReference(LoraFiles.Shared("tiny_lora_kohya.safetensors"), 0.8f));
        using var locon = model.WithLoras(new LoraReference(LoraFiles.Shared("tiny_locon_kohya_fp16.safetensors")));
        CollectionAssert.AreEqual(LoraModelTests.GenerateOne(kohya, "a cat"), batch[0], "tagged row = its single-row run with the LoRA loaded");
        CollectionAssert.AreEqual(plain, batch[1], "untagged row = the base model's single-row run");
        CollectionAssert.AreEqual(LoraModelTests.GenerateOne(locon, "a cat"), batch[2]);
        Assert.IsFalse(batch[0].AsSpan().SequenceEqual(batch[1]));
        // The same rows one per batch give the same images.
        var single = GenerateTagged(model, 1,
            new LoraModelTests.Row { Prompt = "a cat <lora:tiny_lora_kohya:0.8>", Seed = 7 },
            new LoraModelTests.Row { Prompt = "a cat", Seed = 7 });
        CollectionAssert.AreEqual(batch[0], single[0]);
        CollectionAssert.AreEqual(batch[1], single[1]);
    }

    [TestMethod]
    public void RowTagsAddToTheModelsOwnLoras()
    {
        using var model = LoraModelTests.Load(new LoraReference(LoraFiles.Shared("tiny_lora_kohya.safetensors"), 0.5f));
        var tagged = GenerateTagged(model, 2, new LoraModelTests.Row { Prompt = "a cat <lora:tiny_locon_kohya_fp16:0.7>", Seed = 3 });
        using var both = model.WithLoras(new LoraReference(LoraFiles.Shared("tiny_lora_kohya.safetensors"), 0.5f), new LoraReference(LoraFiles.Shared("tiny_locon_kohya_fp16.safetensors"), 0.7f));
        CollectionAssert.AreEqual(LoraModelTests.GenerateOne(both, "a cat", 3), tagged[0]);
    }

    [TestMethod]
    public void WritesTheRowsTagsToTheLoraColumn()
    {
        using var model = LoraModelTests.Load();
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new LoraModelTests.Row { Prompt = "x <LORA:tiny_lora_kohya:0.25> y" }, new LoraModelTests.Row { Prompt = "plain" } });
        var result = ml.Transforms.EncodePrompt(model, new EncodePromptOptions { LoraColumnName = "Loras" }).Fit(data).Transform(data);
        var tags = result.GetColumn<ReadOnlyMemory<char>>("Loras").Select(m => m.ToString()).ToArray();
        CollectionAssert.AreEqual(new[] { "<lora:tiny_lora_kohya:0.25>", "" }, tags);
    }

    [TestMethod]
    public void TagsWithoutALoraColumnAreAnErrorNamingTheRow()
    {
        using var model = LoraModelTests.Load();
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new LoraModelTests.Row { Prompt = "plain" }, new LoraModelTests.Row { Prompt = "a cat <lora:tiny_lora_kohya:1>" } });
        var result = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt").Fit(data).Transform(data);
        var error = Assert.ThrowsExactly<InvalidOperationException>(() => result.GetColumn<VBuffer<float>>("Embeddings").ToArray());
        StringAssert.Contains(error.Message, "Row 1");
        StringAssert.Contains(error.Message, "LoraColumnName");
    }

    [TestMethod]
    public void UnknownOrPathLikeTagNamesAreRefused()
    {
        using var model = LoraModelTests.Load();
        Assert.ThrowsExactly<FileNotFoundException>(() => model.ResolveTags([new LoraPromptTag("no_such_lora", 1f)]));
        var traversal = Assert.ThrowsExactly<FileNotFoundException>(() => model.ResolveTags([new LoraPromptTag("../tiny-sd-lora/tiny_lora_kohya", 1f)]));
        StringAssert.Contains(traversal.Message, "not a file name");
        using var noFolder = StableDiffusionModel.Load(new MLContext(seed: 1), TestSupport.SharedModels.RequireTinySd());
        Assert.ThrowsExactly<InvalidOperationException>(() => noFolder.ResolveTags([new LoraPromptTag("tiny_lora_kohya", 1f)]));
    }

    [TestMethod]
    [DataRow("a <lora:x> b", "a  b", "<lora:x:1>")]
    [DataRow("<lora:x:0.5><Lora:y:-1>", "", "<lora:x:0.5><lora:y:-1>")]
    [DataRow("no tags <hypernet:z:1>", "no tags <hypernet:z:1>", "")]
    public void ExtractsA1111Tags(string prompt, string stripped, string canonical)
    {
        var tags = new List<LoraPromptTag>();
        Assert.AreEqual(stripped, LoraPromptTags.Extract(prompt, tags, "Row 0"));
        Assert.AreEqual(canonical, LoraPromptTags.Format(tags));
    }

    [TestMethod]
    [DataRow("<lora::1>")]
    [DataRow("<lora:x:abc>")]
    [DataRow("<lora:x:1:0.5>")]
    [DataRow("<lora:x:Infinity>")]
    public void RefusesMalformedTags(string prompt)
    {
        var error = Assert.ThrowsExactly<FormatException>(() => LoraPromptTags.Extract(prompt, new List<LoraPromptTag>(), "Row 4"));
        StringAssert.Contains(error.Message, "Row 4");
    }

    [TestMethod]
    public void SavingAPipelineWithLorasIsRefused()
    {
        using var model = LoraModelTests.Load(new LoraReference(LoraFiles.Shared("tiny_lora_kohya.safetensors")));
        var ml = model.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new LoraModelTests.Row { Prompt = "a cat" } });
        var transformer = ml.Transforms.EncodePrompt(model, "Embeddings", "Prompt").Fit(data);
        var error = Assert.ThrowsExactly<NotSupportedException>(() => ml.Model.Save(transformer, data.Schema, new MemoryStream()));
        StringAssert.Contains(error.Message, "LoRA");
    }
}

/// <summary>The TextToImage sample's <c>--lora path[:scale]</c> option.</summary>
[TestClass]
public sealed class LoraSampleArgumentTests
{
    [TestMethod]
    public void ParsesRepeatedLoraOptions()
    {
        var a = TextToImage.Arguments.Parse(["--prompt", "x", "--lora", "style.safetensors:0.6", "--lora", "C:\\loras\\b.safetensors", "--lora", "/l/c.safetensors:-1"]);
        CollectionAssert.AreEqual(new[]
        {
            new LoraReference("style.safetensors", 0.6f),
            new LoraReference("C:\\loras\\b.safetensors", 1f),
            new LoraReference("/l/c.safetensors", -1f),
        }, a.Loras.ToArray());
        Assert.ThrowsExactly<FormatException>(() => LoraReference.Parse(" "));
    }

    [TestMethod]
    public void ThePngRecordsTheLorasAndTheirHashesAsAutomatic1111Does()
    {
        string lora = Path.Combine(LoraFiles.SharedFolder(), "tiny_lora_kohya.safetensors");
        string output = Path.Combine(Path.GetTempPath(), "mlnet-lora-png-" + Guid.NewGuid().ToString("N")[..8] + ".png");
        try
        {
            int code = TextToImage.Program.Main(["--model", TestSupport.SharedModels.RequireTinySd(), "--prompt", "a cat", "--steps", "2",
                "--width", "64", "--height", "64", "--seed", "3", "--lora", lora + ":0.8", "--output", output]);
            Assert.AreEqual(0, code);
            var parameters = MLNet.Diffusion.Imaging.PngFile.ReadParameters(output);
            Assert.IsNotNull(parameters, "the PNG has AUTOMATIC1111's parameters chunk");
            // A1111's "Lora hashes": name, then the first 12 hex digits of the SHA-256 of the file's tensor data.
            string hash;
            using (var file = MLNet.Diffusion.SafeTensors.SafeTensorsFile.Open(lora))
                hash = file.ComputeDataSha256()[..12];
            CollectionAssert.Contains(parameters.Extra.ToArray(), new KeyValuePair<string, string>("Lora hashes", "tiny_lora_kohya: " + hash));
        }
        finally
        {
            File.Delete(output);
        }
    }
}
