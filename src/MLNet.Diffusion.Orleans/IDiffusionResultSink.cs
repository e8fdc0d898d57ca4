using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.ML.Data;
using MLNet.Diffusion.Imaging;

namespace MLNet.Diffusion.Orleans;

/// <summary>A generated row on its way to a sink: its key (job, row index), its image and what it was generated with.</summary>
public sealed class DiffusionRowResult
{
    /// <summary>Creates a result.</summary>
    /// <param name="jobId">The job's id.</param>
    /// <param name="rowIndex">The row's index in the job.</param>
    /// <param name="image">The image (owned by the caller).</param>
    /// <param name="parameters">AUTOMATIC1111's generation parameters of the row.</param>
    /// <param name="text">Other PNG text entries (the job and row).</param>
    public DiffusionRowResult(string jobId, long rowIndex, MLImage image, GenerationParameters parameters, IReadOnlyDictionary<string, string> text)
    {
        JobId = jobId;
        RowIndex = rowIndex;
        Image = image;
        Parameters = parameters;
        Text = text;
    }

    /// <summary>The job's id.</summary>
    public string JobId { get; }

    /// <summary>The row's index in the job.</summary>
    public long RowIndex { get; }

    /// <summary>The image; valid during <see cref="IDiffusionResultSink.WriteAsync"/> only.</summary>
    public MLImage Image { get; }

    /// <summary>The row's generation parameters (its PNG <c>parameters</c> entry).</summary>
    public GenerationParameters Parameters { get; }

    /// <summary>Other text entries (<c>job</c>, <c>row</c>).</summary>
    public IReadOnlyDictionary<string, string> Text { get; }
}

/// <summary>
/// Where a job's results go, keyed by row index (one sink per job). The cluster's exactly-once result rests on two
/// properties an implementation must have: <see cref="WriteAsync"/> replaces a row's result atomically (a reader sees
/// the old result or the new one, never part of one), and a row written twice gets the same content (results are
/// deterministic, so writing the same bytes again is harmless). <see cref="ContainsAsync"/> is how a resumed job skips work.
/// </summary>
public interface IDiffusionResultSink
{
    /// <summary>Whether the row's result is already in the sink.</summary>
    /// <param name="rowIndex">The row's index in the job.</param>
    /// <param name="cancellationToken">Cancels the check.</param>
    ValueTask<bool> ContainsAsync(long rowIndex, CancellationToken cancellationToken);

    /// <summary>Writes (or replaces, atomically) a row's result.</summary>
    /// <param name="result">The result.</param>
    /// <param name="cancellationToken">Cancels the write.</param>
    ValueTask WriteAsync(DiffusionRowResult result, CancellationToken cancellationToken);
}

/// <summary>Opens a job's sink from its <see cref="DiffusionJob.SinkLocation"/>; register another in the silo's services for another store.</summary>
public interface IDiffusionResultSinkProvider
{
    /// <summary>Opens the sink of a job.</summary>
    /// <param name="jobId">The job's id.</param>
    /// <param name="location">The job's sink location.</param>
    IDiffusionResultSink Open(string jobId, string location);
}

/// <summary>
/// The default sink: a folder with one PNG per row, <c>row-000042.png</c>, carrying AUTOMATIC1111's <c>parameters</c> entry
/// and the job and row. A PNG is written to a temporary file of its own and renamed over the target, so a reader (or a
/// killed writer) never leaves half a PNG, and two workers writing the same row both leave the same bytes.
/// </summary>
public sealed class PngFolderResultSink : IDiffusionResultSink
{
    private const string PartialSuffix = ".partial";

    /// <summary>Creates the sink over a folder (created if absent).</summary>
    /// <param name="directory">The folder.</param>
    public PngFolderResultSink(string directory)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(directory);
        Directory = Path.GetFullPath(directory);
        System.IO.Directory.CreateDirectory(Directory);
    }

    /// <summary>The folder.</summary>
    public string Directory { get; }

    /// <summary>The file name of a row's PNG.</summary>
    /// <param name="rowIndex">The row's index.</param>
    public static string FileName(long rowIndex) => string.Create(CultureInfo.InvariantCulture, $"row-{rowIndex:D6}.png");

    /// <inheritdoc/>
    public ValueTask<bool> ContainsAsync(long rowIndex, CancellationToken cancellationToken)
        => ValueTask.FromResult(File.Exists(Path.Combine(Directory, FileName(rowIndex))));

    /// <inheritdoc/>
    public ValueTask WriteAsync(DiffusionRowResult result, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(result);
        string path = Path.Combine(Directory, FileName(result.RowIndex));
        // A temporary name of this writer's own: two silos writing the same row never share a half-written file.
        string temporary = path + "." + Guid.NewGuid().ToString("N") + PartialSuffix;
        try
        {
            PngFile.Save(result.Image, temporary, result.Parameters, result.Text);
            File.Move(temporary, path, overwrite: true);
        }
        catch
        {
            File.Delete(temporary);
            throw;
        }
        return ValueTask.CompletedTask;
    }
}

/// <summary>The default <see cref="IDiffusionResultSinkProvider"/>: the location is a folder of PNGs (<see cref="PngFolderResultSink"/>).</summary>
public sealed class PngFolderResultSinkProvider : IDiffusionResultSinkProvider
{
    /// <inheritdoc/>
    public IDiffusionResultSink Open(string jobId, string location) => new PngFolderResultSink(location);
}
