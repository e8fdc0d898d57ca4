using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Text.Json;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// The settings of a diffusers scheduler, read from a model folder's <c>scheduler/scheduler_config.json</c>.
/// Property names follow the JSON keys one to one (diffusers' constructor parameters), so a config file maps
/// onto this record without translation. Unknown keys are ignored; invalid values fail with a message naming the key.
/// </summary>
public sealed record SchedulerConfig
{
    // Keys whose default differs between diffusers scheduler classes: null means "not given", so that each scheduler
    // applies its own class default, as diffusers' from_config does.
    private string? _timestepSpacing;
    private bool? _setAlphaToOne;
    private bool? _clipSample;

    /// <summary>The diffusers class that wrote the file (<c>_class_name</c>), e.g. <c>DDIMScheduler</c>; selects the default scheduler.</summary>
    public string? ClassName { get; init; }

    /// <summary>Number of diffusion steps the model was trained with (<c>num_train_timesteps</c>).</summary>
    public int NumTrainTimesteps { get; init; } = 1000;

    /// <summary>First beta of the schedule (<c>beta_start</c>).</summary>
    public double BetaStart { get; init; } = 0.00085;

    /// <summary>Last beta of the schedule (<c>beta_end</c>).</summary>
    public double BetaEnd { get; init; } = 0.012;

    /// <summary>How betas are spaced (<c>beta_schedule</c>): <c>linear</c>, <c>scaled_linear</c> or <c>squaredcos_cap_v2</c>.</summary>
    public string BetaSchedule { get; init; } = "scaled_linear";

    /// <summary>Explicit betas (<c>trained_betas</c>); when set, they replace the computed schedule.</summary>
    public IReadOnlyList<double>? TrainedBetas { get; init; }

    /// <summary>What the UNet predicts (<c>prediction_type</c>): <c>epsilon</c>, <c>v_prediction</c> or <c>sample</c>.</summary>
    public string PredictionType { get; init; } = "epsilon";

    /// <summary>
    /// How inference timesteps are spread over the training range (<c>timestep_spacing</c>): <c>leading</c>, <c>linspace</c>
    /// or <c>trailing</c>. When the key is not given, each scheduler uses its diffusers class default (leading for DDPM,
    /// DDIM, PNDM and LCM; linspace for the sigma schedulers and DPM-Solver++).
    /// </summary>
    public string TimestepSpacing { get => _timestepSpacing ?? "leading"; init => _timestepSpacing = value; }

    /// <summary>Offset added to every inference timestep under <c>leading</c> spacing (<c>steps_offset</c>).</summary>
    public int StepsOffset { get; init; }

    /// <summary>
    /// Whether the step past the last uses alpha_cumprod = 1 rather than alphas_cumprod[0] (<c>set_alpha_to_one</c>).
    /// When the key is not given, the scheduler's diffusers class default applies (true for DDIM and LCM, false for PNDM).
    /// </summary>
    public bool SetAlphaToOne { get => _setAlphaToOne ?? true; init => _setAlphaToOne = value; }

    /// <summary>
    /// Whether the predicted clean sample is clipped to ±<see cref="ClipSampleRange"/> (<c>clip_sample</c>). When the key
    /// is not given, the scheduler's diffusers class default applies (true for DDPM and DDIM, false otherwise).
    /// </summary>
    public bool ClipSample { get => _clipSample ?? false; init => _clipSample = value; }

    /// <summary>Clipping range for <see cref="ClipSample"/> (<c>clip_sample_range</c>).</summary>
    public double ClipSampleRange { get; init; } = 1.0;

    /// <summary>Whether sigma-based schedulers use the Karras et al. (2022) noise levels (<c>use_karras_sigmas</c>).</summary>
    public bool UseKarrasSigmas { get; init; }

    /// <summary>The last sigma of sigma-based schedulers (<c>final_sigmas_type</c>): <c>zero</c> or <c>sigma_min</c>.</summary>
    public string FinalSigmasType { get; init; } = "zero";

    /// <summary>Whether betas are rescaled to zero terminal SNR (<c>rescale_betas_zero_snr</c>, Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; init; }

    /// <summary>Whether PNDM skips the Runge-Kutta warm-up steps (<c>skip_prk_steps</c>).</summary>
    public bool SkipPrkSteps { get; init; }

    /// <summary>DDPM's variance choice (<c>variance_type</c>): <c>fixed_small</c>, <c>fixed_small_log</c>, <c>fixed_large</c>, <c>fixed_large_log</c>, <c>learned</c> or <c>learned_range</c>.</summary>
    public string VarianceType { get; init; } = "fixed_small";

    /// <summary>Order of the DPM-Solver++ multistep method (<c>solver_order</c>).</summary>
    public int SolverOrder { get; init; } = 2;

    /// <summary>DPM-Solver variant (<c>algorithm_type</c>); <c>dpmsolver++</c> is the one implemented.</summary>
    public string AlgorithmType { get; init; } = "dpmsolver++";

    /// <summary>DPM-Solver second-order update rule (<c>solver_type</c>): <c>midpoint</c> or <c>heun</c>.</summary>
    public string SolverType { get; init; } = "midpoint";

    /// <summary>Whether DPM-Solver uses lower-order steps at the end (<c>lower_order_final</c>).</summary>
    public bool LowerOrderFinal { get; init; } = true;

    /// <summary>Whether DPM-Solver's final step is first order (<c>euler_at_final</c>).</summary>
    public bool EulerAtFinal { get; init; }

    /// <summary>Whether the predicted clean sample is dynamically thresholded (<c>thresholding</c>, Imagen).</summary>
    public bool Thresholding { get; init; }

    /// <summary>Percentile for dynamic thresholding (<c>dynamic_thresholding_ratio</c>).</summary>
    public double DynamicThresholdingRatio { get; init; } = 0.995;

    /// <summary>Upper bound of the dynamic threshold (<c>sample_max_value</c>).</summary>
    public double SampleMaxValue { get; init; } = 1.0;

    /// <summary>LCM: the number of timesteps of the original (distillation) schedule (<c>original_inference_steps</c>).</summary>
    public int OriginalInferenceSteps { get; init; } = 50;

    /// <summary>LCM: the timestep scaling of its boundary conditions (<c>timestep_scaling</c>).</summary>
    public double TimestepScaling { get; init; } = 10.0;

    /// <summary>The default, SD 1.x settings (scaled_linear 0.00085 … 0.012, 1000 steps, epsilon, leading, offset 1).</summary>
    public static SchedulerConfig StableDiffusion1 { get; } = new()
    {
        ClassName = "PNDMScheduler",
        StepsOffset = 1,
        SetAlphaToOne = false,
        SkipPrkSteps = true,
        ClipSample = false,
    };

    /// <summary>
    /// This config with the scheduler class defaults filled in for the keys the file did not give
    /// (<c>timestep_spacing</c>, <c>set_alpha_to_one</c>, <c>clip_sample</c>), and <c>rescale_betas_zero_snr</c>
    /// dropped for classes that do not have it (diffusers ignores keys a class does not take).
    /// </summary>
    internal SchedulerConfig WithClassDefaults(string timestepSpacing, bool setAlphaToOne, bool clipSample, bool hasZeroSnr = true) => this with
    {
        TimestepSpacing = _timestepSpacing ?? timestepSpacing,
        SetAlphaToOne = _setAlphaToOne ?? setAlphaToOne,
        ClipSample = _clipSample ?? clipSample,
        RescaleBetasZeroSnr = hasZeroSnr && RescaleBetasZeroSnr,
    };

    /// <summary>Reads a <c>scheduler_config.json</c> file.</summary>
    /// <param name="path">The file's path.</param>
    /// <exception cref="FileNotFoundException">The file does not exist.</exception>
    /// <exception cref="InvalidDataException">The file is not valid JSON or a key has an invalid value; the message names the key.</exception>
    public static SchedulerConfig Load(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"Scheduler config '{path}' does not exist.", path);
        try
        {
            return Parse(File.ReadAllText(path));
        }
        catch (InvalidDataException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }

    /// <summary>Parses the JSON text of a <c>scheduler_config.json</c> file.</summary>
    /// <param name="json">The JSON text.</param>
    /// <exception cref="InvalidDataException">The text is not a JSON object or a key has an invalid value; the message names the key.</exception>
    public static SchedulerConfig Parse(string json)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"scheduler config is not valid JSON: {e.Message}", e);
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException("scheduler config must be a JSON object.");
            var c = new SchedulerConfig();
            foreach (var p in doc.RootElement.EnumerateObject())
            {
                var v = p.Value;
                c = p.Name switch
                {
                    "_class_name" => c with { ClassName = Str(p) },
                    "num_train_timesteps" => c with { NumTrainTimesteps = Int(p) },
                    "beta_start" => c with { BetaStart = Num(p) },
                    "beta_end" => c with { BetaEnd = Num(p) },
                    "beta_schedule" => c with { BetaSchedule = Str(p) ?? c.BetaSchedule },
                    "trained_betas" => c with { TrainedBetas = v.ValueKind == JsonValueKind.Null ? null : NumArray(p) },
                    "prediction_type" => c with { PredictionType = Str(p) ?? c.PredictionType },
                    "timestep_spacing" => Str(p) is { } spacing ? c with { TimestepSpacing = spacing } : c,
                    "steps_offset" => c with { StepsOffset = Int(p) },
                    "set_alpha_to_one" => c with { SetAlphaToOne = Bool(p) },
                    "clip_sample" => c with { ClipSample = Bool(p) },
                    "clip_sample_range" => c with { ClipSampleRange = Num(p) },
                    "use_karras_sigmas" => c with { UseKarrasSigmas = v.ValueKind != JsonValueKind.Null && Bool(p) },
                    "final_sigmas_type" => c with { FinalSigmasType = Str(p) ?? c.FinalSigmasType },
                    "rescale_betas_zero_snr" => c with { RescaleBetasZeroSnr = Bool(p) },
                    "skip_prk_steps" => c with { SkipPrkSteps = Bool(p) },
                    "variance_type" => c with { VarianceType = Str(p) ?? c.VarianceType },
                    "solver_order" => c with { SolverOrder = Int(p) },
                    "algorithm_type" => c with { AlgorithmType = Str(p) ?? c.AlgorithmType },
                    "solver_type" => c with { SolverType = Str(p) ?? c.SolverType },
                    "lower_order_final" => c with { LowerOrderFinal = Bool(p) },
                    "euler_at_final" => c with { EulerAtFinal = Bool(p) },
                    "thresholding" => c with { Thresholding = Bool(p) },
                    "dynamic_thresholding_ratio" => c with { DynamicThresholdingRatio = Num(p) },
                    "sample_max_value" => c with { SampleMaxValue = Num(p) },
                    "original_inference_steps" => c with { OriginalInferenceSteps = Int(p) },
                    "timestep_scaling" => c with { TimestepScaling = Num(p) },
                    _ => c,
                };
            }
            c.Validate();
            return c;
        }
    }

    /// <summary>Checks every value; throws <see cref="InvalidDataException"/> naming the first invalid key.</summary>
    public void Validate()
    {
        if (NumTrainTimesteps < 2 || NumTrainTimesteps > 100_000)
            throw Bad("num_train_timesteps", NumTrainTimesteps, "an integer in [2, 100000]");
        if (!(BetaStart > 0 && BetaStart < 1) || double.IsNaN(BetaStart))
            throw Bad("beta_start", BetaStart, "a number in (0, 1)");
        if (!(BetaEnd > 0 && BetaEnd < 1) || double.IsNaN(BetaEnd))
            throw Bad("beta_end", BetaEnd, "a number in (0, 1)");
        if (BetaSchedule is not ("linear" or "scaled_linear" or "squaredcos_cap_v2") && TrainedBetas is null)
            throw Bad("beta_schedule", BetaSchedule, "'linear', 'scaled_linear' or 'squaredcos_cap_v2'");
        if (TrainedBetas is not null)
        {
            if (TrainedBetas.Count != NumTrainTimesteps)
                throw Bad("trained_betas", $"{TrainedBetas.Count} values", $"num_train_timesteps ({NumTrainTimesteps}) values");
            foreach (double b in TrainedBetas)
                if (!(b > 0 && b < 1))
                    throw Bad("trained_betas", b, "values in (0, 1)");
        }
        if (PredictionType is not ("epsilon" or "v_prediction" or "sample"))
            throw Bad("prediction_type", PredictionType, "'epsilon', 'v_prediction' or 'sample'");
        if (TimestepSpacing is not ("leading" or "linspace" or "trailing"))
            throw Bad("timestep_spacing", TimestepSpacing, "'leading', 'linspace' or 'trailing'");
        if (StepsOffset < 0 || StepsOffset >= NumTrainTimesteps)
            throw Bad("steps_offset", StepsOffset, $"an integer in [0, {NumTrainTimesteps})");
        if (!(ClipSampleRange > 0))
            throw Bad("clip_sample_range", ClipSampleRange, "a positive number");
        if (FinalSigmasType is not ("zero" or "sigma_min"))
            throw Bad("final_sigmas_type", FinalSigmasType, "'zero' or 'sigma_min'");
        if (SolverOrder is < 1 or > 3)
            throw Bad("solver_order", SolverOrder, "1, 2 or 3");
        // Dynamic thresholding (Imagen, Saharia et al. 2022) is for pixel-space models; it is not implemented, so a config
        // that asks for it fails here rather than sampling differently from the reference without a word.
        if (Thresholding)
            throw Bad("thresholding", "true", "false (dynamic thresholding is not implemented by MLNet.Diffusion)");
        if (!(DynamicThresholdingRatio > 0 && DynamicThresholdingRatio <= 1))
            throw Bad("dynamic_thresholding_ratio", DynamicThresholdingRatio, "a number in (0, 1]");
        if (OriginalInferenceSteps < 1 || OriginalInferenceSteps > NumTrainTimesteps)
            throw Bad("original_inference_steps", OriginalInferenceSteps, $"an integer in [1, {NumTrainTimesteps}]");
    }

    private static InvalidDataException Bad(string key, object value, string expected) =>
        new($"scheduler config key '{key}' has invalid value '{Convert.ToString(value, CultureInfo.InvariantCulture)}': expected {expected}.");

    private static string? Str(JsonProperty p) => p.Value.ValueKind switch
    {
        JsonValueKind.String => p.Value.GetString(),
        JsonValueKind.Null => null,
        _ => throw Bad(p.Name, p.Value.GetRawText(), "a string"),
    };

    private static double Num(JsonProperty p) =>
        p.Value.ValueKind == JsonValueKind.Number ? p.Value.GetDouble() : throw Bad(p.Name, p.Value.GetRawText(), "a number");

    private static int Int(JsonProperty p) =>
        p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out int i) ? i : throw Bad(p.Name, p.Value.GetRawText(), "an integer");

    private static bool Bool(JsonProperty p) => p.Value.ValueKind switch
    {
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        _ => throw Bad(p.Name, p.Value.GetRawText(), "true or false"),
    };

    private static double[] NumArray(JsonProperty p)
    {
        if (p.Value.ValueKind != JsonValueKind.Array)
            throw Bad(p.Name, p.Value.GetRawText(), "an array of numbers");
        var list = new List<double>();
        foreach (var e in p.Value.EnumerateArray())
            list.Add(e.ValueKind == JsonValueKind.Number ? e.GetDouble() : throw Bad(p.Name, e.GetRawText(), "an array of numbers"));
        return list.ToArray();
    }
}
