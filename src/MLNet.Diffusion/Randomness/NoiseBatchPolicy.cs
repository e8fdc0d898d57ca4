namespace MLNet.Diffusion.Randomness;

/// <summary>How the rows of a batch share generators.</summary>
public enum NoiseBatchPolicy
{
    /// <summary>
    /// One generator per row, seeded with the row's seed: a row's noise does not depend on the batch it runs in.
    /// diffusers with a list of generators (<c>generator=[torch.Generator().manual_seed(s) for s in seeds]</c>), and
    /// AUTOMATIC1111, which seeds each image of a batch with its own seed (seed, seed + 1, …).
    /// </summary>
    GeneratorPerRow,

    /// <summary>
    /// One generator for the whole batch, seeded with the first row's seed; each draw covers every row at once
    /// (<c>torch.randn((batch, 4, h, w))</c>). diffusers with one generator, and ComfyUI. The batch is the set of rows a
    /// stage denoises together, so a row's noise depends on its position in the batch and on the batch size.
    /// </summary>
    GeneratorPerBatch,
}
