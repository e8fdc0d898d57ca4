using System;
using System.IO;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Microsoft.VisualStudio.TestTools.UnitTesting;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// The JSON fixtures made by running AUTOMATIC1111's and compel's own Python code (Prompting/Fixtures/*.py say how
/// and with which commits). They live in the repository next to this file, so no test is ever inconclusive.
/// </summary>
internal static class PromptFixtures
{
    private static readonly Lazy<JsonDocument> s_a1111 = new(() => Load("a1111_prompts.json"));
    private static readonly Lazy<JsonDocument> s_compel = new(() => Load("compel_prompts.json"));
    private static readonly Lazy<JsonDocument> s_a1111Calls = new(() => Load("a1111_calls.json"));

    /// <summary>a1111_prompts.json (parser, schedules, AND, chunks, emphasis).</summary>
    public static JsonElement A1111 => s_a1111.Value.RootElement;

    /// <summary>a1111_calls.json (the conditioning A1111's CFGDenoiser reads at each UNet call, per sampler, steps and strength).</summary>
    public static JsonElement A1111Calls => s_a1111Calls.Value.RootElement;

    /// <summary>compel_prompts.json (compel's parser on its published test inputs and ours).</summary>
    public static JsonElement Compel => s_compel.Value.RootElement;

    private static JsonDocument Load(string name)
    {
        string path = Path.Combine(FixtureDirectory(), name);
        Assert.IsTrue(File.Exists(path), $"Fixture {path} is missing; it is part of the repository.");
        return JsonDocument.Parse(File.ReadAllBytes(path));
    }

    private static string FixtureDirectory([CallerFilePath] string thisFile = "")
    {
        // The source tree when the tests run from a build of it; otherwise walk up from the test assembly.
        string nextToSource = Path.Combine(Path.GetDirectoryName(thisFile) ?? string.Empty, "Fixtures");
        if (Directory.Exists(nextToSource))
        {
            return nextToSource;
        }

        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "MLNet.Diffusion.Tests", "Prompting", "Fixtures");
            if (Directory.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new DirectoryNotFoundException("tests/MLNet.Diffusion.Tests/Prompting/Fixtures not found from " + thisFile);
    }
}
