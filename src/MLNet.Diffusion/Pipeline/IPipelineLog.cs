namespace MLNet.Diffusion.Pipeline;

/// <summary>
/// Where the recipes of <c>Pipeline/</c> report what they do. The pipeline layer knows nothing of ML.NET: the stages
/// (Transforms/) hand in an adapter over their <c>IChannel</c> (<c>Transforms/ChannelLog</c>), tests and other
/// callers may hand in anything, or <see cref="PipelineLog.None"/>.
/// </summary>
internal interface IPipelineLog
{
    /// <summary>Whether <see cref="Trace"/> messages are wanted; callers skip formatting them when false.</summary>
    bool TraceEnabled { get; }

    /// <summary>A per-step or per-batch detail (ML.NET's trace level).</summary>
    void Trace(string message);

    /// <summary>A message for the user (ML.NET's info level).</summary>
    void Info(string message);

    /// <summary>Something the user should look at; the run goes on.</summary>
    void Warning(string message);
}

/// <summary>Ready-made <see cref="IPipelineLog"/>s.</summary>
internal static class PipelineLog
{
    /// <summary>Discards every message.</summary>
    public static IPipelineLog None { get; } = new NullLog();

    private sealed class NullLog : IPipelineLog
    {
        public bool TraceEnabled => false;
        public void Trace(string message) { }
        public void Info(string message) { }
        public void Warning(string message) { }
    }
}
