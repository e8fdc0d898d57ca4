using System;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.GpuTests;

/// <summary>
/// The placement check itself, on the CPU (it needs no GPU, and passes on any machine): a CPU run's profile lists its
/// nodes with operators, provider and output sizes, and <see cref="Placement.AssertOnCuda"/> rejects it. Without this,
/// a profile format change could make the GPU placement test vacuous.
/// </summary>
[TestClass]
public sealed class PlacementCheckTests
{
    [TestMethod]
    public void ACpuRunsProfile_IsReadAndRejected()
    {
        string prefix = Path.Combine(GpuEnvironment.ModelCache, "cpu-profile-" + Guid.NewGuid().ToString("N")[..8], "shapes");
        Directory.CreateDirectory(Path.GetDirectoryName(prefix)!);
        using var sd = GpuEnvironment.Load(GpuEnvironment.ShapesFolder, ExecutionProvider.Cpu, prefix);
        var ml = sd.MLContext;
        var data = ml.Data.LoadFromEnumerable(new[] { new Row { Prompt = "a red circle on a blue background" } });
        var latents = ml.Transforms.EncodePrompt(sd, "Embeddings", "Prompt")
            .Append(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 64, Height = 64, Steps = 2 }))
            .Fit(data).Transform(data).GetColumn<VBuffer<float>>("Latents").ToArray();
        Assert.AreEqual(1, latents.Length);

        string profile = sd.Unet.Session.EndProfiling();
        var runs = NodePlacement.Read(profile);
        Console.WriteLine(NodePlacement.Describe(runs));
        Assert.IsTrue(runs.Count > 0, "no node events in " + profile);
        Assert.IsTrue(runs.All(r => r.Provider == "CPUExecutionProvider"), NodePlacement.Describe(runs));
        // The UNet's Gemm writes the [2, 270] item scores (2 guidance rows × 270 items) of float32: 2160 bytes.
        var gemm = runs.First(r => r.Op == "Gemm");
        Assert.AreEqual(2L * 270 * sizeof(float), gemm.OutputBytes);
        Assert.ThrowsExactly<AssertFailedException>(() => Placement.AssertOnCuda("unet", profile, "Gemm"));
    }

    private sealed class Row
    {
        public string Prompt { get; set; } = string.Empty;
    }
}
