using System;
using System.Collections.Generic;
using Microsoft.ML.OnnxRuntime;
using MLNet.Diffusion.Onnx;
using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// Runs the text encoder(s) on token ids, in mini-batches of one ONNX call per encoder: ids → states [n, L, D] (and the
/// pooled vector [n, P] when the model has one). SD 1.x/2.x has one encoder (<c>last_hidden_state</c>); SDXL runs
/// text_encoder and text_encoder_2 on their own tokenizers' ids and concatenates their penultimate hidden states on the
/// feature axis, D = D₁ + D₂, with text_encoder_2's <c>text_embeds</c> as the pooled vector (diffusers
/// StableDiffusionXLPipeline.encode_prompt). Ids are fed as int32 or int64 per each model's metadata. Step 3 of
/// <see cref="PromptEncoder"/>'s recipe.
/// </summary>
internal sealed class TextEncoderRunner : IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly IReadOnlyList<TextEncoderBinding> _bindings;
    private readonly Slot[] _slots;
    private readonly int _length;
    private readonly int _hidden;
    private int _count = -1;

    public TextEncoderRunner(StableDiffusionModel model)
    {
        _model = model;
        _bindings = model.TextEncoders;
        _length = model.Info.SequenceLength;
        _hidden = model.Info.HiddenSize;
        _slots = new Slot[_bindings.Count];
        for (int e = 0; e < _slots.Length; e++)
            _slots[e] = new Slot(_bindings[e]);
    }

    public int SequenceLength => _length;

    /// <summary>Width of the concatenated states, D.</summary>
    public int HiddenSize => _hidden;

    public int? PooledSize => _model.Info.PooledSize;

    /// <summary>How many text encoders a prompt runs through; <see cref="Encode"/> takes that many id rows per prompt.</summary>
    public int EncoderCount => _slots.Length;

    /// <summary>The tokenizer that makes the ids of encoder <paramref name="encoder"/>.</summary>
    public ClipTokenizer TokenizerOf(int encoder) => _bindings[encoder].Tokenizer;

    /// <summary>The width D_e of encoder <paramref name="encoder"/>'s states within D (its features start after the earlier encoders').</summary>
    public int HiddenSizeOf(int encoder) => _bindings[encoder].HiddenSize;

    /// <summary>
    /// Encodes <paramref name="count"/> prompts. <paramref name="ids"/> holds per prompt one row of L ids per encoder
    /// (prompt r, encoder e at (r·E + e)·L); writes [count, L, D] states and, if requested, [count, P] pooled vectors.
    /// </summary>
    public void Encode(ReadOnlySpan<int> ids, int count, Span<float> hidden, Span<float> pooled)
    {
        int encoders = _slots.Length;
        if (ids.Length != count * encoders * _length)
            throw new ArgumentException($"Expected {count}×{encoders}×{_length} token ids, got {ids.Length}.", nameof(ids));
        if (hidden.Length != count * _length * _hidden)
            throw new ArgumentException($"Expected room for {count}×{_length}×{_hidden} hidden values, got {hidden.Length}.", nameof(hidden));
        _model.ThrowIfDisposed();
        Ensure(count);
        int offset = 0;
        for (int e = 0; e < encoders; e++)
        {
            var slot = _slots[e];
            for (int r = 0; r < count; r++)
                slot.Ids!.Write(ids.Slice((r * encoders + e) * _length, _length), r * _length);
            _bindings[e].Encoder.Run(null, slot.InputNames, slot.Inputs, slot.OutputNames, slot.Outputs);
            int width = _bindings[e].HiddenSize;
            if (encoders == 1)
            {
                slot.States!.Read(hidden);
            }
            else
            {
                // Concatenate on the feature axis: each token's D_e values go to [offset, offset + D_e) of its D.
                slot.States!.Read(slot.Scratch);
                for (int t = 0; t < count * _length; t++)
                    slot.Scratch.AsSpan(t * width, width).CopyTo(hidden.Slice(t * _hidden + offset, width));
            }
            if (slot.Pooled is not null && pooled.Length > 0)
                slot.Pooled.Read(pooled);
            offset += width;
        }
    }

    private void Ensure(int count)
    {
        if (count == _count)
            return;
        DisposeBuffers();
        for (int e = 0; e < _slots.Length; e++)
            _slots[e].Allocate(count, _length, _slots.Length > 1);
        _count = count;
    }

    private void DisposeBuffers()
    {
        foreach (var slot in _slots)
            slot.Dispose();
        _count = -1;
    }

    public void Dispose() => DisposeBuffers();

    /// <summary>One encoder's reusable tensors for a batch size.</summary>
    private sealed class Slot : IDisposable
    {
        private readonly TextEncoderBinding _binding;

        public Slot(TextEncoderBinding binding)
        {
            _binding = binding;
            OutputNames = binding.PooledOutput is null ? new[] { binding.StatesOutput } : new[] { binding.StatesOutput, binding.PooledOutput };
        }

        public string[] InputNames { get; } = { "input_ids" };

        public string[] OutputNames { get; }

        public TensorBuffer? Ids { get; private set; }

        public TensorBuffer? States { get; private set; }

        public TensorBuffer? Pooled { get; private set; }

        public OrtValue[] Inputs { get; private set; } = Array.Empty<OrtValue>();

        public OrtValue[] Outputs { get; private set; } = Array.Empty<OrtValue>();

        public float[] Scratch { get; private set; } = Array.Empty<float>();

        public void Allocate(int count, int length, bool concatenated)
        {
            var encoder = _binding.Encoder;
            Ids = new TensorBuffer(encoder.Input("input_ids").ElementDataType, new long[] { count, length });
            States = new TensorBuffer(encoder.Output(_binding.StatesOutput).ElementDataType, new long[] { count, length, _binding.HiddenSize });
            if (_binding.PooledOutput is { } p)
                Pooled = new TensorBuffer(encoder.Output(p).ElementDataType, new long[] { count, _binding.PooledSize!.Value });
            Inputs = new[] { Ids.Value };
            Outputs = Pooled is null ? new[] { States.Value } : new[] { States.Value, Pooled.Value };
            Scratch = concatenated ? new float[count * length * _binding.HiddenSize] : Array.Empty<float>();
        }

        public void Dispose()
        {
            Ids?.Dispose();
            States?.Dispose();
            Pooled?.Dispose();
            Ids = States = Pooled = null;
        }
    }
}
