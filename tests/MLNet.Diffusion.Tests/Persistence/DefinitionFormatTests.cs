using System.IO;
using System.Linq;
using System.Text.Json.Nodes;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;

namespace MLNet.Diffusion.Tests.Persistence;

/// <summary>
/// The JSON of <see cref="DiffusionPipelineDefinition"/>: format 2 (a record per stage under a <c>kind</c> discriminator,
/// absent optional inputs as null), format 1 (one property per stage kind) still read, and clear errors for what this
/// library cannot read. No model is needed.
/// </summary>
[TestClass]
public sealed class DefinitionFormatTests
{
    [TestMethod]
    public void Format2WritesEachStageAsItsRecordWithTheKindFirstAndNullForAbsentInputs()
    {
        var definition = new DiffusionPipelineDefinition
        {
            ModelDirectory = "/models/sd",
            Stages = new DiffusionStageDefinition[]
            {
                new EncodePromptStageDefinition { OutputColumnName = "E", InputColumnName = "P" },
                new DenoiseLatentsStageDefinition { OutputColumnName = "L", InputColumnName = "E", SeedColumnName = "S", Seed = 5, Steps = 3, Scheduler = "euler" },
                new DecodeLatentsStageDefinition { OutputColumnName = "I", InputColumnName = "L" },
            },
        };
        string json = definition.ToJson();
        var stages = JsonNode.Parse(json)!["Stages"]!.AsArray();
        CollectionAssert.AreEqual(new[] { "EncodePrompt", "DenoiseLatents", "DecodeLatents" }, stages.Select(s => s!.AsObject().First().Value!.GetValue<string>()).ToArray());
        Assert.IsTrue(stages.All(s => s!.AsObject().First().Key == "kind"), json);
        var denoise = stages[1]!.AsObject();
        Assert.IsTrue(denoise.ContainsKey("InitialNoiseColumnName") && denoise["InitialNoiseColumnName"] is null, "an absent optional input is an explicit null");
        Assert.IsTrue(denoise.ContainsKey("MaskColumnName") && denoise["MaskColumnName"] is null);
        Assert.AreEqual("S", denoise["SeedColumnName"]!.GetValue<string>());
        Assert.AreEqual(1, denoise["Version"]!.GetValue<int>());
        Assert.AreEqual(2, JsonNode.Parse(json)!["FormatVersion"]!.GetValue<int>());

        var read = DiffusionPipelineDefinition.FromJson(json);
        CollectionAssert.AreEqual(definition.Stages.ToArray(), read.Stages.ToArray());
        Assert.AreEqual(json, read.ToJson());
    }

    [TestMethod]
    public void Format1IsReadFromItsOptionsPropertyPerKind()
    {
        // The shape DiffusionPipelineDefinition wrote before format 2 (null values left out, enums as names).
        const string json = """
            {
              "FormatVersion": 1,
              "ModelDirectory": "/m",
              "Stages": [
                { "Kind": "EncodePrompt", "EncodePromptOptions": { "OutputColumnName": "E", "InputColumnName": "P", "NegativePromptColumnName": "N", "BatchSize": 8, "LongPrompt": true, "MaxWindows": 4 } },
                { "Kind": "EncodeImage", "EncodeImageOptions": { "Width": 64, "Height": 64, "ResizeMode": "None", "Sampling": "Mean", "Seed": 9, "BatchSize": 2 }, "OutputColumnName": "Z", "InputColumnName": "Img" },
                { "Kind": "PrepareInpainting", "PrepareInpaintingOptions": { "ImageColumnName": "Img", "MaskColumnName": "M", "LatentMaskColumnName": "LM", "Width": 64, "Height": 64, "MaskDownsampling": "Any", "Seed": 1, "BatchSize": 4 } },
                { "Kind": "DenoiseLatents", "DenoiseOptions": { "Steps": 6, "GuidanceScale": 3, "Width": 64, "Height": 64, "Scheduler": "euler-a", "SeedColumnName": "S", "Seed": 4, "InitialLatentsColumnName": "Z", "Strength": 0.7, "MaskColumnName": "LM", "BatchSize": 2, "CropTop": 16 }, "OutputColumnName": "L", "InputColumnName": "E" },
                { "Kind": "DecodeLatents", "DecodeLatentsOptions": { "LatentWidth": 8, "LatentHeight": 8, "BatchSize": 2 }, "OutputColumnName": "I", "InputColumnName": "L" },
                { "Kind": "AddDiffusionNoise", "AddNoiseOptions": { "TimestepColumnName": "T", "Seed": 3, "NoiseOutputColumnName": "Eps" }, "OutputColumnName": "X", "InputColumnName": "Z" }
              ]
            }
            """;
        var read = DiffusionPipelineDefinition.FromJson(json);
        Assert.AreEqual(1, read.FormatVersion);
        Assert.AreEqual("/m", read.ModelDirectory);
        Assert.AreEqual(new EncodePromptStageDefinition { OutputColumnName = "E", InputColumnName = "P", NegativePromptColumnName = "N", BatchSize = 8, LongPrompt = true, MaxWindows = 4 }, read.Stages[0]);
        Assert.AreEqual(new EncodeImageStageDefinition { OutputColumnName = "Z", InputColumnName = "Img", Width = 64, Height = 64, ResizeMode = ImageResizeMode.None, Sampling = LatentSampling.Mean, Seed = 9, BatchSize = 2 }, read.Stages[1]);
        Assert.AreEqual(new PrepareInpaintingStageDefinition { ImageColumnName = "Img", MaskColumnName = "M", LatentMaskColumnName = "LM", Width = 64, Height = 64, MaskDownsampling = MaskDownsampling.Any, Seed = 1, BatchSize = 4 }, read.Stages[2],
            "a masked-image latents column left out of format 1 was null");
        Assert.AreEqual(new DenoiseLatentsStageDefinition
        {
            OutputColumnName = "L", InputColumnName = "E", Steps = 6, GuidanceScale = 3, Width = 64, Height = 64, Scheduler = "euler-a", SeedColumnName = "S", Seed = 4,
            InitialLatentsColumnName = "Z", Strength = 0.7f, MaskColumnName = "LM", BatchSize = 2, CropTop = 16,
        }, read.Stages[3]);
        Assert.AreEqual(new DecodeLatentsStageDefinition { OutputColumnName = "I", InputColumnName = "L", LatentWidth = 8, LatentHeight = 8, BatchSize = 2 }, read.Stages[4]);
        Assert.AreEqual(new AddDiffusionNoiseStageDefinition { OutputColumnName = "X", InputColumnName = "Z", TimestepColumnName = "T", Seed = 3, NoiseOutputColumnName = "Eps" }, read.Stages[5]);
    }

    [TestMethod]
    public void WhatThisLibraryCannotReadIsAnErrorThatNamesIt()
    {
        var format = Assert.ThrowsExactly<InvalidDataException>(() => DiffusionPipelineDefinition.FromJson("""{ "FormatVersion": 3, "ModelDirectory": "/m", "Stages": [] }"""));
        StringAssert.Contains(format.Message, "format version 3");

        var kind = Assert.ThrowsExactly<InvalidDataException>(() => DiffusionPipelineDefinition.FromJson("""{ "FormatVersion": 2, "ModelDirectory": "/m", "Stages": [ { "kind": "ControlNet" } ] }"""));
        StringAssert.Contains(kind.Message, "ControlNet");

        var version = Assert.ThrowsExactly<InvalidDataException>(() => DiffusionPipelineDefinition.FromJson(
            """{ "FormatVersion": 2, "ModelDirectory": "/m", "Stages": [ { "kind": "DecodeLatents", "Version": 9, "OutputColumnName": "I", "InputColumnName": "L" } ] }"""));
        StringAssert.Contains(version.Message, "DecodeLatents");
        StringAssert.Contains(version.Message, "version 9");

        var legacyKind = Assert.ThrowsExactly<InvalidDataException>(() => DiffusionPipelineDefinition.FromJson("""{ "FormatVersion": 1, "ModelDirectory": "/m", "Stages": [ { "Kind": "Upscale" } ] }"""));
        StringAssert.Contains(legacyKind.Message, "Upscale");

        Assert.ThrowsExactly<InvalidDataException>(() => DiffusionPipelineDefinition.FromJson("not json"));
    }
}
