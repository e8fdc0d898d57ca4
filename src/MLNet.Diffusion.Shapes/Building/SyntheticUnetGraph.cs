using System;
using System.Collections.Generic;
using MLNet.Diffusion.Shapes.Onnx;
using static MLNet.Diffusion.Shapes.Onnx.OnnxGraphBuilder;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes.Building;

/// <summary>
/// The synthetic UNet's graph: diffusers' <c>UNet2DConditionModel</c> as Stable Diffusion 1.x configures it
/// (CrossAttnDownBlock2D × (levels − 1) + DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D + CrossAttnUpBlock2D ×
/// (levels − 1)), written with the operators a PyTorch ONNX export of it contains: GroupNorm as
/// Reshape → InstanceNormalization → Reshape → affine, attention as MatMul/Softmax/MatMul, GELU through Erf.
/// Weight names follow diffusers' state dict. Weights are random (see <see cref="ExternalWeights"/>), scaled by
/// 1/√fan-in so that activations keep a unit scale through the depth (GroupNorm/LayerNorm renormalise each block).
/// </summary>
internal sealed class SyntheticUnetGraph
{
    private readonly OnnxGraphBuilder _g;
    private readonly ExternalWeights _w;
    private readonly SyntheticUnetOptions _o;
    private readonly Dictionary<string, string> _ints = new(StringComparer.Ordinal);

    private SyntheticUnetGraph(OnnxGraphBuilder g, ExternalWeights w, SyntheticUnetOptions o)
    {
        _g = g;
        _w = w;
        _o = o;
    }

    /// <summary>Writes the graph's nodes and weights into <paramref name="g"/> and <paramref name="w"/>.</summary>
    public static void Write(OnnxGraphBuilder g, ExternalWeights w, SyntheticUnetOptions o) => new SyntheticUnetGraph(g, w, o).Unet();

    private void Unet()
    {
        var type = _w.Type;
        var ch = _o.BlockChannels;
        int levels = ch.Count;
        _g.Input("sample", type, "batch", 4L, "height", "width");
        _g.Input("timestep", type, "batch");
        _g.Input("encoder_hidden_states", type, "batch", "sequence", (long)_o.CrossAttentionDim);

        // 1. Timestep embedding: sinusoids (diffusers get_timestep_embedding, flip_sin_to_cos=True, shift 0) in float32,
        //    then linear_1 → SiLU → linear_2; every ResNet adds a projection of SiLU(temb).
        string temb = Linear(TimeSinusoids(), ch[0], _o.TimeEmbeddingDim, "time_embedding.linear_1");
        temb = Linear(Silu(temb), _o.TimeEmbeddingDim, _o.TimeEmbeddingDim, "time_embedding.linear_2");
        string tembSilu = Silu(temb);

        // 2. Down path: each level ResNet (+ spatial transformer) × layers, then a stride-2 conv but at the lowest level.
        string x = Conv("sample", 4, ch[0], 3, "conv_in");
        var skips = new Stack<(string Value, int Channels)>();
        skips.Push((x, ch[0]));
        int c = ch[0];
        for (int i = 0; i < levels; i++)
        {
            bool attention = i < levels - 1;
            for (int j = 0; j < _o.LayersPerBlock; j++)
            {
                x = Resnet(x, c, ch[i], tembSilu, $"down_blocks.{i}.resnets.{j}");
                c = ch[i];
                if (attention)
                    x = Transformer(x, c, $"down_blocks.{i}.attentions.{j}");
                skips.Push((x, c));
            }
            if (i < levels - 1)
            {
                x = Conv(x, c, c, 3, $"down_blocks.{i}.downsamplers.0.conv", stride: 2);
                skips.Push((x, c));
            }
        }

        // 3. Middle: ResNet, transformer, ResNet at the lowest resolution.
        x = Resnet(x, c, c, tembSilu, "mid_block.resnets.0");
        x = Transformer(x, c, "mid_block.attentions.0");
        x = Resnet(x, c, c, tembSilu, "mid_block.resnets.1");

        // 4. Up path: layers + 1 ResNets per level, each on the concatenation with a skip, then nearest ×2 + conv.
        for (int i = 0; i < levels; i++)
        {
            int outC = ch[levels - 1 - i];
            bool attention = i > 0;
            for (int j = 0; j <= _o.LayersPerBlock; j++)
            {
                var (skip, skipC) = skips.Pop();
                string cat = _g.Node("Concat", [x, skip], null, Attr("axis", 1L));
                x = Resnet(cat, c + skipC, outC, tembSilu, $"up_blocks.{i}.resnets.{j}");
                c = outC;
                if (attention)
                    x = Transformer(x, c, $"up_blocks.{i}.attentions.{j}");
            }
            if (i < levels - 1)
            {
                string scales = _g.Initializer($"up_blocks.{i}.upsamplers.0.scales", [1f, 1f, 2f, 2f], 4);
                string up = _g.Node("Resize", [x, string.Empty, scales], null, Attr("mode", "nearest"));
                x = Conv(up, c, c, 3, $"up_blocks.{i}.upsamplers.0.conv");
            }
        }

        // 5. Output: GroupNorm → SiLU → conv to 4 channels.
        x = Silu(GroupNorm(x, c, "conv_norm_out", 1e-5f));
        string output = Conv(x, c, 4, 3, "conv_out");
        _g.Node("Identity", [output], "out_sample");
        _g.Output("out_sample", type, "batch", 4L, "height", "width");
    }

    private string TimeSinusoids()
    {
        int half = _o.BlockChannels[0] / 2;
        var freqs = new float[half];
        for (int i = 0; i < half; i++)
            freqs[i] = (float)Math.Exp(-Math.Log(10000.0) * i / half); // exponent −ln(max_period)·i/(half − downscale_freq_shift), shift 0
        string t = _w.Type == DataType.Float ? "timestep" : _g.Node("Cast", ["timestep"], null, Attr("to", (long)DataType.Float));
        string args = _g.Mul(_g.Node("Unsqueeze", [t, Ints(1)]), _g.Initializer("time_proj.freqs", freqs, 1, half)); // [B, half]
        string emb = _g.Node("Concat", [_g.Node("Cos", [args]), _g.Node("Sin", [args])], "time_proj", Attr("axis", 1L));
        return _w.Type == DataType.Float ? emb : _g.Node("Cast", [emb], null, Attr("to", (long)_w.Type));
    }

    // ------------------------------------------------------------------------------------------------ building blocks
    private string Resnet(string x, int cin, int cout, string tembSilu, string name)
    {
        // diffusers ResnetBlock2D: norm1 → SiLU → conv1 → + time_emb_proj(SiLU(temb)) → norm2 → SiLU → conv2; + shortcut.
        string h = Conv(Silu(GroupNorm(x, cin, name + ".norm1", 1e-5f)), cin, cout, 3, name + ".conv1");
        string t = Linear(tembSilu, _o.TimeEmbeddingDim, cout, name + ".time_emb_proj");
        h = _g.Add(h, _g.Node("Unsqueeze", [t, Ints(2, 3)]));
        h = Conv(Silu(GroupNorm(h, cout, name + ".norm2", 1e-5f)), cout, cout, 3, name + ".conv2");
        string shortcut = cin == cout ? x : Conv(x, cin, cout, 1, name + ".conv_shortcut");
        return _g.Add(shortcut, h);
    }

    private string Transformer(string x, int c, string name)
    {
        // diffusers Transformer2DModel (SD 1.x: conv proj_in/proj_out) around one BasicTransformerBlock.
        string h = GroupNorm(x, c, name + ".norm", 1e-6f);
        h = Conv(h, c, c, 1, name + ".proj_in");
        string tokens = _g.Node("Transpose", [_g.Node("Reshape", [h, Ints(0, c, -1)])], null, Attr("perm", [0L, 2L, 1L])); // [B, HW, C]
        string block = name + ".transformer_blocks.0";
        string n1 = LayerNorm(tokens, c, block + ".norm1");
        tokens = _g.Add(tokens, Attention(n1, n1, c, c, block + ".attn1"));
        tokens = _g.Add(tokens, Attention(LayerNorm(tokens, c, block + ".norm2"), "encoder_hidden_states", c, _o.CrossAttentionDim, block + ".attn2"));
        tokens = _g.Add(tokens, FeedForward(LayerNorm(tokens, c, block + ".norm3"), c, block + ".ff"));
        string back = _g.Node("Reshape", [_g.Node("Transpose", [tokens], null, Attr("perm", [0L, 2L, 1L])), _g.Node("Shape", [x])]);
        return _g.Add(Conv(back, c, c, 1, name + ".proj_out"), x);
    }

    private string Attention(string x, string context, int c, int contextDim, string name)
    {
        // softmax(Q Kᵀ/√d) V per head; to_q/to_k/to_v without bias, to_out.0 with bias (diffusers Attention).
        int heads = _o.AttentionHeads, d = c / heads;
        string q = _g.Node("MatMul", [x, Weight(name + ".to_q.weight", c, c, c)]);
        string k = _g.Node("MatMul", [context, Weight(name + ".to_k.weight", contextDim, contextDim, c)]);
        string v = _g.Node("MatMul", [context, Weight(name + ".to_v.weight", contextDim, contextDim, c)]);
        string split = Ints(0, -1, heads, d);
        string qh = _g.Node("Transpose", [_g.Node("Reshape", [q, split])], null, Attr("perm", [0L, 2L, 1L, 3L])); // [B,H,L,d]
        string kt = _g.Node("Transpose", [_g.Node("Reshape", [k, split])], null, Attr("perm", [0L, 2L, 3L, 1L])); // [B,H,d,S]
        string vh = _g.Node("Transpose", [_g.Node("Reshape", [v, split])], null, Attr("perm", [0L, 2L, 1L, 3L])); // [B,H,S,d]
        string scores = _g.Node("MatMul", [_g.Mul(qh, _w.Scalar((float)(1.0 / Math.Sqrt(d)))), kt]);
        string probs = _g.Node("Softmax", [scores], null, Attr("axis", -1L));
        string o = _g.Node("Transpose", [_g.Node("MatMul", [probs, vh])], null, Attr("perm", [0L, 2L, 1L, 3L]));
        return Linear(_g.Node("Reshape", [o, Ints(0, -1, c)]), c, c, name + ".to_out.0");
    }

    private string FeedForward(string x, int c, string name)
    {
        // GEGLU (Shazeer 2020): proj to 2·4c, value half × GELU(gate half), then back to c.
        int inner = 4 * c;
        string p = Linear(x, c, 2 * inner, name + ".net.0.proj");
        string value = _g.Node("Slice", [p, Ints(0), Ints(inner), Ints(-1)]);
        string gate = _g.Node("Slice", [p, Ints(inner), Ints(2 * inner), Ints(-1)]);
        return Linear(_g.Mul(value, Gelu(gate)), inner, c, name + ".net.2");
    }

    private string Gelu(string x)
    {
        // Exact GELU, x·½(1 + erf(x/√2)), as torch exports it (ONNX Gelu is opset 20).
        string erf = _g.Node("Erf", [_g.Div(x, _w.Scalar(MathF.Sqrt(2f)))]);
        return _g.Mul(_g.Mul(x, _g.Add(erf, _w.Scalar(1f))), _w.Scalar(0.5f));
    }

    private string GroupNorm(string x, int c, string name, float epsilon)
    {
        // torch.onnx's GroupNorm: Reshape to [B, G, −1] → InstanceNormalization (unit scale, zero bias) → Reshape back → affine.
        int groups = _o.NormGroups;
        string ones = _w.Constant(Filled(groups, 1f), groups);
        string zeros = _w.Constant(Filled(groups, 0f), groups);
        string grouped = _g.Node("Reshape", [x, Ints(0, groups, -1)]);
        string normed = _g.Node("InstanceNormalization", [grouped, ones, zeros], null, Attr("epsilon", epsilon));
        string back = _g.Node("Reshape", [normed, _g.Node("Shape", [x])]);
        string gamma = _w.Fill(name + ".weight", 1f, c, 1, 1);
        string beta = _w.Fill(name + ".bias", 0f, c, 1, 1);
        return _g.Add(_g.Mul(back, gamma), beta);
    }

    private string LayerNorm(string x, int c, string name) =>
        _g.Node("LayerNormalization", [x, _w.Fill(name + ".weight", 1f, c), _w.Fill(name + ".bias", 0f, c)], null,
            Attr("axis", -1L), Attr("epsilon", 1e-5f));

    private string Silu(string x) => _g.Mul(x, _g.Node("Sigmoid", [x]));

    private string Linear(string x, int inF, int outF, string name)
    {
        string y = _g.Node("MatMul", [x, Weight(name + ".weight", inF, inF, outF)]);
        return _g.Add(y, Bias(name + ".bias", inF, outF));
    }

    private string Conv(string x, int cin, int cout, int kernel, string name, int stride = 1)
    {
        int fanIn = cin * kernel * kernel;
        long pad = kernel / 2;
        return _g.Node("Conv", [x, Weight(name + ".weight", fanIn, cout, cin, kernel, kernel), Bias(name + ".bias", fanIn, cout)], null,
            Attr("kernel_shape", [(long)kernel, kernel]), Attr("strides", [(long)stride, stride]), Attr("pads", [pad, pad, pad, pad]));
    }

    /// <summary>A weight of std 1/√fan-in (uniform in ±√3/√fan-in), so a layer keeps its input's scale.</summary>
    private string Weight(string name, int fanIn, params long[] dims) => _w.Uniform(name, MathF.Sqrt(3f / fanIn), dims);

    /// <summary>A bias as torch initialises it: uniform in ±1/√fan-in.</summary>
    private string Bias(string name, int fanIn, int count) => _w.Uniform(name, 1f / MathF.Sqrt(fanIn), count);

    private string Ints(params long[] values)
    {
        string key = string.Join(",", values);
        if (!_ints.TryGetValue(key, out string? name))
            _ints[key] = name = _g.Ints("ints_" + _ints.Count, values);
        return name;
    }

    private static float[] Filled(int n, float value)
    {
        var a = new float[n];
        a.AsSpan().Fill(value);
        return a;
    }
}
