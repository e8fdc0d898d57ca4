using System;
using System.IO;

namespace MLNet.Diffusion.Tests.TestSupport;

/// <summary>
/// A sample's <c>Main</c> run from a test: a fresh temporary folder, <see cref="Console.Out"/> silenced and
/// <see cref="Console.Error"/> captured (a test that uses it is <c>[DoNotParallelize]</c>); disposing restores both
/// writers and deletes the folder.
/// </summary>
internal sealed class SampleConsole : IDisposable
{
    private readonly TextWriter _previousOut = Console.Out;
    private readonly TextWriter _previousError = Console.Error;

    public SampleConsole(string prefix)
    {
        Directory = Path.Combine(Path.GetTempPath(), prefix + "-" + Guid.NewGuid().ToString("N")[..8]);
        System.IO.Directory.CreateDirectory(Directory);
        Console.SetOut(TextWriter.Null);
        Console.SetError(Error);
    }

    /// <summary>The run's temporary folder.</summary>
    public string Directory { get; }

    /// <summary>What the sample wrote to standard error.</summary>
    public StringWriter Error { get; } = new();

    public void Dispose()
    {
        Console.SetOut(_previousOut);
        Console.SetError(_previousError);
        System.IO.Directory.Delete(Directory, recursive: true);
    }
}
