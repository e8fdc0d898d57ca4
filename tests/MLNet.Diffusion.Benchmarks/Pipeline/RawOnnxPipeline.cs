using System;
using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Benchmarks.Pipeline;

/// <summary>
/// The baseline of the overhead ratio: exactly the ONNX calls one ML.NET generation of N rows makes — text encoder on
/// the N prompts and once on the empty (unconditional) prompt, <c>steps</c> UNet calls on the 2N guidance batch,
/// one VAE decoder call on N latents — as raw <see cref="InferenceSession.Run(RunOptions, System.Collections.Generic.IReadOnlyCollection{string}, System.Collections.Generic.IReadOnlyCollection{OrtValue}, System.Collections.Generic.IReadOnlyCollection{string}, System.Collections.Generic.IReadOnlyCollection{OrtValue})"/>
/// calls on the model's own sessions with OrtValues over inputs prepared up front (real token ids and embeddings,
/// seeded noise, the scheduler's timesteps). No tokenizing, scheduler math, guidance, copies or image conversion.
/// </summary>
internal sealed class RawOnnxPipeline : IDisposable
{
    private static readonly RunOptions s_runOptions = new();
    private readonly InferenceSession _te;
    private readonly InferenceSession _unet;
    private readonly InferenceSession _vae;
    private readonly string[] _teIn = { "input_ids" };
    private readonly string[] _teOut;
    private readonly string[] _unetIn = { "sample", "timestep", "encoder_hidden_states" };
    private readonly string[] _unetOut;
    private readonly string[] _vaeIn = { "latent_sample" };
    private readonly string[] _vaeOut;
    private readonly TensorBuffer _ids, _emptyIds, _hidden, _emptyHidden, _sample, _timestep, _states, _noisePred, _latent, _pixels;
    private readonly TensorBuffer? _pooled, _emptyPooled;
    private readonly OrtValue[] _teInputs, _teOutputs, _emptyInputs, _emptyOutputs, _unetInputs, _unetOutputs, _vaeInputs, _vaeOutputs;
    private readonly float[] _timesteps;

    public RawOnnxPipeline(StableDiffusionModel sd, int rows, int size, int steps)
    {
        _te = sd.TextEncoder.Session;
        _unet = sd.Unet.Session;
        _vae = sd.VaeDecoder.Session;
        var info = sd.Info;
        int l = info.SequenceLength, d = info.HiddenSize, c = info.LatentChannels, f = info.VaeSpatialFactor, h = size / f;
        _teOut = info.PooledSize is null ? new[] { "last_hidden_state" } : new[] { "last_hidden_state", "pooler_output" };
        _unetOut = new[] { sd.UnetOutputName };
        _vaeOut = new[] { sd.VaeDecoderOutputName };

        // Text encoder: the real token ids of the first N prompts, and of "".
        var idType = sd.TextEncoder.Input("input_ids").ElementDataType;
        var prompts = BenchSupport.Prompts();
        var ids = new int[rows * l];
        for (int r = 0; r < rows; r++)
            sd.Tokenizer.EncodeToFixedLength(prompts[r], ids.AsSpan(r * l, l));
        var emptyIds = new int[l];
        sd.Tokenizer.EncodeToFixedLength(string.Empty, emptyIds);
        _ids = new TensorBuffer(idType, new long[] { rows, l });
        _ids.Write(ids);
        _emptyIds = new TensorBuffer(idType, new long[] { 1, l });
        _emptyIds.Write(emptyIds);
        var hiddenType = sd.TextEncoder.Output("last_hidden_state").ElementDataType;
        _hidden = new TensorBuffer(hiddenType, new long[] { rows, l, d });
        _emptyHidden = new TensorBuffer(hiddenType, new long[] { 1, l, d });
        if (info.PooledSize is int p)
        {
            var pooledType = sd.TextEncoder.Output("pooler_output").ElementDataType;
            _pooled = new TensorBuffer(pooledType, new long[] { rows, p });
            _emptyPooled = new TensorBuffer(pooledType, new long[] { 1, p });
        }
        _teInputs = new[] { _ids.Value };
        _teOutputs = _pooled is null ? new[] { _hidden.Value } : new[] { _hidden.Value, _pooled.Value };
        _emptyInputs = new[] { _emptyIds.Value };
        _emptyOutputs = _emptyPooled is null ? new[] { _emptyHidden.Value } : new[] { _emptyHidden.Value, _emptyPooled.Value };

        // UNet: the 2N guidance batch [uncond × N; cond × N] of real embeddings, seeded noise, the scheduler's timesteps.
        RunTextEncoder();
        var cond = new float[rows * l * d];
        var uncond = new float[l * d];
        _hidden.Read(cond);
        _emptyHidden.Read(uncond);
        _states = new TensorBuffer(sd.Unet.Input("encoder_hidden_states").ElementDataType, new long[] { 2 * rows, l, d });
        for (int r = 0; r < rows; r++)
        {
            _states.Write(uncond, r * l * d);
            _states.Write(cond.AsSpan(r * l * d, l * d), (rows + r) * l * d);
        }
        long[] sampleShape = { 2 * rows, c, h, h };
        _sample = new TensorBuffer(sd.Unet.Input("sample").ElementDataType, sampleShape);
        var noise = new float[2 * rows * c * h * h];
        new GaussianNoise(42).NextGaussian(noise);
        _sample.Write(noise);
        var ts = sd.Unet.Input("timestep");
        int? staticDim = OnnxComponent.StaticDim(ts, 0);
        _timestep = new TensorBuffer(ts.ElementDataType, ts.Dimensions.Length == 0 ? Array.Empty<long>() : new long[] { staticDim == 1 ? 1 : 2 * rows });
        _noisePred = new TensorBuffer(sd.Unet.Output(_unetOut[0]).ElementDataType, sampleShape);
        _unetInputs = new[] { _sample.Value, _timestep.Value, _states.Value };
        _unetOutputs = new[] { _noisePred.Value };
        var scheduler = SchedulerFactory.CreateDefault(info.SchedulerConfig);
        scheduler.SetTimesteps(steps);
        _timesteps = scheduler.Timesteps.ToArray();

        // VAE decoder: N latents.
        _latent = new TensorBuffer(sd.VaeDecoder.Input("latent_sample").ElementDataType, new long[] { rows, c, h, h });
        _latent.Write(noise.AsSpan(0, rows * c * h * h));
        _pixels = new TensorBuffer(sd.VaeDecoder.Output(_vaeOut[0]).ElementDataType, new long[] { rows, 3, size, size });
        _vaeInputs = new[] { _latent.Value };
        _vaeOutputs = new[] { _pixels.Value };
    }

    /// <summary>Text encoder on N prompts plus the empty prompt.</summary>
    public void RunTextEncoder()
    {
        _te.Run(s_runOptions, _teIn, _teInputs, _teOut, _teOutputs);
        _te.Run(s_runOptions, _teIn, _emptyInputs, _teOut, _emptyOutputs);
    }

    public void RunUnetLoop()
    {
        foreach (float t in _timesteps)
        {
            _timestep.Fill(t);
            _unet.Run(s_runOptions, _unetIn, _unetInputs, _unetOut, _unetOutputs);
        }
    }

    public void RunUnetOnce() => _unet.Run(s_runOptions, _unetIn, _unetInputs, _unetOut, _unetOutputs);

    public void RunVae() => _vae.Run(s_runOptions, _vaeIn, _vaeInputs, _vaeOut, _vaeOutputs);

    /// <summary>The whole sequence; returns milliseconds of (text encoder, UNet loop, VAE, total).</summary>
    public (double TextEncoder, double Unet, double Vae, double Total) Run()
    {
        long t0 = Stopwatch.GetTimestamp();
        RunTextEncoder();
        long t1 = Stopwatch.GetTimestamp();
        RunUnetLoop();
        long t2 = Stopwatch.GetTimestamp();
        RunVae();
        long t3 = Stopwatch.GetTimestamp();
        double Ms(long a, long b) => (b - a) * 1000.0 / Stopwatch.Frequency;
        return (Ms(t0, t1), Ms(t1, t2), Ms(t2, t3), Ms(t0, t3));
    }

    public void Dispose()
    {
        foreach (var b in new[] { _ids, _emptyIds, _hidden, _emptyHidden, _sample, _timestep, _states, _noisePred, _latent, _pixels, _pooled, _emptyPooled })
            b?.Dispose();
    }
}
