using System;
using System.Collections.Generic;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Tests.Prompting;

/// <summary>
/// A UNet conditioning with no inputs of its own that records, after every denoiser call, which of the row's conditional
/// blocks the call's <c>encoder_hidden_states</c> held (row 0, the conditional half with guidance): the denoiser binds that
/// buffer once and writes each call's conditioning into it before the UNet runs, so after the call it still holds it.
/// One-part schedules only (with AND the buffer holds the last part's).
/// </summary>
internal sealed class ConditioningSpy : IUnetConditioning
{
    private readonly float[] _embeddings;
    private readonly int _perState;
    private TensorBuffer? _states;
    private int _row;

    /// <param name="embeddings">The row's [1 + K, S, D] blocks (unconditional first).</param>
    /// <param name="perState">S × D.</param>
    public ConditioningSpy(float[] embeddings, int perState)
    {
        _embeddings = embeddings;
        _perState = perState;
    }

    /// <summary>Per executed call (in order): the loop index and the 0-based conditioning (block − 1) the UNet read.</summary>
    public List<(int Index, int Conditioning)> Calls { get; } = new();

    public void DeclareInputs(UnetInputs inputs)
    {
        int i = 0;
        while (inputs.Names[i] != "encoder_hidden_states")
            i++;
        _states = inputs.Buffers[i];
        _row = inputs.Guidance ? inputs.Count : 0;
    }

    public void AfterStep(in UnetStep step)
    {
        var bound = _states!.FloatSpan.Slice(_row * _perState, _perState);
        int found = -1;
        for (int b = 1; b * _perState < _embeddings.Length && found < 0; b++)
        {
            if (bound.SequenceEqual(_embeddings.AsSpan(b * _perState, _perState)))
                found = b - 1;
        }
        if (found < 0)
            throw new InvalidOperationException($"Call {step.Index}: encoder_hidden_states holds none of the row's conditionings.");
        Calls.Add((step.Index, found));
    }
}
