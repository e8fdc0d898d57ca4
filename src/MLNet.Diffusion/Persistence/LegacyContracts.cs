using System;
using Microsoft.ML.Data;
using Microsoft.ML.Transforms;

namespace MLNet.Diffusion.Persistence;

// The version-1 contracts: before each stage had one contract, a saved stage's contract name spelled out which optional
// inputs it had (`MLNet.Diffusion.DenoiseLatents.Sdxl.Image.Seeded.v1`, …), with a row type per combination. This library
// no longer writes them; they stay registered as aliases so that models saved by earlier versions load: ML.NET finds a
// factory by its contract name in this assembly. Each one only copies its row into the slots of the stage's one reader
// (SurrogateRunner), which learns from the saved configuration which inputs the stage reads. Member names are the
// saved rows' column names and must not change. Pinned by tests/MLNet.Diffusion.Tests/Persistence/Fixtures.
#pragma warning disable SA1300, IDE1006, SA1402, SA1649 // Member names are column names; many small legacy types in one file.

/// <summary>The version-1 contract names (legacy aliases).</summary>
internal static class LegacyContractNames
{
    public const string EncodePrompt = "MLNet.Diffusion.EncodePrompt.v1";
    public const string Denoise = "MLNet.Diffusion.DenoiseLatents.v1";
    public const string SeededDenoise = "MLNet.Diffusion.DenoiseLatents.Seeded.v1";
    public const string SdxlDenoise = "MLNet.Diffusion.DenoiseLatents.Sdxl.v1";
    public const string SeededSdxlDenoise = "MLNet.Diffusion.DenoiseLatents.Sdxl.Seeded.v1";
    public const string ImageDenoise = "MLNet.Diffusion.DenoiseLatents.Image.v1";
    public const string SeededImageDenoise = "MLNet.Diffusion.DenoiseLatents.Image.Seeded.v1";
    public const string SdxlImageDenoise = "MLNet.Diffusion.DenoiseLatents.Sdxl.Image.v1";
    public const string SeededSdxlImageDenoise = "MLNet.Diffusion.DenoiseLatents.Sdxl.Image.Seeded.v1";
    public const string InpaintDenoise = "MLNet.Diffusion.DenoiseLatents.Inpaint.v1";
    public const string SeededInpaintDenoise = "MLNet.Diffusion.DenoiseLatents.Inpaint.Seeded.v1";
    public const string DecodeLatents = "MLNet.Diffusion.DecodeLatents.v1";
    public const string EncodeImage = "MLNet.Diffusion.EncodeImage.v1";
    public const string SeededEncodeImage = "MLNet.Diffusion.EncodeImage.Seeded.v1";
    public const string Noise = "MLNet.Diffusion.AddDiffusionNoise.v1";
    public const string SeededNoise = "MLNet.Diffusion.AddDiffusionNoise.Seeded.v1";
    public const string TimedNoise = "MLNet.Diffusion.AddDiffusionNoise.Timed.v1";
    public const string SeededTimedNoise = "MLNet.Diffusion.AddDiffusionNoise.Seeded.Timed.v1";
    public const string PrepareInpainting = "MLNet.Diffusion.PrepareInpainting.v1";
    public const string SeededPrepareInpainting = "MLNet.Diffusion.PrepareInpainting.Seeded.v1";
}

/// <summary>A version-1 factory: its row type and how it fills the reader's slots.</summary>
internal abstract class LegacyFactory<TSrc, TDst> : StatefulCustomMappingFactory<TSrc, TDst, SurrogateState>
    where TSrc : class, new()
    where TDst : class, new()
{
    public override Action<SurrogateState> GetStateInitAction() => SurrogateState.Init;
}

internal sealed class V1EncodeSource
{
    public string __sd_config { get; set; } = string.Empty;

    public string __sd_prompt { get; set; } = string.Empty;

    public string __sd_negative { get; set; } = string.Empty;
}

[CustomMappingFactoryAttribute(LegacyContractNames.EncodePrompt)]
internal sealed class V1EncodePromptFactory : LegacyFactory<V1EncodeSource, TwoOutputs>
{
    public override Action<V1EncodeSource, TwoOutputs, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(src.__sd_config, r =>
        {
            r.Set(Slots.Prompt, src.__sd_prompt);
            r.Set(Slots.Negative, src.__sd_negative);
        }).ReadInto(dst);
}

internal class V1DenoiseSource
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_embeddings { get; set; } = Array.Empty<float>();

    public float[] __sd_noise { get; set; } = Array.Empty<float>();

    /// <summary>Fills the reader's slots from this row (and the subclasses' extra inputs).</summary>
    public virtual void SetSlots(SurrogateRunner r)
    {
        r.Set(Slots.Embeddings, __sd_embeddings);
        r.Set(Slots.Noise, __sd_noise);
    }
}

internal sealed class V1SeededDenoiseSource : V1DenoiseSource
{
    public long __sd_seed { get; set; }

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.Seed, __sd_seed);
    }
}

internal class V1SdxlDenoiseSource : V1DenoiseSource
{
    public float[] __sd_pooled { get; set; } = Array.Empty<float>();

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.Pooled, __sd_pooled);
    }
}

internal sealed class V1SeededSdxlDenoiseSource : V1SdxlDenoiseSource
{
    public long __sd_seed { get; set; }

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.Seed, __sd_seed);
    }
}

internal class V1ImageDenoiseSource : V1DenoiseSource
{
    public float[] __sd_init { get; set; } = Array.Empty<float>();

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.InitialLatents, __sd_init);
    }
}

internal sealed class V1SeededImageDenoiseSource : V1ImageDenoiseSource
{
    public long __sd_seed { get; set; }

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.Seed, __sd_seed);
    }
}

internal class V1SdxlImageDenoiseSource : V1ImageDenoiseSource
{
    public float[] __sd_pooled { get; set; } = Array.Empty<float>();

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.Pooled, __sd_pooled);
    }
}

internal sealed class V1SeededSdxlImageDenoiseSource : V1SdxlImageDenoiseSource
{
    public long __sd_seed { get; set; }

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.Seed, __sd_seed);
    }
}

/// <summary>Version-1 inpainting: one layout for both UNet kinds; unused inputs carry the embeddings.</summary>
internal class V1InpaintDenoiseSource : V1ImageDenoiseSource
{
    public float[] __sd_mask { get; set; } = Array.Empty<float>();

    public float[] __sd_masked { get; set; } = Array.Empty<float>();

    public float[] __sd_pooled { get; set; } = Array.Empty<float>();

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.Mask, __sd_mask);
        r.Set(Slots.MaskedLatents, __sd_masked);
        r.Set(Slots.Pooled, __sd_pooled);
    }
}

internal sealed class V1SeededInpaintDenoiseSource : V1InpaintDenoiseSource
{
    public long __sd_seed { get; set; }

    public override void SetSlots(SurrogateRunner r)
    {
        base.SetSlots(r);
        r.Set(Slots.Seed, __sd_seed);
    }
}

/// <summary>The version-1 DenoiseLatents factories differ only in their row type.</summary>
internal abstract class V1DenoiseFactory<TSrc> : LegacyFactory<TSrc, OneOutput>
    where TSrc : V1DenoiseSource, new()
{
    public override Action<TSrc, OneOutput, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), src.SetSlots).ReadInto(dst);
}

[CustomMappingFactoryAttribute(LegacyContractNames.Denoise)]
internal sealed class V1DenoiseFactory : V1DenoiseFactory<V1DenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededDenoise)]
internal sealed class V1SeededDenoiseFactory : V1DenoiseFactory<V1SeededDenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SdxlDenoise)]
internal sealed class V1SdxlDenoiseFactory : V1DenoiseFactory<V1SdxlDenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededSdxlDenoise)]
internal sealed class V1SeededSdxlDenoiseFactory : V1DenoiseFactory<V1SeededSdxlDenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.ImageDenoise)]
internal sealed class V1ImageDenoiseFactory : V1DenoiseFactory<V1ImageDenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededImageDenoise)]
internal sealed class V1SeededImageDenoiseFactory : V1DenoiseFactory<V1SeededImageDenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SdxlImageDenoise)]
internal sealed class V1SdxlImageDenoiseFactory : V1DenoiseFactory<V1SdxlImageDenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededSdxlImageDenoise)]
internal sealed class V1SeededSdxlImageDenoiseFactory : V1DenoiseFactory<V1SeededSdxlImageDenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.InpaintDenoise)]
internal sealed class V1InpaintDenoiseFactory : V1DenoiseFactory<V1InpaintDenoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededInpaintDenoise)]
internal sealed class V1SeededInpaintDenoiseFactory : V1DenoiseFactory<V1SeededInpaintDenoiseSource>
{
}

internal sealed class V1DecodeSource
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_latents { get; set; } = Array.Empty<float>();
}

[CustomMappingFactoryAttribute(LegacyContractNames.DecodeLatents)]
internal sealed class V1DecodeLatentsFactory : LegacyFactory<V1DecodeSource, ImageOutputs>
{
    public override Action<V1DecodeSource, ImageOutputs, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), r => r.Set(Slots.Latents, src.__sd_latents)).ReadInto(dst);
}

internal class V1EncodeImageSource
{
    public string __sd_config { get; set; } = string.Empty;

    [AnySizeImageType]
    public MLImage? __sd_source { get; set; }

    public virtual long GetSeed() => 0;
}

internal sealed class V1SeededEncodeImageSource : V1EncodeImageSource
{
    public long __sd_seed { get; set; }

    public override long GetSeed() => __sd_seed;
}

internal abstract class V1EncodeImageFactory<TSrc> : LegacyFactory<TSrc, OneOutput>
    where TSrc : V1EncodeImageSource, new()
{
    public override Action<TSrc, OneOutput, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(src.__sd_config, r =>
        {
            r.Set(Slots.SourceImage, src.__sd_source ?? throw SurrogateState.NoImage(r, "EncodeImage", "image"));
            r.Set(Slots.Seed, src.GetSeed());
        }).ReadInto(dst);
}

[CustomMappingFactoryAttribute(LegacyContractNames.EncodeImage)]
internal sealed class V1EncodeImageFactory : V1EncodeImageFactory<V1EncodeImageSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededEncodeImage)]
internal sealed class V1SeededEncodeImageFactory : V1EncodeImageFactory<V1SeededEncodeImageSource>
{
}

internal class V1NoiseSource
{
    public string[] __sd_config { get; set; } = Array.Empty<string>();

    public float[] __sd_latents { get; set; } = Array.Empty<float>();

    public virtual long GetSeed() => 0;

    public virtual long GetTimestep() => 0;
}

internal class V1SeededNoiseSource : V1NoiseSource
{
    public long __sd_seed { get; set; }

    public override long GetSeed() => __sd_seed;
}

internal sealed class V1TimedNoiseSource : V1NoiseSource
{
    public long __sd_timestep { get; set; }

    public override long GetTimestep() => __sd_timestep;
}

internal sealed class V1SeededTimedNoiseSource : V1SeededNoiseSource
{
    public long __sd_timestep { get; set; }

    public override long GetTimestep() => __sd_timestep;
}

internal abstract class V1NoiseFactory<TSrc> : LegacyFactory<TSrc, TwoOutputs>
    where TSrc : V1NoiseSource, new()
{
    public override Action<TSrc, TwoOutputs, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(SurrogateState.First(src.__sd_config), r =>
        {
            r.Set(Slots.Latents, src.__sd_latents);
            r.Set(Slots.Seed, src.GetSeed());
            r.Set(Slots.Timestep, src.GetTimestep());
        }).ReadInto(dst);
}

[CustomMappingFactoryAttribute(LegacyContractNames.Noise)]
internal sealed class V1NoiseFactory : V1NoiseFactory<V1NoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededNoise)]
internal sealed class V1SeededNoiseFactory : V1NoiseFactory<V1SeededNoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.TimedNoise)]
internal sealed class V1TimedNoiseFactory : V1NoiseFactory<V1TimedNoiseSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededTimedNoise)]
internal sealed class V1SeededTimedNoiseFactory : V1NoiseFactory<V1SeededTimedNoiseSource>
{
}

internal class V1PrepareInpaintingSource
{
    public string __sd_config { get; set; } = string.Empty;

    [AnySizeImageType]
    public MLImage? __sd_source { get; set; }

    [AnySizeImageType]
    public MLImage? __sd_mask_image { get; set; }

    public virtual long GetSeed() => 0;
}

internal sealed class V1SeededPrepareInpaintingSource : V1PrepareInpaintingSource
{
    public long __sd_seed { get; set; }

    public override long GetSeed() => __sd_seed;
}

internal abstract class V1PrepareInpaintingFactory<TSrc> : LegacyFactory<TSrc, TwoOutputs>
    where TSrc : V1PrepareInpaintingSource, new()
{
    public override Action<TSrc, TwoOutputs, SurrogateState> GetMapping() => (src, dst, state) =>
        state.Run(src.__sd_config, r =>
        {
            r.Set(Slots.SourceImage, src.__sd_source ?? throw SurrogateState.NoImage(r, "PrepareInpainting", "image"));
            r.Set(Slots.MaskImage, src.__sd_mask_image ?? throw SurrogateState.NoImage(r, "PrepareInpainting", "mask"));
            r.Set(Slots.Seed, src.GetSeed());
        }).ReadInto(dst);
}

[CustomMappingFactoryAttribute(LegacyContractNames.PrepareInpainting)]
internal sealed class V1PrepareInpaintingFactory : V1PrepareInpaintingFactory<V1PrepareInpaintingSource>
{
}

[CustomMappingFactoryAttribute(LegacyContractNames.SeededPrepareInpainting)]
internal sealed class V1SeededPrepareInpaintingFactory : V1PrepareInpaintingFactory<V1SeededPrepareInpaintingSource>
{
}

#pragma warning restore SA1300, IDE1006, SA1402, SA1649
