using System;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Pipeline;

namespace MLNet.Diffusion.Transforms;

/// <summary>The pipeline layer's <see cref="IPipelineLog"/> over an ML.NET channel (messages reach <c>mlContext.Log</c>).</summary>
internal sealed class ChannelLog : IPipelineLog
{
    private readonly IChannel _channel;

    public ChannelLog(IChannel channel) => _channel = channel ?? throw new ArgumentNullException(nameof(channel));

    // ML.NET does not expose whether anyone listens to the log; tracing stays on as before.
    public bool TraceEnabled => true;

    public void Trace(string message) => _channel.Trace(MessageSensitivity.None, message);

    public void Info(string message) => _channel.Info(MessageSensitivity.None, message);

    public void Warning(string message) => _channel.Warning(MessageSensitivity.None, message);
}
