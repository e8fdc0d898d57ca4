using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.IO;
using System.Linq;
using System.CommandLine;
using System.Threading;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Randomness;
using MLNet.Diffusion.Samples;

using MLNet.Diffusion.Shapes;
using Spectre.Console;

namespace TextToImage;

/// <summary>
/// Generates images from a prompt with the ML.NET stages EncodePrompt → DenoiseLatents → DecodeLatents.
/// Without --model it uses the embedded Shapes model, built on first use into a cache folder.
/// </summary>
public static class Program
{
    /// <summary>Entry point; returns 0 on success, 2 on bad arguments, 1 on a failure (one line on standard error), 130 when cancelled.</summary>
    public static int Main(string[] args)
    {
        var parse = Arguments.Command.Parse(args);
        if (parse.Errors.Count > 0)
        {
            Console.Error.WriteLine($"error: {parse.Errors[0].Message} (see --help)");
            return 2;
        }
        if (parse.Action is not null)
            return parse.Invoke(new InvocationConfiguration { Output = Console.Out, Error = Console.Error }); // --help, --version

        using var cancel = new CancellationTokenSource();
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            cancel.Cancel();
            Console.Error.WriteLine();
            Console.Error.WriteLine("Cancelling after the current step…");
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            return Run(Arguments.From(parse), SampleConsole.Create(Console.Error), cancel.Token);
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("cancelled");
            return 130;
        }
        catch (Exception e)
        {
            // Any failure (bad model folder, bad config value, unreadable or undecodable image) is one line, never a stack trace.
            return SampleConsole.Fail(e);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    private static int Run(Arguments a, IAnsiConsole console, CancellationToken cancellationToken)
    {
        var total = Stopwatch.StartNew();
        // Without --model: the Shapes model, its unconditional/VQ variant (--variant) or, for --control, its ControlNet variant
        // (a silhouette steers it).
        ShapesModelOptions? shapes = a.Variant is not null ? new ShapesModelOptions { Variant = a.ShapesVariant }
            : a.Control is not null ? new ShapesModelOptions { Variant = ShapesVariant.ControlNet }
            : null;
        string modelDir = a.Model ?? ShapesModel.EnsureBuilt(options: shapes);
        var ml = new MLContext(seed: 0);
        using var sd = StableDiffusionModel.Load(ml, modelDir, new StableDiffusionModelOptions { Loras = a.Loras });
        console.WriteLine($"Model: {sd.Directory} ({sd.Info.ExecutionProvider}), loaded in {total.Elapsed.TotalSeconds:F1} s");
        // LoRA (issue 16): keys that changed nothing are listed, not ignored.
        foreach (string key in sd.UnmatchedLoraKeys)
            console.MarkupLineInterpolated($"[yellow]warning:[/] LoRA key changed nothing: {key}");

        // Unconditional models (issue 18: LDMPipeline, DDPMPipeline) denoise without a prompt; text-conditioned ones need one.
        bool conditional = sd.Info.IsConditional;
        if (conditional && !a.HasPrompt)
            throw new ArgumentException($"--prompt is required: the model '{sd.Directory}' is text-conditioned.");
        if (!conditional && a.InitImage is not null)
            throw new ArgumentException($"--init-image, --mask and --outpaint need a text-conditioned model; '{sd.Directory}' is unconditional ({sd.Info.Kind}).");
        string? initImage = a.InitImage is null ? null : Path.GetFullPath(a.InitImage);
        string? mask = a.Mask is null ? null : Path.GetFullPath(a.Mask);
        if (mask is not null)
            ImageSize(mask, "--mask");
        if (a.Outpaint is { } margins)
            (initImage, mask) = WriteCanvas(initImage!, margins, a.Output, console);
        var (imageWidth, imageHeight) = initImage is not null ? ImageSize(initImage, "--init-image")
            : a.Variant is not null ? (new ShapesModelOptions().ImageSize, new ShapesModelOptions().ImageSize) : (512, 512);
        int width = a.Width ?? Math.Max(8, imageWidth / 8 * 8);
        int height = a.Height ?? Math.Max(8, imageHeight / 8 * 8);
        // diffusers' defaults: strength 0.8 for image-to-image, 1 for inpainting.
        float strength = initImage is null ? 1f : a.Strength ?? (mask is null ? 0.8f : 1f);

        string? control = a.Control is null ? null : Path.GetFullPath(a.Control);
        if (control is not null)
            ImageSize(control, "--control");

        var rows = new List<PromptRow>();
        for (int i = 0; i < a.Count; i++)
            rows.Add(new PromptRow { Prompt = a.Prompt, NegativePrompt = a.NegativePrompt, Seed = a.Seed + i, InitImagePath = initImage ?? string.Empty, MaskPath = mask ?? string.Empty, ControlPath = control ?? string.Empty });
        var data = ml.Data.LoadFromEnumerable(rows);

        var progress = new StepProgress();
        // Prompt syntax (issue 15): A1111's [a:b:n], [a|b] and AND need the schedule column between the stages (SD 1.x/2.x).
        string? schedule = a.PromptSyntax == MLNet.Diffusion.Prompting.PromptSyntax.A1111 && sd.Info.Kind == ModelKind.StableDiffusion ? "PromptSchedule" : null;
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
            // One UNet row at a time; ComfyUI's one randn for the whole batch needs the images in one batch.
            BatchSize = a.Noise.BatchPolicy == NoiseBatchPolicy.GeneratorPerBatch ? Math.Min(a.Count, 256) : 1,
            Noise = a.Noise,
            // ControlNet (issue 17): the model folder's own controlnet/ with the prepared control image.
            ControlNets = control is null ? null : new[] { new ControlNetUnit { ImageColumnName = "ControlImage", Scale = a.ControlScale } },
            Progress = progress,
            CancellationToken = cancellationToken,
            PromptScheduleColumnName = schedule,
        };
        var pipeline = new EstimatorChain<ITransformer>();
        if (conditional)
        {
            pipeline = pipeline.Append<ITransformer>(ml.Transforms.EncodePrompt(sd, new EncodePromptOptions
            {
                OutputColumnName = "Embeddings",
                InputColumnName = nameof(PromptRow.Prompt),
                NegativePromptColumnName = nameof(PromptRow.NegativePrompt),
                PromptSyntax = a.PromptSyntax,
                Emphasis = a.Emphasis,
                PromptScheduleColumnName = schedule,
                ScheduleSteps = schedule is null ? null : MLNet.Diffusion.Prompting.A1111SamplerSteps.ScheduleSteps(a.Scheduler, sd.Info.SchedulerConfig, a.Steps),
            }));
        }
        if (initImage is not null)
        {
            // Image-to-image: ML.NET's LoadImages reads the picture, EncodeImage turns it into the latents denoising starts
            // from (diffusers' StableDiffusionImg2ImgPipeline).
            pipeline = pipeline
                .Append<ITransformer>(ml.Transforms.LoadImages("InitImage", imageFolder: null, inputColumnName: nameof(PromptRow.InitImagePath)))
                .Append<ITransformer>(ml.Transforms.EncodeImage(sd, "InitialLatents", "InitImage",
                    new EncodeImageOptions { Width = width, Height = height, SeedColumnName = nameof(PromptRow.Seed), Noise = a.Noise }));
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
                    Noise = a.Noise,
                }));
        }
        if (control is not null)
        {
            // ControlNet (issue 17): LoadImages reads the control image, PrepareControlImage makes it RGB in [0, 1] at the
            // output size (diffusers' VaeImageProcessor for ControlNet).
            pipeline = pipeline
                .Append<ITransformer>(ml.Transforms.LoadImages("ControlSource", imageFolder: null, inputColumnName: nameof(PromptRow.ControlPath)))
                .Append<ITransformer>(ml.Transforms.PrepareControlImage(sd, new PrepareControlImageOptions
                {
                    ImageColumnName = "ControlSource",
                    OutputColumnName = "ControlImage",
                    Width = width,
                    Height = height,
                }));
        }
        pipeline = pipeline
            .Append<ITransformer>(conditional ? ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings", options) : ml.Transforms.DenoiseLatents(sd, "Latents", options))
            .Append<ITransformer>(ml.Transforms.DecodeLatents(sd, "Image", "Latents"));
        var transformer = pipeline.Fit(data);
        var images = transformer.Transform(data);
        string scheduler = transformer.OfType<LatentDenoisingTransformer>().Single().SchedulerName;

        var written = new List<(string Path, long Seed, TimeSpan Time)>();
        console.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn(), new ElapsedTimeColumn())
            .Start(context =>
            {
                // A bar for the images and one for the steps of the image in progress, each with its ETA.
                var imageTask = context.AddTask("images", maxValue: a.Count);
                progress.Task = context.AddTask("steps", maxValue: 1);
                WriteImages(a, images, scheduler, sd.Directory, width, height, initImage, mask, strength, imageTask, written, sd.FormatLoraHashes(a.Prompt));
            });
        var table = new Table().AddColumn("file").AddColumn("seed").AddColumn(new TableColumn("seconds").RightAligned());
        foreach (var (path, seed, time) in written)
            table.AddRow(Markup.Escape(path), seed.ToString(CultureInfo.InvariantCulture), time.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture));
        console.Write(table);
        console.WriteLine($"Done: {written.Count} image(s) in {total.Elapsed.TotalSeconds:F1} s");
        return 0;
    }

    /// <summary>Reads the pipeline's images and writes each as a PNG carrying its generation parameters.</summary>
    private static void WriteImages(Arguments a, IDataView images, string scheduler, string modelDirectory, int width, int height, string? initImage, string? mask, float strength,
        ProgressTask imageTask, List<(string Path, long Seed, TimeSpan Time)> written, string? loraHashes)
    {
        var clock = Stopwatch.StartNew();
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
                ["model"] = modelDirectory,
                ["software"] = "MLNet.Diffusion",
            };
            if (initImage is not null)
            {
                text["init_image"] = initImage;
                text["strength"] = strength.ToString(CultureInfo.InvariantCulture);
            }
            if (a.Control is not null)
            {
                text["control"] = Path.GetFullPath(a.Control);
                text["control_scale"] = a.ControlScale.ToString(CultureInfo.InvariantCulture);
            }
            if (a.Outpaint is { } m)
                text["outpaint"] = $"{m.Left},{m.Top},{m.Right},{m.Bottom}";
            else if (mask is not null)
                text["mask"] = mask;
            string? dir = Path.GetDirectoryName(Path.GetFullPath(path));
            if (dir is not null)
                Directory.CreateDirectory(dir);
            // AUTOMATIC1111's 'parameters' chunk too, with the noise generator as its RNG, so A1111's PNG Info, ComfyUI
            // and this sample (TextToImageTests' round trip) read the settings back.
            var noise = a.Noise;
            bool known = A1111Samplers.TryGetSampler(scheduler, out string sampler, out string scheduleType);
            var parameters = new GenerationParameters
            {
                Prompt = a.Prompt,
                NegativePrompt = a.NegativePrompt,
                Steps = a.Steps,
                Sampler = known ? sampler : null,
                ScheduleType = known ? scheduleType : null,
                CfgScale = a.Guidance,
                Seed = seed,
                Width = width,
                Height = height,
                DenoisingStrength = initImage is null ? null : strength,
                EtaNoiseSeedDelta = noise.StepNoiseSeedOffset is { } delta && a.Reproduce != "comfyui" ? delta : null,
                Rng = Arguments.InfotextRng(noise.Generator),
                Extra = Extra(known ? null : scheduler, loraHashes, a.PromptSyntax),
                // Prompt syntax (issue 15): A1111's Emphasis key when not Original, and this library's "Prompt syntax" key when not plain.
                Emphasis = a.PromptSyntax == MLNet.Diffusion.Prompting.PromptSyntax.A1111 ? a.Emphasis : null,
                PromptSyntax = a.PromptSyntax,
            };
            PngFile.Save(image, path, parameters, text);
            image.Dispose();
            Console.WriteLine($"{path}  (seed {seed})");
            written.Add((path, seed, clock.Elapsed));
            clock.Restart();
            imageTask.Increment(1);
            index++;
        }
    }

    /// <summary>
    /// The infotext's extra pairs: the scheduler when A1111 has no name for it, and AUTOMATIC1111's <c>Lora hashes</c>
    /// (<c>name: first 12 hex digits of the file's data SHA-256</c>, quoted by the infotext writer) when LoRAs applied, and
    /// A1111's <c>Pad conds: True</c> with its syntax: EncodePrompt pads the prompt and the negative prompt to the same chunk
    /// count, which A1111 does with that setting on (its default is off).
    /// </summary>
    private static KeyValuePair<string, string>[] Extra(string? scheduler, string? loraHashes, MLNet.Diffusion.Prompting.PromptSyntax syntax)
    {
        var extra = new List<KeyValuePair<string, string>>(3);
        if (scheduler is not null)
            extra.Add(new("Scheduler", scheduler));
        if (loraHashes is not null)
            extra.Add(new("Lora hashes", loraHashes));
        if (syntax == MLNet.Diffusion.Prompting.PromptSyntax.A1111)
            extra.Add(new("Pad conds", "True"));
        return extra.ToArray();
    }

    /// <summary>
    /// Outpainting: pads the init image (edge replication) and builds the mask of the new border with
    /// <see cref="Outpainting.Prepare"/>, and writes both next to the output as NAME-canvas.png and NAME-mask.png.
    /// </summary>
    /// <returns>The paths of the padded picture and of its mask.</returns>
    private static (string Canvas, string Mask) WriteCanvas(string initImage, (int Left, int Top, int Right, int Bottom) margins, string output, IAnsiConsole console)
    {
        using var image = LoadImage(initImage, "--init-image");
        using var canvas = Outpainting.Prepare(image, margins.Left, margins.Top, margins.Right, margins.Bottom);
        string stem = Path.ChangeExtension(Path.GetFullPath(output), null);
        string? dir = Path.GetDirectoryName(stem);
        if (dir is not null)
            Directory.CreateDirectory(dir);
        string canvasPath = stem + "-canvas.png", maskPath = stem + "-mask.png";
        PngFile.Save(canvas.Image, canvasPath);
        PngFile.Save(canvas.Mask, maskPath);
        console.WriteLine($"Outpainting: {image.Width}×{image.Height} → {canvas.Width}×{canvas.Height} (margins {canvas.Left},{canvas.Top},{canvas.Right},{canvas.Bottom}): {canvasPath}, {maskPath}");
        return (canvasPath, maskPath);
    }

    /// <summary>An image's size, read with the library's <see cref="ImageFile.Load"/>; the error names the argument and the file.</summary>
    private static (int Width, int Height) ImageSize(string path, string argument)
    {
        using var image = LoadImage(path, argument);
        return (image.Width, image.Height);
    }

    private static MLImage LoadImage(string path, string argument)
    {
        try
        {
            return ImageFile.Load(path);
        }
        catch (IOException e)
        {
            throw new IOException($"{argument}: {e.Message}", e);
        }
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

        /// <summary>ControlNet: the control image's full path (the same for every row); empty otherwise.</summary>
        public string ControlPath { get; set; } = string.Empty;
    }

    /// <summary>Feeds the denoising loop's reports (on the generating thread) to the Spectre.Console "steps" bar.</summary>
    private sealed class StepProgress : IProgress<DenoiseProgress>
    {
        public ProgressTask? Task { get; set; }

        public void Report(DenoiseProgress value)
        {
            if (Task is null)
                return;
            Task.MaxValue = value.TotalSteps;
            Task.Value = value.Step;
            Task.Description = $"steps (image {value.FirstRow + 1})";
        }
    }
}
