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
    private static readonly Lazy<string?> s_clipDirectory = new(() => TestSupport.SharedFolder.Find("clip", "vocab.json"));
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
}
