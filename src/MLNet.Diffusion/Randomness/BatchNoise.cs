using System;
using MLNet.Diffusion.Schedulers;

namespace MLNet.Diffusion.Randomness;

/// <summary>
/// The noise of one batch of rows under a <see cref="NoiseOptions"/>: the first draw of a row is its initial noise, the
/// following draws the noise of the stochastic steps. A denoiser passes it to <see cref="DiffusionScheduler.Step"/> as
/// the <see cref="INoiseSource"/>, whose draws cover every row of the batch.
/// </summary>
/// <remarks>
/// With <see cref="NoiseBatchPolicy.GeneratorPerRow"/>, row r draws from its own generator; with
/// <see cref="NoiseBatchPolicy.GeneratorPerBatch"/>, each draw is one call over all rows of one generator seeded with the
/// first row's seed. When <see cref="NoiseOptions.StepNoiseSeedOffset"/> is set, the generator is replaced after the
/// first draw by one seeded with seed + offset. <see cref="NoiseOptions.DrawsBefore"/> skips draws before the first,
/// <see cref="NoiseOptions.DrawsBeforeSteps"/> draws between the first and the second, each of the size of one draw.
/// </remarks>
public sealed class BatchNoise : INoiseSource
{
    private readonly NoiseOptions _options;
    private readonly long[] _seeds;
    private readonly INoiseSource[] _generators;
    private readonly bool[] _drawn;
    private readonly int[] _pendingSkips;
    private float[] _discard = Array.Empty<float>();

    internal BatchNoise(NoiseOptions options, ReadOnlySpan<long> seeds, int rowLength)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (seeds.IsEmpty)
            throw new ArgumentException("A batch needs at least one row seed.", nameof(seeds));
        if (rowLength < 1)
            throw new ArgumentOutOfRangeException(nameof(rowLength), rowLength, "A row holds at least one value.");
        _options = options;
        _seeds = seeds.ToArray();
        RowLength = rowLength;
        int generators = options.BatchPolicy == NoiseBatchPolicy.GeneratorPerBatch ? 1 : _seeds.Length;
        _generators = new INoiseSource[generators];
        _drawn = new bool[generators];
        _pendingSkips = new int[generators];
        int drawLength = generators == 1 && options.BatchPolicy == NoiseBatchPolicy.GeneratorPerBatch ? checked(_seeds.Length * rowLength) : rowLength;
        for (int g = 0; g < generators; g++)
        {
            _generators[g] = options.CreateGenerator(_seeds[g]);
            Skip(g, options.DrawsBefore, drawLength);
        }
    }

    /// <summary>The number of rows.</summary>
    public int Rows => _seeds.Length;

    /// <summary>The values per row.</summary>
    public int RowLength { get; }

    /// <summary>The options this noise follows.</summary>
    public NoiseOptions Options => _options;

    /// <summary>Draws noise for every row: <see cref="Rows"/> × <see cref="RowLength"/> values, row after row.</summary>
    /// <param name="destination">The span to fill.</param>
    /// <exception cref="ArgumentException">The span does not hold exactly one draw for every row.</exception>
    public void NextGaussian(Span<float> destination)
    {
        if (destination.Length != _seeds.Length * RowLength)
            throw new ArgumentException($"Expected noise for {_seeds.Length} rows of {RowLength} values, got {destination.Length} values.", nameof(destination));
        if (_generators.Length == 1 && _options.BatchPolicy == NoiseBatchPolicy.GeneratorPerBatch)
        {
            Draw(0, destination);
            return;
        }
        for (int r = 0; r < _generators.Length; r++)
            Draw(r, destination.Slice(r * RowLength, RowLength));
    }

    /// <summary>Draws noise for one row only (<see cref="NoiseBatchPolicy.GeneratorPerRow"/>).</summary>
    /// <param name="row">The row.</param>
    /// <param name="destination">The span to fill, <see cref="RowLength"/> values.</param>
    /// <exception cref="InvalidOperationException">The batch shares one generator, whose draws cover every row.</exception>
    public void NextGaussian(int row, Span<float> destination)
    {
        CheckRow(row);
        if (destination.Length != RowLength)
            throw new ArgumentException($"Expected {RowLength} values for row {row}, got {destination.Length}.", nameof(destination));
        Draw(row, destination);
    }

    /// <summary>
    /// Counts a row's initial draw as made without drawing, for a row whose initial noise is given (diffusers'
    /// <c>latents=</c>): its steps' noise then starts where the generator stands, as in diffusers.
    /// </summary>
    /// <param name="row">The row.</param>
    /// <exception cref="InvalidOperationException">The batch shares one generator; use <see cref="SkipInitialDraw()"/>.</exception>
    public void SkipInitialDraw(int row)
    {
        CheckRow(row);
        MarkDrawn(row);
    }

    /// <summary>Counts every row's initial draw as made without drawing (the whole batch's initial noise is given).</summary>
    public void SkipInitialDraw()
    {
        for (int g = 0; g < _generators.Length; g++)
            MarkDrawn(g);
    }

    private void CheckRow(int row)
    {
        if (_options.BatchPolicy == NoiseBatchPolicy.GeneratorPerBatch)
            throw new InvalidOperationException("This batch shares one generator (NoiseBatchPolicy.GeneratorPerBatch); its draws cover every row at once.");
        if ((uint)row >= (uint)_seeds.Length)
            throw new ArgumentOutOfRangeException(nameof(row), row, $"The batch has {_seeds.Length} rows.");
    }

    private void Draw(int g, Span<float> destination)
    {
        if (_pendingSkips[g] > 0)
        {
            Skip(g, _pendingSkips[g], destination.Length);
            _pendingSkips[g] = 0;
        }
        _generators[g].NextGaussian(destination);
        MarkDrawn(g);
    }

    private void MarkDrawn(int g)
    {
        if (_drawn[g])
            return;
        _drawn[g] = true;
        if (_options.StepNoiseSeedOffset is { } offset)
            _generators[g] = _options.CreateGenerator(unchecked(_seeds[g] + offset));
        _pendingSkips[g] = _options.DrawsBeforeSteps;
    }

    /// <summary>Moves generator <paramref name="g"/> past <paramref name="draws"/> draws of <paramref name="length"/> values each.</summary>
    private void Skip(int g, int draws, int length)
    {
        for (int d = 0; d < draws; d++)
        {
            if (_generators[g] is TorchCpuNoise torch)
            {
                torch.Skip(length);
                continue;
            }
            if (_discard.Length != length)
                _discard = new float[length];
            _generators[g].NextGaussian(_discard);
        }
    }
}
