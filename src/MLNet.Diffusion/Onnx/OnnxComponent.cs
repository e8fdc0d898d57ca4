using System;
using System.Collections.Generic;
using System.Linq;
using System.Threading;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace MLNet.Diffusion.Onnx;

/// <summary>One ONNX model of the folder (text_encoder, unet, …): its session, its I/O metadata, and a run counter.</summary>
internal sealed class OnnxComponent : IDisposable
{
    private readonly InferenceSession _session;
    private readonly IDisposable? _weightLease;
    private long _runCount;
    private int _inFlight;
    private volatile bool _disposed;

    /// <summary>Wraps a session; the component owns it (and <paramref name="weightLease"/>) from here on.</summary>
    /// <param name="name">The component's folder name.</param>
    /// <param name="path">The model file.</param>
    /// <param name="session">The session.</param>
    /// <param name="runsOnDevice">Whether the session runs on CUDA.</param>
    /// <param name="weightVariantId">The <see cref="WeightVariant.Id"/> the session was created with; null for the file's weights.</param>
    /// <param name="weightLease">The variant's lease, disposed after the session (ONNX Runtime uses added initializers in place).</param>
    public OnnxComponent(string name, string path, InferenceSession session, bool runsOnDevice = false, string? weightVariantId = null, IDisposable? weightLease = null)
    {
        Name = name;
        Path = path;
        _session = session;
        RunsOnDevice = runsOnDevice;
        WeightVariantId = weightVariantId;
        _weightLease = weightLease;
    }

    /// <summary>
    /// The weight variant the session runs with (<see cref="WeightVariant.Id"/>) or the id of the rewritten graph it was
    /// created from (textual inversion's <c>ti-…</c>), or null for the model file's own graph and weights.
    /// </summary>
    public string? WeightVariantId { get; }

    /// <summary>
    /// Whether the session runs on a device provider (CUDA): inputs bound through <see cref="OrtIoBinding"/> are then
    /// device copies, made at bind time.
    /// </summary>
    public bool RunsOnDevice { get; }

    /// <summary>The folder name of the component, e.g. <c>unet</c>.</summary>
    public string Name { get; }

    /// <summary>The model file.</summary>
    public string Path { get; }

    public InferenceSession Session => _session;

    /// <summary>How many times the model ran (a test hook that proves laziness without timing).</summary>
    public long RunCount => Interlocked.Read(ref _runCount);

    public IReadOnlyDictionary<string, NodeMetadata> Inputs => _session.InputMetadata;

    public IReadOnlyDictionary<string, NodeMetadata> Outputs => _session.OutputMetadata;

    public bool HasInput(string name) => _session.InputMetadata.ContainsKey(name);

    public bool HasOutput(string name) => _session.OutputMetadata.ContainsKey(name);

    /// <summary>The metadata of a required input; the error names the file, the input and what the model has.</summary>
    public NodeMetadata Input(string name) =>
        _session.InputMetadata.TryGetValue(name, out var m) ? m
            : throw new ModelContractException($"{Name}/{System.IO.Path.GetFileName(Path)} has no input '{name}' (it has: {Describe(_session.InputMetadata)}).");

    /// <summary>The metadata of a required output.</summary>
    public NodeMetadata Output(string name) =>
        _session.OutputMetadata.TryGetValue(name, out var m) ? m
            : throw new ModelContractException($"{Name}/{System.IO.Path.GetFileName(Path)} has no output '{name}' (it has: {Describe(_session.OutputMetadata)}).");

    /// <summary>Checks an input's element type is one of <paramref name="allowed"/> and its rank one of <paramref name="ranks"/>.</summary>
    public TensorElementType RequireInput(string name, TensorElementType[] allowed, params int[] ranks)
    {
        var m = Input(name);
        Require(name, "input", m, allowed, ranks);
        return m.ElementDataType;
    }

    public TensorElementType RequireOutput(string name, TensorElementType[] allowed, params int[] ranks)
    {
        var m = Output(name);
        Require(name, "output", m, allowed, ranks);
        return m.ElementDataType;
    }

    private void Require(string name, string kind, NodeMetadata m, TensorElementType[] allowed, int[] ranks)
    {
        if (!m.IsTensor || Array.IndexOf(allowed, m.ElementDataType) < 0)
            throw new ModelContractException($"{Name}/{System.IO.Path.GetFileName(Path)} {kind} '{name}' has element type {m.ElementDataType}; expected {string.Join(" or ", allowed)}.");
        if (ranks.Length > 0 && Array.IndexOf(ranks, m.Dimensions.Length) < 0)
            throw new ModelContractException($"{Name}/{System.IO.Path.GetFileName(Path)} {kind} '{name}' has rank {m.Dimensions.Length} [{string.Join(",", m.Dimensions)}]; expected rank {string.Join(" or ", ranks)}.");
    }

    /// <summary>A static dimension of an input/output, or null when it is symbolic.</summary>
    public static int? StaticDim(NodeMetadata m, int axis) =>
        axis < m.Dimensions.Length && m.Dimensions[axis] > 0 ? m.Dimensions[axis] : null;

    public void Run(RunOptions? runOptions, IReadOnlyCollection<string> inputNames, IReadOnlyCollection<OrtValue> inputs,
        IReadOnlyCollection<string> outputNames, IReadOnlyCollection<OrtValue> outputs)
    {
        using var scope = Enter();
        _session.Run(runOptions ?? s_defaultRunOptions, inputNames, inputs, outputNames, outputs);
    }

    public IDisposableReadOnlyCollection<OrtValue> Run(RunOptions? runOptions, IReadOnlyCollection<string> inputNames,
        IReadOnlyCollection<OrtValue> inputs, IReadOnlyCollection<string> outputNames)
    {
        using var scope = Enter();
        return _session.Run(runOptions ?? s_defaultRunOptions, inputNames, inputs, outputNames);
    }

    /// <summary>An IO binding on this session (<see cref="UnetBinding"/>); the caller disposes it.</summary>
    public OrtIoBinding CreateIoBinding()
    {
        using var scope = Enter(countRun: false);
        return _session.CreateIoBinding();
    }

    /// <summary>Runs the model on bound inputs and outputs (counted like <see cref="Run(RunOptions?, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue}, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue})"/>).</summary>
    public void RunWithBinding(OrtIoBinding binding, RunOptions? runOptions = null)
    {
        using var scope = Enter();
        _session.RunWithBinding(runOptions ?? s_defaultRunOptions, binding);
    }

    /// <summary>
    /// Counts a call in flight until the returned scope is disposed, so that <see cref="Dispose"/> never frees the
    /// session under a running call (a native crash otherwise). A struct: no allocation per UNet step.
    /// </summary>
    private InFlightScope Enter(bool countRun = true)
    {
        Interlocked.Increment(ref _inFlight);
        if (_disposed)
        {
            Interlocked.Decrement(ref _inFlight);
            throw new ObjectDisposedException(Name, $"The {Name} model of '{Path}' was disposed with its StableDiffusionModel; load the model again to use it.");
        }
        if (countRun)
            Interlocked.Increment(ref _runCount);
        return new InFlightScope(this);
    }

    private readonly struct InFlightScope : IDisposable
    {
        private readonly OnnxComponent _component;

        public InFlightScope(OnnxComponent component) => _component = component;

        public void Dispose() => Interlocked.Decrement(ref _component._inFlight);
    }

    private static readonly RunOptions s_defaultRunOptions = new();

    private static string Describe(IReadOnlyDictionary<string, NodeMetadata> nodes) =>
        string.Join(", ", nodes.Select(kv => $"{kv.Key} {kv.Value.ElementDataType}[{string.Join(",", kv.Value.Dimensions)}]"));

    public void Dispose()
    {
        _disposed = true;
        var spin = default(SpinWait);
        while (Volatile.Read(ref _inFlight) != 0)
            spin.SpinOnce();
        _session.Dispose();
        _weightLease?.Dispose();
    }
}

/// <summary>An ONNX model whose inputs or outputs do not match the Stable Diffusion folder contract.</summary>
public sealed class ModelContractException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="message">What does not match, naming the file, the node and the expectation.</param>
    public ModelContractException(string message)
        : base(message)
    {
    }
}
