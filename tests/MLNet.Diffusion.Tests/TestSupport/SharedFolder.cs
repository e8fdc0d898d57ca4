using System;
using System.IO;

namespace MLNet.Diffusion.Tests.TestSupport;

/// <summary>
/// Finds a folder of <c>../shared</c> (material beside the repository, not part of it): under the folder named by
/// <c>MLNET_DIFFUSION_SHARED</c>, else the first <c>shared/&lt;relative&gt;</c> holding <paramref name="marker"/> walking up
/// from the running assembly. Also compiled into the benchmark project (linked), so both find ../shared the same way.
/// </summary>
internal static class SharedFolder
{
    /// <summary>The folder <c>shared/<paramref name="relative"/></c> that contains <paramref name="marker"/>, or null.</summary>
    public static string? Find(string relative, string marker)
    {
        string? env = Environment.GetEnvironmentVariable("MLNET_DIFFUSION_SHARED");
        if (!string.IsNullOrEmpty(env) && File.Exists(Path.Combine(env, relative, marker)))
            return Path.Combine(env, relative);
        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", relative);
            if (File.Exists(Path.Combine(candidate, marker)))
                return candidate;
        }
        return null;
    }
}
