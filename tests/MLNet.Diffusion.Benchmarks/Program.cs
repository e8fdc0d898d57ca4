using BenchmarkDotNet.Running;

namespace MLNet.Diffusion.Benchmarks;

/// <summary>
/// Entry point: <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- --filter '*Scheduler*'</c>
/// runs BenchmarkDotNet classes; see docs/benchmarks.md for the whole-pipeline harness.
/// </summary>
public static class Program
{
    /// <summary>Runs the benchmarks selected by the arguments.</summary>
    public static int Main(string[] args)
    {
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
