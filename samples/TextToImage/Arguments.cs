using System;
using System.Collections.Generic;
using System.Globalization;

namespace TextToImage;

/// <summary>The sample's command line; every problem is an <see cref="ArgumentException"/> with a one-line message.</summary>
internal sealed class Arguments
{
    public string Prompt { get; private set; } = string.Empty;

    public string NegativePrompt { get; private set; } = string.Empty;

    public string Output { get; private set; } = "out.png";

    public string? Model { get; private set; }

    public int Steps { get; private set; } = 20;

    public float Guidance { get; private set; } = 7.5f;

    public long Seed { get; private set; } = Random.Shared.Next();

    /// <summary>The width; null for the default: 512, or the init image's width rounded down to a multiple of 8.</summary>
    public int? Width { get; private set; }

    /// <summary>The height; null for the default: 512, or the init image's height rounded down to a multiple of 8.</summary>
    public int? Height { get; private set; }

    /// <summary>Image-to-image: the picture to start from.</summary>
    public string? InitImage { get; private set; }

    /// <summary>Image-to-image strength in [0, 1]; null for the default: 0.8, or 1 when inpainting (diffusers' defaults).</summary>
    public float? Strength { get; private set; }

    /// <summary>Inpainting: a mask of the init image's size, white where the picture is repainted.</summary>
    public string? Mask { get; private set; }

    /// <summary>Outpainting: the margins (left, top, right, bottom) to add around the init image; null when not outpainting.</summary>
    public (int Left, int Top, int Right, int Bottom)? Outpaint { get; private set; }

    public string? Scheduler { get; private set; }

    public int Count { get; private set; } = 1;

    public bool Help { get; private set; }

    // LoRA (issue 16): --lora path[:scale], repeatable.
    public List<MLNet.Diffusion.LoraReference> Loras { get; } = new();

    public static Arguments Parse(string[] args)
    {
        var a = new Arguments();
        bool promptSet = false;
        for (int i = 0; i < args.Length; i++)
        {
            string name = args[i];
            string Value()
            {
                if (i + 1 >= args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal))
                    throw new ArgumentException($"{name} needs a value");
                return args[++i];
            }
            switch (name)
            {
                case "--help" or "-h":
                    a.Help = true;
                    break;
                case "--prompt":
                    a.Prompt = Value();
                    promptSet = true;
                    break;
                case "--negative-prompt":
                    a.NegativePrompt = Value();
                    break;
                case "--output" or "-o":
                    a.Output = Value();
                    break;
                case "--model":
                    a.Model = Value();
                    break;
                case "--steps":
                    a.Steps = Int(name, Value(), 1, 1000);
                    break;
                case "--guidance":
                    a.Guidance = Float(name, Value(), 0f, 100f);
                    break;
                case "--seed":
                    a.Seed = Int(name, Value(), int.MinValue, int.MaxValue);
                    break;
                case "--width":
                    a.Width = Size(name, Value());
                    break;
                case "--height":
                    a.Height = Size(name, Value());
                    break;
                case "--scheduler":
                    a.Scheduler = Value();
                    if (!Contains(MLNet.Diffusion.Schedulers.SchedulerFactory.Names, a.Scheduler))
                        throw new ArgumentException($"--scheduler '{a.Scheduler}' is unknown; use one of: {string.Join(", ", MLNet.Diffusion.Schedulers.SchedulerFactory.Names)}");
                    break;
                case "--count":
                    a.Count = Int(name, Value(), 1, 10000);
                    break;
                case "--init-image":
                    a.InitImage = Value();
                    break;
                case "--strength":
                    a.Strength = Float(name, Value(), 0f, 1f);
                    break;
                case "--mask":
                    a.Mask = Value();
                    break;
                case "--outpaint":
                    a.Outpaint = Margins(name, Value());
                    break;
                // LoRA (issue 16): path[:scale], repeatable.
                case "--lora":
                    a.Loras.Add(MLNet.Diffusion.LoraReference.Parse(Value()));
                    break;
                default:
                    throw new ArgumentException($"unknown argument '{name}'");
            }
        }
        if (!a.Help)
            a.Validate(promptSet);
        return a;
    }

    /// <summary>Rules between arguments, checked after all are read.</summary>
    private void Validate(bool promptSet)
    {
        if (!promptSet)
            throw new ArgumentException("--prompt is required");
        if (Strength is not null && InitImage is null)
            throw new ArgumentException("--strength needs --init-image (it says how much of the init image to change)");
        if (Mask is not null && InitImage is null)
            throw new ArgumentException("--mask needs --init-image (the mask says which part of that picture to repaint)");
        if (Outpaint is not null && InitImage is null)
            throw new ArgumentException("--outpaint needs --init-image (the picture to extend)");
        if (Mask is not null && Outpaint is not null)
            throw new ArgumentException("--mask and --outpaint cannot be combined: --outpaint makes its own mask (the new border)");
    }

    /// <summary>Four non-negative margins "left,top,right,bottom", at least one positive.</summary>
    private static (int, int, int, int) Margins(string name, string text)
    {
        string[] parts = text.Split(',');
        if (parts.Length != 4)
            throw new ArgumentException($"{name} takes four margins in pixels, left,top,right,bottom (e.g. 0,0,64,0), not '{text}'");
        var m = new int[4];
        for (int i = 0; i < 4; i++)
            m[i] = Int(name, parts[i].Trim(), 0, 4096);
        if (m[0] + m[1] + m[2] + m[3] == 0)
            throw new ArgumentException($"{name} needs at least one positive margin, not '{text}'");
        return (m[0], m[1], m[2], m[3]);
    }

    private static bool Contains(System.Collections.Generic.IReadOnlyCollection<string> names, string value)
    {
        foreach (string n in names)
            if (string.Equals(n, value, StringComparison.OrdinalIgnoreCase))
                return true;
        return false;
    }

    private static int Int(string name, string text, long min, long max)
    {
        if (!long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) || v < min || v > max)
            throw new ArgumentException($"{name} must be an integer in [{min}, {max}], not '{text}'");
        return (int)v;
    }

    private static float Float(string name, string text, float min, float max)
    {
        if (!float.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out float v) || !(v >= min && v <= max))
            throw new ArgumentException($"{name} must be a number in [{min}, {max}], not '{text}'");
        return v;
    }

    private static int Size(string name, string text)
    {
        int v = Int(name, text, 8, 4096);
        if (v % 8 != 0)
            throw new ArgumentException($"{name} must be a multiple of 8, not {v}");
        return v;
    }
}
