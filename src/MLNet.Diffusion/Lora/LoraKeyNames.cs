using System;
using System.Collections.Generic;
using System.Globalization;

namespace MLNet.Diffusion.Lora;

/// <summary>
/// Turns kohya's flattened module names (<c>down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q</c>, the key
/// without its <c>lora_unet_</c>/<c>lora_te_</c> prefix) back into diffusers module paths, including the original
/// Stable Diffusion (SGM/LDM) layout kohya uses for SDXL (<c>input_blocks_4_1_…</c>, <c>middle_block_1_…</c>,
/// <c>output_blocks_2_2_conv</c>) mapped as diffusers maps it.
/// </summary>
/// <remarks>
/// Flattening loses which underscores were dots, so this is a reconstruction: segments are rebuilt greedily from the
/// module names that contain underscores in the diffusers UNet and the CLIP text models. It is the name reported to
/// users; matching against a graph falls back to comparing flattened names (<see cref="LoraTargetIndex"/>), which
/// needs no vocabulary. The SGM block arithmetic follows diffusers <c>_maybe_map_sgm_blocks_to_diffusers</c> and the
/// per-layer renames <c>_convert_unet_lora_key</c> (loaders/lora_conversion_utils.py): input block n holds layer
/// (n−1) mod (L+1) of down block (n−1) div (L+1), output block n layer n mod (L+1) of up block n div (L+1), where L is
/// the UNet's <c>layers_per_block</c> (2 for SD 1.x/2.x and SDXL).
/// </remarks>
internal static class LoraKeyNames
{
    // Module names with underscores, longest first within each leading word so the greedy match takes the longest.
    private static readonly string[][] s_compounds =
    [
        ["time", "emb", "proj"], ["final", "layer", "norm"],
        ["down", "blocks"], ["up", "blocks"], ["mid", "block"], ["transformer", "blocks"],
        ["to", "q"], ["to", "k"], ["to", "v"], ["to", "out"],
        ["proj", "in"], ["proj", "out"], ["conv", "shortcut"], ["conv", "in"], ["conv", "out"],
        ["time", "embedding"], ["time", "embed"], ["linear", "1"], ["linear", "2"], ["add", "embedding"],
        ["text", "model"], ["text", "projection"], ["self", "attn"],
        ["q", "proj"], ["k", "proj"], ["v", "proj"], ["out", "proj"],
        ["layer", "norm1"], ["layer", "norm2"], ["position", "embedding"], ["token", "embedding"],
        ["input", "blocks"], ["middle", "block"], ["output", "blocks"],
        ["in", "layers"], ["out", "layers"], ["emb", "layers"], ["skip", "connection"], ["label", "emb"],
    ];

    /// <summary>
    /// The diffusers module path for kohya's flattened <paramref name="flatName"/>; SGM block names are remapped with
    /// <paramref name="layersPerBlock"/>. Throws <see cref="FormatException"/> for an SGM block index that cannot exist.
    /// </summary>
    public static string ToModulePath(string flatName, int layersPerBlock = 2)
    {
        var segments = Segment(flatName);
        if (segments.Count > 0 && segments[0] is "input_blocks" or "middle_block" or "output_blocks" or "time_embed" or "label_emb" or "out")
            segments = FromSgm(flatName, segments, layersPerBlock);
        return string.Join('.', segments);
    }

    /// <summary>A module path flattened as kohya flattens it: every '.' written '_'.</summary>
    public static string Flatten(string modulePath) => modulePath.Replace('.', '_');

    private static List<string> Segment(string flatName)
    {
        string[] tokens = flatName.Split('_');
        var segments = new List<string>(tokens.Length);
        for (int i = 0; i < tokens.Length;)
        {
            int taken = 1;
            foreach (var compound in s_compounds)
            {
                if (compound.Length > taken && Matches(tokens, i, compound))
                    taken = compound.Length;
            }
            segments.Add(string.Join('_', tokens, i, taken));
            i += taken;
        }
        return segments;
    }

    private static bool Matches(string[] tokens, int start, string[] compound)
    {
        if (start + compound.Length > tokens.Length)
            return false;
        for (int k = 0; k < compound.Length; k++)
        {
            if (!string.Equals(tokens[start + k], compound[k], StringComparison.Ordinal))
                return false;
        }
        return true;
    }

    private static List<string> FromSgm(string flatName, List<string> s, int layersPerBlock)
    {
        int group = layersPerBlock + 1;
        switch (s[0])
        {
            case "time_embed" when s.Count == 2 && s[1] is "0" or "2":
                return ["time_embedding", s[1] == "0" ? "linear_1" : "linear_2"];
            case "label_emb" when s.Count == 3 && s[1] == "0" && s[2] is "0" or "2":
                return ["add_embedding", s[2] == "0" ? "linear_1" : "linear_2"];
            case "out" when s.Count == 2 && s[1] == "2":
                return ["conv_out"];
            case "input_blocks" when s.Count >= 3:
            {
                int n = Index(flatName, s[1]), m = Index(flatName, s[2]);
                if (n == 0 && m == 0 && s.Count == 3)
                    return ["conv_in"];
                if (n == 0)
                    break;
                string block = ((n - 1) / group).ToString(CultureInfo.InvariantCulture);
                string layer = ((n - 1) % group).ToString(CultureInfo.InvariantCulture);
                var rest = s.GetRange(3, s.Count - 3);
                if (rest.Count == 1 && rest[0] == "op")
                    return ["down_blocks", block, "downsamplers", "0", "conv"];
                if (m > 1)
                    break;
                return Join(["down_blocks", block, m == 0 ? "resnets" : "attentions", layer], rest);
            }
            case "middle_block" when s.Count >= 2:
            {
                var rest = s.GetRange(2, s.Count - 2);
                return Index(flatName, s[1]) switch
                {
                    0 => Join(["mid_block", "resnets", "0"], rest),
                    1 => Join(["mid_block", "attentions", "0"], rest),
                    2 => Join(["mid_block", "resnets", "1"], rest),
                    _ => throw new FormatException($"LoRA module '{flatName}' names middle block {s[1]}; the SD UNet's middle block has 3 layers (0–2)."),
                };
            }
            case "output_blocks" when s.Count >= 3:
            {
                int n = Index(flatName, s[1]), m = Index(flatName, s[2]);
                string block = (n / group).ToString(CultureInfo.InvariantCulture);
                string layer = (n % group).ToString(CultureInfo.InvariantCulture);
                var rest = s.GetRange(3, s.Count - 3);
                // An Upsample holds only `conv`: at index 2 after a resnet and an attention, or at index 1 in a
                // block without attention (SD 1.x up_blocks.0), which diffusers' index table would call attentions.
                if ((m == 2 || m == 1) && rest.Count == 1 && rest[0] == "conv")
                    return ["up_blocks", block, "upsamplers", "0", "conv"];
                if (m > 1)
                    break;
                return Join(["up_blocks", block, m == 0 ? "resnets" : "attentions", layer], rest);
            }
        }
        throw new FormatException($"LoRA module '{flatName}' uses original Stable Diffusion (SGM) block names that have no diffusers equivalent.");
    }

    private static List<string> Join(List<string> head, List<string> rest)
    {
        // ResBlock internals (ldm openaimodel.ResBlock) → diffusers ResnetBlock2D.
        if (rest.Count == 2 && rest[0] == "in_layers" && rest[1] == "2")
            rest = ["conv1"];
        else if (rest.Count == 2 && rest[0] == "out_layers" && rest[1] == "3")
            rest = ["conv2"];
        else if (rest.Count == 2 && rest[0] == "emb_layers" && rest[1] == "1")
            rest = ["time_emb_proj"];
        else if (rest.Count == 1 && rest[0] == "skip_connection")
            rest = ["conv_shortcut"];
        head.AddRange(rest);
        return head;
    }

    private static int Index(string flatName, string segment)
    {
        if (!int.TryParse(segment, NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value > 1000)
            throw new FormatException($"LoRA module '{flatName}' has '{segment}' where a block index belongs.");
        return value;
    }
}
