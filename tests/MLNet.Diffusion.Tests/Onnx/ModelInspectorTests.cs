using System;
using System.IO;
using System.Linq;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="MLNet.Diffusion.Onnx.ModelInspector"/>: each fact from the models' metadata or the folder's configs, a
/// probe run only where neither states it (issue 21: no probe run where metadata or config can answer).
/// </summary>
[TestClass]
public sealed class ModelInspectorTests
{
    [TestMethod]
    public void AFolderWhoseConfigsStateEverythingLoadsWithoutRunningAnyModel()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);

        Assert.AreEqual(8, model.Info.VaeSpatialFactor);
        Assert.AreEqual(0, model.TextEncoder.RunCount);
        Assert.AreEqual(0, model.Unet.RunCount);
        Assert.AreEqual(0, model.VaeDecoder.RunCount);
    }

    [TestMethod]
    public void TheLoadRecordsWhereItsTimeWentPhaseByPhase()
    {
        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), ShapesTestModel.Folder);

        var phases = model.LoadTimes.Phases;
        CollectionAssert.AreEqual(
            new[] { "folder and configs", "tokenizers", "text_encoder session", "unet session", "vae_decoder session", "inspection" },
            phases.Select(p => p.Phase).ToArray());
        Assert.IsTrue(phases.All(p => p.Time >= TimeSpan.Zero));
        Assert.AreEqual(model.LoadTimes.Total, phases.Aggregate(TimeSpan.Zero, (sum, p) => sum + p.Time));
        StringAssert.StartsWith(model.LoadTimes.ToString(), "total ");
    }

    [TestMethod]
    public void WithoutTheVaeBlocksInTheConfigTheFactorComesFromOneProbeRun()
    {
        string folder = CopyShapesFolder();
        string config = Path.Combine(folder, "vae_decoder", "config.json");
        var json = JsonNode.Parse(File.ReadAllText(config))!.AsObject();
        Assert.IsTrue(json.Remove("block_out_channels"));
        File.WriteAllText(config, json.ToJsonString());

        using var model = StableDiffusionModel.Load(new MLContext(seed: 1), folder);

        Assert.AreEqual(8, model.Info.VaeSpatialFactor);
        Assert.AreEqual(1, model.VaeDecoder.RunCount, "the Shapes VAE's spatial axes are symbolic: one 8×8 probe");
        Assert.AreEqual(0, model.Unet.RunCount);
    }

    private static string CopyShapesFolder()
    {
        string target = Path.Combine(Path.GetTempPath(), "mlnet-inspector-" + Guid.NewGuid().ToString("N")[..8]);
        foreach (string file in Directory.GetFiles(ShapesTestModel.Folder, "*", SearchOption.AllDirectories))
        {
            string to = Path.Combine(target, Path.GetRelativePath(ShapesTestModel.Folder, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(target, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return target;
    }
}
