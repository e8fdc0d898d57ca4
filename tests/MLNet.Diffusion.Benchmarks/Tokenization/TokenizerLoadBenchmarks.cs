using System;
using System.IO;
using BenchmarkDotNet.Attributes;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Benchmarks.Tokenization;

/// <summary>
/// Issue 21 point 4: what building the CLIP ViT-L/14 tokenizer costs a model load (<c>../shared/clip</c>: 1.0 MB of
/// vocab.json, 0.5 MB of merges.txt), in parts: the vocabulary parse, the merges parse, the whole build from bytes (a
/// first load), and <see cref="ClipTokenizer.FromFolder"/> while a tokenizer of the same files is alive (a later load:
/// read, hash, reuse).
/// </summary>
/// <remarks>Run: <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- --filter '*TokenizerLoad*' --job short</c>.</remarks>
[MemoryDiagnoser]
public class TokenizerLoadBenchmarks
{
    private string _directory = string.Empty;
    private byte[] _vocab = [];
    private byte[] _merges = [];
    private ClipTokenizer? _alive;

    /// <summary>Reads the files once.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _directory = MLNet.Diffusion.Tests.TestSupport.SharedFolder.Find("clip", "vocab.json")
            ?? throw new InvalidOperationException("../shared/clip not found (set MLNET_DIFFUSION_SHARED): the benchmark needs the real CLIP vocabulary.");
        _vocab = File.ReadAllBytes(Path.Combine(_directory, "vocab.json"));
        _merges = File.ReadAllBytes(Path.Combine(_directory, "merges.txt"));
        _alive = ClipTokenizer.FromFolder(_directory);
    }

    /// <summary>vocab.json to the token → id dictionary.</summary>
    [Benchmark]
    public int ParseVocabulary() => ClipTokenizerFiles.ReadVocabulary(new MemoryStream(_vocab), "vocab.json").Count;

    /// <summary>merges.txt to the checked merge list.</summary>
    [Benchmark]
    public int ParseMerges() =>
        ClipTokenizerFiles.ReadMerges(new MemoryStream(_merges), "merges.txt", ClipTokenizerFiles.ReadVocabulary(new MemoryStream(_vocab), "vocab.json")).Count;

    /// <summary>The whole tokenizer from the bytes: what a load without a live tokenizer of the same files pays.</summary>
    [Benchmark]
    public int Build() => ClipTokenizer.Create(new MemoryStream(_vocab), new MemoryStream(_merges)).VocabularySize;

    /// <summary><see cref="ClipTokenizer.FromFolder"/> while a tokenizer of the same files is alive.</summary>
    [Benchmark]
    public bool FromFolderReused() => ReferenceEquals(ClipTokenizer.FromFolder(_directory), _alive);
}
