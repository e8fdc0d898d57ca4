using System;
using System.IO;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Tests.Tokenization;

/// <summary>
/// Locates the real CLIP ViT-L/14 vocabulary (<c>../shared/clip/</c>, not part of the repository): the folder
/// named by <c>MLNET_DIFFUSION_SHARED</c>, else the first <c>shared/clip/vocab.json</c> found walking up from
/// the test assembly. Tests that need it are inconclusive — and say why — only when it is absent.
/// </summary>
internal static class SharedClipFiles
{
    private static readonly Lazy<string?> s_clipDirectory = new(Find);
    private static readonly Lazy<ClipTokenizer?> s_tokenizer = new(() =>
        s_clipDirectory.Value is { } dir ? ClipTokenizer.FromFolder(dir) : null);

    /// <summary>The folder holding vocab.json and merges.txt, or null.</summary>
    public static string? ClipDirectory => s_clipDirectory.Value;

    /// <summary>The tokenizer on the real vocabulary; Assert.Inconclusive when the files are absent.</summary>
    public static ClipTokenizer RequireTokenizer()
    {
        if (s_tokenizer.Value is null)
        {
            Assert.Inconclusive(
                "../shared/clip not found: no shared/clip/vocab.json above " + AppContext.BaseDirectory
                + " and MLNET_DIFFUSION_SHARED is not set; these tests need the real CLIP vocabulary.");
        }

        return s_tokenizer.Value!;
    }

    private static string? Find()
    {
        string? env = Environment.GetEnvironmentVariable("MLNET_DIFFUSION_SHARED");
        if (!string.IsNullOrEmpty(env))
        {
            foreach (string candidate in new[] { Path.Combine(env, "clip"), env })
            {
                if (File.Exists(Path.Combine(candidate, "vocab.json")))
                {
                    return candidate;
                }
            }
        }

        for (DirectoryInfo? dir = new(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", "clip");
            if (File.Exists(Path.Combine(candidate, "vocab.json")))
            {
                return candidate;
            }
        }

        return null;
    }
}
