using System;
using System.IO;
using Microsoft.ML.OnnxRuntime;
using MLNet.Diffusion.Shapes;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Inpainting;

/// <summary>
/// The Shapes model's inpainting variant (9-channel UNet), default options otherwise, built once per test run into a
/// temporary folder (deleted at process exit). Its VAE, text encoder and item latents are those of
/// <see cref="ShapesTestModel"/>: the variant changes only the UNet and the configs that describe it.
/// </summary>
internal static class InpaintingTestModel
{
    private static readonly Lazy<string> s_folder = new(Build);
    private static readonly Lazy<InferenceSession> s_unet = new(() => new InferenceSession(Path.Combine(Folder, "unet", "model.onnx")));

    public static string Folder => s_folder.Value;

    public static InferenceSession Unet => s_unet.Value;

    /// <summary>The inpainting UNet's ε̂ for a batch of 9-channel samples [B, 9, h, w].</summary>
    public static float[] PredictNoise(float[] sample, float[] timesteps, float[] hiddenStates, int batch, int h = ShapesTestModel.LatentSize, int w = ShapesTestModel.LatentSize) =>
        ShapesTestModel.Run(Unet,
            ("sample", sample, new long[] { batch, 9, h, w }),
            ("timestep", timesteps, new long[] { timesteps.Length }),
            ("encoder_hidden_states", hiddenStates, new long[] { batch, 77, 32 }))["out_sample"].Data;

    private static string Build()
    {
        string folder = Path.Combine(Path.GetTempPath(), "mlnet-shapes-tests-inpaint-" + Guid.NewGuid().ToString("N")[..8]);
        ShapesModel.Build(folder, new ShapesModelOptions { Variant = ShapesVariant.Inpainting });
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return folder;
    }
}
