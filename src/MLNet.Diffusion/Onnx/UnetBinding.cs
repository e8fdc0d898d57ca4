using System;
using Microsoft.ML.OnnxRuntime;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// ONNX Runtime IO binding of the UNet for one batch shape (issue 8: the denoising loop keeps what does not change on the
/// device). ONNX Runtime's <c>IOBinding::BindInput</c> copies a tensor to the device the session needs it on at bind
/// time (utils::CopyOneInputAcrossDevices), and an output bound to a preallocated host tensor is copied there once at
/// the end of the run. So, per batch, <see cref="BindBatch"/> binds every input once — the text embeddings (and SDXL's
/// text_embeds/time_ids) are copied to the device once and stay there for all steps — and the output is bound once; per
/// step, <see cref="Run"/> re-binds only the inputs that change every step (sample, timestep): one host→device copy
/// of the sample and one device→host copy of the prediction per step, the guidance combine and scheduler step on the
/// host. On the CPU provider a bound tensor is the caller's pinned host memory itself (no copy), so writing it is
/// enough and nothing is re-bound per step.
/// </summary>
internal sealed class UnetBinding : IDisposable
{
    private readonly OnnxComponent _unet;
    private readonly OrtIoBinding _binding;
    private readonly string[] _inputNames;
    private readonly OrtValue[] _inputs;
    private readonly int[] _perStepInputs;
    private readonly bool _copyPerStep;

    /// <param name="unet">The UNet component.</param>
    /// <param name="inputNames">Input names, aligned with <paramref name="inputs"/>.</param>
    /// <param name="inputs">The host tensors the loop writes (pinned managed memory).</param>
    /// <param name="outputName">The prediction output.</param>
    /// <param name="output">The preallocated host tensor the prediction lands in.</param>
    /// <param name="perStepInputs">Indexes into <paramref name="inputs"/> of the tensors rewritten every step.</param>
    /// <param name="copyPerStep">Re-bind the per-step inputs at every step (needed when the session runs on a device,
    /// where the bound tensor is a device copy); defaults to <see cref="OnnxComponent.RunsOnDevice"/>.</param>
    public UnetBinding(OnnxComponent unet, string[] inputNames, OrtValue[] inputs, string outputName, OrtValue output,
        int[] perStepInputs, bool? copyPerStep = null)
    {
        if (inputNames.Length != inputs.Length)
            throw new ArgumentException($"{inputNames.Length} input names for {inputs.Length} inputs.", nameof(inputs));
        foreach (int i in perStepInputs)
        {
            if ((uint)i >= (uint)inputs.Length)
                throw new ArgumentOutOfRangeException(nameof(perStepInputs), $"Input index {i} is outside the {inputs.Length} inputs.");
        }
        _unet = unet;
        _inputNames = inputNames;
        _inputs = inputs;
        _perStepInputs = perStepInputs;
        _copyPerStep = copyPerStep ?? unet.RunsOnDevice;
        _binding = unet.CreateIoBinding();
        try
        {
            _binding.BindOutput(outputName, output);
        }
        catch
        {
            _binding.Dispose();
            throw;
        }
    }

    /// <summary>Whether <see cref="Run"/> re-binds (copies) the per-step inputs.</summary>
    public bool CopiesPerStep => _copyPerStep;

    /// <summary>How many times every input was bound (once per batch).</summary>
    public int BatchBindCount { get; private set; }

    /// <summary>How many single inputs <see cref="Run"/> re-bound (per-step inputs × steps on a device, 0 on the CPU).</summary>
    public int StepBindCount { get; private set; }

    /// <summary>Binds every input after the batch's inputs are written: the once-per-batch host→device copies.</summary>
    public void BindBatch()
    {
        for (int i = 0; i < _inputs.Length; i++)
            _binding.BindInput(_inputNames[i], _inputs[i]);
        BatchBindCount++;
    }

    /// <summary>One UNet call after the step's inputs are written; the prediction is in the bound output afterwards.</summary>
    public void Run()
    {
        if (BatchBindCount == 0)
            throw new InvalidOperationException("The UNet inputs were not bound for this batch (BindBatch).");
        if (_copyPerStep)
        {
            foreach (int i in _perStepInputs)
                _binding.BindInput(_inputNames[i], _inputs[i]);
            StepBindCount += _perStepInputs.Length;
        }
        _unet.RunWithBinding(_binding);
        if (_copyPerStep)
            _binding.SynchronizeBoundOutputs();
    }

    public void Dispose() => _binding.Dispose();
}
