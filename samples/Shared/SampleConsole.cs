using System;
using System.IO;
using System.Reflection;
using Spectre.Console;

namespace MLNet.Diffusion.Samples;

/// <summary>
/// What every sample shares (linked into each project): a Spectre.Console console over standard error that degrades to
/// plain text when it is not a terminal (CI, tests, redirection), and the rule that any failure is reported as one line.
/// </summary>
internal static class SampleConsole
{
    /// <summary>
    /// A console writing to <paramref name="writer"/>: live progress bars and colours only when that is the terminal's
    /// standard error; otherwise no ANSI codes and no cursor movement, so the output reads as a log.
    /// </summary>
    public static IAnsiConsole Create(TextWriter writer)
    {
        bool terminal = ReferenceEquals(writer, Console.Error) && !Console.IsErrorRedirected && !Console.IsInputRedirected;
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Yes : InteractionSupport.No,
        });
        if (!terminal)
            console.Profile.Width = 200; // a log has no width to wrap at; Spectre's default (80) would break file paths
        return console;
    }

    /// <summary>
    /// One line naming the problem: the message of the exception that says what went wrong (wrappers such as
    /// <see cref="TargetInvocationException"/> are looked through), with line breaks folded.
    /// </summary>
    public static string Describe(Exception exception)
    {
        var e = exception;
        while (e is TargetInvocationException or TypeInitializationException or AggregateException && e.InnerException is not null)
            e = e.InnerException;
        string message = e.Message.ReplaceLineEndings(" ").Trim();
        return message.Length == 0 ? e.GetType().Name : message;
    }

    /// <summary>Writes <c>error: …</c> as one line to standard error and returns the exit code 1.</summary>
    public static int Fail(Exception exception)
    {
        Console.Error.WriteLine($"error: {Describe(exception)}");
        return 1;
    }
}
