using System;
using System.IO;
using BenchmarkDotNet.Attributes;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Benchmarks.Tokenization;

/// <summary>
/// CLIP tokenizer throughput on the real ViT-L/14 vocabulary (<c>../shared/clip</c>, or the folder named by
/// <c>MLNET_DIFFUSION_SHARED</c>) over a corpus of generated prompts: subjects, styles and modifiers recombined,
/// so common words hit the BPE word cache as they do in real use, plus accents, emoji, CJK, weights syntax and
/// HTML entities. Each benchmark processes the whole corpus; reported times are per prompt
/// (<see cref="OperationsPerInvokeAttribute"/>). Tokens per second = <see cref="PromptCount"/> × mean tokens per
/// prompt (printed at setup) ÷ the per-prompt time.
/// </summary>
/// <remarks>Run: <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- --filter '*Tokenizer*' --job short</c>.</remarks>
[MemoryDiagnoser]
public class TokenizerBenchmarks
{
    /// <summary>Number of prompts in the corpus.</summary>
    public const int PromptCount = 300;

    private static readonly string[] s_subjects =
    [
        "a photo of a cat", "portrait of an old fisherman", "a castle on a hill", "a bowl of ramen",
        "an astronaut riding a horse", "a cyberpunk street at night", "a cozy café in Paris", "東京の夜景",
        "a red fox in the snow", "a futuristic city skyline", "a watercolor of a lighthouse", "a dragon 🐉 over mountains",
    ];

    private static readonly string[] s_styles =
    [
        "oil painting", "digital art", "35mm film", "studio ghibli style", "unreal engine 5", "by greg rutkowski",
        "trending on artstation", "ultra-detailed", "cinematic lighting", "art nouveau", "low poly", "naïve art",
    ];

    private static readonly string[] s_modifiers =
    [
        "8k", "(masterpiece:1.2)", "best quality", "soft focus", "volumetric fog", "golden hour", "f/1.8",
        "sharp focus", "hdr", "rim light", "bokeh", "salt &amp; pepper texture", "it’s raining", "4k wallpaper",
    ];

    private string[] _prompts = [];
    private int[] _row = [];
    private ClipTokenizer? _tokenizer;

    /// <summary>Loads the vocabulary and builds the corpus (deterministic).</summary>
    [GlobalSetup]
    public void Setup()
    {
        string directory = MLNet.Diffusion.Tests.TestSupport.SharedFolder.Find("clip", "vocab.json")
            ?? throw new InvalidOperationException("../shared/clip not found (set MLNET_DIFFUSION_SHARED): the benchmark needs the real CLIP vocabulary.");
        _tokenizer = ClipTokenizer.FromFolder(directory);
        _row = new int[_tokenizer.ModelMaxLength];

        var random = new Random(20240611);
        _prompts = new string[PromptCount];
        long tokens = 0;
        for (int i = 0; i < PromptCount; i++)
        {
            int modifiers = random.Next(1, 6);
            string prompt = s_subjects[random.Next(s_subjects.Length)] + ", " + s_styles[random.Next(s_styles.Length)];
            for (int m = 0; m < modifiers; m++)
            {
                prompt += ", " + s_modifiers[random.Next(s_modifiers.Length)];
            }

            // Some unique words too (numbers, seeds), which miss the cache.
            if (i % 3 == 0)
            {
                prompt += $", seed {random.Next(100000)} variant{i}";
            }

            _prompts[i] = prompt;
            tokens += _tokenizer.EncodeToIds(prompt).Count;
        }

        Console.WriteLine($"// Corpus: {PromptCount} prompts, {tokens} tokens, {tokens / (double)PromptCount:F1} tokens per prompt.");
    }

    /// <summary>Clean-up, BPE and the fixed 77-id row, per prompt.</summary>
    [Benchmark(OperationsPerInvoke = PromptCount)]
    public int EncodeToFixedLength()
    {
        int dropped = 0;
        foreach (string prompt in _prompts)
        {
            dropped += _tokenizer!.EncodeToFixedLength(prompt, _row);
        }

        return dropped;
    }

    /// <summary>The text clean-up alone (ftfy rules, html.unescape ×2, whitespace, lower), per prompt.</summary>
    [Benchmark(OperationsPerInvoke = PromptCount)]
    public int CleanOnly()
    {
        int length = 0;
        foreach (string prompt in _prompts)
        {
            length += ClipTextCleaner.Clean(prompt).Length;
        }

        return length;
    }
}
