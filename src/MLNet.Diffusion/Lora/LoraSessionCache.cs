using System;
using System.Collections.Generic;
using MLNet.Diffusion.Onnx;

namespace MLNet.Diffusion.Lora;

/// <summary>
/// The sessions of one LoRA set: a session per component whose weights the set changes (null: the component's base
/// session serves), what the sessions hold, and what the set's files changed nothing with.
/// </summary>
internal sealed class LoraSessionSet : IDisposable
{
    internal int Pins;
    internal long LastUse;

    // Text encoder sessions of this set combined with a textual inversion set, per (component, inversion set id); also
    // the lock for it and _disposed.
    private readonly Dictionary<(string Component, string Inversions), OnnxComponent> _withInversions = new();
    private long _bytes;
    private bool _disposed;

    public LoraSessionSet(LoraSet set, OnnxComponent? unet, OnnxComponent? textEncoder, OnnxComponent? textEncoder2, long bytes, IReadOnlyList<LoraUnmatchedModule> unmatched)
    {
        Set = set;
        Unet = unet;
        TextEncoder = textEncoder;
        TextEncoder2 = textEncoder2;
        _bytes = bytes;
        Unmatched = unmatched;
    }

    /// <summary>The LoRAs.</summary>
    public LoraSet Set { get; }

    /// <summary>The UNet with the set merged, or null when the set changes none of its weights.</summary>
    public OnnxComponent? Unet { get; }

    /// <summary>text_encoder/ with the set merged, or null.</summary>
    public OnnxComponent? TextEncoder { get; }

    /// <summary>text_encoder_2/ with the set merged, or null.</summary>
    public OnnxComponent? TextEncoder2 { get; }

    /// <summary>Estimated memory: the weights of every session this set opened (each session holds a whole copy of its component).</summary>
    public long Bytes => System.Threading.Interlocked.Read(ref _bytes);

    /// <summary>Modules and keys of the set's files that changed nothing.</summary>
    public IReadOnlyList<LoraUnmatchedModule> Unmatched { get; }

    /// <summary>
    /// The text encoder <paramref name="component"/> with this set's merged weights and the textual inversion set
    /// <paramref name="inversions"/>'s taller token table, opened by <paramref name="open"/> on first use and closed with
    /// this set (its bytes count towards the cache's budget from then on).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The set was closed (evicted or the cache disposed).</exception>
    public OnnxComponent GetOrAddWithInversions(string component, string inversions, Func<(OnnxComponent Session, long Bytes)> open)
    {
        lock (_withInversions)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_withInversions.TryGetValue((component, inversions), out var cached))
                return cached;
            var (session, bytes) = open();
            _withInversions.Add((component, inversions), session);
            System.Threading.Interlocked.Add(ref _bytes, bytes);
            return session;
        }
    }

    /// <summary>Disposes the sessions (each waits for its runs in flight; their weight leases free the merged weights).</summary>
    public void Dispose()
    {
        Unet?.Dispose();
        TextEncoder?.Dispose();
        TextEncoder2?.Dispose();
        lock (_withInversions)
        {
            _disposed = true;
            foreach (var session in _withInversions.Values)
                session.Dispose();
            _withInversions.Clear();
        }
    }
}

/// <summary>
/// Sessions per LoRA set, built on first use and kept while they fit a byte budget: while the open sets take more than
/// the budget, the least recently used set not in use is closed. A set in use (pinned by a model from
/// <see cref="StableDiffusionModel.WithLoras(LoraReference[])"/> or by a running batch) is never closed, so the cache may exceed the
/// budget by the sets in use.
/// </summary>
internal sealed class LoraSessionCache : IDisposable
{
    private readonly Dictionary<string, LoraSessionSet> _sets = new(StringComparer.Ordinal);
    private readonly Func<LoraSet, LoraSessionSet> _build;
    private readonly Action<string> _log;
    private readonly object _lock = new();
    private long _clock;
    private bool _disposed;

    /// <param name="budgetBytes">The most bytes the open sets may take (exceeded only by sets in use).</param>
    /// <param name="build">Opens a set's sessions.</param>
    /// <param name="log">Receives a line per eviction.</param>
    public LoraSessionCache(long budgetBytes, Func<LoraSet, LoraSessionSet> build, Action<string> log)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(budgetBytes);
        BudgetBytes = budgetBytes;
        _build = build;
        _log = log;
    }

    /// <summary>Data SHA-256 per LoRA file (full path, length, write time), computed once; lock it to use it.</summary>
    public Dictionary<(string Path, long Length, DateTime Written), string> FileHashes { get; } = new();

    /// <summary>The byte budget.</summary>
    public long BudgetBytes { get; }

    /// <summary>The ids of the sets whose sessions are open, least recently used first.</summary>
    public IReadOnlyList<string> CachedIds
    {
        get
        {
            lock (_lock)
            {
                var list = new List<LoraSessionSet>(_sets.Values);
                list.Sort((a, b) => a.LastUse.CompareTo(b.LastUse));
                return list.ConvertAll(s => s.Set.Id);
            }
        }
    }

    /// <summary>The bytes the open sets hold.</summary>
    public long CachedBytes
    {
        get
        {
            lock (_lock)
            {
                long total = 0;
                foreach (var set in _sets.Values)
                    total += set.Bytes;
                return total;
            }
        }
    }

    /// <summary>The sessions of <paramref name="set"/>, built if needed, pinned until <see cref="Release"/>.</summary>
    public LoraSessionSet Acquire(LoraSet set)
    {
        ArgumentNullException.ThrowIfNull(set);
        lock (_lock)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_sets.TryGetValue(set.Id, out var sessions))
            {
                sessions = _build(set);
                _sets.Add(set.Id, sessions);
            }
            sessions.Pins++;
            sessions.LastUse = ++_clock;
            EvictOverBudget();
            return sessions;
        }
    }

    /// <summary>Unpins a set from <see cref="Acquire"/>; it stays cached while the budget allows.</summary>
    public void Release(LoraSessionSet sessions)
    {
        ArgumentNullException.ThrowIfNull(sessions);
        lock (_lock)
        {
            if (sessions.Pins <= 0)
                throw new InvalidOperationException($"LoRA set '{sessions.Set.Id}' was released more often than acquired.");
            sessions.Pins--;
            if (!_disposed)
                EvictOverBudget();
        }
    }

    private void EvictOverBudget()
    {
        long total = 0;
        foreach (var s in _sets.Values)
            total += s.Bytes;
        while (total > BudgetBytes)
        {
            LoraSessionSet? oldest = null;
            foreach (var s in _sets.Values)
                if (s.Pins == 0 && (oldest is null || s.LastUse < oldest.LastUse))
                    oldest = s;
            if (oldest is null)
                return;
            _sets.Remove(oldest.Set.Id);
            total -= oldest.Bytes;
            _log($"Closed the sessions of LoRA set {oldest.Set.Id} ({string.Join(", ", EntryNames(oldest.Set))}, {oldest.Bytes} bytes): the LoRA sessions exceeded the {BudgetBytes}-byte budget.");
            oldest.Dispose();
        }
    }

    private static IEnumerable<string> EntryNames(LoraSet set)
    {
        foreach (var entry in set.Entries)
            yield return entry.Name + ":" + entry.Scale.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Closes every set's sessions (the owning model's last reference is gone, so none is in use).</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_disposed)
                return;
            _disposed = true;
            foreach (var s in _sets.Values)
                s.Dispose();
            _sets.Clear();
        }
    }
}
