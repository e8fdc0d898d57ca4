using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.Runtime.ExceptionServices;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNet.Diffusion.Transforms;

namespace MLNet.Diffusion;

/// <summary>Settings of <c>RunOnDevices</c>: how rows are split into mini-batches and how far the devices run ahead.</summary>
public sealed class RunOnDevicesOptions
{
    /// <summary>
    /// Rows per mini-batch a device takes at a time, which it runs through the whole per-device pipeline (prompt to image)
    /// before it takes the next. Null (the default) uses the least common multiple of the pipeline's stages' batch sizes
    /// (EncodePrompt 8, DenoiseLatents 4, DecodeLatents 2 → 8). A set value must be such a multiple: every stage then cuts
    /// the rows into the same batches as on one device, so batch-level settings
    /// (<see cref="Randomness.NoiseBatchPolicy.GeneratorPerBatch"/>) give the same images whatever the number of devices.
    /// </summary>
    public int? BatchSize { get; init; }

    /// <summary>
    /// How many mini-batches may be finished or running beyond the one the reader is on (their results wait in memory
    /// until read, in order); null: twice the number of devices. At least the number of devices, so none waits idle.
    /// </summary>
    public int? BatchesAhead { get; init; }

    /// <summary>
    /// Receives a report each time a device finishes a mini-batch, on that device's thread (so several at once: the
    /// implementation must be thread-safe; <see cref="Progress{T}"/> is). The stages' own progress options (e.g.
    /// <see cref="DenoiseLatentsOptions.Progress"/>) keep reporting too, also from the devices' threads.
    /// </summary>
    public IProgress<DeviceBatchProgress>? Progress { get; init; }

    /// <summary>
    /// Stops the run: no device takes another mini-batch, and the cursor throws <see cref="OperationCanceledException"/>.
    /// A running mini-batch finishes unless its stages see the same token (pass it to
    /// <see cref="DenoiseLatentsOptions.CancellationToken"/> to stop between denoising steps).
    /// </summary>
    public CancellationToken CancellationToken { get; init; }
}

/// <summary>A device finished a mini-batch of <c>RunOnDevices</c>.</summary>
/// <param name="Device">The device's index in the <see cref="DeviceList"/>.</param>
/// <param name="DeviceName">The device's short name (<c>CUDA:1</c>, <c>CPU#2</c>).</param>
/// <param name="FirstRow">Position of the mini-batch's first row in the input.</param>
/// <param name="RowCount">Rows in the mini-batch.</param>
/// <param name="RowsDone">Rows all devices have finished so far (in any order).</param>
/// <param name="Elapsed">Time from the device taking the mini-batch to its last row.</param>
public readonly record struct DeviceBatchProgress(int Device, string DeviceName, long FirstRow, int RowCount, long RowsDone, TimeSpan Elapsed);

/// <summary>
/// Create a <see cref="DevicePoolingEstimator"/>, which builds a pipeline once per device of a <see cref="MultiDeviceModel"/>
/// and runs mini-batches of rows on whichever device is free, returning the rows in input order.
/// </summary>
/// <remarks>
/// <format type="text/markdown"><![CDATA[
/// ###  Estimator characteristics
/// |  |  |
/// | -- | -- |
/// | Does this estimator need to look at the data to train its parameters? | No (it fits the per-device pipeline on each device) |
/// | Input column data type | Those of the per-device pipeline |
/// | Output column data type | Those of the per-device pipeline |
/// | Required NuGet in addition to Microsoft.ML | MLNet.Diffusion, an ONNX Runtime native package |
/// ]]></format>
/// </remarks>
public sealed class DevicePoolingEstimator : IEstimator<DevicePoolingTransformer>
{
    private readonly MultiDeviceModel _model;
    private readonly IEstimator<ITransformer>[] _pipelines;
    private readonly RunOnDevicesOptions _options;

    internal DevicePoolingEstimator(MultiDeviceModel model, Func<StableDiffusionModel, IEstimator<ITransformer>> pipeline, RunOnDevicesOptions options)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(pipeline);
        ArgumentNullException.ThrowIfNull(options);
        model.ThrowIfDisposed();
        DevicePoolingTransformer.ValidateOptions(options, model.Devices.Count);
        _model = model;
        _options = options;
        _pipelines = new IEstimator<ITransformer>[model.Devices.Count];
        for (int i = 0; i < _pipelines.Length; i++)
            _pipelines[i] = pipeline(model.Models[i]) ?? throw new ArgumentException($"The pipeline function returned null for device {i} ({model.Devices.Describe(i)}).", nameof(pipeline));
    }

    /// <summary>Fits the pipeline of every device on <paramref name="input"/> and returns the pooled transformer.</summary>
    /// <param name="input">The training data; the diffusion stages read only its schema.</param>
    public DevicePoolingTransformer Fit(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        _model.ThrowIfDisposed();
        var chains = new ITransformer[_pipelines.Length];
        for (int i = 0; i < chains.Length; i++)
            chains[i] = _pipelines[i].Fit(input);
        return new DevicePoolingTransformer(_model, chains, _options);
    }

    /// <summary>The per-device pipeline's output schema (the same on every device).</summary>
    /// <param name="inputSchema">The input schema shape.</param>
    public SchemaShape GetOutputSchema(SchemaShape inputSchema) => _pipelines[0].GetOutputSchema(inputSchema);
}

/// <summary>
/// A pipeline fitted once per device of a <see cref="MultiDeviceModel"/>, run over mini-batches of rows that the devices
/// pull from one shared cursor: the transformer of <see cref="DevicePoolingEstimator"/>. Each mini-batch runs through one
/// device's whole pipeline; the rows come back in input order, each row's values the same whatever the number of devices.
/// </summary>
public sealed class DevicePoolingTransformer : ITransformer
{
    private readonly ITransformer[] _chains;

    internal DevicePoolingTransformer(MultiDeviceModel model, ITransformer[] chains, RunOnDevicesOptions options)
    {
        Model = model;
        _chains = chains;
        Options = options;
        int lcm = 1;
        var sizes = new List<string>();
        for (int d = 0; d < chains.Length; d++)
        {
            var stages = new List<DiffusionTransformer>();
            CollectStages(chains[d], stages);
            foreach (var stage in stages)
            {
                // A pipeline function that captured another device's model would run every device's rows there.
                for (int other = 0; other < chains.Length; other++)
                {
                    if (other != d && ReferenceEquals(stage.Model, model.Models[other]))
                        throw new ArgumentException($"The pipeline of device {d} ({model.Devices.Describe(d)}) has its {stage.StageName} stage on the model of device {other}: "
                            + "build every stage on the model the pipeline function is given.", nameof(chains));
                }
                if (d == 0)
                {
                    lcm = Lcm(lcm, stage.BatchSize);
                    sizes.Add($"{stage.StageName} {stage.BatchSize}");
                }
            }
        }
        if (options.BatchSize is int b && b % lcm != 0)
            throw new ArgumentException($"RunOnDevicesOptions.BatchSize {b} is not a multiple of every stage's batch size ({string.Join(", ", sizes)}; least common multiple {lcm}): "
                + "the stages would cut the rows into other batches than on one device.", nameof(options));
        BatchSize = options.BatchSize ?? lcm;
        BatchesAhead = options.BatchesAhead ?? 2 * chains.Length;
    }

    /// <summary>The devices' model.</summary>
    public MultiDeviceModel Model { get; }

    /// <summary>The run's settings.</summary>
    public RunOnDevicesOptions Options { get; }

    /// <summary>Rows per mini-batch a device takes (<see cref="RunOnDevicesOptions.BatchSize"/> or its default).</summary>
    public int BatchSize { get; }

    internal int BatchesAhead { get; }

    /// <summary>The per-device pipelines, index i on device i.</summary>
    internal IReadOnlyList<ITransformer> Chains => _chains;

    /// <summary>False: rows are read in mini-batches and run in parallel; a prediction engine needs a single-device pipeline.</summary>
    public bool IsRowToRowMapper => false;

    /// <summary>The per-device pipeline's output schema.</summary>
    /// <param name="inputSchema">The input schema.</param>
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ArgumentNullException.ThrowIfNull(inputSchema);
        return _chains[0].GetOutputSchema(inputSchema);
    }

    /// <summary>Not supported: rows run in mini-batches across devices. Build the pipeline on a <see cref="StableDiffusionModel"/> for a prediction engine.</summary>
    /// <param name="inputSchema">The input schema.</param>
    /// <exception cref="InvalidOperationException">Always.</exception>
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) =>
        throw new InvalidOperationException("RunOnDevices runs mini-batches on several devices and is not a row-to-row mapper; "
            + "for a prediction engine, build the pipeline on one StableDiffusionModel.");

    /// <summary>Returns a lazy view of <paramref name="input"/> with the pipeline's columns; the devices start when a cursor moves.</summary>
    /// <param name="input">The input data.</param>
    public IDataView Transform(IDataView input)
    {
        ArgumentNullException.ThrowIfNull(input);
        Model.ThrowIfDisposed();
        return new DevicePoolDataView(this, input, GetOutputSchema(input.Schema));
    }

    /// <summary>
    /// Saves the first device's pipeline (every device's has the same stages and settings): loading the file gives that
    /// pipeline on one device, which produces the same rows.
    /// </summary>
    void ICanSaveModel.Save(ModelSaveContext ctx) => _chains[0].Save(ctx);

    internal static void ValidateOptions(RunOnDevicesOptions options, int devices)
    {
        if (options.BatchSize is int b && (b < 1 || b > 65536))
            throw new ArgumentOutOfRangeException(nameof(options), b, "RunOnDevicesOptions.BatchSize must be in [1, 65536].");
        if (options.BatchesAhead is int a && (a < devices || a > 4096))
            throw new ArgumentOutOfRangeException(nameof(options), a, $"RunOnDevicesOptions.BatchesAhead must be in [{devices} (the number of devices), 4096].");
    }

    private static void CollectStages(ITransformer transformer, List<DiffusionTransformer> stages)
    {
        if (transformer is DiffusionTransformer stage)
            stages.Add(stage);
        else if (transformer is IEnumerable<ITransformer> chain)
            foreach (var member in chain)
                CollectStages(member, stages);
    }

    private static int Lcm(int a, int b)
    {
        int x = a, y = b;
        while (y != 0)
            (x, y) = (y, x % y);
        return checked(a / x * b);
    }
}

/// <summary>The lazy result of <see cref="DevicePoolingTransformer.Transform"/>.</summary>
internal sealed class DevicePoolDataView : IDataView
{
    private readonly DevicePoolingTransformer _pool;
    private readonly IDataView _input;

    public DevicePoolDataView(DevicePoolingTransformer pool, IDataView input, DataViewSchema schema)
    {
        _pool = pool;
        _input = input;
        Schema = schema;
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _input.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        ArgumentNullException.ThrowIfNull(columnsNeeded);
        _pool.Model.ThrowIfDisposed();
        return new DevicePoolCursor(_pool, _input, Schema, columnsNeeded);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        new[] { GetRowCursor(columnsNeeded, rand) };
}

/// <summary>
/// The reader's cursor of a pooled run. One worker thread per device takes the next mini-batch index, reads its rows
/// from the one shared input cursor (under a lock, so the input is read once, in order), runs them through its own
/// pipeline and files the rows' values under the index; the cursor serves the batches in index order. Workers run at
/// most <see cref="DevicePoolingTransformer.BatchesAhead"/> batches beyond the one being read, so memory stays bounded.
/// </summary>
internal sealed class DevicePoolCursor : DataViewRowCursor
{
    private readonly DevicePoolingTransformer _pool;
    private readonly DataViewRowCursor _input;
    private readonly bool[] _active;
    // Output column index → index in the batches' value columns (−1: not active).
    private readonly int[] _valueIndex;
    private readonly int[] _activeColumns;
    private readonly List<DataViewSchema.Column> _inputColumns;
    private readonly object _gate = new();
    private readonly Dictionary<long, DeviceBatch> _batches = new();
    private readonly CancellationToken _token;
    private CancellationTokenRegistration _registration;
    private Task[]? _workers;
    private long _nextBatch;
    private long _reading;
    private bool _inputDone;
    private bool _stopping;
    private long _rowsDone;
    private DeviceBatch? _current;
    private int _slot;
    private long _position = -1;
    private bool _done;
    private bool _disposed;

    public DevicePoolCursor(DevicePoolingTransformer pool, IDataView input, DataViewSchema schema, IEnumerable<DataViewSchema.Column> columnsNeeded)
    {
        _pool = pool;
        Schema = schema;
        _active = new bool[schema.Count];
        var needed = new List<DataViewSchema.Column>();
        foreach (var c in columnsNeeded)
        {
            if (!_active[c.Index])
                needed.Add(schema[c.Index]);
            _active[c.Index] = true;
        }
        _valueIndex = new int[schema.Count];
        Array.Fill(_valueIndex, -1);
        _activeColumns = new int[needed.Count];
        for (int i = 0; i < needed.Count; i++)
        {
            _valueIndex[needed[i].Index] = i;
            _activeColumns[i] = needed[i].Index;
        }
        _inputColumns = InputColumns(pool.Chains[0], input.Schema, needed);
        _input = input.GetRowCursor(_inputColumns);
        _token = pool.Options.CancellationToken;
    }

    /// <summary>
    /// The input columns the pipeline reads for the requested outputs (its row mapper's dependencies); all of them when
    /// the pipeline holds a transform that is not a row mapper.
    /// </summary>
    private static List<DataViewSchema.Column> InputColumns(ITransformer chain, DataViewSchema inputSchema, List<DataViewSchema.Column> outputs)
    {
        var result = new List<DataViewSchema.Column>();
        if (chain.IsRowToRowMapper)
        {
            var mapper = chain.GetRowToRowMapper(inputSchema);
            var seen = new bool[inputSchema.Count];
            foreach (var c in mapper.GetDependencies(outputs))
            {
                if (!seen[c.Index])
                    result.Add(inputSchema[c.Index]);
                seen[c.Index] = true;
            }
            return result;
        }
        foreach (var c in inputSchema)
            result.Add(c);
        return result;
    }

    public override DataViewSchema Schema { get; }

    public override long Position => _position;

    public override long Batch => 0;

    public override bool MoveNext()
    {
        if (_done)
            return false;
        if (_current is not null && _slot + 1 < _current.Count)
        {
            _slot++;
            _position++;
            return true;
        }
        if (_workers is null)
            Start();
        DeviceBatch? next;
        lock (_gate)
        {
            if (_current is not null)
            {
                // The batch just served is done with: its memory goes, and one more may run ahead.
                _batches.Remove(_reading);
                _reading++;
                Monitor.PulseAll(_gate);
            }
            while (true)
            {
                // Cancellation first: finished batches waiting to be read are not served once the run is cancelled.
                if (_token.IsCancellationRequested)
                {
                    _stopping = true;
                    _done = true;
                    Monitor.PulseAll(_gate);
                    throw new OperationCanceledException("RunOnDevices was cancelled.", _token);
                }
                if (_batches.TryGetValue(_reading, out next))
                    break;
                if ((_inputDone || _stopping) && _reading >= _nextBatch)
                {
                    next = null;
                    break;
                }
                Monitor.Wait(_gate);
            }
        }
        _current = next;
        if (next is null)
        {
            _done = true;
            return false;
        }
        if (next.Error is { } error)
        {
            // The same exception a single-device run throws at this row (stage errors name the input's row).
            _done = true;
            ExceptionDispatchInfo.Throw(error);
        }
        _slot = 0;
        _position++;
        return true;
    }

    /// <summary>Creates one worker per device (its input slots over the shared cursor, its pipeline's view) and starts them.</summary>
    private void Start()
    {
        int devices = _pool.Chains.Count;
        var workers = new DeviceWorker[devices];
        for (int d = 0; d < devices; d++)
            workers[d] = new DeviceWorker(this, d);
        _registration = _token.Register(() =>
        {
            lock (_gate)
                Monitor.PulseAll(_gate);
        });
        _workers = new Task[devices];
        for (int d = 0; d < devices; d++)
        {
            var worker = workers[d];
            _workers[d] = Task.Factory.StartNew(worker.Run, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        }
    }

    public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

    public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
    {
        if (!_active[column.Index])
            throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor; request it when creating the cursor.");
        if (column.Type.RawType != typeof(TValue))
            throw new InvalidOperationException($"Column '{column.Name}' has type {column.Type}; it cannot be read as {typeof(TValue).Name}.");
        int index = _valueIndex[column.Index];
        SlotCache<TValue>? cache = null;
        ValueGetter<TValue>? inner = null;
        return (ref TValue value) =>
        {
            var values = (SlotCache<TValue>)_current!.Values[index];
            if (!ReferenceEquals(values, cache))
            {
                cache = values;
                inner = values.MakeGetter(() => _slot);
            }
            inner!(ref value);
        };
    }

    public override ValueGetter<DataViewRowId> GetIdGetter() =>
        (ref DataViewRowId value) => value = new DataViewRowId((ulong)_current!.Ids[2 * _slot], (ulong)_current.Ids[2 * _slot + 1]);

    protected override void Dispose(bool disposing)
    {
        if (disposing && !_disposed)
        {
            _disposed = true;
            lock (_gate)
            {
                _stopping = true;
                Monitor.PulseAll(_gate);
            }
            // A running mini-batch finishes before the sessions it uses may be released by the caller.
            if (_workers is not null)
                Task.WaitAll(_workers);
            _registration.Dispose();
            _input.Dispose();
        }
        base.Dispose(disposing);
    }

    /// <summary>One mini-batch's rows: the requested columns' values per row, the row ids, or the error that stopped it.</summary>
    private sealed class DeviceBatch
    {
        public DeviceBatch(int count, ISlotCache[] values, long[] ids)
        {
            Count = count;
            Values = values;
            Ids = ids;
        }

        public DeviceBatch(Exception error)
        {
            Error = error;
            Values = Array.Empty<ISlotCache>();
            Ids = Array.Empty<long>();
        }

        public int Count { get; }

        public ISlotCache[] Values { get; }

        public long[] Ids { get; }

        public Exception? Error { get; }
    }

    /// <summary>
    /// Takes the next mini-batch for a device (under the lock): waits while the devices are <see
    /// cref="DevicePoolingTransformer.BatchesAhead"/> batches ahead of the reader, then reads the batch's rows from the
    /// shared input cursor into the device's slots. False when the input is exhausted, the run is stopping or cancelled.
    /// </summary>
    private bool Claim(BatchSource source)
    {
        int size = _pool.BatchSize;
        lock (_gate)
        {
            while (!_stopping && !_inputDone && _nextBatch >= _reading + _pool.BatchesAhead && !_token.IsCancellationRequested)
                Monitor.Wait(_gate);
            if (_stopping || _inputDone || _token.IsCancellationRequested)
                return false;
            // The index is the device's from here on: an error while reading its rows is filed under it.
            long index = _nextBatch++;
            source.Begin(index, index * size);
            int count = 0;
            while (count < size && _input.MoveNext())
                source.Store(count++);
            if (count < size)
                _inputDone = true;
            if (count == 0)
            {
                _nextBatch--;
                source.End();
                Monitor.PulseAll(_gate);
                return false;
            }
            source.SetCount(count);
            return true;
        }
    }

    /// <summary>Files a batch's result (under the lock); an error stops every device from taking more batches.</summary>
    private void File(long index, DeviceBatch result)
    {
        lock (_gate)
        {
            _batches[index] = result;
            if (result.Error is not null)
                _stopping = true;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Files an error that came outside any batch (opening the device's cursor) under a new index, so the reader meets it.</summary>
    private void FileUnclaimed(Exception error)
    {
        lock (_gate)
        {
            _batches[_nextBatch++] = new DeviceBatch(error);
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
    }

    /// <summary>
    /// A device's loop over one long-lived cursor of its pipeline, whose input (<see cref="BatchSource"/>) takes the next
    /// mini-batch from the shared cursor whenever the pipeline asks for a row beyond the current one. The stages' batch
    /// sizes divide the mini-batch size, so a stage never reads into the next mini-batch before it has finished the
    /// current one: when the device has handed on a mini-batch's last row, it holds none of the next. The stages'
    /// workers (buffers, IO bindings) live as long as the cursor, as on one device. Every exception becomes the result
    /// of the batch it happened in, which the reader throws when it reaches that batch.
    /// </summary>
    private sealed class DeviceWorker
    {
        private readonly DevicePoolCursor _cursor;
        private readonly int _device;
        private readonly BatchSource _source;
        private readonly IDataView _output;
        private readonly DataViewSchema.Column[] _outputColumns;

        public DeviceWorker(DevicePoolCursor cursor, int device)
        {
            _cursor = cursor;
            _device = device;
            var input = cursor._input;
            var values = new ISlotCache?[input.Schema.Count];
            foreach (var c in cursor._inputColumns)
                values[c.Index] = SlotCache.Create(input, c, cursor._pool.BatchSize);
            _source = new BatchSource(cursor, input.Schema, values, input.GetIdGetter(), cursor._pool.BatchSize);
            _output = cursor._pool.Chains[device].Transform(_source);
            _outputColumns = new DataViewSchema.Column[cursor._activeColumns.Length];
            for (int i = 0; i < _outputColumns.Length; i++)
                _outputColumns[i] = _output.Schema[cursor._activeColumns[i]];
        }

        public void Run()
        {
            var pool = _cursor._pool;
            string name = pool.Model.Devices.Describe(_device);
            using var channel = pool.Model.Models[_device].Host.Start("RunOnDevices");
            DataViewRowCursor rows;
            try
            {
                rows = _output.GetRowCursor(_outputColumns);
            }
            catch (Exception e)
            {
                _cursor.FileUnclaimed(e);
                return;
            }
            using (rows)
            {
                var idGetter = rows.GetIdGetter();
                while (true)
                {
                    try
                    {
                        // Moving to a mini-batch's first row makes the source claim it and the stages run their batches.
                        if (!rows.MoveNext())
                            return;
                        var batch = Read(rows, idGetter);
                        long done = Interlocked.Add(ref _cursor._rowsDone, batch.Count);
                        var elapsed = Stopwatch.GetElapsedTime(_source.ClaimedAt);
                        channel.Info(MessageSensitivity.None, $"{name} ran rows {_source.Start}–{_source.Start + batch.Count - 1} in {elapsed.TotalSeconds:F2} s ({done} rows done).");
                        pool.Options.Progress?.Report(new DeviceBatchProgress(_device, name, _source.Start, batch.Count, done, elapsed));
                        _cursor.File(_source.Index, batch);
                    }
                    catch (Exception e)
                    {
                        string rowsText = _source.Index < 0 ? "" : $" on rows from {_source.Start}";
                        channel.Warning(MessageSensitivity.None, $"{name} failed{rowsText}: {e.Message}");
                        if (_source.Index < 0)
                            _cursor.FileUnclaimed(e);
                        else
                            _cursor.File(_source.Index, new DeviceBatch(e));
                        return;
                    }
                }
            }
        }

        /// <summary>Keeps the requested columns' values of the current mini-batch's rows; the cursor is on its first row.</summary>
        private DeviceBatch Read(DataViewRowCursor rows, ValueGetter<DataViewRowId> idGetter)
        {
            int count = _source.Count;
            long start = _source.Start;
            var values = new ISlotCache[_outputColumns.Length];
            for (int i = 0; i < values.Length; i++)
                values[i] = SlotCache.Create(rows, _outputColumns[i], count);
            var ids = new long[2 * count];
            for (int r = 0; r < count; r++)
            {
                if (r > 0 && !rows.MoveNext() || rows.Position != start + r)
                    throw new InvalidOperationException($"The pipeline of device {_device} did not return input row {start + r} in its place; "
                        + "RunOnDevices needs a pipeline that maps each row to one row (no filters).");
                foreach (var v in values)
                    v.Store(r);
                DataViewRowId id = default;
                idGetter(ref id);
                ids[2 * r] = (long)id.Low;
                ids[2 * r + 1] = (long)id.High;
            }
            return new DeviceBatch(count, values, ids);
        }
    }

    /// <summary>
    /// A device's input as an <see cref="IDataView"/> of the input's schema: its cursor serves the current mini-batch's
    /// rows with their positions in the whole input (so seeds and errors are those of the input's rows), and claims the
    /// next mini-batch from the shared cursor when moved past the current one's last row.
    /// </summary>
    private sealed class BatchSource : IDataView
    {
        private readonly DevicePoolCursor _pool;
        private readonly ISlotCache?[] _values;
        private readonly ValueGetter<DataViewRowId> _inputIds;
        private readonly long[] _ids;
        private int _slot = -1;
        private bool _opened;

        public BatchSource(DevicePoolCursor pool, DataViewSchema schema, ISlotCache?[] values, ValueGetter<DataViewRowId> inputIds, int size)
        {
            _pool = pool;
            Schema = schema;
            _values = values;
            _inputIds = inputIds;
            _ids = new long[2 * size];
        }

        /// <summary>The current mini-batch's index; −1 before the first.</summary>
        public long Index { get; private set; } = -1;

        /// <summary>The input position of the current mini-batch's first row.</summary>
        public long Start { get; private set; }

        /// <summary>Rows in the current mini-batch.</summary>
        public int Count { get; private set; }

        /// <summary>When the current mini-batch was taken (<see cref="Stopwatch.GetTimestamp"/>).</summary>
        public long ClaimedAt { get; private set; }

        public bool CanShuffle => false;

        public DataViewSchema Schema { get; }

        public long? GetRowCount() => null;

        /// <summary>Starts mini-batch <paramref name="index"/> (under the pool's lock).</summary>
        public void Begin(long index, long start)
        {
            Index = index;
            Start = start;
            Count = 0;
            ClaimedAt = Stopwatch.GetTimestamp();
            _slot = -1;
        }

        /// <summary>Copies the shared cursor's current row into slot <paramref name="slot"/> (under the pool's lock).</summary>
        public void Store(int slot)
        {
            foreach (var v in _values)
                v?.Store(slot);
            DataViewRowId id = default;
            _inputIds(ref id);
            _ids[2 * slot] = (long)id.Low;
            _ids[2 * slot + 1] = (long)id.High;
        }

        public void SetCount(int count) => Count = count;

        /// <summary>No mini-batch was left to take.</summary>
        public void End() => Index = -1;

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            foreach (var c in columnsNeeded)
            {
                if (_values[c.Index] is null)
                    throw new InvalidOperationException($"RunOnDevices did not read input column '{c.Name}', which the device pipeline asks for.");
            }
            // The mini-batches are taken by moving this cursor: a second one would take rows from the first.
            if (_opened)
                throw new InvalidOperationException("The device pipeline opened a second cursor on its input; RunOnDevices serves each device's rows through one.");
            _opened = true;
            return new Cursor(this);
        }

        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
            new[] { GetRowCursor(columnsNeeded, rand) };

        private sealed class Cursor : DataViewRowCursor
        {
            private readonly BatchSource _source;
            private bool _done;

            public Cursor(BatchSource source) => _source = source;

            public override DataViewSchema Schema => _source.Schema;

            // The row's position in the whole input: stage cursors take their rows' positions from it.
            public override long Position => _source._slot < 0 ? -1 : _source.Start + _source._slot;

            public override long Batch => 0;

            public override bool MoveNext()
            {
                if (_done)
                    return false;
                if (_source.Index >= 0 && _source._slot + 1 < _source.Count)
                {
                    _source._slot++;
                    return true;
                }
                if (!_source._pool.Claim(_source))
                {
                    _done = true;
                    return false;
                }
                _source._slot = 0;
                return true;
            }

            public override bool IsColumnActive(DataViewSchema.Column column) => _source._values[column.Index] is not null;

            public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
            {
                var values = _source._values[column.Index] as SlotCache<TValue>
                    ?? throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor or cannot be read as {typeof(TValue).Name}.");
                return values.MakeGetter(() => _source._slot);
            }

            public override ValueGetter<DataViewRowId> GetIdGetter() =>
                (ref DataViewRowId value) => value = new DataViewRowId((ulong)_source._ids[2 * _source._slot], (ulong)_source._ids[2 * _source._slot + 1]);
        }
    }
}
