using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using Microsoft.ML.OnnxRuntime;
using MLNet.Diffusion.Shapes;

namespace MLNet.Diffusion.Tests.Shapes;

/// <summary>
/// The Shapes model with default options, built once per test run into a temporary folder (deleted at process exit),
/// with shared ONNX Runtime sessions and helpers to run them. Other test classes may use it as their model.
/// </summary>
internal static class ShapesTestModel
{
    private static readonly Lazy<string> s_model = new(BuildModel);
    private static readonly Lazy<InferenceSession> s_textEncoder = new(() => Open("text_encoder"));
    private static readonly Lazy<InferenceSession> s_unet = new(() => Open("unet"));
    private static readonly Lazy<InferenceSession> s_vaeEncoder = new(() => Open("vae_encoder"));
    private static readonly Lazy<InferenceSession> s_vaeDecoder = new(() => Open("vae_decoder"));
    private static readonly Lazy<ClipBpeReference> s_tokenizer = new(() => ClipBpeReference.FromFolder(Path.Combine(Folder, "tokenizer")));
    private static readonly Lazy<float[]> s_itemLatents = new(EncodeItems);

    /// <summary>The model folder (default options: 256×256 items, λ = 12).</summary>
    public static string Folder => s_model.Value;

    public static InferenceSession TextEncoder => s_textEncoder.Value;

    public static InferenceSession Unet => s_unet.Value;

    public static InferenceSession VaeEncoder => s_vaeEncoder.Value;

    public static InferenceSession VaeDecoder => s_vaeDecoder.Value;

    /// <summary>An independent BPE reading the folder's tokenizer files.</summary>
    public static ClipBpeReference Tokenizer => s_tokenizer.Value;

    /// <summary>Latent side at the native size (256 / 8).</summary>
    public const int LatentSize = 32;

    public const int ImageSize = 256;

    /// <summary>N = 4·32·32 values per latent.</summary>
    public const int LatentLength = 4 * LatentSize * LatentSize;

    /// <summary>The vae_decoder config's scaling_factor.</summary>
    public static float ScalingFactor => ReadScalingFactor(Path.Combine(Folder, "vae_decoder", "config.json"));

    /// <summary>Every item's latent [4,32,32] (ONNX vae_encoder × scaling_factor), item after item.</summary>
    public static float[] ItemLatents => s_itemLatents.Value;

    public static float ReadScalingFactor(string configPath)
    {
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(configPath));
        return doc.RootElement.GetProperty("scaling_factor").GetSingle();
    }

    /// <summary>Runs a session on float/int tensors; returns each output's data and shape.</summary>
    public static Dictionary<string, (float[] Data, long[] Shape)> Run(InferenceSession session, params (string Name, Array Data, long[] Shape)[] inputs)
    {
        var values = new List<OrtValue>();
        try
        {
            foreach (var (_, data, shape) in inputs)
            {
                values.Add(data switch
                {
                    float[] f => OrtValue.CreateTensorValueFromMemory(f, shape),
                    int[] i => OrtValue.CreateTensorValueFromMemory(i, shape),
                    long[] l => OrtValue.CreateTensorValueFromMemory(l, shape),
                    _ => throw new ArgumentException("Unsupported input type."),
                });
            }
            var outputNames = session.OutputNames.ToArray();
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, inputs.Select(i => i.Name).ToArray(), values, outputNames);
            var result = new Dictionary<string, (float[], long[])>();
            int k = 0;
            foreach (var o in outputs)
                result[outputNames[k++]] = (o.GetTensorDataAsSpan<float>().ToArray(), o.GetTensorTypeAndShape().Shape);
            return result;
        }
        finally
        {
            foreach (var v in values)
                v.Dispose();
        }
    }

    /// <summary>last_hidden_state [B,77,32] for prompts tokenized with the folder's vocabulary.</summary>
    public static float[] Encode(params string[] prompts)
    {
        var ids = prompts.SelectMany(p => Tokenizer.Encode(p)).ToArray();
        return Run(TextEncoder, ("input_ids", ids, new long[] { prompts.Length, 77 }))["last_hidden_state"].Data;
    }

    /// <summary>The UNet's ε̂ for a batch.</summary>
    public static float[] PredictNoise(float[] sample, float[] timesteps, float[] hiddenStates, int batch, int h = LatentSize, int w = LatentSize) =>
        Run(Unet,
            ("sample", sample, new long[] { batch, 4, h, w }),
            ("timestep", timesteps, new long[] { timesteps.Length }),
            ("encoder_hidden_states", hiddenStates, new long[] { batch, 77, 32 }))["out_sample"].Data;

    /// <summary>Index of the item latent nearest to <paramref name="latent"/> and the distances to all items.</summary>
    public static (int Index, double[] Distances) Nearest(ReadOnlySpan<float> latent)
    {
        var items = ItemLatents;
        var d = new double[ShapesDataset.ItemCount];
        int best = 0;
        for (int k = 0; k < d.Length; k++)
        {
            double s = 0;
            for (int i = 0; i < LatentLength; i++)
            {
                double diff = latent[i] - items[k * LatentLength + i];
                s += diff * diff;
            }
            d[k] = Math.Sqrt(s);
            if (d[k] < d[best])
                best = k;
        }
        return (best, d);
    }

    private static InferenceSession Open(string component) => new(Path.Combine(Folder, component, "model.onnx"));

    private static string BuildModel()
    {
        // Deletion at exit can be cut short when the test host is torn down: sweep folders left by runs hours ago.
        foreach (string stale in Directory.EnumerateDirectories(Path.GetTempPath(), "mlnet-shapes-tests-*"))
        {
            try
            {
                if (Directory.GetLastWriteTimeUtc(stale) < DateTime.UtcNow.AddHours(-2))
                    Directory.Delete(stale, recursive: true);
            }
            catch (IOException)
            {
            }
            catch (UnauthorizedAccessException)
            {
            }
        }
        string folder = Path.Combine(Path.GetTempPath(), "mlnet-shapes-tests-" + Guid.NewGuid().ToString("N")[..8]);
        ShapesModel.Build(folder);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Delete(folder, recursive: true);
            }
            catch (IOException)
            {
            }
        };
        return folder;
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<(ShapeKind, ShapePosition), byte[]> s_masks = new();

    /// <summary>An item as CHW floats in [-1, 1] at 256² (as <see cref="ShapesDataset.RenderTensor"/>, with the coverage masks cached).</summary>
    public static float[] RenderTensor(ShapesItem item)
    {
        byte[] mask = s_masks.GetOrAdd((item.Shape, item.Position), k => ShapesDataset.Coverage(k.Item1, k.Item2, ImageSize));
        byte[] rgb = ShapesDataset.Blend(item, mask);
        int plane = ImageSize * ImageSize;
        var t = new float[3 * plane];
        for (int p = 0; p < plane; p++)
            for (int c = 0; c < 3; c++)
                t[c * plane + p] = rgb[3 * p + c] / 127.5f - 1f;
        return t;
    }

    private static float[] EncodeItems()
    {
        const int batch = 27;
        int plane = 3 * ImageSize * ImageSize;
        var latents = new float[ShapesDataset.ItemCount * LatentLength];
        float scale = ScalingFactor;
        for (int start = 0; start < ShapesDataset.ItemCount; start += batch)
        {
            var input = new float[batch * plane];
            for (int b = 0; b < batch; b++)
                RenderTensor(ShapesDataset.Items[start + b]).CopyTo(input, b * plane);
            var z = Run(VaeEncoder, ("sample", input, new long[] { batch, 3, ImageSize, ImageSize }))["latent_sample"].Data;
            for (int i = 0; i < z.Length; i++)
                latents[start * LatentLength + i] = z[i] * scale;
        }
        return latents;
    }
}
