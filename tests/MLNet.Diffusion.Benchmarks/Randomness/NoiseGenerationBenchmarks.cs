using System;
using BenchmarkDotNet.Attributes;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Benchmarks.Randomness;

/// <summary>
/// One draw of a [1, 4, 64, 64] latent's noise (SD 1.x at 512²) from each generator, and one Euler ancestral step of a
/// [2, 4, 64, 64] batch drawing its noise from each, against today's <see cref="GaussianNoise"/>; buffers are reused, so
/// the target is 0 B per draw and per step.
/// <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- --filter '*NoiseGeneration*' --job short</c>
/// </summary>
[MemoryDiagnoser]
public class NoiseGenerationBenchmarks
{
    private const int Latent = 4 * 64 * 64;
    private readonly float[] _noise = new float[Latent];
    private readonly float[] _sample = new float[2 * Latent];
    private readonly float[] _modelOutput = new float[2 * Latent];
    private INoiseSource _source = null!;
    private BatchNoise _batch = null!;
    private DiffusionScheduler _scheduler = null!;
    private int _index;

    /// <summary>The generator: Library (today's default), TorchCpu (AVX2 kernel), TorchCpuPortable, Philox.</summary>
    [Params("Library", "TorchCpu", "TorchCpuPortable", "Philox")]
    public string Source { get; set; } = "Library";

    /// <summary>Creates the generators and an Euler ancestral scheduler with a long schedule.</summary>
    [GlobalSetup]
    public void Setup()
    {
        var options = Source switch
        {
            "Library" => NoiseOptions.Default,
            "TorchCpu" => NoiseOptions.Diffusers(),
            "TorchCpuPortable" => NoiseOptions.Diffusers() with { TorchCpuKernel = TorchCpuKernel.Portable },
            "Philox" => NoiseOptions.Automatic1111("NV"),
            _ => throw new ArgumentException($"Unknown source {Source}."),
        };
        _source = options.CreateGenerator(42);
        _batch = options.CreateBatch(new long[] { 42, 43 }, Latent);
        _scheduler = SchedulerFactory.Create("euler-a", SchedulerConfig.StableDiffusion1);
        _scheduler.SetTimesteps(500);
        _batch.NextGaussian(_sample);
        _batch.NextGaussian(_modelOutput);
    }

    /// <summary>One [1, 4, 64, 64] draw.</summary>
    [Benchmark]
    public void Draw() => _source.NextGaussian(_noise);

    /// <summary>One Euler ancestral step of a batch of two rows, its noise drawn per row.</summary>
    [Benchmark]
    public void EulerAncestralStep()
    {
        if (_index >= _scheduler.Timesteps.Length)
        {
            _index = 0;
            _scheduler.SetBeginIndex(0);
        }
        _scheduler.Step(_modelOutput, _index++, _sample, _batch);
    }
}
