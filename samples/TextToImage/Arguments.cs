using System;
using System.Collections.Generic;
using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using MLNet.Diffusion;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;

namespace TextToImage;

/// <summary>
/// The sample's command line on System.CommandLine: <c>--help</c>, validation of every value and of the rules between
/// options, and response files (<c>TextToImage @args.rsp</c>, one token or option per line) come from the library.
/// </summary>
internal sealed class Arguments
{
    private static readonly Option<string> s_prompt = new("--prompt") { Description = "What to draw (required, except for an unconditional model: --variant, or a --model of LDMPipeline/DDPMPipeline)." };
    private static readonly Option<string> s_negativePrompt = new("--negative-prompt") { Description = "What to steer away from.", DefaultValueFactory = _ => string.Empty };
    private static readonly Option<string> s_output = new("--output", "-o") { Description = "The PNG to write (generation parameters in its text chunk).", DefaultValueFactory = _ => "out.png" };
    private static readonly Option<string?> s_model = new("--model") { Description = "A Stable Diffusion ONNX folder (diffusers export layout); default: the embedded Shapes model.", HelpName = "DIR" };
    private static readonly Option<int> s_steps = Ranged(new Option<int>("--steps") { Description = "Denoising steps.", DefaultValueFactory = _ => 20 }, 1, 1000);
    private static readonly Option<float> s_guidance = Ranged(new Option<float>("--guidance") { Description = "Classifier-free guidance scale.", DefaultValueFactory = _ => 7.5f }, 0f, 100f);
    private static readonly Option<long> s_seed = Ranged(new Option<long>("--seed") { Description = "The seed of the first image (default: random).", DefaultValueFactory = _ => Random.Shared.Next() }, int.MinValue, int.MaxValue);
    private static readonly Option<int?> s_width = Size(new Option<int?>("--width") { Description = "Width in pixels, a multiple of 8; default 512, or the init image's width rounded down to a multiple of 8." });
    private static readonly Option<int?> s_height = Size(new Option<int?>("--height") { Description = "Height in pixels, a multiple of 8; default 512, or the init image's height rounded down to a multiple of 8." });
    private static readonly Option<string?> s_scheduler = KnownScheduler(new Option<string?>("--scheduler") { Description = "The scheduler; default: the model's.", HelpName = "NAME" });
    private static readonly Option<int> s_count = Ranged(new Option<int>("--count") { Description = "N images with seeds seed, seed+1, …; files out-0.png, out-1.png, ….", DefaultValueFactory = _ => 1 }, 1, 10000);
    private static readonly Option<string?> s_initImage = new("--init-image") { Description = "Image-to-image: start from this picture (PNG, JPEG, …); other sizes are stretched to fit.", HelpName = "PATH" };
    private static readonly Option<float?> s_strength = Ranged(new Option<float?>("--strength") { Description = "With --init-image: how much to change it, from 0 (keep it) to 1 (noise it at the first timestep, as diffusers: a faint trace stays); default 0.8, 1 with --mask or --outpaint." }, 0f, 1f);
    private static readonly Option<string?> s_mask = new("--mask") { Description = "Inpainting: repaint the white part of this mask (the init image's size) and keep the rest.", HelpName = "PATH" };
    private static readonly Option<(int Left, int Top, int Right, int Bottom)?> s_outpaint = new("--outpaint")
    {
        Description = "Outpainting: extend the init image by these margins in pixels (rounded up to multiples of 8) and paint the new border; writes NAME-canvas.png and NAME-mask.png next to the output.",
        HelpName = "LEFT,TOP,RIGHT,BOTTOM",
        CustomParser = Margins,
    };

    private static readonly Option<string> s_rng = new Option<string>("--rng")
    {
        Description = "The noise generator: library (this library's own), torch-cpu (torch.randn on a CPU generator: diffusers, ComfyUI, A1111 'RNG: CPU') or philox (A1111's 'NV'/'GPU').",
        DefaultValueFactory = _ => "library",
    }.AcceptOnlyFromAmong("library", "torch-cpu", "philox");
    private static readonly Option<string?> s_reproduce = new Option<string?>("--reproduce")
    {
        Description = "Reproduce another tool's noise from the same seed: diffusers (a CPU generator per image), comfyui (one CPU randn for the batch, steps from seed + 1) or a1111 (per-image seeds; --rng philox, the default here, or torch-cpu).",
        HelpName = "TOOL",
    }.AcceptOnlyFromAmong("diffusers", "comfyui", "a1111");
    private static readonly Option<long> s_ensd = new("--ensd") { Description = "AUTOMATIC1111's Eta noise seed delta (e.g. 31337): the steps' noise comes from seed + ENSD.", DefaultValueFactory = _ => 0 };
    // LoRA (issue 16): --lora path[:scale], repeatable.
    private static readonly Option<LoraReference[]> s_lora = new("--lora")
    {
        Description = "Merge this LoRA (.safetensors: kohya, LoCon or diffusers/PEFT) into the UNet and text encoder with scale S (default 1); repeatable.",
        HelpName = "PATH[:S]",
        Arity = ArgumentArity.ZeroOrMore,
        DefaultValueFactory = _ => Array.Empty<LoraReference>(),
        CustomParser = ParseLoras,
    };

    // Prompt syntax (issue 15): how the prompt is read, and A1111's emphasis mode.
    private static readonly Option<string> s_promptSyntax = new Option<string>("--prompt-syntax")
    {
        Description = "How the prompt is read: plain (the text as written), a1111 ((red:1.3), [red], BREAK, [red:blue:0.5], [red|blue], AND) or compel (red++, (red)1.3, .blend(), .and()); docs/prompt-syntax.md.",
        DefaultValueFactory = _ => "plain",
    }.AcceptOnlyFromAmong("plain", "a1111", "compel");
    private static readonly Option<string> s_emphasis = new Option<string>("--emphasis")
    {
        Description = "With --prompt-syntax a1111: A1111's emphasis mode; no-norm for the Shapes model, whose text states average to 0.",
        DefaultValueFactory = _ => "original",
    }.AcceptOnlyFromAmong("original", "no-norm", "ignore", "none");

    // Unconditional models (issue 18): the embedded Shapes model's LDMPipeline variants, no prompt.
    private static readonly Option<string?> s_variant = new Option<string?>("--variant")
    {
        Description = "Use an unconditional variant of the embedded Shapes model (diffusers' LDMPipeline: no prompt, one class of images, the circles; 256x256 by default): "
            + "unconditional (the KL-shaped PCA autoencoder) or vq (a VQ autoencoder, its codebook k-means over the dataset's patches). The two denoise the same latents from the same seed, so their images compare the decoders.",
        HelpName = "unconditional|vq",
    }.AcceptOnlyFromAmong("unconditional", "vq");

    // ControlNet (issue 17): --control image.png [--control-scale S].
    private static readonly Option<string?> s_control = new("--control")
    {
        Description = "ControlNet: steer the picture with this control image (PNG, JPEG, …; stretched to the output size); the model's own controlnet/ runs it. Without --model: the Shapes ControlNet variant, whose control image is a white silhouette on black that decides where and which shape is drawn.",
        HelpName = "PATH",
    };
    private static readonly Option<float> s_controlScale = Ranged(new Option<float>("--control-scale") { Description = "With --control: the ControlNet's conditioning scale (diffusers' controlnet_conditioning_scale; 0 turns it off).", DefaultValueFactory = _ => 1f }, 0f, 10f);

    /// <summary>The command: its options, and the rules between them checked after every option is read.</summary>
    public static RootCommand Command { get; } = CreateCommand();

    public string Prompt { get; private init; } = string.Empty;

    /// <summary>Whether <c>--prompt</c> was given (an unconditional model needs none).</summary>
    public bool HasPrompt { get; private init; }

    /// <summary>Issue 18: the embedded Shapes model's unconditional variant named by <c>--variant</c> (unconditional or vq); null for the text-to-image model.</summary>
    public string? Variant { get; private init; }

    /// <summary>The Shapes model variant <see cref="Variant"/> names (<see cref="ShapesVariant.Standard"/> when none).</summary>
    public ShapesVariant ShapesVariant => Variant switch
    {
        "unconditional" => ShapesVariant.Unconditional,
        "vq" => ShapesVariant.Vq,
        _ => ShapesVariant.Standard,
    };

    public string NegativePrompt { get; private init; } = string.Empty;

    public string Output { get; private init; } = "out.png";

    public string? Model { get; private init; }

    public int Steps { get; private init; }

    public float Guidance { get; private init; }

    public long Seed { get; private init; }

    /// <summary>The width; null for the default: 512, or the init image's width rounded down to a multiple of 8.</summary>
    public int? Width { get; private init; }

    /// <summary>The height; null for the default: 512, or the init image's height rounded down to a multiple of 8.</summary>
    public int? Height { get; private init; }

    /// <summary>Image-to-image: the picture to start from.</summary>
    public string? InitImage { get; private init; }

    /// <summary>Image-to-image strength in [0, 1]; null for the default: 0.8, or 1 when inpainting (diffusers' defaults).</summary>
    public float? Strength { get; private init; }

    /// <summary>Inpainting: a mask of the init image's size, white where the picture is repainted.</summary>
    public string? Mask { get; private init; }

    /// <summary>Outpainting: the margins (left, top, right, bottom) to add around the init image; null when not outpainting.</summary>
    public (int Left, int Top, int Right, int Bottom)? Outpaint { get; private init; }

    public string? Scheduler { get; private init; }

    public int Count { get; private init; }

    /// <summary>The noise generator named by <c>--rng</c>: library, torch-cpu or philox.</summary>
    public string Rng { get; private init; } = "library";

    /// <summary>The tool whose noise to reproduce (<c>--reproduce</c>); null for none.</summary>
    public string? Reproduce { get; private init; }

    /// <summary>AUTOMATIC1111's eta noise seed delta; 0 for none.</summary>
    public long Ensd { get; private init; }

    /// <summary>LoRA (issue 16): the <c>--lora path[:scale]</c> options in order; empty for none.</summary>
    public IReadOnlyList<LoraReference> Loras { get; private init; } = Array.Empty<LoraReference>();

    /// <summary>How the prompt is read (<c>--prompt-syntax</c>).</summary>
    public MLNet.Diffusion.Prompting.PromptSyntax PromptSyntax { get; private init; }

    /// <summary>A1111's emphasis mode (<c>--emphasis</c>).</summary>
    public MLNet.Diffusion.Prompting.PromptEmphasis Emphasis { get; private init; } = MLNet.Diffusion.Prompting.PromptEmphasis.Original;

    /// <summary>ControlNet (issue 17): the control image; null for none.</summary>
    public string? Control { get; private init; }

    /// <summary>ControlNet (issue 17): the conditioning scale of <see cref="Control"/>.</summary>
    public float ControlScale { get; private init; } = 1f;

    /// <summary>The stages' noise options for <see cref="Rng"/>, <see cref="Reproduce"/> and <see cref="Ensd"/>.</summary>
    public NoiseOptions Noise => Reproduce switch
    {
        "diffusers" => NoiseOptions.Diffusers(),
        "comfyui" => NoiseOptions.ComfyUI(),
        "a1111" => NoiseOptions.Automatic1111(Rng == "torch-cpu" ? "CPU" : "NV", Ensd),
        _ => new NoiseOptions
        {
            Generator = Rng switch { "torch-cpu" => NoiseGenerator.TorchCpu, "philox" => NoiseGenerator.Philox, _ => NoiseGenerator.Library },
            StepNoiseSeedOffset = Ensd == 0 ? null : Ensd,
        },
    };

    /// <summary>The <c>RNG</c> value of the PNG's infotext: AUTOMATIC1111's CPU or NV, or <c>MLNet</c> for this library's generator.</summary>
    public static string InfotextRng(NoiseGenerator generator) => generator switch
    {
        NoiseGenerator.TorchCpu => "CPU",
        NoiseGenerator.Philox => "NV",
        _ => "MLNet",
    };

    /// <summary>The <c>--rng</c> value for an infotext's <c>RNG</c> (CPU, NV/GPU, MLNet or none).</summary>
    public static string RngFromInfotext(string? rng) => rng?.Trim().ToUpperInvariant() switch
    {
        "CPU" => "torch-cpu",
        "NV" or "GPU" => "philox",
        _ => "library",
    };

    /// <summary>Parses a command line; any problem is an <see cref="ArgumentException"/> with System.CommandLine's first error.</summary>
    public static Arguments Parse(string[] args)
    {
        var result = Command.Parse(args);
        if (result.Errors.Count > 0)
            throw new ArgumentException(result.Errors[0].Message);
        return From(result);
    }

    /// <summary>The values of a parse without errors.</summary>
    public static Arguments From(ParseResult result) => new()
    {
        Prompt = result.GetValue(s_prompt) ?? string.Empty,
        HasPrompt = result.GetResult(s_prompt) is { Implicit: false },
        Variant = result.GetValue(s_variant),
        NegativePrompt = result.GetValue(s_negativePrompt) ?? string.Empty,
        Output = result.GetValue(s_output) ?? "out.png",
        Model = result.GetValue(s_model),
        Steps = result.GetValue(s_steps),
        Guidance = result.GetValue(s_guidance),
        Seed = result.GetValue(s_seed),
        Width = result.GetValue(s_width),
        Height = result.GetValue(s_height),
        Scheduler = result.GetValue(s_scheduler),
        Count = result.GetValue(s_count),
        InitImage = result.GetValue(s_initImage),
        Strength = result.GetValue(s_strength),
        Mask = result.GetValue(s_mask),
        Outpaint = result.GetValue(s_outpaint),
        Rng = result.GetValue(s_rng) ?? "library",
        Reproduce = result.GetValue(s_reproduce),
        Ensd = result.GetValue(s_ensd),
        Loras = result.GetValue(s_lora) ?? Array.Empty<LoraReference>(),
        PromptSyntax = result.GetValue(s_promptSyntax) switch
        {
            "a1111" => MLNet.Diffusion.Prompting.PromptSyntax.A1111,
            "compel" => MLNet.Diffusion.Prompting.PromptSyntax.Compel,
            _ => MLNet.Diffusion.Prompting.PromptSyntax.Plain,
        },
        Emphasis = result.GetValue(s_emphasis) switch
        {
            "no-norm" => MLNet.Diffusion.Prompting.PromptEmphasis.NoNorm,
            "ignore" => MLNet.Diffusion.Prompting.PromptEmphasis.Ignore,
            "none" => MLNet.Diffusion.Prompting.PromptEmphasis.None,
            _ => MLNet.Diffusion.Prompting.PromptEmphasis.Original,
        },
        Control = result.GetValue(s_control),
        ControlScale = result.GetValue(s_controlScale),
    };

    private static RootCommand CreateCommand()
    {
        var command = new RootCommand("Generates images from a prompt with the ML.NET stages EncodePrompt → DenoiseLatents → DecodeLatents. "
            + "Arguments can also come from a response file: TextToImage @args.rsp, one option per line, values with spaces in quotes.")
        {
            s_prompt, s_negativePrompt, s_output, s_model, s_steps, s_guidance, s_seed, s_width, s_height, s_scheduler, s_count,
            s_initImage, s_strength, s_mask, s_outpaint, s_rng, s_reproduce, s_ensd, s_lora,
            s_promptSyntax, s_emphasis,
        };
        command.Options.Add(s_variant);
        command.Options.Add(s_control);
        command.Options.Add(s_controlScale);
        command.Validators.Add(Validate);
        return command;
    }

    /// <summary>Rules between options, checked after all are read.</summary>
    private static void Validate(CommandResult r)
    {
        // Presence only: a value with its own error must not be read here (System.CommandLine would throw).
        bool Given(Option option) => r.GetResult(option) is { Implicit: false };
        bool init = Given(s_initImage);
        if (!Given(s_prompt) && !Given(s_variant) && !Given(s_model))
            r.AddError("Option '--prompt' is required (an unconditional model, --variant or a --model of LDMPipeline/DDPMPipeline, takes none).");
        else if (Given(s_variant) && Given(s_model))
            r.AddError("--variant picks a variant of the embedded Shapes model; it does not apply to --model");
        else if (Given(s_variant) && (init || Given(s_lora)))
            r.AddError("--variant makes an unconditional model; it takes no --init-image, --mask, --outpaint or --lora");
        else if (Given(s_strength) && !init)
            r.AddError("--strength needs --init-image (it says how much of the init image to change)");
        else if (Given(s_mask) && !init)
            r.AddError("--mask needs --init-image (the mask says which part of that picture to repaint)");
        else if (Given(s_outpaint) && !init)
            r.AddError("--outpaint needs --init-image (the picture to extend)");
        else if (Given(s_mask) && Given(s_outpaint))
            r.AddError("--mask and --outpaint cannot be combined: --outpaint makes its own mask (the new border)");
        else if (Given(s_reproduce) && Given(s_rng) && r.GetValue(s_reproduce) != "a1111")
            r.AddError("--rng goes with --reproduce a1111 only (diffusers and comfyui draw with torch-cpu)");
        else if (Given(s_reproduce) && Given(s_rng) && r.GetValue(s_rng) == "library")
            r.AddError("--reproduce a1111 takes --rng philox or torch-cpu (AUTOMATIC1111's NV and CPU sources)");
        else if (Given(s_ensd) && Given(s_reproduce) && r.GetValue(s_reproduce) != "a1111")
            r.AddError("--ensd is AUTOMATIC1111's setting; diffusers and comfyui have none");
        else if (Given(s_emphasis) && r.GetValue(s_promptSyntax) != "a1111")
            r.AddError("--emphasis goes with --prompt-syntax a1111 (it says how A1111's weights change the text states)");
        else if (Given(s_control) && Given(s_variant))
            r.AddError("--control takes a text-conditioned model (the Shapes ControlNet variant, or --model with a controlnet/); --variant names an unconditional one");
        else if (Given(s_controlScale) && !Given(s_control))
            r.AddError("--control-scale needs --control (the control image it scales)");
    }

    /// <summary>The <c>--lora</c> values, each <c>path[:scale]</c> (<see cref="LoraReference.Parse"/>).</summary>
    private static LoraReference[] ParseLoras(ArgumentResult result)
    {
        var loras = new LoraReference[result.Tokens.Count];
        for (int i = 0; i < loras.Length; i++)
        {
            try
            {
                loras[i] = LoraReference.Parse(result.Tokens[i].Value);
            }
            catch (FormatException e)
            {
                result.AddError($"--lora '{result.Tokens[i].Value}': {e.Message}");
                return Array.Empty<LoraReference>();
            }
        }
        return loras;
    }

    /// <summary>Four non-negative margins "left,top,right,bottom", at least one positive.</summary>
    private static (int, int, int, int)? Margins(ArgumentResult result)
    {
        string text = result.Tokens.Count == 1 ? result.Tokens[0].Value : string.Empty;
        string[] parts = text.Split(',');
        if (parts.Length != 4)
        {
            result.AddError($"--outpaint takes four margins in pixels, left,top,right,bottom (e.g. 0,0,64,0), not '{text}'");
            return null;
        }
        var m = new int[4];
        for (int i = 0; i < 4; i++)
        {
            if (!int.TryParse(parts[i].Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out m[i]) || m[i] < 0 || m[i] > 4096)
            {
                result.AddError($"--outpaint margins must be integers in [0, 4096], not '{parts[i].Trim()}'");
                return null;
            }
        }
        if (m[0] + m[1] + m[2] + m[3] == 0)
        {
            result.AddError($"--outpaint needs at least one positive margin, not '{text}'");
            return null;
        }
        return (m[0], m[1], m[2], m[3]);
    }

    private static Option<T> Ranged<T>(Option<T> option, double min, double max)
    {
        option.Validators.Add(r =>
        {
            object? value = r.GetValueOrDefault<T>();
            double v = value is null ? min : Convert.ToDouble(value, CultureInfo.InvariantCulture);
            if (!(v >= min && v <= max))
                r.AddError(string.Format(CultureInfo.InvariantCulture, "{0} must be in [{1}, {2}], not {3}", option.Name, min, max, value));
        });
        return option;
    }

    private static Option<int?> Size(Option<int?> option)
    {
        option.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is int v && (v < 8 || v > 4096 || v % 8 != 0))
                r.AddError($"{option.Name} must be a multiple of 8 in [8, 4096], not {v}");
        });
        return option;
    }

    private static Option<string?> KnownScheduler(Option<string?> option)
    {
        option.Validators.Add(r =>
        {
            string? name = r.GetValueOrDefault<string?>();
            if (name is null)
                return;
            foreach (string known in SchedulerFactory.Names)
            {
                if (string.Equals(known, name, StringComparison.OrdinalIgnoreCase))
                    return;
            }
            r.AddError($"--scheduler '{name}' is unknown; use one of: {string.Join(", ", SchedulerFactory.Names)}");
        });
        return option;
    }
}
