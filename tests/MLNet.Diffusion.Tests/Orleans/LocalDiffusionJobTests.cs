using System;
using System.IO;
using System.Linq;
using System.Threading.Tasks;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Imaging;
using MLNet.Diffusion.Orleans;
using MLNet.Diffusion.Tests.Shapes;

namespace MLNet.Diffusion.Tests.Orleans;

/// <summary>The job runner without a cluster: the reference the cluster tests compare with, checked against the plain ML.NET pipeline.</summary>
[TestClass]
public sealed class LocalDiffusionJobTests
{
    [TestMethod]
    public async Task AJobsPngsHoldThePixelsOfThePlainPipelineAndEachRowsOwnSettings()
    {
        string dir = OrleansJobs.NewDirectory("local");
        try
        {
            using var model = StableDiffusionModel.Load(new MLContext(1), ShapesTestModel.Folder, OrleansJobs.ModelOptions);
            var rows = OrleansJobs.Rows(6);
            rows[4] = rows[4] with { Steps = 2, Scheduler = "euler" };
            var job = DiffusionJob.Create("local", OrleansJobs.Definition, rows, dir, shardSize: 4);
            var status = await LocalDiffusionJob.RunAsync(job, model);
            Assert.AreEqual((6L, 0L), (status.Written, status.FailedCount));

            // The same rows through the definition's stages as an ordinary ML.NET pipeline, one settings group at a time.
            var plain = OrleansJobs.Definition.Build(model).Transform(model.MLContext.Data.LoadFromEnumerable(
                rows.Where((_, i) => i != 4).Select(r => new { Prompt = r.Prompt, NegativePrompt = r.NegativePrompt, Seed = r.Seed }).ToArray()));
            var expected = Images(plain);
            for (int i = 0, k = 0; i < rows.Length; i++)
            {
                if (i == 4)
                    continue;
                using var png = MLImage.CreateFromFile(Path.Combine(dir, PngFolderResultSink.FileName(i)));
                CollectionAssert.AreEqual(expected[k++], Rgb(png), $"row {i}");
            }
            var parameters = PngFile.ReadParameters(Path.Combine(dir, PngFolderResultSink.FileName(4)))!;
            Assert.AreEqual((2, 1004L, 64, 64), (parameters.Steps!.Value, parameters.Seed!.Value, parameters.Width!.Value, parameters.Height!.Value));
            Assert.AreEqual("Euler", parameters.Sampler);
            Assert.AreEqual("4", PngFile.ReadText(Path.Combine(dir, PngFolderResultSink.FileName(4)))["row"]);

            // Run again: every row is in the sink.
            var again = await LocalDiffusionJob.RunAsync(job, model);
            Assert.AreEqual((0L, 6L), (again.Written, again.Skipped));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    private static byte[][] Images(IDataView view)
    {
        var column = view.Schema["Image"];
        using var cursor = view.GetRowCursor(new[] { column });
        var getter = cursor.GetGetter<MLImage>(column);
        var result = new System.Collections.Generic.List<byte[]>();
        while (cursor.MoveNext())
        {
            MLImage image = null!;
            getter(ref image);
            using (image)
                result.Add(Rgb(image));
        }
        return result.ToArray();
    }

    /// <summary>The RGB bytes of an image, whatever its pixel format (a PNG decodes as RGBA or BGRA).</summary>
    private static byte[] Rgb(MLImage image)
    {
        var p = image.Pixels;
        bool bgra = image.PixelFormat == MLPixelFormat.Bgra32;
        var rgb = new byte[image.Width * image.Height * 3];
        for (int i = 0; i < image.Width * image.Height; i++)
        {
            rgb[3 * i] = p[4 * i + (bgra ? 2 : 0)];
            rgb[3 * i + 1] = p[4 * i + 1];
            rgb[3 * i + 2] = p[4 * i + (bgra ? 0 : 2)];
        }
        return rgb;
    }
}
