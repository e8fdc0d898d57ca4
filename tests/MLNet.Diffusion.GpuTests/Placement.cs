using System;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.GpuTests;

/// <summary>Asserts from a session's profile that it really ran on CUDA: no silent CPU fallback of anything sizeable.</summary>
internal static class Placement
{
    /// <summary>
    /// Output bytes above which a node on the CPU counts as a fallback. ONNX Runtime deliberately leaves shape
    /// arithmetic and per-timestep scalars on the CPU (a few bytes each); a 32×32 float latent alone is 16 KiB.
    /// </summary>
    public const long CpuNodeLimitBytes = 4096;

    /// <summary>
    /// Reads <paramref name="profileFile"/> and asserts: nodes ran on the CUDA provider; no CPU node wrote more than
    /// <see cref="CpuNodeLimitBytes"/>; every node of the operators in <paramref name="gpuOps"/> ran on CUDA.
    /// </summary>
    public static void AssertOnCuda(string component, string profileFile, params string[] gpuOps)
    {
        var runs = NodePlacement.Read(profileFile);
        Console.WriteLine($"{component}: {NodePlacement.Describe(runs)} ({profileFile})");
        Assert.IsTrue(runs.Count > 0, $"{component}: the profile {profileFile} has no node events");
        Assert.IsTrue(runs.Any(r => r.Provider.StartsWith("CUDA", StringComparison.Ordinal)), $"{component}: no node ran on CUDA ({NodePlacement.Describe(runs)})");
        var big = runs.Where(r => r.Provider.StartsWith("CPU", StringComparison.Ordinal) && r.OutputBytes > CpuNodeLimitBytes)
            .Select(r => $"{r.Op} {r.Node} ({r.OutputBytes} B)").Distinct().ToArray();
        Assert.AreEqual(0, big.Length, $"{component}: nodes fell back to the CPU: {string.Join(", ", big)}");
        var misplaced = runs.Where(r => gpuOps.Contains(r.Op) && !r.Provider.StartsWith("CUDA", StringComparison.Ordinal))
            .Select(r => $"{r.Op} on {r.Provider}").Distinct().ToArray();
        Assert.AreEqual(0, misplaced.Length, $"{component}: compute operators not on CUDA: {string.Join(", ", misplaced)}");
    }
}
