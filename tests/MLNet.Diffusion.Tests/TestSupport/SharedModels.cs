using System;
using System.IO;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.TestSupport;

/// <summary>
/// Locates <c>../shared/models/tiny-sd</c> (a tiny real-architecture SD 1.x export that is not part of the repository):
/// <c>MLNET_DIFFUSION_SHARED</c>, else the first <c>shared/models/tiny-sd</c> walking up from the test assembly.
/// Tests that need it are inconclusive, saying why, only when it is absent (a user's clone has no ../shared).
/// </summary>
internal static class SharedModels
{
    private static readonly Lazy<string?> s_tinySd = new(() => SharedFolder.Find(Path.Combine("models", "tiny-sd"), "model_index.json"));

    /// <summary>
    /// The folder <c>../shared/models/<paramref name="name"/></c> (found by <paramref name="marker"/>): tests on the shared
    /// exports are inconclusive, saying which folder is missing, only when ../shared is absent (a user's clone).
    /// </summary>
    public static string Require(string name, string marker = "model_index.json")
    {
        string? folder = SharedFolder.Find(Path.Combine("models", name), marker);
        if (folder is null)
            Assert.Inconclusive($"../shared/models/{name} not found above {AppContext.BaseDirectory} and MLNET_DIFFUSION_SHARED is not set; "
                + "this test runs on that export.");
        return folder!;
    }

    public static string RequireTinySd()
    {
        if (s_tinySd.Value is null)
            Assert.Inconclusive("../shared/models/tiny-sd not found above " + AppContext.BaseDirectory
                + " and MLNET_DIFFUSION_SHARED is not set; this test runs the pipeline on that real-architecture export.");
        return s_tinySd.Value!;
    }
}
