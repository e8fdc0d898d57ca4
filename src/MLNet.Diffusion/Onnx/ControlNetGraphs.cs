using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Text.Json;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// The two graphs of ControlNet's ONNX form (OnnxStack's converter, and the shared tiny export in diffusers' naming): a
/// ControlNet (inputs <c>sample</c>, <c>timestep</c>, <c>encoder_hidden_states</c>, <c>controlnet_cond</c>, optionally
/// <c>conditioning_scale</c>; one output per residual) and a UNet that takes the residuals as extra inputs
/// (<c>down_block_{i}_additional_residual</c>, <c>mid_block_additional_residual</c>). The graphs are told apart by their
/// inputs, never by their folder's name: diffusers' <c>controlnet/</c> is the ControlNet, OnnxStack's <c>controlnet/</c>
/// is the residual UNet. Residual names, channels and sizes are read from the graphs and configs.
/// </summary>
internal static class ControlNetGraphs
{
    public const string MidResidual = "mid_block_additional_residual";
    public const string ControlInput = "controlnet_cond";
    public const string ScaleInput = "conditioning_scale";
    public const string TextEmbedsInput = "text_embeds";
    public const string TimeIdsInput = "time_ids";
    private const string DownPrefix = "down_block_";
    private const string DownSuffix = "_additional_residual";
    private static readonly TensorElementType[] s_floatTypes = { TensorElementType.Float, TensorElementType.Float16 };

    /// <summary>Whether <paramref name="name"/> is a ControlNet residual's name.</summary>
    public static bool IsResidualName(string name) => name == MidResidual || DownIndex(name) >= 0;

    /// <summary>The index i of <c>down_block_{i}_additional_residual</c>, else −1.</summary>
    private static int DownIndex(string name)
    {
        if (!name.StartsWith(DownPrefix, StringComparison.Ordinal) || !name.EndsWith(DownSuffix, StringComparison.Ordinal) || name.Length <= DownPrefix.Length + DownSuffix.Length)
            return -1;
        var digits = name.AsSpan(DownPrefix.Length, name.Length - DownPrefix.Length - DownSuffix.Length);
        return int.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out int i) ? i : -1;
    }

    /// <summary>Whether the graph is a ControlNet (it takes <c>controlnet_cond</c>).</summary>
    public static bool IsControlNet(OnnxComponent graph) => graph.HasInput(ControlInput);

    /// <summary>Whether the graph is a UNet with residual inputs.</summary>
    public static bool TakesResiduals(OnnxComponent graph)
    {
        foreach (string name in graph.Inputs.Keys)
        {
            if (IsResidualName(name))
                return true;
        }
        return false;
    }

    /// <summary>
    /// The residual names of a graph's inputs (a UNet) or outputs (a ControlNet), in order: down 0 … n−1, then mid. Gaps
    /// in the down indexes or a missing mid residual are errors naming the file.
    /// </summary>
    public static string[] ResidualNames(OnnxComponent graph, bool inputs)
    {
        var names = inputs ? graph.Inputs.Keys : graph.Outputs.Keys;
        int count = 0;
        bool mid = false;
        foreach (string name in names)
        {
            if (name == MidResidual)
                mid = true;
            else if (DownIndex(name) >= 0)
                count++;
        }
        string what = inputs ? "inputs" : "outputs";
        var result = new string[count + 1];
        for (int i = 0; i < count; i++)
        {
            string name = DownPrefix + i.ToString(CultureInfo.InvariantCulture) + DownSuffix;
            bool found = false;
            foreach (string n in names)
                found |= n == name;
            if (!found)
                throw new ModelContractException($"'{graph.Path}' has {count} down-block residual {what} but no '{name}' (it has: {string.Join(", ", names)}).");
            result[i] = name;
        }
        if (!mid)
            throw new ModelContractException($"'{graph.Path}' has down-block residual {what} but no '{MidResidual}' (it has: {string.Join(", ", names)}).");
        result[count] = MidResidual;
        return result;
    }

    /// <summary>
    /// The residuals a UNet takes: names from its inputs; channels from their metadata, else a config; the spatial
    /// downscale of each from the first config of <paramref name="configs"/> whose down blocks give that many residuals
    /// (diffusers' UNet2DConditionModel: one for conv_in, then per down block one per resnet plus one for its downsampler,
    /// which every block but the last has), else from a probe run of <paramref name="probe"/>, a ControlNet.
    /// </summary>
    public static ControlNetResidual[] ReadResiduals(OnnxComponent unet, IEnumerable<string> configs, ControlNetProbe? probe)
    {
        var names = ResidualNames(unet, inputs: true);
        foreach (string name in names)
            unet.RequireInput(name, s_floatTypes, 4);
        (int[] Channels, int[] Downscale)? layout = null;
        string? source = null;
        foreach (string config in configs)
        {
            layout = FromConfig(config, names.Length - 1);
            if (layout is not null)
            {
                source = config;
                break;
            }
        }
        layout ??= probe?.Run(names);
        if (layout is not { } found)
        {
            // Unknown until a ControlNet is loaded (Resolve); a run without one then says what is missing.
            var unresolved = new ControlNetResidual[names.Length];
            for (int k = 0; k < names.Length; k++)
                unresolved[k] = new ControlNetResidual(names[k], OnnxComponent.StaticDim(unet.Input(names[k]), 1) ?? 0, 0);
            return unresolved;
        }
        var residuals = new ControlNetResidual[names.Length];
        for (int k = 0; k < names.Length; k++)
        {
            int channels = OnnxComponent.StaticDim(unet.Input(names[k]), 1) ?? found.Channels[k];
            if (channels != found.Channels[k] && found.Channels[k] > 0)
                throw new ModelContractException($"'{unet.Path}' input '{names[k]}' has {channels} channels, but {source ?? "the ControlNet"} gives it {found.Channels[k]}.");
            residuals[k] = new ControlNetResidual(names[k], channels, found.Downscale[k]);
        }
        return residuals;
    }

    /// <summary>Whether every residual's channels and downscale are known.</summary>
    public static bool IsResolved(IReadOnlyList<ControlNetResidual> residuals)
    {
        foreach (var r in residuals)
        {
            if (r.Downscale == 0 || r.Channels == 0)
                return false;
        }
        return true;
    }

    /// <summary>Fills the unknown channels and downscales of <paramref name="residuals"/> from a probe run of a ControlNet; known channels must agree.</summary>
    public static ControlNetResidual[] Resolve(OnnxComponent unet, IReadOnlyList<ControlNetResidual> residuals, string[] outputNames, ControlNetProbe probe)
    {
        var (channels, downscale) = probe.Run(outputNames);
        var result = new ControlNetResidual[residuals.Count];
        for (int k = 0; k < result.Length; k++)
        {
            if (residuals[k].Channels != 0 && residuals[k].Channels != channels[k])
                throw new ModelContractException($"ControlNet output '{outputNames[k]}' has {channels[k]} channels but UNet '{unet.Path}' input '{residuals[k].Name}' takes {residuals[k].Channels}.");
            result[k] = new ControlNetResidual(residuals[k].Name, channels[k], downscale[k]);
        }
        return result;
    }

    /// <summary>
    /// The residual layout a diffusers UNet/ControlNet config gives, or null when the config is absent, lacks the keys or
    /// gives another count: <c>1 + Σ_i (layers_per_block + [i &lt; last])</c> down residuals (block i's at latent / 2^i, its
    /// downsampler's at / 2^(i+1), channels <c>block_out_channels[i]</c>), and the mid one at / 2^(blocks − 1).
    /// </summary>
    internal static (int[] Channels, int[] Downscale)? FromConfig(string path, int downCount)
    {
        if (!File.Exists(path))
            return null;
        using var doc = ModelFolder.ReadJson(path);
        var root = doc.RootElement;
        if (!root.TryGetProperty("block_out_channels", out var boc) || boc.ValueKind != JsonValueKind.Array || boc.GetArrayLength() == 0
            || !root.TryGetProperty("layers_per_block", out var lpb) || lpb.ValueKind != JsonValueKind.Number)
            return null;
        int blocks = boc.GetArrayLength(), layers = lpb.GetInt32();
        var blockChannels = new int[blocks];
        for (int i = 0; i < blocks; i++)
            blockChannels[i] = boc[i].GetInt32();
        if (blocks * (layers + 1) != downCount)
            return null;
        var channels = new int[downCount + 1];
        var downscale = new int[downCount + 1];
        channels[0] = blockChannels[0];
        downscale[0] = 1;
        for (int k = 1; k < downCount; k++)
        {
            int i = (k - 1) / (layers + 1), j = (k - 1) % (layers + 1);
            channels[k] = blockChannels[i];
            downscale[k] = j < layers ? 1 << i : 1 << (i + 1);
        }
        channels[downCount] = blockChannels[^1];
        downscale[downCount] = 1 << (blocks - 1);
        return (channels, downscale);
    }

    /// <summary>
    /// Checks that a ControlNet fits the UNet: its inputs are a ControlNet's, its residual outputs are exactly the UNet's
    /// residual inputs with the same channels, and its text width is the UNet's. Errors name both files.
    /// </summary>
    public static string[] CheckFits(OnnxComponent controlNet, OnnxComponent unet, IReadOnlyList<ControlNetResidual> residuals, int latentChannels, int hiddenSize,
        int? pooledSize = null, int? timeIdsWidth = null)
    {
        if (!IsControlNet(controlNet))
            throw new ModelContractException(TakesResiduals(controlNet)
                ? $"'{controlNet.Path}' is a UNet with ControlNet residual inputs (OnnxStack's controlnet/ UNet), not a ControlNet: a ControlNet takes '{ControlInput}'."
                : $"'{controlNet.Path}' is not a ControlNet: it has no '{ControlInput}' input (it has: {string.Join(", ", controlNet.Inputs.Keys)}).");
        controlNet.RequireInput("sample", s_floatTypes, 4);
        controlNet.RequireInput("timestep", new[] { TensorElementType.Float, TensorElementType.Float16, TensorElementType.Int64 }, 0, 1);
        controlNet.RequireInput("encoder_hidden_states", s_floatTypes, 3);
        controlNet.RequireInput(ControlInput, s_floatTypes, 4);
        if (controlNet.HasInput(ScaleInput))
            controlNet.RequireInput(ScaleInput, new[] { TensorElementType.Double, TensorElementType.Float, TensorElementType.Float16 }, 0, 1);
        if (residuals.Count == 0)
            throw new ModelContractException($"ControlNet '{controlNet.Path}' needs a UNet with residual inputs; '{unet.Path}' takes none (it has: {string.Join(", ", unet.Inputs.Keys)}).");
        string[] outputs;
        try
        {
            outputs = ResidualNames(controlNet, inputs: false);
        }
        catch (ModelContractException e)
        {
            throw new ModelContractException($"ControlNet '{controlNet.Path}' does not fit UNet '{unet.Path}': {e.Message}");
        }
        if (outputs.Length != residuals.Count)
            throw new ModelContractException($"ControlNet '{controlNet.Path}' gives {outputs.Length} residuals ({outputs.Length - 1} down + mid) but UNet '{unet.Path}' takes "
                + $"{residuals.Count} ({residuals.Count - 1} down + mid): they are of different UNet architectures.");
        for (int k = 0; k < outputs.Length; k++)
        {
            controlNet.RequireOutput(outputs[k], s_floatTypes, 4);
            if (OnnxComponent.StaticDim(controlNet.Output(outputs[k]), 1) is int c && residuals[k].Channels != 0 && c != residuals[k].Channels)
                throw new ModelContractException($"ControlNet '{controlNet.Path}' output '{outputs[k]}' has {c} channels but UNet '{unet.Path}' input '{residuals[k].Name}' takes {residuals[k].Channels}.");
        }
        if (OnnxComponent.StaticDim(controlNet.Input("encoder_hidden_states"), 2) is int d && d != hiddenSize)
            throw new ModelContractException($"ControlNet '{controlNet.Path}' takes encoder_hidden_states of width {d} but UNet '{unet.Path}' takes {hiddenSize}.");
        // An SDXL ControlNet (diffusers' ControlNetModel with addition_embed_type "text_time") takes the UNet's added conditions.
        foreach (var (name, width) in new[] { (TextEmbedsInput, pooledSize), (TimeIdsInput, timeIdsWidth) })
        {
            if (!controlNet.HasInput(name))
                continue;
            if (width is null)
                throw new ModelContractException($"ControlNet '{controlNet.Path}' takes '{name}' (SDXL's added conditions: an SDXL ControlNet) but UNet '{unet.Path}' is not an SDXL UNet.");
            controlNet.RequireInput(name, s_floatTypes, 2);
            if (OnnxComponent.StaticDim(controlNet.Input(name), 1) is int n && n != width)
                throw new ModelContractException($"ControlNet '{controlNet.Path}' takes '{name}' of width {n} but UNet '{unet.Path}' takes {width}.");
        }
        if (OnnxComponent.StaticDim(controlNet.Input("sample"), 1) is int s && s != latentChannels)
            throw new ModelContractException($"ControlNet '{controlNet.Path}' takes a sample of {s} channels; the model's latents have {latentChannels}.");
        return outputs;
    }
}

/// <summary>
/// One run of a ControlNet at a 16×16 latent (batch 1, zeros) to learn its residuals' channels and spatial downscale
/// when no config states them.
/// </summary>
internal sealed class ControlNetProbe
{
    private const int Latent = 16;
    private readonly OnnxComponent _controlNet;
    private readonly int _latentChannels;
    private readonly int _vaeFactor;
    private readonly int _sequenceLength;
    private readonly int _hiddenSize;

    public ControlNetProbe(OnnxComponent controlNet, int latentChannels, int vaeFactor, int sequenceLength, int hiddenSize)
    {
        _controlNet = controlNet;
        _latentChannels = latentChannels;
        _vaeFactor = vaeFactor;
        _sequenceLength = sequenceLength;
        _hiddenSize = hiddenSize;
    }

    public (int[] Channels, int[] Downscale) Run(string[] names)
    {
        int image = Latent * _vaeFactor;
        var ts = _controlNet.Input("timestep");
        var buffers = new List<TensorBuffer>
        {
            new(_controlNet.Input("sample").ElementDataType, new long[] { 1, _latentChannels, Latent, Latent }),
            new(ts.ElementDataType, ts.Dimensions.Length == 0 ? Array.Empty<long>() : new long[] { 1 }),
            new(_controlNet.Input("encoder_hidden_states").ElementDataType, new long[] { 1, _sequenceLength, _hiddenSize }),
            new(_controlNet.Input(ControlNetGraphs.ControlInput).ElementDataType, new long[] { 1, 3, image, image }),
        };
        var inputNames = new List<string> { "sample", "timestep", "encoder_hidden_states", ControlNetGraphs.ControlInput };
        foreach (string added in new[] { ControlNetGraphs.TextEmbedsInput, ControlNetGraphs.TimeIdsInput })
        {
            // SDXL's added conditions: zeros of the graph's width (the residuals' sizes do not depend on them).
            if (_controlNet.HasInput(added) && OnnxComponent.StaticDim(_controlNet.Input(added), 1) is int width)
            {
                buffers.Add(new TensorBuffer(_controlNet.Input(added).ElementDataType, new long[] { 1, width }));
                inputNames.Add(added);
            }
        }
        if (_controlNet.HasInput(ControlNetGraphs.ScaleInput))
        {
            var scale = _controlNet.Input(ControlNetGraphs.ScaleInput);
            var b = new TensorBuffer(scale.ElementDataType, scale.Dimensions.Length == 0 ? Array.Empty<long>() : new long[] { 1 });
            b.Fill(1f);
            buffers.Add(b);
            inputNames.Add(ControlNetGraphs.ScaleInput);
        }
        try
        {
            var values = new Microsoft.ML.OnnxRuntime.OrtValue[buffers.Count];
            for (int i = 0; i < values.Length; i++)
                values[i] = buffers[i].Value;
            using var outputs = _controlNet.Run(null, inputNames, values, names);
            var channels = new int[names.Length];
            var downscale = new int[names.Length];
            for (int k = 0; k < names.Length; k++)
            {
                var shape = outputs[k].GetTensorTypeAndShape().Shape;
                if (shape.Length != 4 || shape[2] < 1 || Latent % shape[2] != 0)
                    throw new ModelContractException($"ControlNet '{_controlNet.Path}' output '{names[k]}' has shape [{string.Join(",", shape)}] for a {Latent}×{Latent} latent; expected [1, C, {Latent}/d, {Latent}/d].");
                channels[k] = (int)shape[1];
                downscale[k] = (int)(Latent / shape[2]);
            }
            return (channels, downscale);
        }
        finally
        {
            foreach (var b in buffers)
                b.Dispose();
        }
    }
}
