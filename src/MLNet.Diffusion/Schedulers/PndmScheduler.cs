using System;
using System.Collections.Generic;
using System.Numerics.Tensors;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Pseudo Numerical methods for Diffusion Models (Liu et al. 2022, https://arxiv.org/abs/2202.09778), as diffusers'
/// <c>PNDMScheduler</c>: the pseudo linear multistep (PLMS, eq. 12 with the 4th-order Adams–Bashforth weights
/// 55, −59, 37, −9) transfer x_{t−δ} = √(ᾱ_{t−δ}/ᾱ_t)·x_t − (ᾱ_{t−δ} − ᾱ_t)·ε/(ᾱ_t√(1−ᾱ_{t−δ}) + √(ᾱ_t(1−ᾱ_t)ᾱ_{t−δ}))
/// (eq. 11), warmed up either by the pseudo Runge–Kutta steps (PRK, eq. 13) or, with <c>skip_prk_steps</c>, by
/// lower-order PLMS steps.
/// </summary>
public sealed class PndmScheduler : DiffusionScheduler
{
    private const int PndmOrder = 4;
    private readonly List<float[]> _ets = new();
    private float[][] _etsPool = Array.Empty<float[]>();
    private float[]? _curModelOutput;
    private float[]? _curSample;
    private float[]? _combined;
    private bool _hasCurSample;
    private int _counter;
    private int _prkCount;

    /// <summary>Creates a PNDM scheduler.</summary>
    /// <param name="config">The settings; <c>set_alpha_to_one</c> defaults to false and <c>timestep_spacing</c> to leading as in diffusers; prediction types epsilon and v_prediction.</param>
    public PndmScheduler(SchedulerConfig config)
        : base(config.WithClassDefaults(timestepSpacing: "leading", setAlphaToOne: false, clipSample: false, hasZeroSnr: false))
    {
        if (Config.PredictionType is not ("epsilon" or "v_prediction"))
            throw new ArgumentException($"scheduler config key 'prediction_type' has unsupported value '{Config.PredictionType}' for PNDM: expected 'epsilon' or 'v_prediction'.", nameof(config));
        FinalAlphaCumprod = Config.SetAlphaToOne ? 1f : Schedule.AlphasCumprod[0];
    }

    /// <inheritdoc/>
    public override string Name => "pndm";

    /// <summary>ᾱ used for the step past timestep 0 (<c>set_alpha_to_one</c>).</summary>
    public float FinalAlphaCumprod { get; }

    /// <summary>How many of the timesteps are PRK warm-up steps (0 with <c>skip_prk_steps</c>).</summary>
    public int PrkStepCount => _prkCount;

    /// <inheritdoc/>
    public override DiffusionScheduler Clone() => new PndmScheduler(Config);

    /// <inheritdoc/>
    protected override void OnSetTimesteps(int n)
    {
        int T = Config.NumTrainTimesteps;
        // _timesteps ascending
        var asc = TimestepSpacing.ComputeDouble(Config, n, round: true);
        Array.Reverse(asc);
        var ts = new List<double>();
        if (Config.SkipPrkSteps)
        {
            // concatenate([_t[:-1], _t[-2:-1], _t[-1:]])[::-1]
            for (int i = 0; i < asc.Length - 1; i++)
                ts.Add(asc[i]);
            if (asc.Length >= 2)
                ts.Add(asc[^2]);
            ts.Add(asc[^1]);
            ts.Reverse();
            _prkCount = 0;
        }
        else
        {
            if (asc.Length < PndmOrder)
                throw new ArgumentOutOfRangeException(nameof(n), n, "PNDM's Runge–Kutta warm-up needs at least 4 inference steps (skip_prk_steps = false).");
            int half = T / n / 2;
            // prk = (_t[-4:].repeat(2) + tile([0, ratio // 2], 4))[:-1].repeat(2)[1:-1][::-1]
            var prk = new List<double>();
            for (int i = asc.Length - PndmOrder; i < asc.Length; i++)
            {
                prk.Add(asc[i]);
                prk.Add(asc[i] + half);
            }
            prk.RemoveAt(prk.Count - 1);
            var rep = new List<double>();
            foreach (double v in prk)
            {
                rep.Add(v);
                rep.Add(v);
            }
            rep = rep.GetRange(1, rep.Count - 2);
            rep.Reverse();
            ts.AddRange(rep);
            _prkCount = rep.Count;
            // plms = _t[:-3][::-1]
            for (int i = asc.Length - 4; i >= 0; i--)
                ts.Add(asc[i]);
        }
        TimestepsArray = ts.ConvertAll(t => (float)t).ToArray();
        ResetState();
    }

    private void ResetState()
    {
        _ets.Clear();
        _counter = 0;
        _hasCurSample = false;
        if (_curModelOutput is not null)
            Array.Clear(_curModelOutput);
    }

    /// <inheritdoc/>
    public override void SetBeginIndex(int stepIndex) => ResetState();

    /// <inheritdoc/>
    public override void Step(ReadOnlySpan<float> modelOutput, int stepIndex, Span<float> sample, INoiseSource? noise = null, Span<float> predictedOriginalSample = default)
    {
        CheckStep(modelOutput, stepIndex, sample, noise, predictedOriginalSample);
        int n = sample.Length;
        if (_etsPool.Length == 0 || _etsPool[0].Length != n)
        {
            _etsPool = new float[PndmOrder + 1][];
            for (int i = 0; i < _etsPool.Length; i++)
                _etsPool[i] = new float[n];
            _curModelOutput = new float[n];
            _curSample = new float[n];
            _combined = new float[n];
            _ets.Clear();
        }
        int t = (int)Timesteps[stepIndex];
        if (predictedOriginalSample.Length == n)
        {
            float a = Schedule.AlphasCumprod[t];
            PredictionMath.Original(Config.PredictionType, modelOutput, sample, MathF.Sqrt(a), MathF.Sqrt(1f - a), predictedOriginalSample);
        }
        if (_counter < _prkCount && !Config.SkipPrkSteps)
            StepPrk(modelOutput, t, sample);
        else
            StepPlms(modelOutput, t, sample);
    }

    private void PushEt(ReadOnlySpan<float> modelOutput)
    {
        // ets = ets[-3:] + [model_output], reusing the evicted buffers.
        float[] buf;
        if (_ets.Count > PndmOrder - 1)
        {
            buf = _ets[0];
            _ets.RemoveAt(0);
        }
        else
        {
            buf = _etsPool[0];
            foreach (var candidate in _etsPool)
            {
                if (!_ets.Contains(candidate))
                {
                    buf = candidate;
                    break;
                }
            }
        }
        modelOutput.CopyTo(buf);
        _ets.Add(buf);
    }

    private void StepPrk(ReadOnlySpan<float> modelOutput, int timestep, Span<float> sample)
    {
        int diffToPrev = _counter % 2 == 1 ? 0 : Config.NumTrainTimesteps / NumInferenceSteps / 2;
        int prevTimestep = timestep - diffToPrev;
        timestep = (int)Timesteps[_counter / 4 * 4];
        Span<float> cur = _curModelOutput;
        Span<float> combined = _combined;
        ReadOnlySpan<float> eps = modelOutput;
        switch (_counter % 4)
        {
            case 0:
                // cur += 1/6·ε ; ets.append(ε) ; cur_sample = x
                AddScaled(cur, modelOutput, 1f / 6f, combined);
                PushEt(modelOutput);
                sample.CopyTo(_curSample);
                _hasCurSample = true;
                break;
            case 1:
            case 2:
                AddScaled(cur, modelOutput, 1f / 3f, combined);
                break;
            default:
                // ε' = cur + 1/6·ε ; cur = 0
                TensorPrimitives.Multiply(modelOutput, 1f / 6f, combined);
                TensorPrimitives.Add(cur, combined, combined);
                cur.Clear();
                eps = combined;
                break;
        }
        ReadOnlySpan<float> curSample = _hasCurSample ? _curSample : sample;
        PrevSample(curSample, timestep, prevTimestep, eps, sample);
        _counter++;
    }

    private static void AddScaled(Span<float> acc, ReadOnlySpan<float> x, float c, Span<float> scratch)
    {
        TensorPrimitives.Multiply(x, c, scratch);
        TensorPrimitives.Add(acc, scratch, acc);
    }

    private void StepPlms(ReadOnlySpan<float> modelOutput, int timestep, Span<float> sample)
    {
        int ratio = Config.NumTrainTimesteps / NumInferenceSteps;
        int prevTimestep = timestep - ratio;
        if (_counter != 1)
        {
            PushEt(modelOutput);
        }
        else
        {
            prevTimestep = timestep;
            timestep += ratio;
        }
        Span<float> e = _combined;
        ReadOnlySpan<float> input = sample;
        if (_ets.Count == 1 && _counter == 0)
        {
            modelOutput.CopyTo(e);
            sample.CopyTo(_curSample);
            _hasCurSample = true;
        }
        else if (_ets.Count == 1 && _counter == 1)
        {
            // (ε + ets[-1]) / 2, from the saved sample
            TensorPrimitives.Add(modelOutput, _ets[^1], e);
            TensorPrimitives.Divide(e, 2f, e);
            input = _curSample;
            _hasCurSample = false;
        }
        else if (_ets.Count == 2)
        {
            // (3·e1 − e2) / 2
            for (int i = 0; i < e.Length; i++)
                e[i] = (3f * _ets[^1][i] - _ets[^2][i]) / 2f;
        }
        else if (_ets.Count == 3)
        {
            // (23·e1 − 16·e2 + 5·e3) / 12
            for (int i = 0; i < e.Length; i++)
                e[i] = (23f * _ets[^1][i] - 16f * _ets[^2][i] + 5f * _ets[^3][i]) / 12f;
        }
        else
        {
            // (1/24)·(55·e1 − 59·e2 + 37·e3 − 9·e4)
            const float c = 1f / 24f;
            for (int i = 0; i < e.Length; i++)
                e[i] = c * (55f * _ets[^1][i] - 59f * _ets[^2][i] + 37f * _ets[^3][i] - 9f * _ets[^4][i]);
        }
        PrevSample(input, timestep, prevTimestep, e, sample);
        _counter++;
    }

    /// <summary>Eq. 11 of Liu et al. 2022 (diffusers' <c>_get_prev_sample</c>) in float32 operation order.</summary>
    private void PrevSample(ReadOnlySpan<float> x, int timestep, int prevTimestep, ReadOnlySpan<float> modelOutput, Span<float> destination)
    {
        var ac = Schedule.AlphasCumprod;
        float a = ac[timestep];
        float aPrev = prevTimestep >= 0 ? ac[prevTimestep] : FinalAlphaCumprod;
        float b = 1f - a, bPrev = 1f - aPrev;
        float sampleCoeff = MathF.Sqrt(aPrev / a);
        float denom = a * MathF.Sqrt(bPrev) + MathF.Sqrt(a * b * aPrev);
        float diff = aPrev - a;
        bool v = Config.PredictionType == "v_prediction";
        float sa = MathF.Sqrt(a), sb = MathF.Sqrt(b);
        for (int i = 0; i < destination.Length; i++)
        {
            float eps = v ? sa * modelOutput[i] + sb * x[i] : modelOutput[i];
            destination[i] = sampleCoeff * x[i] - diff * eps / denom;
        }
    }

    /// <inheritdoc/>
    public override void AddNoise(ReadOnlySpan<float> originalSamples, ReadOnlySpan<float> noise, int stepIndex, Span<float> destination)
    {
        CheckAddNoise(originalSamples, noise, stepIndex, destination);
        NoiseScheduleMath.AddNoise(Schedule, (int)Timesteps[stepIndex], originalSamples, noise, destination);
    }
}

/// <summary>
/// Options of <see cref="PndmScheduler"/> (diffusers' <c>PNDMScheduler</c>): the registered name <c>pndm</c>. Null keys keep
/// the folder's <c>scheduler_config.json</c> value or the class default.
/// </summary>
public sealed record PndmSchedulerOptions : SchedulerOptions
{
    /// <summary><c>skip_prk_steps</c>: warm up with lower-order PLMS steps instead of the Runge–Kutta steps.</summary>
    public bool? SkipPrkSteps { get; init; }

    /// <summary><c>set_alpha_to_one</c>: the step past the last uses ᾱ = 1 rather than ᾱ₀.</summary>
    public bool? SetAlphaToOne { get; init; }

    /// <inheritdoc/>
    public override SchedulerConfig ApplyTo(SchedulerConfig config)
    {
        config = base.ApplyTo(config);
        if (SkipPrkSteps is { } skip)
            config = config with { SkipPrkSteps = skip };
        if (SetAlphaToOne is { } one)
            config = config with { SetAlphaToOne = one };
        return config;
    }

    private protected override DiffusionScheduler Create(SchedulerConfig config) => new PndmScheduler(config);
}
