using System;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Tests.Onnx;

/// <summary>
/// <see cref="TensorBuffer"/> rents its storage from the shared array pool: a buffer still starts as zeros (unless it is
/// an output ONNX Runtime overwrites), the OrtValue covers exactly the tensor, writes past the tensor fail as on an exact
/// array, and Dispose returns the storage once.
/// </summary>
[TestClass]
public sealed class TensorBufferPoolingTests
{
    [TestMethod]
    public void ANewBuffer_StartsAsZeros_EvenWhenThePoolHandsBackADirtyArray()
    {
        // The shared pool's arrays come back with the previous renter's values: rent, dirty and dispose the same size first.
        for (int k = 0; k < 4; k++)
        {
            using var dirty = new TensorBuffer(TensorElementType.Float, new long[] { 3, 7 });
            dirty.Fill(42f);
        }
        using var buffer = new TensorBuffer(TensorElementType.Float, new long[] { 3, 7 });
        var values = new float[21];
        buffer.Read(values);
        CollectionAssert.AreEqual(new float[21], values);
        Assert.AreEqual(21, buffer.FloatSpan.Length);
        Assert.AreEqual(21, buffer.FloatMemory.Length);
    }

    [TestMethod]
    public void TheOrtValue_HasTheTensorsShapeAndLength_NotThePooledArrays()
    {
        foreach (var type in new[] { TensorElementType.Float, TensorElementType.Float16, TensorElementType.Int64, TensorElementType.Int32, TensorElementType.Double })
        {
            using var buffer = new TensorBuffer(type, new long[] { 2, 3, 5 });
            var info = buffer.Value.GetTensorTypeAndShape();
            Assert.AreEqual(30L, info.ElementCount, type.ToString());
            CollectionAssert.AreEqual(new long[] { 2, 3, 5 }, info.Shape, type.ToString());
        }
    }

    [TestMethod]
    public void WritesAndReadsBeyondTheTensor_Throw()
    {
        using var buffer = new TensorBuffer(TensorElementType.Float, new long[] { 5 });
        var e = Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => buffer.Write(new float[3], offset: 3));
        StringAssert.Contains(e.Message, "[5]");
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => buffer.Read(new float[6]));
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => buffer.Write(new int[2], offset: -1));
        using var ids = new TensorBuffer(TensorElementType.Int64, new long[] { 1, 4 });
        Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ids.Write(new int[5]));
    }

    [TestMethod]
    public void Dispose_IsIdempotent_AndTheBufferIsThenUnusable()
    {
        var buffer = new TensorBuffer(TensorElementType.Float, new long[] { 4 });
        buffer.Dispose();
        buffer.Dispose(); // a second Dispose must not return the array to the pool twice
        Assert.ThrowsExactly<ObjectDisposedException>(() => buffer.Fill(1f));
        Assert.ThrowsExactly<ObjectDisposedException>(() => buffer.Write(new float[4]));
        Assert.AreEqual(0, buffer.FloatSpan.Length);
        // Two live buffers never share storage.
        using var a = new TensorBuffer(TensorElementType.Float, new long[] { 4 });
        using var b = new TensorBuffer(TensorElementType.Float, new long[] { 4 });
        a.Fill(1f);
        b.Fill(2f);
        var values = new float[4];
        a.Read(values);
        CollectionAssert.AreEqual(new[] { 1f, 1f, 1f, 1f }, values);
    }

    [TestMethod]
    public void AnOutputBuffer_IsNotCleared_ButCoversTheTensor()
    {
        using var output = new TensorBuffer(TensorElementType.Float, new long[] { 2, 2 }, clear: false);
        output.Write(new[] { 1f, 2f, 3f, 4f });
        var values = new float[4];
        output.Read(values);
        CollectionAssert.AreEqual(new[] { 1f, 2f, 3f, 4f }, values);
    }
}
