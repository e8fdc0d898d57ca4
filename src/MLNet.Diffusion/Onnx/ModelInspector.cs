using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Onnx;

/// <summary>The loaded sessions and tokenizers of a folder, as <see cref="ModelInspector"/> checks them.</summary>
/// <param name="Layout">What <see cref="ModelFolder.Validate"/> found.</param>
/// <param name="TextEncoder">text_encoder/ (text_encoder_2/ for the SDXL refiner); null for unconditional models.</param>
/// <param name="TextEncoder2">text_encoder_2/ of an SDXL folder; null otherwise.</param>
/// <param name="Tokenizer">The first text encoder's tokenizer; null for unconditional models.</param>
/// <param name="Tokenizer2">tokenizer_2/ of an SDXL folder; null otherwise.</param>
/// <param name="Unet">unet/.</param>
/// <param name="VaeDecoder">vae_decoder/ (vqvae_decoder/ for a VQ autoencoder); null for pixel-space models.</param>
internal sealed record ModelComponents(FolderLayout Layout, OnnxComponent? TextEncoder, OnnxComponent? TextEncoder2, ClipTokenizer? Tokenizer,
    ClipTokenizer? Tokenizer2, OnnxComponent Unet, OnnxComponent? VaeDecoder)
{
    /// <summary>Whether <see cref="VaeDecoder"/> is a VQ autoencoder's (vqvae_decoder/).</summary>
    public bool VectorQuantized { get; init; }
}

/// <summary>What <see cref="ModelInspector.Inspect"/> found: the model's description and how its text encoders are bound.</summary>
/// <param name="Info">The public description.</param>
/// <param name="TextEncoders">The text encoders in the order their states are concatenated.</param>
internal sealed record ModelInspection(ModelInfo Info, TextEncoderBinding[] TextEncoders);

/// <summary>
/// Reads what a loaded folder says about itself (<see cref="ModelInfo"/>) and checks the input/output contract of each
/// component, naming the file and the node on a mismatch. Each fact comes from the first source that states it: the
/// models' ONNX metadata, then the folder's configs, and only then a probe run of the model (the VAE factor, a text
/// encoder's width) — so the folders that the diffusers/optimum exporters write load without any probe run.
/// </summary>
internal static class ModelInspector
{
    private static readonly TensorElementType[] s_floatTypes = { TensorElementType.Float, TensorElementType.Float16 };
    private static readonly TensorElementType[] s_idTypes = { TensorElementType.Int32, TensorElementType.Int64 };
    // The timestep forms of Stable Diffusion exports: float32 (diffusers/optimum), float16 (--fp16), int64 (some converters).
    private static readonly TensorElementType[] s_timestepTypes = { TensorElementType.Float, TensorElementType.Float16, TensorElementType.Int64 };
    private static readonly string[] s_unetInputs = { "sample", "timestep", "encoder_hidden_states" };
    private static readonly string[] s_sdxlUnetInputs = { "text_embeds", "time_ids" };

    /// <summary>
    /// Reads <c>scheduler/scheduler_config.json</c> with the two corrections diffusers' StableDiffusionPipeline applies
    /// to early SD 1.x folders, with a deprecation warning: <c>steps_offset</c> != 1 becomes 1 and <c>clip_sample</c>
    /// true becomes false (pipeline_stable_diffusion.py, __init__). The same folder must give the same timesteps here.
    /// </summary>
    /// <remarks>
    /// diffusers' LDMPipeline and DDPMPipeline make no such correction: for those kinds (<paramref name="kind"/>) the config
    /// is used as written, <c>clip_sample</c> included (both shared tiny exports set it true).
    /// </remarks>
    public static SchedulerConfig ReadSchedulerConfig(string directory, Action<string> warn, ModelKind kind = ModelKind.StableDiffusion)
    {
        var config = SchedulerConfig.Load(Path.Combine(directory, ModelFolder.SchedulerConfig));
        if (!ModelFolder.IsConditional(kind))
            return config;
        if (config.StepsOffset != 1 && config.TimestepSpacing == "leading" && config.ClassName is not ("LCMScheduler" or null))
        {
            warn($"scheduler_config.json has steps_offset {config.StepsOffset}; using 1 as diffusers' Stable Diffusion pipeline does.");
            config = config with { StepsOffset = 1 };
        }
        if (config.ClipSample)
            warn("scheduler_config.json sets clip_sample true; using false as diffusers' Stable Diffusion pipeline does.");
        // Also when the key is absent: the class default (true for DDIM/DDPM) is what the pipeline turns off.
        return config with { ClipSample = false };
    }

    /// <summary>The UNet's output the loop reads: its only output, else <c>out_sample</c>.</summary>
    public static string UnetOutputName(OnnxComponent unet) => unet.Outputs.Count == 1 ? FirstKey(unet.Outputs) : "out_sample";

    /// <summary>The VAE decoder's image output: its only output, else <c>sample</c>.</summary>
    public static string VaeDecoderOutputName(OnnxComponent vaeDecoder) => vaeDecoder.Outputs.Count == 1 ? FirstKey(vaeDecoder.Outputs) : "sample";

    /// <summary>Checks the components' contract and reads the model's description.</summary>
    /// <param name="c">The loaded components.</param>
    /// <param name="schedulerConfig">The scheduler settings (<see cref="ReadSchedulerConfig"/>).</param>
    /// <param name="vaeScalingFactor">The user's override of the VAE scaling factor, or null to read the config.</param>
    /// <param name="executionProvider">The provider the sessions run on, for <see cref="ModelInfo.ExecutionProvider"/>.</param>
    /// <param name="warn">Receives warnings (a config that disagrees with a model).</param>
    public static ModelInspection Inspect(ModelComponents c, SchedulerConfig schedulerConfig, float? vaeScalingFactor, string executionProvider, Action<string> warn)
    {
        if (!ModelFolder.IsConditional(c.Layout.Kind))
            return InspectUnconditional(c, schedulerConfig, vaeScalingFactor, executionProvider);
        var layout = c.Layout;
        string directory = layout.Directory;
        bool xl = layout.Kind != ModelKind.StableDiffusion;
        var unet = c.Unet;
        var vaeDecoder = c.VaeDecoder!;
        // Text encoders: input_ids [B, L] int32/int64 → states [B, L, D] (SD: last_hidden_state, + optional pooler_output;
        // SDXL: hidden_states.0 … N of which encode_prompt takes hidden_states[-2], + text_embeds [B, P] from text_encoder_2).
        (OnnxComponent Encoder, ClipTokenizer Tokenizer)[] encoders = layout.Kind switch
        {
            ModelKind.StableDiffusionXL => [(c.TextEncoder!, c.Tokenizer!), (c.TextEncoder2!, c.Tokenizer2!)],
            ModelKind.StableDiffusionXLRefiner => [(c.TextEncoder2!, c.Tokenizer2!)],
            _ => [(c.TextEncoder!, c.Tokenizer!)],
        };
        int sequenceLength = -1;
        foreach (var (encoder, tokenizer) in encoders)
        {
            encoder.RequireInput("input_ids", s_idTypes, 2);
            int length = OnnxComponent.StaticDim(encoder.Input("input_ids"), 1) ?? tokenizer.ModelMaxLength;
            if (length != tokenizer.ModelMaxLength)
                throw new ModelContractException($"{encoder.Name} input_ids has sequence length {length} but the tokenizer's model_max_length is {tokenizer.ModelMaxLength}.");
            if (sequenceLength >= 0 && length != sequenceLength)
                throw new ModelContractException($"text_encoder takes {sequenceLength} tokens but {encoder.Name} takes {length}; SDXL concatenates their states token by token, so both must take the same length.");
            sequenceLength = length;
        }

        // UNet: sample [B, C, h, w], timestep [B] / [1] / [], encoder_hidden_states [B, L, D] → out_sample [B, C, h, w];
        // SDXL also text_embeds [B, P] and time_ids [B, 6 or 5] (diffusers added_cond_kwargs; optimum's UNet export inputs).
        unet.RequireInput("sample", s_floatTypes, 4);
        unet.RequireInput("timestep", s_timestepTypes, 0, 1);
        unet.RequireInput("encoder_hidden_states", s_floatTypes, 3);
        unet.RequireOutput(UnetOutputName(unet), s_floatTypes, 4);
        CheckUnetInputs(unet, layout);
        if (xl)
        {
            unet.RequireInput("text_embeds", s_floatTypes, 2);
            unet.RequireInput("time_ids", s_floatTypes, 2);
        }

        // VAE decoder: latent_sample [B, C, h, w] → sample [B, 3, H, W].
        vaeDecoder.RequireInput("latent_sample", s_floatTypes, 4);
        vaeDecoder.RequireOutput(VaeDecoderOutputName(vaeDecoder), s_floatTypes, 4);

        int? unetHidden = OnnxComponent.StaticDim(unet.Input("encoder_hidden_states"), 2);
        var bindings = new TextEncoderBinding[encoders.Length];
        int hidden = 0;
        int? pooled = null;
        for (int e = 0; e < encoders.Length; e++)
        {
            var (encoder, tokenizer) = encoders[e];
            string states = xl ? PenultimateStates(encoder) : "last_hidden_state";
            encoder.RequireOutput(states, s_floatTypes, 3);
            int width = OnnxComponent.StaticDim(encoder.Output(states), 2)
                ?? (encoders.Length == 1 ? unetHidden : null)
                ?? ProbeWidth(encoder, states, sequenceLength);
            string? pooledOutput = xl
                ? (ReferenceEquals(encoder, c.TextEncoder2) ? "text_embeds" : null)
                : (encoder.HasOutput("pooler_output") ? "pooler_output" : null);
            int? pooledWidth = null;
            if (pooledOutput is not null)
            {
                encoder.RequireOutput(pooledOutput, s_floatTypes, 2);
                pooledWidth = OnnxComponent.StaticDim(encoder.Output(pooledOutput), 1)
                    ?? (xl ? OnnxComponent.StaticDim(unet.Input("text_embeds"), 1) : width)
                    ?? ProbeWidth(encoder, pooledOutput, sequenceLength);
                pooled = pooledWidth;
            }
            bindings[e] = new TextEncoderBinding(encoder, tokenizer, states, width, pooledOutput, pooledWidth);
            hidden += width;
        }
        if (unetHidden is int u && u != hidden)
            throw new ModelContractException(encoders.Length == 1
                ? $"{encoders[0].Encoder.Name} produces hidden states of width {hidden} but unet encoder_hidden_states expects {u}."
                : $"text_encoder and text_encoder_2 produce states of widths {bindings[0].HiddenSize} + {bindings[1].HiddenSize} = {hidden} but unet encoder_hidden_states expects {u}.");

        int? timeIdsWidth = null;
        if (xl)
        {
            if (OnnxComponent.StaticDim(unet.Input("text_embeds"), 1) is int unetPooled && unetPooled != pooled)
                throw new ModelContractException($"text_encoder_2 text_embeds has width {pooled} but unet text_embeds expects {unetPooled}.");
            int? staticWidth = OnnxComponent.StaticDim(unet.Input("time_ids"), 1);
            timeIdsWidth = staticWidth ?? (layout.RequiresAestheticsScore ? 5 : 6);
            if (timeIdsWidth is not (5 or 6))
                throw new ModelContractException($"unet/model.onnx time_ids has {timeIdsWidth} values per row; SDXL UNets take 6 (original size, crop top-left, target size) or 5 (original size, crop top-left, aesthetic score).");
            if (staticWidth is int w && (w == 5) != layout.RequiresAestheticsScore)
                warn($"model_index.json sets requires_aesthetics_score {layout.RequiresAestheticsScore.ToString().ToLowerInvariant()} but unet/model.onnx time_ids take {w} values; following the UNet ({(w == 5 ? "aesthetic score" : "target size")}).");
        }

        string vaeConfig = FindVaeConfig(directory);
        // The UNet's output (not its input: an inpainting UNet takes 2C + 1 channels) and the VAE state C.
        int latentChannels = OnnxComponent.StaticDim(unet.Output(UnetOutputName(unet)), 1)
            ?? OnnxComponent.StaticDim(vaeDecoder.Input("latent_sample"), 1)
            ?? (int?)ModelFolder.ReadNumber(vaeConfig, "latent_channels")
            ?? OnnxComponent.StaticDim(unet.Input("sample"), 1)
            ?? throw new ModelContractException("The number of latent channels is not stated by unet/model.onnx, vae_decoder/model.onnx or a VAE config.json.");
        int unetInputChannels = ReadUnetInputChannels(unet, directory, latentChannels);
        int factor = ModelFolder.ReadArrayLength(vaeConfig, "block_out_channels") is int blocks and > 0
            ? 1 << (blocks - 1)
            : StaticVaeFactor(vaeDecoder) ?? ProbeVaeFactor(vaeDecoder, latentChannels);
        float scaling = vaeScalingFactor ?? (float?)ModelFolder.ReadNumber(vaeConfig, "scaling_factor") ?? 0.18215f;
        if (!(scaling > 0) || float.IsInfinity(scaling))
            throw new InvalidDataException($"The VAE scaling factor must be a positive number, not {scaling}.");
        var info = new ModelInfo(directory, latentChannels, factor, hidden, sequenceLength, pooled, scaling, schedulerConfig, executionProvider)
        {
            UnetInputChannels = unetInputChannels,
            Kind = layout.Kind,
            TimeIdsWidth = timeIdsWidth,
            ForceZerosForEmptyPrompt = layout.ForceZerosForEmptyPrompt,
        };
        return new ModelInspection(info, bindings);
    }

    /// <summary>
    /// The unconditional kinds (diffusers LDMPipeline, DDPMPipeline): a <c>UNet2DModel</c> that takes <c>sample</c> [B, C, h, w]
    /// and <c>timestep</c> and returns the noise prediction [B, C, h, w]; for latent diffusion an autoencoder decoder
    /// <c>latent_sample</c> → <c>sample</c> (VQ or KL), for pixel diffusion none (C = 3, factor 1, no scaling).
    /// </summary>
    /// <summary>The low-resolution image channels a super-resolution UNet takes after the latents (RGB).</summary>
    internal const int SuperResolutionImageChannels = 3;

    private static ModelInspection InspectUnconditional(ModelComponents c, SchedulerConfig schedulerConfig, float? vaeScalingFactor, string executionProvider)
    {
        var layout = c.Layout;
        string directory = layout.Directory;
        var unet = c.Unet;
        unet.RequireInput("sample", s_floatTypes, 4);
        unet.RequireInput("timestep", s_timestepTypes, 0, 1);
        unet.RequireOutput(UnetOutputName(unet), s_floatTypes, 4);
        foreach (string name in unet.Inputs.Keys)
        {
            if (name is not ("sample" or "timestep"))
                throw new ModelContractException($"unet/model.onnx has an input '{name}', but model_index.json _class_name '{layout.ClassName}' is an unconditional pipeline, "
                    + $"whose UNet2DModel takes only 'sample' and 'timestep' (the UNet has: {string.Join(", ", unet.Inputs.Keys)}).");
        }
        string unetConfig = Path.Combine(directory, ModelFolder.Unet, "config.json");
        int latentChannels = OnnxComponent.StaticDim(unet.Output(UnetOutputName(unet)), 1)
            ?? (int?)ModelFolder.ReadNumber(unetConfig, "out_channels")
            ?? OnnxComponent.StaticDim(unet.Input("sample"), 1)
            ?? throw new ModelContractException("The UNet's channels are not stated by unet/model.onnx or unet/config.json (out_channels).");
        int inputChannels = OnnxComponent.StaticDim(unet.Input("sample"), 1) ?? (int?)ModelFolder.ReadNumber(unetConfig, "in_channels") ?? latentChannels;
        bool superResolution = layout.Kind == ModelKind.SuperResolution;
        // LDMSuperResolutionPipeline: torch.cat([latents, image], dim=1), the low-resolution RGB image after the latents.
        if (superResolution && inputChannels != latentChannels + SuperResolutionImageChannels)
            throw new ModelContractException($"unet/model.onnx of a super-resolution pipeline ({layout.ClassName}) takes {inputChannels} input channels and predicts {latentChannels}; "
                + $"it must take the latents and the {SuperResolutionImageChannels} channels of the low-resolution image ({latentChannels + SuperResolutionImageChannels}).");
        if (!superResolution && inputChannels != latentChannels)
            throw new ModelContractException($"unet/model.onnx takes {inputChannels} input channels but predicts {latentChannels}; an unconditional UNet2DModel takes as many as it predicts "
                + "(a super-resolution UNet, which also takes the low-resolution image, runs in an LDMSuperResolutionPipeline folder).");
        int factor = 1, codebookSize = 0;
        float scaling = 1f;
        AutoencoderKind autoencoder = AutoencoderKind.None;
        if (layout.Kind == ModelKind.PixelDiffusion)
        {
            if (latentChannels != 3)
                throw new ModelContractException($"unet/model.onnx of a pixel-space pipeline ({layout.ClassName}) predicts {latentChannels} channels; pixel diffusion denoises RGB images (3).");
            if (vaeScalingFactor is not null)
                throw new ArgumentException($"The model folder '{directory}' is a pixel-space diffusion model with no autoencoder; StableDiffusionModelOptions.VaeScalingFactor does not apply.", nameof(vaeScalingFactor));
        }
        else
        {
            var decoder = c.VaeDecoder!;
            string component = c.VectorQuantized ? ModelFolder.VqvaeDecoder : ModelFolder.VaeDecoder;
            decoder.RequireInput("latent_sample", s_floatTypes, 4);
            decoder.RequireOutput(VaeDecoderOutputName(decoder), s_floatTypes, 4);
            if (OnnxComponent.StaticDim(decoder.Input("latent_sample"), 1) is int dc && dc != latentChannels)
                throw new ModelContractException($"{component}/model.onnx takes latents of {dc} channels but the UNet predicts {latentChannels}.");
            string config = Path.Combine(directory, component, "config.json");
            factor = ModelFolder.ReadArrayLength(config, "block_out_channels") is int blocks and > 0
                ? 1 << (blocks - 1)
                : StaticVaeFactor(decoder) ?? ProbeVaeFactor(decoder, latentChannels);
            // diffusers VQModel and AutoencoderKL both default scaling_factor to 0.18215; LDMSuperResolutionPipeline ignores
            // it (image = self.vqvae.decode(latents).sample, no division), so its latents are decoded as they are.
            scaling = vaeScalingFactor ?? (superResolution ? 1f : (float?)ModelFolder.ReadNumber(config, "scaling_factor") ?? 0.18215f);
            if (!(scaling > 0) || float.IsInfinity(scaling))
                throw new InvalidDataException($"The VAE scaling factor must be a positive number, not {scaling}.");
            autoencoder = c.VectorQuantized ? AutoencoderKind.VQ : AutoencoderKind.KL;
            if (c.VectorQuantized)
            {
                codebookSize = (int?)ModelFolder.ReadNumber(config, "num_vq_embeddings") ?? 0;
                double? embedDim = ModelFolder.ReadNumber(config, "vq_embed_dim");
                if (embedDim is double e && e != latentChannels)
                    throw new ModelContractException($"'{config}' sets vq_embed_dim {e}, which differs from the latent channels ({latentChannels}); such a VQModel quantises after a projection this library does not run.");
            }
        }
        var info = new ModelInfo(directory, latentChannels, factor, 0, 0, null, scaling, schedulerConfig, executionProvider)
        {
            UnetInputChannels = inputChannels,
            Kind = layout.Kind,
            IsConditional = false,
            Autoencoder = autoencoder,
            CodebookSize = codebookSize > 0 ? codebookSize : null,
        };
        return new ModelInspection(info, Array.Empty<TextEncoderBinding>());
    }

    /// <summary>
    /// The UNet's <c>sample</c> channels: C for text-to-image, 2C + 1 for an inpainting UNet (latents, mask, masked-image
    /// latents; diffusers StableDiffusionInpaintPipeline). From the model's metadata, else <c>unet/config.json</c>'s
    /// <c>in_channels</c>, else C.
    /// </summary>
    private static int ReadUnetInputChannels(OnnxComponent unet, string directory, int latentChannels)
    {
        int channels = OnnxComponent.StaticDim(unet.Input("sample"), 1)
            ?? (int?)ModelFolder.ReadNumber(Path.Combine(directory, ModelFolder.Unet, "config.json"), "in_channels")
            ?? latentChannels;
        if (channels != latentChannels && channels != 2 * latentChannels + 1)
            throw new ModelContractException($"unet/model.onnx input 'sample' has {channels} channels; expected {latentChannels} (the latent channels) or {2 * latentChannels + 1} (an inpainting UNet: latents, mask, masked-image latents).");
        return channels;
    }

    /// <summary>
    /// Every UNet input must be one the denoising loop feeds: an SD UNet with SDXL's added inputs, an SDXL UNet without
    /// them, or an input of another family (LCM's <c>timestep_cond</c>, …) fails here, named; ControlNet residual inputs are fed (<see cref="ControlNetGraphs"/>).
    /// </summary>
    private static void CheckUnetInputs(OnnxComponent unet, FolderLayout layout)
    {
        string Has() => string.Join(", ", unet.Inputs.Keys);
        bool TextEncoder2Exists() => File.Exists(ModelFolder.ModelPath(layout.Directory, ModelFolder.TextEncoder2));
        string From() => layout.ClassName is null ? string.Empty : $", model_index.json _class_name '{layout.ClassName}'";
        bool xl = layout.Kind != ModelKind.StableDiffusion;
        foreach (string added in s_sdxlUnetInputs)
        {
            if (xl && !unet.HasInput(added))
                throw new ModelContractException($"unet/model.onnx has no input '{added}', which an SDXL UNet takes (diffusers added_cond_kwargs text_embeds and time_ids; "
                    + $"folder loaded as {ModelFolder.Describe(layout.Kind)}{From()}). It has: {Has()}.");
            if (!xl && unet.HasInput(added))
                throw new ModelContractException($"unet/model.onnx takes '{added}', an SDXL UNet input, but the folder loads as Stable Diffusion 1.x/2.x ("
                    + (TextEncoder2Exists() ? $"model_index.json _class_name '{layout.ClassName}' names a Stable Diffusion pipeline" : $"no text_encoder_2/{From()}") + "). "
                    + "Use the complete SDXL export (text_encoder_2/, tokenizer_2/, model_index.json of StableDiffusionXLPipeline).");
        }
        foreach (string name in unet.Inputs.Keys)
        {
            // ControlNet residual inputs (down_block_{i}_additional_residual, mid_block_additional_residual) are fed by
            // ControlNetConditioning: a ControlNet's residuals, or zeros without one.
            if (Array.IndexOf(s_unetInputs, name) >= 0 || (xl && Array.IndexOf(s_sdxlUnetInputs, name) >= 0) || ControlNetGraphs.IsResidualName(name))
                continue;
            string hint = name == "timestep_cond" ? " ('timestep_cond' is the guidance-scale embedding of LCM-distilled UNets, unet config time_cond_proj_dim.)" : string.Empty;
            throw new ModelContractException($"unet/model.onnx has an input '{name}' that MLNet.Diffusion cannot feed: it feeds {string.Join(", ", s_unetInputs)}"
                + (xl ? $", {string.Join(", ", s_sdxlUnetInputs)}" : string.Empty) + $" (the UNet has: {Has()}).{hint}");
        }
    }

    /// <summary>
    /// The penultimate layer's states of an SDXL text encoder: of the outputs <c>hidden_states.0 … hidden_states.N</c>
    /// (embeddings, then each layer; optimum's export with output_hidden_states), <c>hidden_states.{N−1}</c> — diffusers'
    /// <c>hidden_states[-2]</c> in StableDiffusionXLPipeline.encode_prompt.
    /// </summary>
    private static string PenultimateStates(OnnxComponent encoder)
    {
        const string prefix = "hidden_states.";
        int last = -1;
        foreach (string name in encoder.Outputs.Keys)
        {
            if (name.StartsWith(prefix, StringComparison.Ordinal)
                && int.TryParse(name.AsSpan(prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int k) && k > last)
                last = k;
        }
        if (last < 1)
            throw new ModelContractException($"{encoder.Name}/model.onnx has no outputs 'hidden_states.0' … 'hidden_states.N' (it has: {string.Join(", ", encoder.Outputs.Keys)}). "
                + "SDXL conditions the UNet on the penultimate layer's hidden states (diffusers encode_prompt: hidden_states[-2]); export the text encoders "
                + "with their hidden states, as optimum-cli export onnx does for SDXL.");
        return prefix + (last - 1).ToString(CultureInfo.InvariantCulture);
    }

    private static string FirstKey(IReadOnlyDictionary<string, NodeMetadata> d)
    {
        foreach (var kv in d)
            return kv.Key;
        throw new ModelContractException("A model has no outputs.");
    }

    private static string FindVaeConfig(string directory)
    {
        foreach (string candidate in new[] { "vae_decoder/config.json", "vae/config.json" })
        {
            string p = Path.Combine(directory, candidate);
            if (File.Exists(p))
                return p;
        }
        return Path.Combine(directory, "vae_decoder/config.json");
    }

    /// <summary>
    /// The VAE factor from the decoder's metadata when both its input and its output have static spatial sizes (an export
    /// for one resolution): output height / latent height. Null when either is symbolic (the usual dynamic export).
    /// </summary>
    private static int? StaticVaeFactor(OnnxComponent vaeDecoder)
    {
        int? latent = OnnxComponent.StaticDim(vaeDecoder.Input("latent_sample"), 2);
        int? image = OnnxComponent.StaticDim(vaeDecoder.Output(VaeDecoderOutputName(vaeDecoder)), 2);
        return latent is int h && image is int H && H % h == 0 ? H / h : null;
    }

    /// <summary>Runs the VAE decoder once on an 8×8 zero latent to learn its spatial factor when neither config nor metadata states it.</summary>
    private static int ProbeVaeFactor(OnnxComponent vaeDecoder, int channels)
    {
        var type = vaeDecoder.Input("latent_sample").ElementDataType;
        using var input = new TensorBuffer(type, new long[] { 1, channels, 8, 8 });
        using var outputs = vaeDecoder.Run(null, new[] { "latent_sample" }, new[] { input.Value }, new[] { VaeDecoderOutputName(vaeDecoder) });
        var shape = outputs[0].GetTensorTypeAndShape().Shape;
        if (shape.Length != 4 || shape[2] % 8 != 0 || shape[2] < 8)
            throw new ModelContractException($"vae_decoder returned shape [{string.Join(",", shape)}] for an 8×8 latent; expected [1, 3, 8·f, 8·f].");
        return (int)(shape[2] / 8);
    }

    /// <summary>Runs a text encoder once on zero ids to learn the last dimension of an output its metadata leaves symbolic.</summary>
    private static int ProbeWidth(OnnxComponent encoder, string output, int sequenceLength)
    {
        using var ids = new TensorBuffer(encoder.Input("input_ids").ElementDataType, new long[] { 1, sequenceLength });
        using var outputs = encoder.Run(null, new[] { "input_ids" }, new[] { ids.Value }, new[] { output });
        return (int)outputs[0].GetTensorTypeAndShape().Shape[^1];
    }
}
