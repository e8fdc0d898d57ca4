using System;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Text;
using Google.Protobuf;
using MLNet.Diffusion.Shapes.Building;
using MLNet.Diffusion.Shapes.Onnx;
using DataType = MLNet.Diffusion.Onnx.Protobuf.TensorProto.Types.DataType;

namespace MLNet.Diffusion.Shapes;

/// <summary>
/// Builds a Stable-Diffusion-sized UNet with random weights: SD 1.5's architecture (ResNet blocks with GroupNorm and
/// SiLU, spatial transformers with self-attention and cross-attention to <c>encoder_hidden_states</c> [B, 77, 768],
/// a sinusoidal timestep embedding, down/up sampling with skip connections), the standard UNet contract
/// (<c>sample</c> [B,4,h,w], <c>timestep</c> [B], <c>encoder_hidden_states</c> [B,L,768] → <c>out_sample</c>) in
/// float32 or float16. It computes what the real model computes, at the real size, so it measures execution speed and
/// memory (a GPU benchmark) without downloading weights; its outputs mean nothing.
/// </summary>
/// <remarks>
/// At the defaults the model has 859,520,964 parameters, the count of SD 1.5's UNet: 3.4 GB of float32 or 1.7 GB of
/// float16 weights. They go to an external-data file (<c>model.onnx_data</c>) next to a graph of about 1 MB, as large
/// exports do, since one protobuf message cannot exceed 2 GB. The same options give byte-identical files.
/// </remarks>
public static class SyntheticUnet
{
    /// <summary>The external-data file name written next to <c>model.onnx</c>.</summary>
    public const string WeightsFileName = "model.onnx_data";

    /// <summary>
    /// Writes the UNet into <paramref name="directory"/> (created if needed): <c>model.onnx</c>,
    /// <see cref="WeightsFileName"/> and a diffusers-style <c>config.json</c> — the <c>unet/</c> folder of a model folder.
    /// </summary>
    /// <param name="directory">The folder to write.</param>
    /// <param name="options">The architecture and precision; SD 1.5 in float32 when null.</param>
    /// <returns>The number of parameters written.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range (ParamName names it).</exception>
    public static long Build(string directory, SyntheticUnetOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        options ??= new SyntheticUnetOptions();
        options.Validate();
        Directory.CreateDirectory(directory);
        string weightsPath = Path.Combine(directory, WeightsFileName);
        long parameters;
        byte[] graph;
        using (var stream = new FileStream(weightsPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20))
            (parameters, graph) = Write(options, stream);
        File.WriteAllBytes(Path.Combine(directory, "model.onnx"), graph);
        JsonFiles.Write(Path.Combine(directory, "config.json"), w =>
        {
            w.WriteStartObject();
            w.WriteString("_class_name", "UNet2DConditionModel");
            w.WriteString("_synthetic_note", "Random weights (MLNet.Diffusion.Shapes SyntheticUnet): SD 1.x architecture for speed and memory measurements; outputs are meaningless.");
            w.WriteNumber("attention_head_dim", options.AttentionHeads);
            w.WriteStartArray("block_out_channels");
            foreach (int c in options.BlockChannels)
                w.WriteNumberValue(c);
            w.WriteEndArray();
            w.WriteNumber("cross_attention_dim", options.CrossAttentionDim);
            w.WriteNumber("in_channels", 4);
            w.WriteNumber("layers_per_block", options.LayersPerBlock);
            w.WriteNumber("norm_num_groups", options.NormGroups);
            w.WriteNumber("out_channels", 4);
            w.WriteNumber("parameters", parameters);
            w.WriteNumber("sample_size", options.SampleSize);
            w.WriteString("torch_dtype", options.Float16 ? "float16" : "float32");
            w.WriteEndObject();
        });
        return parameters;
    }

    /// <summary>The number of parameters <see cref="Build"/> would write for <paramref name="options"/> (nothing is written).</summary>
    /// <param name="options">The architecture; SD 1.5 when null.</param>
    /// <returns>The parameter count.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public static long CountParameters(SyntheticUnetOptions? options = null)
    {
        options ??= new SyntheticUnetOptions();
        options.Validate();
        return Write(options, null).Parameters;
    }

    /// <summary>
    /// Writes a complete model folder around the synthetic UNet, for running the whole pipeline at SD size: the Shapes
    /// model's scheduler, tokenizer and VAE (a linear decoder: its cost is negligible next to a real VAE's), the Shapes
    /// text encoder followed by a fixed random projection to <see cref="SyntheticUnetOptions.CrossAttentionDim"/>
    /// (float32), and the synthetic UNet in <c>unet/</c>. Images it makes are noise-like: it measures, it does not draw.
    /// </summary>
    /// <param name="directory">The model folder to write (created if needed).</param>
    /// <param name="options">The UNet's architecture and precision; SD 1.5 in float32 when null.</param>
    /// <returns>The UNet's parameter count.</returns>
    /// <exception cref="ArgumentOutOfRangeException">An option is out of range.</exception>
    public static long BuildModelFolder(string directory, SyntheticUnetOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        options ??= new SyntheticUnetOptions();
        options.Validate();
        ShapesModel.Build(directory);
        string textEncoder = Path.Combine(directory, "text_encoder", "model.onnx");
        File.WriteAllBytes(textEncoder, ProjectTextEncoder(File.ReadAllBytes(textEncoder), options.CrossAttentionDim, options.Seed));
        string unet = Path.Combine(directory, "unet");
        Directory.Delete(unet, recursive: true);
        long parameters = Build(unet, options);
        File.AppendAllText(Path.Combine(directory, "README.md"), string.Create(CultureInfo.InvariantCulture, $"""

            ## Synthetic UNet

            This folder's `unet/` is `SyntheticUnet.Build` ({options.Describe()}): Stable Diffusion 1.x's UNet architecture with
            random weights, {parameters:N0} parameters, {(options.Float16 ? "float16" : "float32")}. `text_encoder/` is the Shapes text encoder
            followed by a fixed random {AttributeSpace.Dimensions}→{options.CrossAttentionDim} projection. For speed and memory measurements only:
            the images are meaningless.

            """), new UTF8Encoding(false));
        return parameters;
    }

    private static (long Parameters, byte[] Graph) Write(SyntheticUnetOptions options, Stream? weights)
    {
        var g = new OnnxGraphBuilder("synthetic_unet");
        var w = new ExternalWeights(g, weights, WeightsFileName, options.Float16, options.Seed);
        SyntheticUnetGraph.Write(g, w, options);
        byte[] bytes = g.ToModelBytes(string.Create(CultureInfo.InvariantCulture,
            $"Synthetic Stable Diffusion 1.x UNet with random weights ({options.Describe()}; {w.Parameters} parameters). Outputs are meaningless."));
        return (w.Parameters, bytes);
    }

    /// <summary>
    /// The Shapes text encoder with its 32-wide <c>last_hidden_state</c> (and <c>pooler_output</c>, its sum over the
    /// sequence) multiplied by a fixed random [32, D] matrix: the standard contract at the width the UNet expects.
    /// </summary>
    private static byte[] ProjectTextEncoder(byte[] shapesTextEncoder, int width, int seed)
    {
        const int d = AttributeSpace.Dimensions;
        var model = ModelProto.Parser.ParseFrom(shapesTextEncoder);
        var graph = model.Graph;
        foreach (var node in graph.Node)
        {
            for (int i = 0; i < node.Output.Count; i++)
                if (node.Output[i] == "last_hidden_state")
                    node.Output[i] = "shapes_hidden_state";
            for (int i = 0; i < node.Input.Count; i++)
                if (node.Input[i] == "last_hidden_state")
                    node.Input[i] = "shapes_hidden_state";
        }
        var projection = new float[d * width];
        new Schedulers.GaussianNoise(seed).NextGaussian(projection);
        float scale = 1f / MathF.Sqrt(d);
        for (int i = 0; i < projection.Length; i++)
            projection[i] *= scale;
        var tensor = new TensorProto { Name = "projection.weight", DataType = (int)DataType.Float };
        tensor.Dims.AddRange(new long[] { d, width });
        tensor.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(projection.AsSpan())); // little-endian, as ONNX raw data
        graph.Initializer.Add(tensor);
        graph.Node.Add(new NodeProto { OpType = "MatMul", Name = "projection", Input = { "shapes_hidden_state", "projection.weight" }, Output = { "last_hidden_state" } });
        // pooler_output = Σ_seq of the hidden state: project it with the same matrix.
        var pooler = graph.Node.First(n => n.Output.Contains("pooler_output"));
        pooler.Output[0] = "shapes_pooler_output";
        graph.Node.Add(new NodeProto { OpType = "MatMul", Name = "pooler_projection", Input = { "shapes_pooler_output", "projection.weight" }, Output = { "pooler_output" } });
        foreach (var output in graph.Output)
        {
            var dims = output.Type.TensorType.Shape.Dim;
            dims[dims.Count - 1] = new TensorShapeProto.Types.Dimension { DimValue = width };
        }
        model.DocString += $" Projected to {width.ToString(CultureInfo.InvariantCulture)} dimensions by a fixed random matrix (SyntheticUnet.BuildModelFolder).";
        return model.ToByteArray();
    }
}
