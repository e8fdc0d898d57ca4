using MLNet.Diffusion.Tokenization;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// One text encoder as prompt encoding uses it: the model, the tokenizer that feeds it, the output whose states go to the
/// UNet (SD 1.x/2.x: <c>last_hidden_state</c>; SDXL: the penultimate layer, <c>hidden_states.{N−1}</c> of
/// <c>hidden_states.0 … N</c>, as diffusers' encode_prompt takes <c>hidden_states[-2]</c>), and the output that is the
/// pooled prompt vector, if this encoder provides it (SD: <c>pooler_output</c>; SDXL: <c>text_encoder_2</c>'s
/// <c>text_embeds</c>). The states of several encoders are concatenated on the feature axis in binding order.
/// </summary>
/// <param name="Encoder">The ONNX model.</param>
/// <param name="Tokenizer">Its tokenizer.</param>
/// <param name="StatesOutput">The output of states [B, L, <paramref name="HiddenSize"/>] the UNet is conditioned on.</param>
/// <param name="HiddenSize">Width of those states.</param>
/// <param name="PooledOutput">The pooled output [B, <paramref name="PooledSize"/>] when this encoder provides it.</param>
/// <param name="PooledSize">Width of the pooled output.</param>
internal sealed record TextEncoderBinding(OnnxComponent Encoder, ClipTokenizer Tokenizer, string StatesOutput, int HiddenSize, string? PooledOutput, int? PooledSize);
