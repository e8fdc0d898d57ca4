using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Pipeline;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion.Benchmarks.Pipeline;

/// <summary>
/// Managed allocations per denoising step in steady state, with <see cref="GC.GetAllocatedBytesForCurrentThread"/>:
/// the whole step of <see cref="LatentDenoiser"/> (between two progress reports of its second run), and its parts
/// measured alone on the same shapes: every scheduler's ScaleModelInput + Step, the guidance combine, the finite check,
/// and one UNet call through <see cref="OnnxComponent.Run(RunOptions?, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue}, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue})"/>.
/// </summary>
internal static class StepAllocations
{
    internal sealed record Result(int Rows, int Size, long[] WholeStep, IReadOnlyList<(string Name, long Bytes)> Parts, IReadOnlyList<(string Name, long Warmup, long Steady)> Schedulers);

    /// <summary>Scheduler steps before this index are its warm-up (scratch buffers and multistep history are allocated there, once per batch).</summary>
    public const int SteadyFrom = 4;

    private sealed class Probe : IProgress<DenoiseProgress>
    {
        public long[] Bytes = Array.Empty<long>();

        public void Report(DenoiseProgress value) => Bytes[value.Step] = GC.GetAllocatedBytesForCurrentThread();
    }

    public static Result Measure(MLContext ml, StableDiffusionModel sd, int rows, int size, int steps)
    {
        var info = sd.Info;
        int len = info.LatentChannels * (size / info.VaeSpatialFactor) * (size / info.VaeSpatialFactor);

        // Real embeddings of N prompts from EncodePrompt.
        var data = BenchSupport.Rows(ml, rows);
        var encoded = ml.Transforms.EncodePrompt(sd, "Embeddings", "Prompt").Fit(data).Transform(data);
        var embeddings = encoded.GetColumn<VBuffer<float>>("Embeddings").SelectMany(v => v.DenseValues()).ToArray();
        int sequence = info.SequenceLength;

        // 1. The whole step, as the stage runs it (with its channel, so per-step trace messages count).
        var probe = new Probe { Bytes = new long[steps + 1] };
        var scheduler = SchedulerFactory.CreateDefault(info.SchedulerConfig);
        using var channel = sd.Host.Start("DenoiseLatents");
        using var denoiser = new LatentDenoiser(sd, new DenoiseSettings(steps, 7.5f, size, size, scheduler, probe, default), log: new ChannelLog(channel));
        var seeds = Enumerable.Range(0, rows).Select(i => (long)i).ToArray();
        var latents = new float[rows * len];
        var batch = new DenoiseBatch(rows, 0, embeddings, sequence, seeds, latents);
        denoiser.Run(batch); // warm-up: buffers, JIT
        denoiser.Run(batch);
        var whole = new long[steps - 1];
        for (int k = 2; k <= steps; k++)
            whole[k - 2] = probe.Bytes[k] - probe.Bytes[k - 1];

        // 2. Parts alone.
        var parts = new List<(string, long)>();
        var prediction = new float[2 * rows * len];
        new GaussianNoise(3).NextGaussian(prediction);
        var guided = new float[rows * len];
        GuidanceMath.Combine(prediction, 7.5f, guided, rows, len);
        parts.Add(("guidance combine ε_u + g·(ε_c − ε_u) with the finite check, one pass (GuidanceMath)", PerCall(steps, () => GuidanceMath.Combine(prediction, 7.5f, guided, rows, len))));
        LatentDenoiser.CheckFinite(guided, rows, len, 0, 0, 1f);
        parts.Add(("finite check alone (unguided steps, final latents)", PerCall(steps, () => LatentDenoiser.CheckFinite(guided, rows, len, 0, 0, 1f))));

        using (var unet = new UnetCall(sd, rows, size, embeddings))
        {
            unet.Run();
            unet.RunBound();
            parts.Add(("UNet call through the IO binding (UnetBinding.Run, as LatentDenoiser makes it)", PerCall(steps, unet.RunBound)));
            parts.Add(("UNet call (OnnxComponent.Run → InferenceSession.Run, OrtValues)", PerCall(steps, unet.Run)));
            parts.Add(("UNet call, raw InferenceSession.Run (same OrtValues)", PerCall(steps, unet.RunRaw)));
        }

        // 3. Every scheduler: ScaleModelInput + Step on N rows.
        var schedulers = new List<(string, long, long)>();
        foreach (string name in SchedulerFactory.Names.OrderBy(n => n, StringComparer.Ordinal))
        {
            var (warm, steady) = SchedulerStep(name, info.SchedulerConfig, rows, len, steps);
            schedulers.Add((name, warm, steady));
        }
        return new Result(rows, size, whole, parts, schedulers);
    }

    private static (long Warmup, long Steady) SchedulerStep(string name, SchedulerConfig config, int rows, int len, int steps)
    {
        var output = new float[rows * len];
        new GaussianNoise(5).NextGaussian(output);
        TensorPrimitiveScale(output, 0.1f);
        var sample = new float[rows * len];
        var scaled = new float[rows * len];
        var noise = new GaussianNoise(9);
        long worst = 0, warmup = 0;
        for (int pass = 0; pass < 2; pass++)
        {
            var s = SchedulerFactory.Create(name, config);
            s.SetTimesteps(steps);
            new GaussianNoise(11).NextGaussian(sample);
            int evaluations = s.Timesteps.Length;
            for (int i = 0; i < evaluations; i++)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                s.ScaleModelInput(sample, scaled, i);
                s.Step(output, i, sample, noise);
                long bytes = GC.GetAllocatedBytesForCurrentThread() - before;
                if (pass == 1 && i >= SteadyFrom)
                    worst = Math.Max(worst, bytes);
                else if (pass == 1)
                    warmup += bytes;
            }
        }
        return (warmup, worst);
    }

    private static void TensorPrimitiveScale(float[] values, float factor) =>
        System.Numerics.Tensors.TensorPrimitives.Multiply(values, factor, values);

    /// <summary>Bytes allocated per call, averaged over <paramref name="calls"/> calls.</summary>
    private static long PerCall(int calls, Action action)
    {
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < calls; i++)
            action();
        return (GC.GetAllocatedBytesForCurrentThread() - before) / calls;
    }

    /// <summary>One UNet call on the 2N guidance batch, as LatentDenoiser makes it.</summary>
    private sealed class UnetCall : IDisposable
    {
        private static readonly RunOptions s_options = new();
        private readonly OnnxComponent _unet;
        private readonly TensorBuffer _sample, _timestep, _states, _output;
        private readonly string[] _in = { "sample", "timestep", "encoder_hidden_states" };
        private readonly string[] _out;
        private readonly OrtValue[] _inputs, _outputs;

        public UnetCall(StableDiffusionModel sd, int rows, int size, float[] embeddings)
        {
            _unet = sd.Unet;
            var info = sd.Info;
            int h = size / info.VaeSpatialFactor;
            long[] shape = { 2 * rows, info.LatentChannels, h, h };
            _sample = new TensorBuffer(_unet.Input("sample").ElementDataType, shape);
            var ts = _unet.Input("timestep");
            _timestep = new TensorBuffer(ts.ElementDataType, ts.Dimensions.Length == 0 ? Array.Empty<long>() : new long[] { OnnxComponent.StaticDim(ts, 0) == 1 ? 1 : 2 * rows });
            _timestep.Fill(500);
            int per = info.SequenceLength * info.HiddenSize;
            _states = new TensorBuffer(_unet.Input("encoder_hidden_states").ElementDataType, new long[] { 2 * rows, info.SequenceLength, info.HiddenSize });
            for (int r = 0; r < rows; r++)
            {
                _states.Write(embeddings.AsSpan(2 * r * per, per), r * per);
                _states.Write(embeddings.AsSpan((2 * r + 1) * per, per), (rows + r) * per);
            }
            _out = new[] { sd.UnetOutputName };
            _output = new TensorBuffer(_unet.Output(_out[0]).ElementDataType, shape);
            _inputs = new[] { _sample.Value, _timestep.Value, _states.Value };
            _outputs = new[] { _output.Value };
            _binding = new UnetBinding(_unet, _in, _inputs, _out[0], _output.Value, new[] { 0, 1 });
            _binding.BindBatch();
        }

        private readonly UnetBinding _binding;

        public void RunBound() => _binding.Run();

        public void Run() => _unet.Run(null, _in, _inputs, _out, _outputs);

        public void RunRaw() => _unet.Session.Run(s_options, _in, _inputs, _out, _outputs);

        public void Dispose()
        {
            _binding.Dispose();
            _sample.Dispose();
            _timestep.Dispose();
            _states.Dispose();
            _output.Dispose();
        }
    }
}
