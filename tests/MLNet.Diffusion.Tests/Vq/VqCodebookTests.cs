using System;
using System.IO;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Tests.Vq;

/// <summary>Host quantisation: nearest codebook vector by squared distance, ties to the first index (torch.argmin), planar latents.</summary>
[TestClass]
public sealed class VqCodebookTests
{
    [TestMethod]
    public void PicksTheNearestVectorPerLatentPixel()
    {
        // Codebook E = [[0, 0], [10, 0], [0, 10]] (K = 3, C = 2); two latent pixels, planar [C, 1, 2]:
        // pixel 0 = (9, 1) → E1, pixel 1 = (1, 8) → E2.
        var codebook = VqCodebook.Create(new[] { 0f, 0, 10, 0, 0, 10 }, new[] { 3, 2 }, 2, "test");
        float[] latents = { 9f, 1f, 1f, 8f };
        var quantized = new float[4];
        var indices = new int[2];
        codebook.Quantize(latents, 1, 2, quantized, indices);
        CollectionAssert.AreEqual(new[] { 1, 2 }, indices);
        CollectionAssert.AreEqual(new[] { 10f, 0f, 0f, 10f }, quantized);
    }

    [TestMethod]
    public void BreaksTiesToTheLowestIndexAsArgmin()
    {
        // (5, 0) is at distance 25 from E0 = (0, 0) and from E1 = (10, 0): torch.argmin returns the first, 0.
        // A codebook with a repeated row: the first of the two wins.
        var codebook = VqCodebook.Create(new[] { 0f, 0, 10, 0, 10, 0 }, new[] { 3, 2 }, 2, "test");
        var indices = new int[2];
        var quantized = new float[4];
        codebook.Quantize(new[] { 5f, 11f, 0f, 0f }, 1, 2, quantized, indices);
        CollectionAssert.AreEqual(new[] { 0, 1 }, indices);
    }

    [TestMethod]
    public void QuantisesInPlaceAndRowByRow()
    {
        var codebook = VqCodebook.Create(new[] { -1f, -1, 1, 1 }, new[] { 2, 2 }, 2, "test");
        float[] latents = { 0.5f, -0.5f, 0.2f, -3f, /* row 1 */ -0.1f, 2f, -0.3f, 0.4f };
        var indices = new int[4];
        codebook.Quantize(latents, 2, 2, latents, indices);
        CollectionAssert.AreEqual(new[] { 1, 0, 0, 1 }, indices);
        CollectionAssert.AreEqual(new[] { 1f, -1f, 1f, -1f, -1f, 1f, -1f, 1f }, latents);
    }

    [TestMethod]
    public void RefusesACodebookOfTheWrongShapeOrWithNonFiniteValues()
    {
        var shape = Assert.ThrowsExactly<InvalidDataException>(() => VqCodebook.Create(new float[6], new[] { 2, 3 }, 4, "cb.npy"));
        StringAssert.Contains(shape.Message, "[2, 3]");
        StringAssert.Contains(shape.Message, "[K, 4]");
        var nan = Assert.ThrowsExactly<InvalidDataException>(() => VqCodebook.Create(new[] { 0f, float.NaN }, new[] { 1, 2 }, 2, "cb.npy"));
        StringAssert.Contains(nan.Message, "row 0, column 1");
    }
}
