using System;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Shapes;

[TestClass]
public sealed class ShapesVaeTests
{
    private const int Size = ShapesTestModel.ImageSize;

    [TestMethod]
    public void EncodeDecode_ReproducesItems()
    {
        // One item per shape × position, with varied colours and backgrounds.
        var items = new[]
        {
            ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Red, BackgroundColor.Blue, ShapePosition.Left),
            ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Yellow, BackgroundColor.Black, ShapePosition.Center),
            ShapesDataset.GetItem(ShapeKind.Triangle, ShapeColor.Purple, BackgroundColor.White, ShapePosition.Right),
            ShapesDataset.GetItem(ShapeKind.Circle, ShapeColor.Green, BackgroundColor.Green, ShapePosition.Center),
            ShapesDataset.GetItem(ShapeKind.Triangle, ShapeColor.Orange, BackgroundColor.Gray, ShapePosition.Left),
        };
        int plane = 3 * Size * Size;
        var input = new float[items.Length * plane];
        for (int b = 0; b < items.Length; b++)
            ShapesTestModel.RenderTensor(items[b]).CopyTo(input, b * plane);

        var enc = ShapesTestModel.Run(ShapesTestModel.VaeEncoder, ("sample", input, new long[] { items.Length, 3, Size, Size }))["latent_sample"];
        CollectionAssert.AreEqual(new long[] { items.Length, 4, Size / 8, Size / 8 }, enc.Shape);
        var dec = ShapesTestModel.Run(ShapesTestModel.VaeDecoder, ("latent_sample", enc.Data, enc.Shape))["sample"];
        CollectionAssert.AreEqual(new long[] { items.Length, 3, Size, Size }, dec.Shape);

        for (int b = 0; b < items.Length; b++)
        {
            double sumAbs = 0;
            int far = 0;
            for (int i = 0; i < plane; i++)
            {
                double e = Math.Abs(dec.Data[b * plane + i] - input[b * plane + i]);
                sumAbs += e;
                if (e > 0.25)
                    far++;
            }
            double mae = sumAbs / plane;
            Console.WriteLine($"{items[b].Prompt}: mean abs error {mae:F4} (of a [-1, 1] range), {far} values off by > 0.25");
            // Flat regions are exact up to the fit; only the 8×8 blocks an edge crosses are blurred.
            Assert.IsTrue(mae < 0.03, $"{items[b].Prompt}: mean abs error {mae}");
            Assert.IsTrue(far < plane / 25, $"{items[b].Prompt}: {far} values off by > 0.25");
            int cx = items[b].Position switch { ShapePosition.Left => 59, ShapePosition.Center => 128, _ => 197 };
            foreach (var (x, y) in new[] { (cx, 136), (4, 4), (cx, 20), (cx, 240) })
                for (int c = 0; c < 3; c++)
                {
                    int i = b * plane + (c * Size + y) * Size + x;
                    Assert.AreEqual(input[i], dec.Data[i], 0.05f, $"{items[b].Prompt}: pixel ({x}, {y}) channel {c}");
                }
        }
        float min = dec.Data.Min(), max = dec.Data.Max();
        Console.WriteLine($"decoded range [{min}, {max}]");
        // The linear decoder rings a little at high-contrast edges (no clamp in the graph; pipelines clamp to [-1, 1]).
        int outside = dec.Data.Count(v => v is < -1.1f or > 1.1f);
        Console.WriteLine($"{outside} of {dec.Data.Length} values outside [-1.1, 1.1]");
        Assert.IsTrue(min > -1.5f && max < 1.5f, $"decoded range [{min}, {max}]");
        Assert.IsTrue(outside < dec.Data.Length / 200, $"{outside} values outside [-1.1, 1.1]");
        Assert.IsTrue(min < -0.8f && max > 0.8f, $"decoded range [{min}, {max}] does not span the palette");
    }

    [TestMethod]
    public void Decoder_TakesNonSquareLatents_AndDecodesEachLatentPixelToOnePatch()
    {
        // A constant latent [1,4,2,3] decodes to [1,3,16,24] made of one repeated 8×8 patch.
        var latent = new float[4 * 2 * 3];
        for (int c = 0; c < 4; c++)
            for (int i = 0; i < 6; i++)
                latent[c * 6 + i] = (c + 1) * 0.7f;
        var dec = ShapesTestModel.Run(ShapesTestModel.VaeDecoder, ("latent_sample", latent, new long[] { 1, 4, 2, 3 }))["sample"];
        CollectionAssert.AreEqual(new long[] { 1, 3, 16, 24 }, dec.Shape);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 8; y++)
                for (int x = 0; x < 8; x++)
                {
                    float v = dec.Data[(c * 16 + y) * 24 + x];
                    Assert.AreEqual(v, dec.Data[(c * 16 + y + 8) * 24 + x], 1e-6f);
                    Assert.AreEqual(v, dec.Data[(c * 16 + y) * 24 + x + 16], 1e-6f);
                }
    }
}
