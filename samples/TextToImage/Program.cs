using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Schedulers;
using MLNet.Diffusion.Shapes;

namespace TextToImage;

/// <summary>
/// Generates images from a prompt with the ML.NET stages EncodePrompt → DenoiseLatents → DecodeLatents.
/// Without --model it uses the embedded Shapes model, built on first use into a cache folder.
/// </summary>
public static class Program
{
    private const string Usage = """
        Usage: TextToImage --prompt TEXT [--output out.png] [--model DIR] [--negative-prompt TEXT]
                           [--steps 20] [--guidance 7.5] [--seed N] [--width 512] [--height 512]
                           [--scheduler NAME] [--count 1] [--init-image PATH [--strength 0.8]]
          --model DIR        a Stable Diffusion ONNX folder (diffusers export layout); default: the embedded Shapes model
          --scheduler        one of: {0}
          --count N          N images with seeds seed, seed+1, …; files out-0.png, out-1.png, …
          --init-image PATH  image-to-image: start from this picture (PNG, JPEG, …); the size defaults to the
                             picture's, rounded down to a multiple of 8, and other sizes are stretched to fit
          --strength S       with --init-image: how much to change it, from 0 (keep it) to 1 (ignore it); default 0.8
        """;

    /// <summary>Entry point; returns 0 on success, 2 on bad arguments, 1 on a failure, 130 when cancelled.</summary>
    public static int Main(string[] args)
    {
        Arguments a;
        try
        {
            a = Arguments.Parse(args);
        }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message} (see --help)");
            return 2;
        }
        if (a.Help)
        {
            Console.WriteLine(string.Format(CultureInfo.InvariantCulture, Usage, string.Join(", ", SchedulerFactory.Names)));
            return 0;
        }

        using var cancel = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
            Console.Error.WriteLine();
            Console.Error.WriteLine("Cancelling after the current step…");
        };

        try
        {
            return Run(a, cancel.Token);
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("cancelled");
            return 130;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    private static int Run(Arguments a, CancellationToken cancellationToken)
    {
        var total = Stopwatch.StartNew();
        string modelDir = a.Model ?? ShapesModel.EnsureBuilt();
        var ml = new MLContext(seed: 0);
        using var sd = StableDiffusionModel.Load(ml, modelDir);
        Console.Error.WriteLine($"Model: {sd.Directory} ({sd.Info.ExecutionProvider}), loaded in {total.Elapsed.TotalSeconds:F1} s");

        string? initImage = a.InitImage is null ? null : Path.GetFullPath(a.InitImage);
        var (imageWidth, imageHeight) = initImage is null ? (512, 512) : ImageSize(initImage);
        int width = a.Width ?? Math.Max(8, imageWidth / 8 * 8);
        int height = a.Height ?? Math.Max(8, imageHeight / 8 * 8);
        float strength = initImage is null ? 1f : a.Strength ?? 0.8f;

        var rows = new List<PromptRow>();
        for (int i = 0; i < a.Count; i++)
            rows.Add(new PromptRow { Prompt = a.Prompt, NegativePrompt = a.NegativePrompt, Seed = a.Seed + i, InitImagePath = initImage ?? string.Empty });
        var data = ml.Data.LoadFromEnumerable(rows);

        var progress = new ProgressBar(a.Count);
        var options = new DenoiseOptions
        {
            Steps = a.Steps,
            GuidanceScale = a.Guidance,
            Width = width,
            Height = height,
            Scheduler = a.Scheduler,
            SeedColumnName = nameof(PromptRow.Seed),
            InitialLatentsColumnName = initImage is null ? null : "InitialLatents",
            Strength = strength,
            BatchSize = 1,
            Progress = progress,
            CancellationToken = cancellationToken,
        };
        var pipeline = new EstimatorChain<ITransformer>()
            .Append<ITransformer>(ml.Transforms.EncodePrompt(sd, "Embeddings", nameof(PromptRow.Prompt), nameof(PromptRow.NegativePrompt)));
        if (initImage is not null)
        {
            // Image-to-image: ML.NET's LoadImages reads the picture, EncodeImage turns it into the latents denoising starts
            // from (diffusers' StableDiffusionImg2ImgPipeline).
            pipeline = pipeline
                .Append<ITransformer>(ml.Transforms.LoadImages("InitImage", imageFolder: null, inputColumnName: nameof(PromptRow.InitImagePath)))
                .Append<ITransformer>(ml.Transforms.EncodeImage(sd, "InitialLatents", "InitImage",
                    new EncodeImageOptions { Width = width, Height = height, SeedColumnName = nameof(PromptRow.Seed) }));
        }
        pipeline = pipeline
            .Append<ITransformer>(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", options))
            .Append<ITransformer>(ml.Transforms.DecodeLatents(sd, "Image", "Latents"));
        var transformer = pipeline.Fit(data);
        var images = transformer.Transform(data);
        string scheduler = transformer.OfType<LatentDenoisingTransformer>().Single().SchedulerName;

        using var cursor = images.GetRowCursor(new[] { images.Schema["Image"], images.Schema[nameof(PromptRow.Seed)] });
        var imageGetter = cursor.GetGetter<MLImage>(images.Schema["Image"]);
        var seedGetter = cursor.GetGetter<long>(images.Schema[nameof(PromptRow.Seed)]);
        int index = 0;
        while (cursor.MoveNext())
        {
            MLImage image = null!;
            imageGetter(ref image);
            long seed = 0;
            seedGetter(ref seed);
            string path = a.Count == 1 ? a.Output : Path.ChangeExtension(a.Output, null) + $"-{index}" + Path.GetExtension(a.Output);
            var text = new Dictionary<string, string>
            {
                ["prompt"] = a.Prompt,
                ["negative_prompt"] = a.NegativePrompt,
                ["seed"] = seed.ToString(CultureInfo.InvariantCulture),
                ["steps"] = a.Steps.ToString(CultureInfo.InvariantCulture),
                ["guidance"] = a.Guidance.ToString(CultureInfo.InvariantCulture),
                ["scheduler"] = scheduler,
                ["size"] = $"{width}x{height}",
                ["model"] = sd.Directory,
                ["software"] = "MLNet.Diffusion",
            };
            if (initImage is not null)
            {
                text["init_image"] = initImage;
                text["strength"] = strength.ToString(CultureInfo.InvariantCulture);
            }
            string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
            if (dir is not null)
                Directory.CreateDirectory(dir);
            PngFile.Save(image, path, text);
            image.Dispose();
            progress.Clear();
            Console.WriteLine($"{path}  (seed {seed})");
            index++;
        }
        Console.Error.WriteLine($"Done: {index} image(s) in {total.Elapsed.TotalSeconds:F1} s");
        return 0;
    }

    /// <summary>The init image's size, read with MLImage.CreateFromFile; the error names the file.</summary>
    private static (int Width, int Height) ImageSize(string path)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"--init-image '{path}' does not exist.", path);
        using var image = MLImage.CreateFromFile(path);
        return (image.Width, image.Height);
    }

    private sealed class PromptRow
    {
        public string Prompt { get; set; } = string.Empty;

        public string NegativePrompt { get; set; } = string.Empty;

        public long Seed { get; set; }

        /// <summary>Image-to-image: the init image's full path (the same for every row); empty otherwise.</summary>
        public string InitImagePath { get; set; } = string.Empty;
    }

    /// <summary>A one-line console progress bar fed by the denoising loop (reports arrive on the generating thread).</summary>
    private sealed class ProgressBar : IProgress<DenoiseProgress>
    {
        private readonly int _images;
        private readonly bool _interactive = !Console.IsErrorRedirected;

        public ProgressBar(int images) => _images = images;

        public void Report(DenoiseProgress value)
        {
            if (!_interactive && value.Step != value.TotalSteps)
                return;
            const int width = 30;
            int filled = value.Step * width / value.TotalSteps;
            string bar = new string('#', filled) + new string('.', width - filled);
            Console.Error.Write($"\r[{bar}] image {value.FirstRow + 1}/{_images} step {value.Step}/{value.TotalSteps} {value.Elapsed.TotalSeconds,5:F1} s");
            if (!_interactive)
                Console.Error.WriteLine();
        }

        public void Clear()
        {
            if (_interactive)
                Console.Error.Write("\r" + new string(' ', 79) + "\r");
        }
    }
}
