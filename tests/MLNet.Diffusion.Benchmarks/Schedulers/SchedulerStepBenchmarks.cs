using System;
using BenchmarkDotNet.Attributes;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Benchmarks.Schedulers;

/// <summary>
/// One <see cref="DiffusionScheduler.Step"/> of each scheduler on a [2, 4, 64, 64] latent (SD 1.x at 512², batch 2) in
/// steady state: the history buffers are allocated by the warm-up steps in <see cref="Setup"/>, so the target is 0 B.
/// <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- --filter '*SchedulerStep*' --job short</c>
/// </summary>
[MemoryDiagnoser]
public class SchedulerStepBenchmarks
{
    private const int Length = 2 * 4 * 64 * 64;
    private const int Warmup = 4;
    private readonly float[] _sample = new float[Length];
    private readonly float[] _modelOutput = new float[Length];
    private readonly GaussianNoise _noise = new(42);
    private DiffusionScheduler _scheduler = null!;
    private int _index;

    /// <summary>The scheduler name (<see cref="SchedulerFactory.Names"/>).</summary>
    [Params("ddim", "ddpm", "pndm", "euler", "euler-a", "lms", "dpmpp-2m", "dpmpp-2m-karras", "heun", "lcm")]
    public string Scheduler { get; set; } = "ddim";

    /// <summary>
    /// Creates the scheduler with a long schedule (500 steps; LCM: original_inference_steps) and takes
    /// the warm-up steps that allocate and fill its history.
    /// </summary>
    [GlobalSetup]
    public void Setup()
    {
        _scheduler = SchedulerFactory.Create(Scheduler, SchedulerConfig.StableDiffusion1);
        _scheduler.SetTimesteps(Scheduler == "lcm" ? SchedulerConfig.StableDiffusion1.OriginalInferenceSteps : 500);
        _noise.NextGaussian(_sample);
        _noise.NextGaussian(_modelOutput);
        for (int i = 0; i < Warmup; i++)
            _scheduler.Step(_modelOutput, i, _sample, _noise);
        _index = Warmup;
    }

    /// <summary>The next step of the schedule; the sample is updated in place as in the denoising loop.</summary>
    [Benchmark]
    public void Step()
    {
        if (_index >= _scheduler.Timesteps.Length)
        {
            // Wrap without allocating: restart mid-schedule at an even index (Heun pairs), as image-to-image does.
            _index = Warmup;
            _scheduler.SetBeginIndex(_index);
        }
        _scheduler.Step(_modelOutput, _index++, _sample, _noise);
    }
}
