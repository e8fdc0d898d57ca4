using System;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;
using Microsoft.ML.Transforms.Image;

namespace MLNet.Diffusion.Transforms;

// The row types and factories of the saved surrogates (PersistenceSurrogate). ML.NET finds a factory by its contract
// name in this assembly when a saved model is loaded, in any MLContext, with no registration. Member names are the
// surrogate's fixed column names; changing them breaks saved models, so a new layout gets a new contract (".v2").
#pragma warning disable SA1300, IDE1006 // Member names are column names.

/// <summary>Input of the EncodePrompt surrogate.</summary>
internal sealed class EncodeSource
{
    public string __sd_config { get; set; } = string.Empty;

    public string __sd_prompt { get; set; } = string.Empty;

    public string __sd_negative { get; set; } = string.Empty;
}

/// <summary>Output of the EncodePrompt surrogate.</summary>
internal sealed class EncodeResult
{
    public float[] __sd_out0 { get; set; } = Array.Empty<float>();

    public float[] __sd_out1 { get; set; } = Array.Empty<float>();
}

/// <summary>Input of the DenoiseLatents surrogate without a seed column (the config is a per-slot vector of one string).</summary>
internal class DenoiseSource
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_embeddings { get; set; } = Array.Empty<float>();

    public float[] __sd_noise { get; set; } = Array.Empty<float>();
}

/// <summary>Input of the DenoiseLatents surrogate with a seed column (converted to Int64).</summary>
internal sealed class SeededDenoiseSource : DenoiseSource
{
    public long __sd_seed { get; set; }
}

/// <summary>Input of the SDXL DenoiseLatents surrogate without a seed column: also the pooled prompt column.</summary>
internal class SdxlDenoiseSource : DenoiseSource
{
    public float[] __sd_pooled { get; set; } = Array.Empty<float>();
}

/// <summary>Input of the SDXL DenoiseLatents surrogate with a seed column (converted to Int64).</summary>
internal sealed class SeededSdxlDenoiseSource : SdxlDenoiseSource
{
    public long __sd_seed { get; set; }
}

/// <summary>Input of the image-to-image DenoiseLatents surrogate (initial latents) without a seed column.</summary>
internal class ImageDenoiseSource : DenoiseSource
{
    public float[] __sd_init { get; set; } = Array.Empty<float>();
}

/// <summary>Input of the image-to-image DenoiseLatents surrogate with a seed column.</summary>
internal sealed class SeededImageDenoiseSource : ImageDenoiseSource
{
    public long __sd_seed { get; set; }
}

/// <summary>Input of the SDXL image-to-image DenoiseLatents surrogate (initial latents and the pooled prompt column) without a seed column.</summary>
internal class SdxlImageDenoiseSource : ImageDenoiseSource
{
    public float[] __sd_pooled { get; set; } = Array.Empty<float>();
}

/// <summary>Input of the SDXL image-to-image DenoiseLatents surrogate with a seed column.</summary>
internal sealed class SeededSdxlImageDenoiseSource : SdxlImageDenoiseSource
{
    public long __sd_seed { get; set; }
}

/// <summary>Input of the inpainting DenoiseLatents surrogate (mask, masked-image latents) without a seed column.</summary>
internal class InpaintDenoiseSource : ImageDenoiseSource
{
    public float[] __sd_mask { get; set; } = Array.Empty<float>();

    public float[] __sd_masked { get; set; } = Array.Empty<float>();

    public float[] __sd_pooled { get; set; } = Array.Empty<float>();
}

/// <summary>Input of the inpainting DenoiseLatents surrogate with a seed column.</summary>
internal sealed class SeededInpaintDenoiseSource : InpaintDenoiseSource
{
    public long __sd_seed { get; set; }
}

/// <summary>Input of the PrepareInpainting surrogate (a scalar configuration, as EncodeImage's).</summary>
internal class PrepareInpaintingSource
{
    public string __sd_config { get; set; } = string.Empty;

    [AnySizeImageType]
    public MLImage? __sd_source { get; set; }

    [AnySizeImageType]
    public MLImage? __sd_mask_image { get; set; }
}

/// <summary>Input of the PrepareInpainting surrogate with a seed column.</summary>
internal sealed class SeededPrepareInpaintingSource : PrepareInpaintingSource
{
    public long __sd_seed { get; set; }
}

/// <summary>Output of the PrepareInpainting surrogate: the latent mask and the masked-image latents (empty when not configured).</summary>
internal sealed class PrepareInpaintingResult
{
    public float[] __sd_out0 { get; set; } = Array.Empty<float>();

    public float[] __sd_out1 { get; set; } = Array.Empty<float>();
}

/// <summary>Output of the DenoiseLatents, EncodeImage surrogates.</summary>
internal sealed class DenoiseResult
{
    public float[] __sd_out0 { get; set; } = Array.Empty<float>();
}

/// <summary>Input of the DecodeLatents surrogate.</summary>
internal sealed class DecodeSource
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_latents { get; set; } = Array.Empty<float>();
}

/// <summary>Output of the DecodeLatents surrogate.</summary>
internal sealed class DecodeResult
{
    /// <summary>ML.NET needs a size to type an image member; 1×1 stands for "any size", as in the stages' schema shapes.</summary>
    [ImageType(1, 1)]
    public MLImage? __sd_image { get; set; }

    public float[] __sd_out1 { get; set; } = Array.Empty<float>();
}

/// <summary>
/// Input of the EncodeImage surrogate. The configuration is a scalar string: its key is a scalar column, as ML.NET's
/// Expression transform reads no images.
/// </summary>
internal class EncodeImageSource
{
    public string __sd_config { get; set; } = string.Empty;

    [AnySizeImageType]
    public MLImage? __sd_source { get; set; }
}

/// <summary>Input of the EncodeImage surrogate with a seed column.</summary>
internal sealed class SeededEncodeImageSource : EncodeImageSource
{
    public long __sd_seed { get; set; }
}

/// <summary>Input of the AddDiffusionNoise surrogate with neither a seed nor a timestep column.</summary>
internal class NoiseSource
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_latents { get; set; } = Array.Empty<float>();
}

/// <summary>Input of the AddDiffusionNoise surrogate with a seed column.</summary>
internal class SeededNoiseSource : NoiseSource
{
    public long __sd_seed { get; set; }
}

/// <summary>Input of the AddDiffusionNoise surrogate with a timestep column.</summary>
internal sealed class TimedNoiseSource : NoiseSource
{
    public long __sd_timestep { get; set; }
}

/// <summary>Input of the AddDiffusionNoise surrogate with a seed and a timestep column.</summary>
internal sealed class SeededTimedNoiseSource : SeededNoiseSource
{
    public long __sd_timestep { get; set; }
}

/// <summary>Output of the AddDiffusionNoise surrogate: x_t and ε.</summary>
internal sealed class NoiseResult
{
    public float[] __sd_out0 { get; set; } = Array.Empty<float>();

    public float[] __sd_out1 { get; set; } = Array.Empty<float>();
}

#pragma warning restore SA1300, IDE1006

/// <summary>
/// Types an <see cref="MLImage"/> member as an image of any size (<c>new ImageDataViewType()</c>, what LoadImages and
/// DecodeLatents produce). ML.NET's own <see cref="ImageTypeAttribute"/> needs a positive size, and a typed cursor
/// rejects an image column whose type no attribute registered; sized image columns are accepted as well.
/// </summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Field)]
internal sealed class AnySizeImageTypeAttribute : DataViewTypeAttribute
{
    public override void Register() => DataViewTypeManager.Register(new ImageDataViewType(), typeof(MLImage), this);

    public override bool Equals(DataViewTypeAttribute other) => other is AnySizeImageTypeAttribute;

    public override bool Equals(object? obj) => obj is AnySizeImageTypeAttribute;

    public override int GetHashCode() => typeof(AnySizeImageTypeAttribute).GetHashCode();
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.EncodeContract)]
internal sealed class EncodeMappingFactory : StatefulCustomMappingFactory<EncodeSource, EncodeResult, SurrogateState>
{
    public override Action<EncodeSource, EncodeResult, SurrogateState> GetMapping() => (src, dst, state) =>
    {
        var runner = state.RunnerFor(src.__sd_config);
        runner.Advance(state.Count++);
        runner.Set(PersistenceSurrogate.Prompt, src.__sd_prompt);
        runner.Set(PersistenceSurrogate.Negative, src.__sd_negative);
        dst.__sd_out0 = runner.ReadVector(PersistenceSurrogate.Output0);
        dst.__sd_out1 = runner.Has(PersistenceSurrogate.Output1) ? runner.ReadVector(PersistenceSurrogate.Output1) : Array.Empty<float>();
    };

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.DenoiseContract)]
internal sealed class DenoiseMappingFactory : StatefulCustomMappingFactory<DenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<DenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) => Map(src, dst, state, null);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;

    internal static void Map(DenoiseSource src, DenoiseResult dst, SurrogateState state, long? seed, float[]? pooled = null)
    {
        var runner = state.RunnerFor(FirstConfig(src.__sd_config));
        runner.Advance(state.Count++);
        runner.Set(PersistenceSurrogate.Embeddings, src.__sd_embeddings);
        runner.Set(PersistenceSurrogate.Noise, src.__sd_noise);
        runner.Set(PersistenceSurrogate.InitialLatents, src is ImageDenoiseSource image ? image.__sd_init : Array.Empty<float>());
        runner.Set(PersistenceSurrogate.Mask, src is InpaintDenoiseSource inpaint ? inpaint.__sd_mask : Array.Empty<float>());
        runner.Set(PersistenceSurrogate.MaskedLatents, src is InpaintDenoiseSource masked ? masked.__sd_masked : Array.Empty<float>());
        runner.Set(PersistenceSurrogate.Seed, seed ?? 0L);
        if (pooled is not null)
            runner.Set(PersistenceSurrogate.Pooled, pooled);
        dst.__sd_out0 = runner.ReadVector(PersistenceSurrogate.Output0);
    }

    internal static string FirstConfig(string[] config) => config.Length > 0 ? config[0]
        : throw new InvalidOperationException("The saved diffusion stage's configuration column is empty: its input vector has no values.");
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededDenoiseContract)]
internal sealed class SeededDenoiseMappingFactory : StatefulCustomMappingFactory<SeededDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<SeededDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        DenoiseMappingFactory.Map(src, dst, state, src.__sd_seed);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SdxlDenoiseContract)]
internal sealed class SdxlDenoiseMappingFactory : StatefulCustomMappingFactory<SdxlDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<SdxlDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        DenoiseMappingFactory.Map(src, dst, state, null, src.__sd_pooled);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededSdxlDenoiseContract)]
internal sealed class SeededSdxlDenoiseMappingFactory : StatefulCustomMappingFactory<SeededSdxlDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<SeededSdxlDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        DenoiseMappingFactory.Map(src, dst, state, src.__sd_seed, src.__sd_pooled);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.DecodeContract)]
internal sealed class DecodeMappingFactory : StatefulCustomMappingFactory<DecodeSource, DecodeResult, SurrogateState>
{
    public override Action<DecodeSource, DecodeResult, SurrogateState> GetMapping() => (src, dst, state) =>
    {
        var runner = state.RunnerFor(DenoiseMappingFactory.FirstConfig(src.__sd_config));
        runner.Advance(state.Count++);
        runner.Set(PersistenceSurrogate.Latents, src.__sd_latents);
        dst.__sd_image = runner.ReadImage(PersistenceSurrogate.Image);
        dst.__sd_out1 = runner.Has(PersistenceSurrogate.Output1) ? runner.ReadVector(PersistenceSurrogate.Output1) : Array.Empty<float>();
    };

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.ImageDenoiseContract)]
internal sealed class ImageDenoiseMappingFactory : StatefulCustomMappingFactory<ImageDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<ImageDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) => DenoiseMappingFactory.Map(src, dst, state, null);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededImageDenoiseContract)]
internal sealed class SeededImageDenoiseMappingFactory : StatefulCustomMappingFactory<SeededImageDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<SeededImageDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        DenoiseMappingFactory.Map(src, dst, state, src.__sd_seed);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.EncodeImageContract)]
internal sealed class EncodeImageMappingFactory : StatefulCustomMappingFactory<EncodeImageSource, DenoiseResult, SurrogateState>
{
    public override Action<EncodeImageSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) => Map(src, dst, state, null);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;

    internal static void Map(EncodeImageSource src, DenoiseResult dst, SurrogateState state, long? seed)
    {
        var runner = state.RunnerFor(src.__sd_config);
        runner.Advance(state.Count++);
        runner.Set(PersistenceSurrogate.SourceImage, src.__sd_source
            ?? throw new InvalidOperationException($"Row {state.Count - 1}: the saved EncodeImage stage's image column has no image (null)."));
        runner.Set(PersistenceSurrogate.Seed, seed ?? 0L);
        dst.__sd_out0 = runner.ReadVector(PersistenceSurrogate.Output0);
    }
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededEncodeImageContract)]
internal sealed class SeededEncodeImageMappingFactory : StatefulCustomMappingFactory<SeededEncodeImageSource, DenoiseResult, SurrogateState>
{
    public override Action<SeededEncodeImageSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        EncodeImageMappingFactory.Map(src, dst, state, src.__sd_seed);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.NoiseContract)]
internal sealed class NoiseMappingFactory : StatefulCustomMappingFactory<NoiseSource, NoiseResult, SurrogateState>
{
    public override Action<NoiseSource, NoiseResult, SurrogateState> GetMapping() => (src, dst, state) => Map(src, dst, state, null, null);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;

    internal static void Map(NoiseSource src, NoiseResult dst, SurrogateState state, long? seed, long? timestep)
    {
        var runner = state.RunnerFor(DenoiseMappingFactory.FirstConfig(src.__sd_config));
        runner.Advance(state.Count++);
        runner.Set(PersistenceSurrogate.Latents, src.__sd_latents);
        runner.Set(PersistenceSurrogate.Seed, seed ?? 0L);
        runner.Set(PersistenceSurrogate.Timestep, timestep ?? 0L);
        dst.__sd_out0 = runner.ReadVector(PersistenceSurrogate.Output0);
        dst.__sd_out1 = runner.Has(PersistenceSurrogate.Output1) ? runner.ReadVector(PersistenceSurrogate.Output1) : Array.Empty<float>();
    }
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededNoiseContract)]
internal sealed class SeededNoiseMappingFactory : StatefulCustomMappingFactory<SeededNoiseSource, NoiseResult, SurrogateState>
{
    public override Action<SeededNoiseSource, NoiseResult, SurrogateState> GetMapping() => (src, dst, state) => NoiseMappingFactory.Map(src, dst, state, src.__sd_seed, null);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.TimedNoiseContract)]
internal sealed class TimedNoiseMappingFactory : StatefulCustomMappingFactory<TimedNoiseSource, NoiseResult, SurrogateState>
{
    public override Action<TimedNoiseSource, NoiseResult, SurrogateState> GetMapping() => (src, dst, state) => NoiseMappingFactory.Map(src, dst, state, null, src.__sd_timestep);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededTimedNoiseContract)]
internal sealed class SeededTimedNoiseMappingFactory : StatefulCustomMappingFactory<SeededTimedNoiseSource, NoiseResult, SurrogateState>
{
    public override Action<SeededTimedNoiseSource, NoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        NoiseMappingFactory.Map(src, dst, state, src.__sd_seed, src.__sd_timestep);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SdxlImageDenoiseContract)]
internal sealed class SdxlImageDenoiseMappingFactory : StatefulCustomMappingFactory<SdxlImageDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<SdxlImageDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        DenoiseMappingFactory.Map(src, dst, state, null, src.__sd_pooled);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.InpaintDenoiseContract)]
internal sealed class InpaintDenoiseMappingFactory : StatefulCustomMappingFactory<InpaintDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<InpaintDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) => DenoiseMappingFactory.Map(src, dst, state, null, src.__sd_pooled);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededSdxlImageDenoiseContract)]
internal sealed class SeededSdxlImageDenoiseMappingFactory : StatefulCustomMappingFactory<SeededSdxlImageDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<SeededSdxlImageDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        DenoiseMappingFactory.Map(src, dst, state, src.__sd_seed, src.__sd_pooled);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededInpaintDenoiseContract)]
internal sealed class SeededInpaintDenoiseMappingFactory : StatefulCustomMappingFactory<SeededInpaintDenoiseSource, DenoiseResult, SurrogateState>
{
    public override Action<SeededInpaintDenoiseSource, DenoiseResult, SurrogateState> GetMapping() => (src, dst, state) =>
        DenoiseMappingFactory.Map(src, dst, state, src.__sd_seed, src.__sd_pooled);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.PrepareInpaintingContract)]
internal sealed class PrepareInpaintingMappingFactory : StatefulCustomMappingFactory<PrepareInpaintingSource, PrepareInpaintingResult, SurrogateState>
{
    public override Action<PrepareInpaintingSource, PrepareInpaintingResult, SurrogateState> GetMapping() => (src, dst, state) => Map(src, dst, state, null);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;

    internal static void Map(PrepareInpaintingSource src, PrepareInpaintingResult dst, SurrogateState state, long? seed)
    {
        var runner = state.RunnerFor(src.__sd_config);
        runner.Advance(state.Count++);
        runner.Set(PersistenceSurrogate.SourceImage, src.__sd_source
            ?? throw new InvalidOperationException($"Row {state.Count - 1}: the saved PrepareInpainting stage's image column has no image (null)."));
        runner.Set(PersistenceSurrogate.MaskImage, src.__sd_mask_image
            ?? throw new InvalidOperationException($"Row {state.Count - 1}: the saved PrepareInpainting stage's mask column has no image (null)."));
        runner.Set(PersistenceSurrogate.Seed, seed ?? 0L);
        dst.__sd_out0 = runner.ReadVector(PersistenceSurrogate.Output0);
        dst.__sd_out1 = runner.Has(PersistenceSurrogate.Output1) ? runner.ReadVector(PersistenceSurrogate.Output1) : Array.Empty<float>();
    }
}

[CustomMappingFactoryAttribute(PersistenceSurrogate.SeededPrepareInpaintingContract)]
internal sealed class SeededPrepareInpaintingMappingFactory : StatefulCustomMappingFactory<SeededPrepareInpaintingSource, PrepareInpaintingResult, SurrogateState>
{
    public override Action<SeededPrepareInpaintingSource, PrepareInpaintingResult, SurrogateState> GetMapping() => (src, dst, state) =>
        PrepareInpaintingMappingFactory.Map(src, dst, state, src.__sd_seed);

    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}
