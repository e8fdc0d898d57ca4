using System;
using System.IO;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tests.TestSupport;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>
/// Locates the shared tiny unconditional exports (not part of the repository; made by
/// acceptance/tools/make_tiny_vq_ddpm.py with diffusers v0.35.2): <c>tiny-ldm-vq</c> (LDMPipeline, VQModel, DDIM) and
/// <c>tiny-ddpm-pixel</c> (DDPMPipeline). Tests that need them are inconclusive, saying why, only when they are absent.
/// </summary>
internal static class UnconditionalModels
{
    public static string RequireLdmVq() => SharedModels.Require("tiny-ldm-vq");

    public static string RequireDdpmPixel() => SharedModels.Require("tiny-ddpm-pixel");

    /// <summary>Copies a model folder to a fresh temporary folder (the caller deletes it).</summary>
    public static string CopyToTemp(string source)
    {
        string target = Path.Combine(Path.GetTempPath(), "mlnet-vq-" + Guid.NewGuid().ToString("N"));
        foreach (string file in Directory.GetFiles(source, "*", SearchOption.AllDirectories))
        {
            string to = Path.Combine(target, Path.GetRelativePath(source, file));
            Directory.CreateDirectory(Path.GetDirectoryName(to)!);
            File.Copy(file, to);
        }
        return target;
    }
}
