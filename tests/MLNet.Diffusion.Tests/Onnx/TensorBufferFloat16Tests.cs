using System;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Microsoft.VisualStudio.TestTools.UnitTesting;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Tests.Onnx;

/// <summary>
/// The float16 model boundary (<see cref="TensorBuffer"/>): float32 values written to a float16 tensor are stored as
/// IEEE 754 binary16 rounded to nearest, ties to even (the conversion numpy's <c>astype(float16)</c> and PyTorch's
/// <c>.half()</c> do for diffusers' fp16 ONNX pipeline), and read back exactly; <see cref="System.Half"/> is the reference.
/// </summary>
[TestClass]
public sealed class TensorBufferFloat16Tests
{
    // binary16: 11 significant bits, largest finite 65504, smallest normal 2^-14, smallest subnormal 2^-24 (IEEE 754-2008 §3.6).
    private static readonly float[] s_values =
    {
        0f, -0f, 1f, -1f, 0.5f, 1f / 3f, -2f / 3f, 0.1f, 3.14159265f, 999f, 951.37f, 0.18215f,
        1f + 1f / 2048f,          // halfway between 1 and 1 + 2^-10: ties to even → 1
        1f + 3f / 2048f,          // halfway between 1 + 2^-10 and 1 + 2^-9: ties to even → 1 + 2^-9
        1f + 1f / 2048f + 1e-6f,  // just above the tie → 1 + 2^-10
        65504f, 65519.99f,        // largest finite, and the largest float that still rounds to it
        65520f, 1e6f, -1e6f,      // round to ±infinity
        6.1035156e-5f,            // 2^-14, smallest normal
        5.9604645e-8f,            // 2^-24, smallest subnormal
        2.9802322e-8f,            // 2^-25: tie between 0 and 2^-24 → 0 (even)
        4.4703484e-8f,            // 1.5·2^-25 → 2^-24
        1e-9f,                    // underflows to 0
        float.PositiveInfinity, float.NegativeInfinity, float.NaN,
    };

    [TestMethod]
    public void WriteStoresTheNearestHalfAndReadReturnsIt()
    {
        using var buffer = new TensorBuffer(TensorElementType.Float16, new long[] { 1, s_values.Length });
        buffer.Write(s_values);
        var stored = buffer.Value.GetTensorDataAsSpan<Float16>();
        var back = new float[s_values.Length];
        buffer.Read(back);
        for (int i = 0; i < s_values.Length; i++)
        {
            Half expected = (Half)s_values[i];
            Assert.AreEqual(BitConverter.HalfToUInt16Bits(expected), stored[i].value, $"bits of {s_values[i]:R}");
            Assert.AreEqual(BitConverter.SingleToInt32Bits((float)expected), BitConverter.SingleToInt32Bits(back[i]), $"read back of {s_values[i]:R}");
        }
    }

    [TestMethod]
    public void WriteAtAnOffsetLeavesTheRestAlone()
    {
        using var buffer = new TensorBuffer(TensorElementType.Float16, new long[] { 6 });
        buffer.Fill(7f);
        buffer.Write(new[] { 0.1f, 0.2f }, offset: 3);
        var back = new float[6];
        buffer.Read(back);
        CollectionAssert.AreEqual(new[] { 7f, 7f, 7f, (float)(Half)0.1f, (float)(Half)0.2f, 7f }, back);
    }

    [TestMethod]
    public void FillRoundsAsWriteDoes()
    {
        // The timestep is written with Fill: a fractional timestep (Karras sigmas) rounds to the nearest half, as written.
        foreach (float v in s_values)
        {
            using var buffer = new TensorBuffer(TensorElementType.Float16, new long[] { 3 });
            buffer.Fill(v);
            var stored = buffer.Value.GetTensorDataAsSpan<Float16>();
            for (int i = 0; i < 3; i++)
                Assert.AreEqual(BitConverter.HalfToUInt16Bits((Half)v), stored[i].value, $"Fill({v:R})");
        }
    }

    [TestMethod]
    public void ReadOutputConvertsAFloat16OrtValueExactly()
    {
        var halves = new Float16[s_values.Length];
        for (int i = 0; i < halves.Length; i++)
            halves[i] = new Float16(BitConverter.HalfToUInt16Bits((Half)s_values[i]));
        using var value = OrtValue.CreateTensorValueFromMemory(halves, new long[] { halves.Length });
        var back = new float[halves.Length];
        TensorBuffer.ReadOutput(value, back);
        for (int i = 0; i < back.Length; i++)
            Assert.AreEqual(BitConverter.SingleToInt32Bits((float)(Half)s_values[i]), BitConverter.SingleToInt32Bits(back[i]), $"{s_values[i]:R}");
    }
}
