using System;
using System.Collections.Generic;
using System.Numerics.Tensors;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Pipeline;

/// <summary>One ControlNet of a run: the net, its guidance window and (per row, filled by the caller) its control images and scales.</summary>
internal sealed class ControlNetRun
{
    public ControlNetRun(ControlNetModel net, float guidanceStart, float guidanceEnd)
    {
        Net = net;
        GuidanceStart = guidanceStart;
        GuidanceEnd = guidanceEnd;
    }

    public ControlNetModel Net { get; }

    /// <summary>diffusers' <c>control_guidance_start</c>: the fraction of the steps before which the ControlNet is off.</summary>
    public float GuidanceStart { get; }

    /// <summary>diffusers' <c>control_guidance_end</c>: the fraction of the steps after which the ControlNet is off.</summary>
    public float GuidanceEnd { get; }

    /// <summary>
    /// diffusers' <c>controlnet_keep[i]</c> (StableDiffusionControlNetPipeline.__call__, step 7.2):
    /// <c>1 − float(i / N &lt; start or (i + 1) / N &gt; end)</c>. Divided in float, the precision of the options: with the
    /// options' float 0.2f, 2 / 10 must equal it as Python's 2 / 10 equals 0.2 (in double, 0.2 &lt; (double)0.2f).
    /// </summary>
    public float Keep(int step, int steps) => (float)step / steps < GuidanceStart || (float)(step + 1) / steps > GuidanceEnd ? 0f : 1f;
}

/// <summary>
/// ControlNet's part of the denoising loop (diffusers StableDiffusionControlNetPipeline v0.35, step 8 of its recipe), for
/// one batch: every step, before the UNet, each ControlNet runs on the scaled sample, the timestep, the text embeddings and
/// its control image (duplicated [image; image] with classifier-free guidance, as the sample is [uncond; cond]); its
/// residuals, times the row's <c>conditioning_scale · keep_i</c>, are summed over the ControlNets (MultiControlNetModel)
/// into the UNet's residual inputs, which are re-bound every step. Guess mode runs the ControlNets on the conditional half
/// only, scales down residual j by <c>logspace(−1, 0, n + 1)[j]</c> and the mid one by 1 (ControlNetModel.forward), and
/// gives the unconditional half zeros. With no ControlNet (a UNet with residual inputs run plainly), or in a step where
/// every ControlNet is off, the residuals are zeros — as adding a zero residual is no residual.
/// The scale is applied on the host (the graph gets <c>conditioning_scale = 1</c>) so that each row has its own.
/// </summary>
internal sealed class ControlNetConditioning : IUnetConditioning, IDisposable
{
    private readonly IReadOnlyList<ControlNetResidual> _residuals;
    private readonly ControlNetRun[] _runs;
    private readonly bool _guessMode;
    private readonly int _channels;
    private readonly int _latentHeight;
    private readonly int _latentWidth;
    private readonly int _imageLength;
    private readonly int _hidden;
    private readonly float[] _guessScales;
    private readonly NetBuffers?[] _nets;
    private readonly SdxlAddedConditioning? _added;
    private TensorBuffer[] _unetResiduals = Array.Empty<TensorBuffer>();
    private float[] _images = Array.Empty<float>();
    private float[] _scales = Array.Empty<float>();
    private float[] _residual = Array.Empty<float>();
    private float[] _sum = Array.Empty<float>();
    private bool _residualsZero;
    private int _firstStep;

    /// <param name="residuals">The UNet's residual inputs (<see cref="ModelInfo.ControlNetResiduals"/>).</param>
    /// <param name="runs">The ControlNets, none for zeros.</param>
    /// <param name="guessMode">diffusers' <c>guess_mode</c>.</param>
    /// <param name="latentChannels">C.</param>
    /// <param name="latentHeight">h.</param>
    /// <param name="latentWidth">w.</param>
    /// <param name="imageHeight">H, the control image's height (the output image's).</param>
    /// <param name="imageWidth">W.</param>
    /// <param name="hiddenSize">D, the text embeddings' width.</param>
    /// <param name="added">
    /// SDXL's added conditioning of the batch, whose <c>text_embeds</c> and <c>time_ids</c> an SDXL ControlNet also takes
    /// (diffusers StableDiffusionXLControlNetPipeline: <c>added_cond_kwargs</c>, the conditional half's in guess mode); null
    /// for SD 1.x/2.x.
    /// </param>
    public ControlNetConditioning(IReadOnlyList<ControlNetResidual> residuals, IReadOnlyList<ControlNetRun> runs, bool guessMode,
        int latentChannels, int latentHeight, int latentWidth, int imageHeight, int imageWidth, int hiddenSize, SdxlAddedConditioning? added = null)
    {
        _added = added;
        _residuals = residuals;
        _runs = new List<ControlNetRun>(runs).ToArray();
        _guessMode = guessMode;
        _channels = latentChannels;
        _latentHeight = latentHeight;
        _latentWidth = latentWidth;
        _imageLength = 3 * imageHeight * imageWidth;
        ImageHeight = imageHeight;
        ImageWidth = imageWidth;
        _hidden = hiddenSize;
        foreach (var r in residuals)
        {
            if (r.Downscale == 0 || r.Channels == 0)
                throw new InvalidOperationException($"The sizes of the UNet's ControlNet residual '{r.Name}' are unknown: no unet/config.json or controlnet/config.json "
                    + "(block_out_channels, layers_per_block) states them and no ControlNet was loaded to tell them (StableDiffusionModel.LoadControlNet).");
            if (latentHeight % r.Downscale != 0 || latentWidth % r.Downscale != 0)
                throw new ArgumentException($"The latent size {latentHeight}×{latentWidth} is not divisible by {r.Downscale}, the downscale of the UNet's ControlNet residual '{r.Name}': "
                    + $"choose a width and height that are multiples of {r.Downscale} latent pixels.");
        }
        // torch.logspace(-1, 0, n + 1): 10^(−1 + k/n), k = 0 … n, for the n down residuals and the mid one.
        int n = residuals.Count - 1;
        _guessScales = new float[residuals.Count];
        for (int k = 0; k <= n; k++)
            _guessScales[k] = n == 0 ? 1f : (float)Math.Pow(10.0, -1.0 + (double)k / n);
        _nets = new NetBuffers?[_runs.Length];
    }

    /// <summary>H of the control images.</summary>
    public int ImageHeight { get; }

    /// <summary>W of the control images.</summary>
    public int ImageWidth { get; }

    /// <summary>Values of one control image [3, H, W].</summary>
    public int ImageLength => _imageLength;

    /// <summary>Rows the buffers hold.</summary>
    public int Count { get; private set; }

    /// <summary>The guess-mode factors of the residuals (logspace(−1, 0, n + 1)), for tests.</summary>
    internal ReadOnlySpan<float> GuessScales => _guessScales;

    /// <summary>Sizes the per-row buffers for <paramref name="count"/> rows.</summary>
    public void Ensure(int count)
    {
        if (_images.Length != count * _runs.Length * _imageLength)
            _images = new float[count * _runs.Length * _imageLength];
        if (_scales.Length != count * _runs.Length)
            _scales = new float[count * _runs.Length];
        Count = count;
    }

    /// <summary>Row <paramref name="row"/>'s control image [3, H, W] in [0, 1] for ControlNet <paramref name="net"/>.</summary>
    public Span<float> Image(int net, int row) => _images.AsSpan((row * _runs.Length + net) * _imageLength, _imageLength);

    /// <summary>Sets row <paramref name="row"/>'s conditioning scale for ControlNet <paramref name="net"/>.</summary>
    public void SetScale(int net, int row, float scale) => _scales[row * _runs.Length + net] = scale;

    public void DeclareInputs(UnetInputs inputs)
    {
        // The denoiser owns the declared tensors (and disposes those of the previous shape).
        _unetResiduals = new TensorBuffer[_residuals.Count];
        for (int k = 0; k < _residuals.Count; k++)
        {
            var r = _residuals[k];
            // The residuals change every step with a ControlNet; without one they are zeros, bound once per batch.
            _unetResiduals[k] = inputs.Add(r.Name, new long[] { inputs.UnetRows, r.Channels, _latentHeight / r.Downscale, _latentWidth / r.Downscale }, perStep: _runs.Length > 0);
        }
        _residualsZero = true;
    }

    public void BeginBatch(in UnetBatch batch)
    {
        int count = batch.Rows.Count;
        ClearResiduals();
        _firstStep = -1;
        if (_runs.Length == 0)
            return;
        if (Count != count)
            throw new InvalidOperationException($"ControlNet: the batch has {count} rows; the control images were prepared for {Count}.");
        int netRows = _guessMode && batch.Guidance ? count : (batch.Guidance ? 2 * count : count);
        int sequence = batch.Rows.SequenceLength, perState = sequence * _hidden;
        var embeddings = batch.Rows.Embeddings.Span;
        for (int n = 0; n < _runs.Length; n++)
        {
            var net = _nets[n];
            if (net is null || net.Rows != netRows || net.Sequence != sequence)
            {
                net?.Dispose();
                _nets[n] = net = new NetBuffers(_runs[n].Net, _residuals, netRows, sequence, _channels, _latentHeight, _latentWidth, ImageHeight, ImageWidth, _hidden, _added);
            }

            // The text embeddings and control images in the ControlNet's batch order: [uncond; cond] and [image; image]
            // with guidance (diffusers: image = torch.cat([image] * 2)), the conditional half only in guess mode.
            for (int u = 0; u < netRows; u++)
            {
                int r = u % count;
                bool uncond = batch.Guidance && !_guessMode && u < count;
                net.Embeddings.Write(embeddings.Slice((2 * r + (uncond ? 0 : 1)) * perState, perState), u * perState);
                net.Image.Write(Image(n, r), u * _imageLength);
                // An SDXL ControlNet: the same text_embeds and time_ids as the UNet's row (SdxlAddedConditioning's order).
                if (net.TextEmbeds is { } textEmbeds)
                {
                    int p = _added!.PooledSize;
                    textEmbeds.Write(_added.Pooled(r).Slice(uncond ? 0 : p, p), u * p);
                }
                if (net.TimeIds is { } timeIds)
                {
                    var ids = _added!.TimeIds(conditional: !uncond);
                    timeIds.Write(ids, u * ids.Length);
                }
            }
        }
    }

    public void BeforeUnet(in UnetStep step)
    {
        if (_runs.Length == 0)
            return;
        if (_firstStep < 0)
            _firstStep = step.Index;
        // diffusers counts the steps of the run (len(timesteps), after image-to-image's truncation).
        int i = step.Index - _firstStep, steps = step.Scheduler.Timesteps.Length - _firstStep;
        int count = step.Rows.Count, unetRows = step.Guidance ? 2 * count : count;
        int plane = _latentHeight * _latentWidth, sampleRow = step.Sample.Length / unetRows;
        bool any = false;
        for (int n = 0; n < _runs.Length; n++)
        {
            float keep = _runs[n].Keep(i, steps);
            bool active = false;
            for (int r = 0; r < count && !active; r++)
                active = _scales[r * _runs.Length + n] * keep != 0f;
            if (!active)
                continue; // every row's scale is 0 this step: its residuals would be zeros.
            var net = _nets[n]!;
            // control_model_input: the scaled latents (the first C channels of each sample row); in guess mode with
            // guidance the conditional half only (diffusers: scale_model_input(latents, t), the same values).
            int first = _guessMode && step.Guidance ? count : 0;
            for (int u = 0; u < net.Rows; u++)
                net.Sample.Write(step.Sample.Slice((first + u) * sampleRow, _channels * plane), u * _channels * plane);
            net.Timestep.Fill(step.Timestep);
            net.Run();
            if (!any)
                ClearResiduals();
            any = true;
            Accumulate(n, net, keep, count, step.Guidance);
        }
        if (!any)
            ClearResiduals();
        else
            _residualsZero = false;
    }

    /// <summary>Adds ControlNet <paramref name="n"/>'s residuals, scaled per row, into the UNet's residual inputs.</summary>
    private void Accumulate(int n, NetBuffers net, float keep, int count, bool guidance)
    {
        for (int k = 0; k < _residuals.Count; k++)
        {
            var output = net.Outputs[k];
            var target = _unetResiduals[k];
            int per = output.Length / net.Rows;
            if (_residual.Length < per)
                _residual = new float[per];
            var values = _residual.AsSpan(0, per);
            float factor = _guessMode ? _guessScales[k] : 1f;
            for (int u = 0; u < net.Rows; u++)
            {
                int r = u % count;
                int unetRow = _guessMode && guidance ? count + r : u;
                float scale = _scales[r * _runs.Length + n] * keep * factor;
                output.Read(values, u * per);
                if (target.ElementType == TensorElementType.Float)
                {
                    var t = target.FloatSpan.Slice(unetRow * per, per);
                    TensorPrimitives.MultiplyAdd(values, scale, t, t);
                }
                else
                {
                    // A float16 UNet input: accumulate in float32.
                    if (_sum.Length < per)
                        _sum = new float[per];
                    var sum = _sum.AsSpan(0, per);
                    target.Read(sum, unetRow * per);
                    TensorPrimitives.MultiplyAdd(values, scale, sum, sum);
                    target.Write(sum, unetRow * per);
                }
            }
        }
    }

    private void ClearResiduals()
    {
        if (_residualsZero)
            return;
        foreach (var b in _unetResiduals)
            b.Fill(0f);
        _residualsZero = true;
    }

    public void Dispose()
    {
        foreach (var net in _nets)
            net?.Dispose();
        Array.Clear(_nets);
    }

    /// <summary>One ControlNet's input and output tensors for a batch shape; it runs with preallocated outputs.</summary>
    private sealed class NetBuffers : IDisposable
    {
        private readonly ControlNetModel _net;
        private readonly string[] _inputNames;
        private readonly OrtValue[] _inputs;
        private readonly OrtValue[] _outputValues;
        private readonly List<TensorBuffer> _all = new();

        public NetBuffers(ControlNetModel net, IReadOnlyList<ControlNetResidual> residuals, int rows, int sequence, int channels, int h, int w, int imageHeight, int imageWidth, int hidden,
            SdxlAddedConditioning? added)
        {
            _net = net;
            Rows = rows;
            Sequence = sequence;
            var c = net.Component;
            var ts = c.Input("timestep");
            Sample = Add(new TensorBuffer(c.Input("sample").ElementDataType, new long[] { rows, channels, h, w }));
            Timestep = Add(new TensorBuffer(ts.ElementDataType, ts.Dimensions.Length == 0 ? Array.Empty<long>() : new long[] { OnnxComponent.StaticDim(ts, 0) == 1 ? 1 : rows }));
            Embeddings = Add(new TensorBuffer(c.Input("encoder_hidden_states").ElementDataType, new long[] { rows, sequence, hidden }));
            Image = Add(new TensorBuffer(c.Input(ControlNetGraphs.ControlInput).ElementDataType, new long[] { rows, 3, imageHeight, imageWidth }));
            var names = new List<string> { "sample", "timestep", "encoder_hidden_states", ControlNetGraphs.ControlInput };
            if (c.HasInput(ControlNetGraphs.ScaleInput))
            {
                // conditioning_scale = 1: the graph multiplies every residual by it; the host applies each row's scale.
                var s = c.Input(ControlNetGraphs.ScaleInput);
                var scale = Add(new TensorBuffer(s.ElementDataType, s.Dimensions.Length == 0 ? Array.Empty<long>() : new long[] { 1 }));
                scale.Fill(1f);
                names.Add(ControlNetGraphs.ScaleInput);
            }
            // SDXL's added conditions (checked at load: only with an SDXL model, ControlNetGraphs.CheckFits).
            if (c.HasInput(ControlNetGraphs.TextEmbedsInput))
            {
                TextEmbeds = Add(new TensorBuffer(c.Input(ControlNetGraphs.TextEmbedsInput).ElementDataType, new long[] { rows, RequireAdded(added).PooledSize }));
                names.Add(ControlNetGraphs.TextEmbedsInput);
            }
            if (c.HasInput(ControlNetGraphs.TimeIdsInput))
            {
                TimeIds = Add(new TensorBuffer(c.Input(ControlNetGraphs.TimeIdsInput).ElementDataType, new long[] { rows, RequireAdded(added).TimeIds(true).Length }));
                names.Add(ControlNetGraphs.TimeIdsInput);
            }
            _inputNames = names.ToArray();
            _inputs = new OrtValue[_all.Count];
            for (int i = 0; i < _inputs.Length; i++)
                _inputs[i] = _all[i].Value;
            Outputs = new TensorBuffer[residuals.Count];
            _outputValues = new OrtValue[residuals.Count];
            for (int k = 0; k < residuals.Count; k++)
            {
                var r = residuals[k];
                Outputs[k] = Add(new TensorBuffer(c.Output(net.OutputNames[k]).ElementDataType, new long[] { rows, r.Channels, h / r.Downscale, w / r.Downscale }, clear: false));
                _outputValues[k] = Outputs[k].Value;
            }
        }

        public int Rows { get; }

        public int Sequence { get; }

        public TensorBuffer Sample { get; }

        public TensorBuffer Timestep { get; }

        public TensorBuffer Embeddings { get; }

        public TensorBuffer Image { get; }

        /// <summary>SDXL: the ControlNet's <c>text_embeds</c> [rows, P]; null when it takes none.</summary>
        public TensorBuffer? TextEmbeds { get; }

        /// <summary>SDXL: the ControlNet's <c>time_ids</c> [rows, W]; null when it takes none.</summary>
        public TensorBuffer? TimeIds { get; }

        public TensorBuffer[] Outputs { get; }

        public void Run()
        {
            try
            {
                _net.Component.Run(null, _inputNames, _inputs, _net.OutputNames, _outputValues);
            }
            catch (OnnxRuntimeException e)
            {
                var shapes = new List<string>();
                foreach (var o in Outputs)
                    shapes.Add("[" + string.Join(",", o.Shape) + "]");
                throw new InvalidOperationException($"ControlNet '{_net.Path}' failed for a batch of {Rows} with a {Sample.Shape[2]}×{Sample.Shape[3]} latent and a "
                    + $"{Image.Shape[2]}×{Image.Shape[3]} control image (residuals expected as {string.Join(", ", shapes)}): {e.Message}", e);
            }
        }

        private SdxlAddedConditioning RequireAdded(SdxlAddedConditioning? added) => added
            ?? throw new InvalidOperationException($"ControlNet '{_net.Path}' takes SDXL's added conditions (text_embeds, time_ids) but the run has none: it needs an SDXL model.");

        private TensorBuffer Add(TensorBuffer buffer)
        {
            _all.Add(buffer);
            return buffer;
        }

        public void Dispose()
        {
            foreach (var b in _all)
                b.Dispose();
            _all.Clear();
        }
    }
}
