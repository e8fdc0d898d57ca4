// The user's first image from the NuGet packages (README "Install from NuGet"; .ci/run copies this file into a fresh
// `dotnet new console` app outside the repository that references MLNet.Diffusion.Shapes from a local feed, and runs it).
// Exit code 0 when the image is 256×256, not blank, and the prompted colours dominate it.
using System;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNet.Diffusion;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Shapes;

var ml = new MLContext(seed: 1);
using var sd = StableDiffusionModel.Load(ml, ShapesModel.EnsureBuilt());   // built once into a cache folder
var prompts = ml.Data.LoadFromEnumerable(new[] { new Prompt("a red circle on a blue background", 1) });
var pipeline = ml.Transforms.EncodePrompt(sd, "Embeddings", nameof(Prompt.Text))
    .Append(ml.Transforms.DenoiseLatents(sd, "Latents", "Embeddings",
        new DenoiseLatentsOptions { Width = 256, Height = 256, SeedColumnName = nameof(Prompt.Seed) }))
    .Append(ml.Transforms.DecodeLatents(sd, "Image", "Latents"));
var images = pipeline.Fit(prompts).Transform(prompts);   // lazy: the cursor below runs the models
using var cursor = images.GetRowCursor(new[] { images.Schema["Image"] });
var getImage = cursor.GetGetter<MLImage>(images.Schema["Image"]);
MLImage image = null!;
while (cursor.MoveNext())
    getImage(ref image);
PngFile.Save(image, "red-circle.png");

// The checks: size, not blank, and the prompt's colours (the Shapes palette's red and navy blue background) are what the
// picture is made of: each pixel counts for the nearest colour of the palette.
var palette = Enum.GetValues<ShapeColor>().Select(c => ShapesDataset.GetRgb(c))
    .Concat(Enum.GetValues<BackgroundColor>().Select(c => ShapesDataset.GetRgb(c))).ToArray();
int redIndex = Array.IndexOf(palette, ShapesDataset.GetRgb(ShapeColor.Red));
int blueIndex = Array.IndexOf(palette, ShapesDataset.GetRgb(BackgroundColor.Blue));
int red = 0, blue = 0, total = image.Width * image.Height;
var pixels = image.Pixels;
int r = image.PixelFormat == MLPixelFormat.Bgra32 ? 2 : 0, b = 2 - r;
for (int i = 0; i < total; i++)
{
    int pr = pixels[4 * i + r], pg = pixels[4 * i + 1], pb = pixels[4 * i + b];
    int nearest = 0, best = int.MaxValue;
    for (int k = 0; k < palette.Length; k++)
    {
        int d = (pr - palette[k].R) * (pr - palette[k].R) + (pg - palette[k].G) * (pg - palette[k].G) + (pb - palette[k].B) * (pb - palette[k].B);
        if (d < best)
            (nearest, best) = (k, d);
    }
    red += nearest == redIndex ? 1 : 0;
    blue += nearest == blueIndex ? 1 : 0;
}
int other = total - red - blue;
Console.WriteLine($"red-circle.png: {image.Width}×{image.Height}, red {100.0 * red / total:F1} %, blue {100.0 * blue / total:F1} %, other {100.0 * other / total:F1} %");
bool ok = image.Width == 256 && image.Height == 256 && red > total / 50 && blue > total / 3 && red + blue > total * 3 / 4;
Console.WriteLine(ok ? "package smoke test: OK" : "package smoke test: FAILED");
return ok ? 0 : 1;

/// <summary>One prompt row.</summary>
public sealed record Prompt(string Text, long Seed);
