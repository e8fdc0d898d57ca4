using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Globalization;
using System.Linq;

namespace MLNet.Diffusion.Onnx;

/// <summary>
/// Where a model load spends its time (folder checks, tokenizer files, one session per component, inspection), phase
/// after phase, for the load log and the benchmark's cold/warm load report (issue 21). Not thread-safe: one load.
/// </summary>
internal sealed class LoadTimes
{
    private readonly Stopwatch _watch = Stopwatch.StartNew();
    private readonly List<(string Phase, TimeSpan Time)> _phases = new();
    private TimeSpan _last;

    /// <summary>The phases in order, each with the time since the previous one ended.</summary>
    public IReadOnlyList<(string Phase, TimeSpan Time)> Phases => _phases;

    /// <summary>The time from the start of the load to the last phase's end.</summary>
    public TimeSpan Total => _last;

    /// <summary>Ends a phase now.</summary>
    public void Mark(string phase)
    {
        var now = _watch.Elapsed;
        _phases.Add((phase, now - _last));
        _last = now;
    }

    /// <summary>"total 812 ms: folder 2 ms, tokenizer 40 ms, …".</summary>
    public override string ToString() =>
        FormattableString.Invariant($"total {_last.TotalMilliseconds:F0} ms: ")
        + string.Join(", ", _phases.Select(p => p.Phase + " " + p.Time.TotalMilliseconds.ToString("F0", CultureInfo.InvariantCulture) + " ms"));
}
