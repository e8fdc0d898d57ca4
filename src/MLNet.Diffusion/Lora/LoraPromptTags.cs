using System;
using System.Collections.Generic;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace MLNet.Diffusion.Lora;

/// <summary>A LoRA named in a prompt: <c>&lt;lora:name:scale&gt;</c>.</summary>
/// <param name="Name">The file name without extension, looked up in the LoRA folder.</param>
/// <param name="Scale">The multiplier (1 when the tag gives none).</param>
internal readonly record struct LoraPromptTag(string Name, float Scale);

/// <summary>
/// AUTOMATIC1111's extra-network tags for LoRA in prompt text: <c>&lt;lora:name&gt;</c> and <c>&lt;lora:name:0.8&gt;</c>
/// (stable-diffusion-webui <c>modules/extra_networks.py</c> <c>re_extra_net = &lt;(\w+):([^&gt;]+)&gt;</c>, parameters split
/// on ':'; the Lora extension reads the first as the name and the second as the multiplier, default 1.0). The tags are
/// removed from the text before it is tokenized, as A1111's <c>parse_prompts</c> does. A1111's optional third value
/// (a separate UNet multiplier) and named parameters are refused rather than misread.
/// </summary>
internal static class LoraPromptTags
{
    private static readonly Regex s_tag = new(@"<lora:([^>]+)>", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase);

    /// <summary>Whether <paramref name="text"/> holds a LoRA tag (cheap test before <see cref="Extract"/>).</summary>
    public static bool Contains(string text) => text.Contains("<lora:", StringComparison.OrdinalIgnoreCase);

    /// <summary>
    /// Removes the LoRA tags from <paramref name="text"/> and adds them to <paramref name="tags"/>; returns the text
    /// without them. <paramref name="where"/> names the row for errors.
    /// </summary>
    /// <exception cref="FormatException">A tag has no name, a scale that is not a finite number, or more than two parts.</exception>
    public static string Extract(string text, List<LoraPromptTag> tags, string where)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (!Contains(text))
            return text;
        return s_tag.Replace(text, match =>
        {
            string[] parts = match.Groups[1].Value.Split(':');
            string name = parts[0].Trim();
            if (name.Length == 0)
                throw new FormatException($"{where}: LoRA tag '{match.Value}' has no name.");
            if (parts.Length > 2)
                throw new FormatException($"{where}: LoRA tag '{match.Value}' has {parts.Length} parts; this library reads <lora:name> and <lora:name:scale> (one multiplier for the text encoder and the UNet).");
            float scale = 1f;
            if (parts.Length == 2 && !(float.TryParse(parts[1].Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out scale) && float.IsFinite(scale)))
                throw new FormatException($"{where}: LoRA tag '{match.Value}' has scale '{parts[1]}', which is not a finite number.");
            tags.Add(new LoraPromptTag(name, scale));
            return "";
        });
    }

    /// <summary>The tags as A1111 text (<c>&lt;lora:a:0.8&gt;&lt;lora:b:1&gt;</c>), the form the LoRA-set column carries; "" for none.</summary>
    public static string Format(IReadOnlyList<LoraPromptTag> tags)
    {
        if (tags.Count == 0)
            return "";
        var text = new StringBuilder();
        foreach (var tag in tags)
            text.Append("<lora:").Append(tag.Name).Append(':').Append(tag.Scale.ToString("R", CultureInfo.InvariantCulture)).Append('>');
        return text.ToString();
    }
}
