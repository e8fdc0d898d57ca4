namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// The seed rule of every seeded stage (DenoiseLatents, EncodeImage, AddDiffusionNoise, PrepareInpainting): a row's
/// seed is its seed column's value when the stage has one, else the base seed plus the row's position; the base seed
/// is the stage's <c>Seed</c> option, else the model's default (drawn once from the MLContext's random source). So a
/// row's result depends on its seed only, never on its batch.
/// </summary>
internal static class RowSeed
{
    /// <summary>The base seed of a stage: <paramref name="seed"/>, else <paramref name="model"/>'s default.</summary>
    public static int Base(int? seed, StableDiffusionModel model) => seed ?? model.DefaultSeed;

    /// <summary>The seed of the row at <paramref name="position"/> without a seed column.</summary>
    public static long At(int baseSeed, long position) => baseSeed + position;
}
