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
                           [--scheduler NAME] [--count 1] [--init-image PATH [--strength 0.8]
                           [--mask PATH | --outpaint LEFT,TOP,RIGHT,BOTTOM]] [--lora PATH[:SCALE]]...
          --model DIR        a Stable Diffusion ONNX folder (diffusers export layout); default: the embedded Shapes model
          --scheduler        one of: {0}
          --count N          N images with seeds seed, seed+1, …; files out-0.png, out-1.png, …
          --init-image PATH  image-to-image: start from this picture (PNG, JPEG, …); the size defaults to the
                             picture's, rounded down to a multiple of 8, and other sizes are stretched to fit
          --strength S       with --init-image: how much to change it, from 0 (keep it) to 1 (ignore it); default 0.8,
                             1 with --mask or --outpaint
          --mask PATH        inpainting: repaint the white part of this mask (the init image's size) as the prompt says
                             and keep the rest; works with ordinary and with inpainting (9-channel) UNets
          --outpaint L,T,R,B outpainting: extend the init image by these margins in pixels (rounded up to multiples of 8)
                             and paint the new border; writes the padded picture and its mask next to the output
                             (NAME-canvas.png, NAME-mask.png)
          --lora PATH[:S]    merge this LoRA (.safetensors: kohya, LoCon or diffusers/PEFT) into the UNet and text
                             encoder with scale S (default 1); repeatable
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
        using var sd = StableDiffusionModel.Load(ml, modelDir, new StableDiffusionModelOptions { Loras = a.Loras });
        Console.Error.WriteLine($"Model: {sd.Directory} ({sd.Info.ExecutionProvider}), loaded in {total.Elapsed.TotalSeconds:F1} s");
        // LoRA (issue 16): keys that changed nothing are listed, not ignored.
        foreach (string key in sd.UnmatchedLoraKeys)
            Console.Error.WriteLine($"warning: LoRA key changed nothing: {key}");

        string? initImage = a.InitImage is null ? null : Path.GetFullPath(a.InitImage);
        string? mask = a.Mask is null ? null : Path.GetFullPath(a.Mask);
        if (mask is not null)
            ImageSize(mask, "--mask");
        if (a.Outpaint is { } margins)
            (initImage, mask) = WriteCanvas(initImage!, margins, a.Output);
        var (imageWidth, imageHeight) = initImage is null ? (512, 512) : ImageSize(initImage, "--init-image");
        int width = a.Width ?? Math.Max(8, imageWidth / 8 * 8);
        int height = a.Height ?? Math.Max(8, imageHeight / 8 * 8);
        // diffusers' defaults: strength 0.8 for image-to-image, 1 for inpainting.
        float strength = initImage is null ? 1f : a.Strength ?? (mask is null ? 0.8f : 1f);

        var rows = new List<PromptRow>();
        for (int i = 0; i < a.Count; i++)
            rows.Add(new PromptRow { Prompt = a.Prompt, NegativePrompt = a.NegativePrompt, Seed = a.Seed + i, InitImagePath = initImage ?? string.Empty, MaskPath = mask ?? string.Empty });
        var data = ml.Data.LoadFromEnumerable(rows);

        var progress = new ProgressBar(a.Count);
        var options = new DenoiseLatentsOptions
        {
            Steps = a.Steps,
            GuidanceScale = a.Guidance,
            Width = width,
            Height = height,
            Scheduler = a.Scheduler,
            SeedColumnName = nameof(PromptRow.Seed),
            InitialLatentsColumnName = initImage is null ? null : "InitialLatents",
            Strength = strength,
            // Inpainting: an inpainting UNet (9 channels) reads both columns, an ordinary one blends with the initial latents.
            MaskColumnName = mask is null ? null : "LatentMask",
            MaskedImageLatentsColumnName = mask is null ? null : "MaskedImageLatents",
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
        if (mask is not null)
        {
            // Inpainting: PrepareInpainting turns the picture and its mask into the latent mask and the masked image's
            // latents (diffusers' StableDiffusionInpaintPipeline); the latter is computed only if the UNet reads it.
            pipeline = pipeline
                .Append<ITransformer>(ml.Transforms.LoadImages("MaskImage", imageFolder: null, inputColumnName: nameof(PromptRow.MaskPath)))
                .Append<ITransformer>(ml.Transforms.PrepareInpainting(sd, new PrepareInpaintingOptions
                {
                    ImageColumnName = "InitImage",
                    MaskColumnName = "MaskImage",
                    Width = width,
                    Height = height,
                    SeedColumnName = nameof(PromptRow.Seed),
                }));
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
            if (a.Outpaint is { } m)
                text["outpaint"] = $"{m.Left},{m.Top},{m.Right},{m.Bottom}";
            else if (mask is not null)
                text["mask"] = mask;
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

    /// <summary>
    /// Outpainting: pads the init image (edge replication) and builds the mask of the new border with
    /// <see cref="Outpainting.Prepare"/>, and writes both next to the output as NAME-canvas.png and NAME-mask.png.
    /// </summary>
    /// <returns>The paths of the padded picture and of its mask.</returns>
    private static (string Canvas, string Mask) WriteCanvas(string initImage, (int Left, int Top, int Right, int Bottom) margins, string output)
    {
        ImageSize(initImage, "--init-image");
        using var image = MLImage.CreateFromFile(initImage);
        using var canvas = Outpainting.Prepare(image, margins.Left, margins.Top, margins.Right, margins.Bottom);
        string stem = Path.ChangeExtension(Path.GetFullPath(output), null);
        string? dir = Path.GetDirectoryName(stem);
        if (dir is not null)
            Directory.CreateDirectory(dir);
        string canvasPath = stem + "-canvas.png", maskPath = stem + "-mask.png";
        PngFile.Save(canvas.Image, canvasPath);
        PngFile.Save(canvas.Mask, maskPath);
        Console.Error.WriteLine($"Outpainting: {image.Width}×{image.Height} → {canvas.Width}×{canvas.Height} (margins {canvas.Left},{canvas.Top},{canvas.Right},{canvas.Bottom}): {canvasPath}, {maskPath}");
        return (canvasPath, maskPath);
    }

    /// <summary>An image's size, read with MLImage.CreateFromFile; the error names the argument and the file.</summary>
    private static (int Width, int Height) ImageSize(string path, string argument)
    {
        if (!File.Exists(path))
            throw new FileNotFoundException($"{argument} '{path}' does not exist.", path);
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

        /// <summary>Inpainting and outpainting: the mask's full path (the same for every row); empty otherwise.</summary>
        public string MaskPath { get; set; } = string.Empty;
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
