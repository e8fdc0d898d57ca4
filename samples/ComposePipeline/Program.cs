using System;
using System.CommandLine;
using System.IO;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion;
using MLNet.Diffusion.Samples;
using MLNet.Diffusion.Shapes;

namespace ComposePipeline;

/// <summary>
/// The diffusion stages inside an ordinary ML.NET pipeline: EncodePrompt → DenoiseLatents → DecodeLatents, then
/// Microsoft.ML.ImageAnalytics (ResizeImages, ExtractPixels) and Microsoft.ML.OnnxTransformer's ApplyOnnxModel running a
/// small per-channel statistics model on each generated image.
/// <c>dotnet run --project samples/ComposePipeline [-- --model DIR]</c>
/// </summary>
public static class Program
{
    private sealed class PromptRow
    {
        public string Prompt { get; set; } = string.Empty;

        public int Seed { get; set; }
    }

    private sealed class Result
    {
        public string Prompt { get; set; } = string.Empty;

        public float[] ChannelMeans { get; set; } = Array.Empty<float>();
    }

    private static readonly Option<string?> s_model = new("--model") { Description = "A Stable Diffusion ONNX folder; default: the embedded Shapes model.", HelpName = "DIR" };

    private static readonly RootCommand s_command = new("Runs the diffusion stages inside an ordinary ML.NET pipeline and measures each generated image's mean colour.") { s_model };

    /// <summary>Entry point: 0 done, 1 failure (one line on standard error), 2 bad arguments.</summary>
    public static int Main(string[] args)
    {
        var parse = s_command.Parse(args);
        if (parse.Errors.Count > 0)
        {
            Console.Error.WriteLine($"error: {parse.Errors[0].Message} (see --help)");
            return 2;
        }
        if (parse.Action is not null)
            return parse.Invoke(new InvocationConfiguration { Output = Console.Out, Error = Console.Error }); // --help, --version
        string? modelDir = parse.GetValue(s_model);
        try
        {
            var ml = new MLContext(seed: 0);
            using var sd = StableDiffusionModel.Load(ml, modelDir ?? ShapesModel.EnsureBuilt());
            const int thumb = 32;
            string statsModel = Path.Combine(Path.GetTempPath(), $"mlnet-channel-stats-{thumb}.onnx");
            ChannelStatsModel.Write(statsModel, thumb * thumb);

            var prompts = ml.Data.LoadFromEnumerable(new[]
            {
                new PromptRow { Prompt = "a red circle on a white background", Seed = 1 },
                new PromptRow { Prompt = "a blue square on a black background", Seed = 2 },
                new PromptRow { Prompt = "a yellow triangle on a green background", Seed = 3 },
            });
            var pipeline = ml.Transforms.EncodePrompt(sd, "Embeddings", nameof(PromptRow.Prompt))
                .Append(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", new DenoiseLatentsOptions { Width = 256, Height = 256, SeedColumnName = nameof(PromptRow.Seed) }))
                .Append(ml.Transforms.DecodeLatents(sd, "Image", "Latents"))
                .Append(ml.Transforms.ResizeImages("Thumb", thumb, thumb, "Image"))
                .Append(ml.Transforms.ExtractPixels("Pixels", "Thumb"))                    // planar R, G, B floats in [0, 255]
                .Append(ml.Transforms.ApplyOnnxModel("ChannelMeans", "Pixels", statsModel));
            var results = ml.Data.CreateEnumerable<Result>(pipeline.Fit(prompts).Transform(prompts), reuseRowObject: false).ToArray();

            Console.WriteLine($"{"prompt",-42} {"mean R",7} {"mean G",7} {"mean B",7}");
            foreach (var r in results)
                Console.WriteLine($"{r.Prompt,-42} {r.ChannelMeans[0],7:F1} {r.ChannelMeans[1],7:F1} {r.ChannelMeans[2],7:F1}");
            return 0;
        }
        catch (Exception e)
        {
            // Any failure (bad model folder, bad config value, unreadable file) is one line, never a stack trace.
            return SampleConsole.Fail(e);
        }
    }
}
