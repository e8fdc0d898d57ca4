using BenchmarkDotNet.Running;

namespace MLNet.Diffusion.Benchmarks;

/// <summary>
/// Entry point: <c>dotnet run -c Release --project tests/MLNet.Diffusion.Benchmarks -- --filter '*Scheduler*'</c>
/// runs BenchmarkDotNet classes; <c>-- pipeline</c> runs the whole-pipeline harness (docs/benchmarks.md).
/// </summary>
public static class Program
{
    /// <summary>Runs the benchmarks selected by the arguments.</summary>
    public static int Main(string[] args)
    {
        // The whole-pipeline harness is plain code (docs/benchmarks.md), dispatched before BenchmarkDotNet.
        if (args.Length > 0 && args[0] == "pipeline" && Pipeline.ProviderHarness.Handles(args[1..]))
            return Pipeline.ProviderHarness.Run(args[1..]); // --provider cuda --model sd-synthetic --fp16 …: the GPU overhead ratio
        if (args.Length > 0 && args[0] == "pipeline")
            return Pipeline.PipelineHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == "pipeline-memory")
            return Pipeline.PipelineHarness.MemoryChild(args[1..]);
        if (args.Length > 0 && args[0] == "pipeline-vae-load")
            return Pipeline.VaeAndLoadHarness.Run(args[1..]); // issue 21: tiled VAE memory, cached model loads
        if (args.Length > 0 && args[0] == "vae-child")
            return Pipeline.VaeAndLoadHarness.VaeChild(args[1..]);
        if (args.Length > 0 && args[0] == "load-probe")
            return Pipeline.LoadProbe.Run(args[1..]); // issue 21: where a load's time goes, ONNX Runtime started first
        if (args.Length > 0 && args[0] == "session-probe")
            return Pipeline.LoadProbe.Sessions(args[1..]);
        if (args.Length > 0 && args[0] == "load-child")
            return Pipeline.VaeAndLoadHarness.LoadChild(args[1..]);
        // Issue 16: the cost of applying LoRAs (docs/benchmarks.md "LoRA"); each measurement in a child process.
        if (args.Length > 0 && args[0] == "lora-cost")
            return Lora.LoraCostHarness.Run(args[1..]);
        if (args.Length > 0 && args[0] == "lora-cost-child")
            return Lora.LoraCostHarness.Child(args[1..]);
        // Issue 14: PhiloxNoise's vectorised log/sin against the scalar path (docs/benchmarks.md "Noise sources").
        if (args.Length > 0 && args[0] == "philox-exactness")
            return Randomness.PhiloxExactnessCheck.Run(args[1..]);
        // Issue 19: rows/s locally and on 1 and 2 in-process Orleans silos (docs/benchmarks.md "Scale-out").
        if (args.Length > 0 && args[0] == "scale-out")
            return Orleans.ScaleOutHarness.Run(args[1..]);
        // Issue 19: rows per second on 1, 2 and 3 CPU instances in one process (docs/benchmarks.md "Several devices").
        if (args.Length > 0 && args[0] == "devices")
            return ScaleOut.DevicesHarness.Run(args[1..]);
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
        return 0;
    }
}
