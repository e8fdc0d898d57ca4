using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>
/// Fitted LDMPipeline and DDPMPipeline pipelines (no embeddings column; VQ decoding options) saved as ML.NET zips and as
/// DiffusionPipelineDefinition JSON give the same outputs when loaded.
/// </summary>
[TestClass]
public sealed class UnconditionalPersistenceTests
{
    private sealed class SeedRow
    {
        public int Seed { get; set; }
    }

    private static float[][] Pixels(IDataView view) => view.GetColumn<VBuffer<float>>("Pixels").Select(v => v.DenseValues().ToArray()).ToArray();

    private static void RoundTrips(string dir, DecodeLatentsOptions decode, int steps)
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, dir);
        var data = ml.Data.LoadFromEnumerable(new[] { new SeedRow { Seed = 21 }, new SeedRow { Seed = 22 } });
        const int size = 32; // both tiny models make 32×32 images
        var fitted = ml.Transforms.DenoiseLatents(model, "Latents", new DenoiseLatentsOptions { Steps = steps, Width = size, Height = size, SeedColumnName = "Seed" })
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", decode))
            .Fit(data);
        var expected = Pixels(fitted.Transform(data));

        string zip = Path.Combine(Path.GetTempPath(), "mlnet-vq-" + Guid.NewGuid().ToString("N") + ".zip");
        try
        {
            ml.Model.Save(fitted, data.Schema, zip);
            var loaded = new MLContext().Model.Load(zip, out _);
            var fromZip = Pixels(loaded.Transform(data));
            for (int r = 0; r < expected.Length; r++)
                CollectionAssert.AreEqual(expected[r], fromZip[r], $"zip, row {r}");
        }
        finally
        {
            File.Delete(zip);
        }

        string json = DiffusionPipelineDefinition.FromTransformer(fitted, data.Schema).ToJson();
        var definition = DiffusionPipelineDefinition.FromJson(json);
        var denoise = definition.Stages.OfType<DenoiseLatentsStageDefinition>().Single();
        Assert.IsNull(denoise.InputColumnName, "an unconditional stage is saved without an embeddings column");
        var decodeRecord = definition.Stages.OfType<DecodeLatentsStageDefinition>().Single();
        Assert.AreEqual(decode.QuantizeOnHost, decodeRecord.QuantizeOnHost);
        Assert.AreEqual(decode.ForceNotQuantize, decodeRecord.ForceNotQuantize);
        var fromJson = Pixels(definition.Build(model).Transform(data));
        for (int r = 0; r < expected.Length; r++)
            CollectionAssert.AreEqual(expected[r], fromJson[r], $"definition, row {r}");
    }

    [TestMethod]
    public void LdmPipelineWithHostQuantisationRoundTrips() =>
        RoundTrips(UnconditionalModels.RequireLdmVq(), new DecodeLatentsOptions { PixelsColumnName = "Pixels", QuantizeOnHost = true }, steps: 3);

    [TestMethod]
    public void LdmPipelineWithForceNotQuantizeRoundTrips() =>
        RoundTrips(UnconditionalModels.RequireLdmVq(), new DecodeLatentsOptions { PixelsColumnName = "Pixels", ForceNotQuantize = true }, steps: 2);

    [TestMethod]
    public void DdpmPipelineRoundTrips() =>
        RoundTrips(UnconditionalModels.RequireDdpmPixel(), new DecodeLatentsOptions { PixelsColumnName = "Pixels" }, steps: 4);

    [TestMethod]
    public void OldRecordsWithoutTheNewFieldsReadAsBefore()
    {
        // A DecodeLatents record written before the VQ fields existed reads with their defaults (no VQ option).
        var definition = DiffusionPipelineDefinition.FromJson(
            """{ "FormatVersion": 2, "ModelDirectory": "/m", "Stages": [ { "kind": "DecodeLatents", "Version": 1, "OutputColumnName": "Image", "InputColumnName": "Latents" } ] }""");
        var decode = (DecodeLatentsStageDefinition)definition.Stages.Single();
        Assert.IsFalse(decode.QuantizeOnHost);
        Assert.IsFalse(decode.ForceNotQuantize);
        Assert.IsNull(decode.CodebookIndicesColumnName);
    }

    [TestMethod]
    public void TheIndicesColumnIsRefusedByTheZipFormatNamingTheAlternative()
    {
        var ml = new MLContext(seed: 1);
        using var model = StableDiffusionModel.Load(ml, UnconditionalModels.RequireLdmVq());
        var data = ml.Data.LoadFromEnumerable(new[] { new SeedRow { Seed = 1 } });
        var fitted = ml.Transforms.DenoiseLatents(model, "Latents", new DenoiseLatentsOptions { Steps = 1, Width = 32, Height = 32, SeedColumnName = "Seed" })
            .Append(ml.Transforms.DecodeLatents(model, "Image", "Latents", new DecodeLatentsOptions { CodebookIndicesColumnName = "Codes" }))
            .Fit(data);
        fitted.Transform(data).Preview();
        using var stream = new MemoryStream();
        var e = Assert.ThrowsExactly<InvalidOperationException>(() => ml.Model.Save(fitted, data.Schema, stream));
        StringAssert.Contains(e.Message, "DiffusionPipelineDefinition");
        var json = DiffusionPipelineDefinition.FromTransformer(fitted, data.Schema).ToJson();
        StringAssert.Contains(json, "Codes");
    }
}
