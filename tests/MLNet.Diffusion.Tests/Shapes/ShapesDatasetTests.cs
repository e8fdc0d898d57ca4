using System;
using System.Linq;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Shapes;

[TestClass]
public sealed class ShapesDatasetTests
{
    [TestMethod]
    public void Items_CoverEveryAttributeCombinationOnce()
    {
        Assert.AreEqual(270, ShapesDataset.Items.Count);
        Assert.AreEqual(270, ShapesDataset.Items.Select(i => (i.Shape, i.Color, i.Background, i.Position)).Distinct().Count());
        Assert.AreEqual(270, ShapesDataset.Items.Select(i => i.Prompt).Distinct().Count());
        for (int k = 0; k < 270; k++)
        {
            var item = ShapesDataset.Items[k];
            Assert.AreEqual(k, item.Index);
            Assert.AreSame(item, ShapesDataset.GetItem(item.Shape, item.Color, item.Background, item.Position));
        }
    }

    [TestMethod]
    public void Palettes_AreDistinct_AndSynonymsParse()
    {
        var shapes = Enum.GetValues<ShapeColor>().Select(ShapesDataset.GetRgb).ToArray();
        var backgrounds = Enum.GetValues<BackgroundColor>().Select(ShapesDataset.GetRgb).ToArray();
        Assert.AreEqual(11, shapes.Concat(backgrounds).Distinct().Count());
        Assert.IsTrue(ShapesDataset.TryParseBackground("grey", out var g) && g == BackgroundColor.Gray);
        Assert.IsTrue(ShapesDataset.TryParsePosition("centre", out var c) && c == ShapePosition.Center);
        Assert.IsTrue(ShapesDataset.TryParsePosition("middle", out var m) && m == ShapePosition.Center);
        Assert.IsFalse(ShapesDataset.TryParseColor("white", out _));
    }

    [TestMethod]
    public void Render_DrawsTheShapeInItsColourAtItsPosition()
    {
        const int size = 64;
        foreach (var position in Enum.GetValues<ShapePosition>())
        {
            foreach (var shape in Enum.GetValues<ShapeKind>())
            {
                var item = ShapesDataset.GetItem(shape, ShapeColor.Orange, BackgroundColor.Black, position);
                byte[] rgb = ShapesDataset.RenderRgb(item, size);
                Assert.AreEqual(size * size * 3, rgb.Length);
                int cx = position switch { ShapePosition.Left => 15, ShapePosition.Center => 32, _ => 49 };
                Assert.AreEqual(ShapesDataset.GetRgb(ShapeColor.Orange), Pixel(rgb, size, cx, 34), $"{item.Prompt}: centre");
                Assert.AreEqual(ShapesDataset.GetRgb(BackgroundColor.Black), Pixel(rgb, size, cx, 4), $"{item.Prompt}: above");
                Assert.AreEqual(ShapesDataset.GetRgb(BackgroundColor.Black), Pixel(rgb, size, cx, 60), $"{item.Prompt}: below");
                // The shape covers 10–16 % of the image (40 % of the height across).
                int covered = Enumerable.Range(0, size * size).Count(p => rgb[3 * p] > 125);
                Assert.IsTrue(covered is > 64 * 64 / 10 and < 64 * 64 * 16 / 100, $"{item.Prompt}: {covered} pixels");
            }
        }
        // Shapes differ from each other, and the tensor form is the bytes scaled to [-1, 1].
        var circle = ShapesDataset.RenderRgb(ShapesDataset.Items[0], size);
        var square = ShapesDataset.RenderRgb(ShapesDataset.GetItem(ShapeKind.Square, ShapeColor.Red, BackgroundColor.White, ShapePosition.Left), size);
        CollectionAssert.AreNotEqual(circle, square);
        float[] t = ShapesDataset.RenderTensor(ShapesDataset.Items[0], size);
        Assert.AreEqual(circle[3 * 5 + 1] / 127.5f - 1f, t[size * size + 5]);
    }

    private static Rgb Pixel(byte[] rgb, int size, int x, int y) => new(rgb[3 * (y * size + x)], rgb[3 * (y * size + x) + 1], rgb[3 * (y * size + x) + 2]);
}
