namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// SDXL's micro-conditioning (Podell et al. 2023, "SDXL", §2.2) and the <c>time_ids</c> it becomes, as diffusers'
/// <c>_get_add_time_ids</c> builds them: 6 values, original size (h, w) + crop top-left (top, left) + target size
/// (h, w), the same for conditional and unconditional rows; or, for refiner-style UNets
/// (<c>requires_aesthetics_score</c>), 5 values, original size + crop top-left + aesthetic score (6.0 / 2.5 by default).
/// </summary>
/// <param name="Width">The image width; the default original and target width.</param>
/// <param name="Height">The image height; the default original and target height.</param>
internal sealed record SdxlTimeIds(int Width, int Height)
{
    /// <summary>The original width; null: <see cref="Width"/>.</summary>
    public int? OriginalWidth { get; init; }

    /// <summary>The original height; null: <see cref="Height"/>.</summary>
    public int? OriginalHeight { get; init; }

    /// <summary>The top of the crop (<c>crops_coords_top_left</c>); null: 0.</summary>
    public int? CropTop { get; init; }

    /// <summary>The left of the crop; null: 0.</summary>
    public int? CropLeft { get; init; }

    /// <summary>The target width (6 time ids); null: <see cref="Width"/>.</summary>
    public int? TargetWidth { get; init; }

    /// <summary>The target height (6 time ids); null: <see cref="Height"/>.</summary>
    public int? TargetHeight { get; init; }

    /// <summary>The conditional rows' aesthetic score (5 time ids); null: diffusers' 6.0.</summary>
    public float? AestheticScore { get; init; }

    /// <summary>The unconditional rows' aesthetic score (5 time ids); null: diffusers' 2.5.</summary>
    public float? NegativeAestheticScore { get; init; }

    /// <summary>The time ids of the conditional and unconditional rows for a UNet that takes <paramref name="count"/> (5 or 6) of them.</summary>
    public (float[] Cond, float[] Uncond) Create(int count)
    {
        float oh = OriginalHeight ?? Height, ow = OriginalWidth ?? Width, top = CropTop ?? 0, left = CropLeft ?? 0;
        if (count == 5)
            return (new[] { oh, ow, top, left, AestheticScore ?? 6f }, new[] { oh, ow, top, left, NegativeAestheticScore ?? 2.5f });
        var ids = new[] { oh, ow, top, left, TargetHeight ?? Height, TargetWidth ?? Width };
        return (ids, ids);
    }
}
