using System;
using System.Collections.Generic;
using System.Linq;
using Microsoft.ML;
using Microsoft.ML.Data;

using MLNet.Diffusion;

namespace MLNet.Diffusion.Transforms;

/// <summary>The lazy result of a diffusion stage's Transform.</summary>
internal sealed class StageDataView : IDataView
{
    private readonly DiffusionTransformer _stage;
    private readonly IDataView _input;

    public StageDataView(DiffusionTransformer stage, IDataView input, DataViewSchema schema)
    {
        _stage = stage;
        _input = input;
        Schema = schema;
    }

    public bool CanShuffle => false;

    public DataViewSchema Schema { get; }

    public long? GetRowCount() => _input.GetRowCount();

    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
    {
        ArgumentNullException.ThrowIfNull(columnsNeeded);
        _stage.Model.ThrowIfDisposed();
        var active = new bool[Schema.Count];
        foreach (var c in columnsNeeded)
            active[c.Index] = true;
        return new StageCursor(_stage, _input, Schema, active);
    }

    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        new[] { GetRowCursor(columnsNeeded, rand) };
}

/// <summary>
/// A cursor that reads ahead one mini-batch on a single input cursor, runs the stage once per batch, and serves each
/// row's values from its batch slot: pass-through input values are copied into the slot when read, so every getter
/// returns the row at <see cref="Position"/> whatever the batch boundaries, and is idempotent per position.
/// </summary>
internal sealed class StageCursor : DataViewRowCursor
{
    private readonly DiffusionTransformer _stage;
    private readonly DataViewRowCursor _input;
    private readonly StageWorker? _worker;
    private readonly bool[] _active;
    private readonly int _inputCount;
    private readonly ISlotCache?[] _passThrough;
    private readonly Delegate?[] _outputGetters;
    private readonly long[] _ids;
    // Each slot's row position is the input cursor's: the same as counting rows for any ML.NET cursor, and the global row
    // index when the input is a mini-batch of a larger table (RunOnDevices), so seeds and errors name the table's row.
    private readonly long[] _positions;
    private readonly ValueGetter<DataViewRowId>? _inputIdGetter;
    private readonly int _batchSize;
    private int _slot = -1;
    private int _count;
    private long _position = -1;
    private bool _done;

    public StageCursor(DiffusionTransformer stage, IDataView input, DataViewSchema schema, bool[] active)
    {
        _stage = stage;
        Schema = schema;
        _active = active;
        _inputCount = input.Schema.Count;
        bool anyOutput = false;
        var activeOutputs = new bool[schema.Count - _inputCount];
        for (int i = _inputCount; i < schema.Count; i++)
            anyOutput |= activeOutputs[i - _inputCount] = active[i];

        var inputColumns = new List<DataViewSchema.Column>();
        for (int i = 0; i < _inputCount; i++)
            if (active[i])
                inputColumns.Add(input.Schema[i]);
        if (anyOutput)
            foreach (string name in stage.GetInputColumnNames(input.Schema))
                inputColumns.Add(input.Schema[name]);
        _input = input.GetRowCursor(inputColumns.Distinct());

        _batchSize = anyOutput ? stage.BatchSize : 1;
        _passThrough = new ISlotCache?[_inputCount];
        _outputGetters = new Delegate?[schema.Count - _inputCount];
        _ids = new long[_batchSize * 2];
        _positions = new long[_batchSize];
        if (anyOutput)
        {
            for (int i = 0; i < _inputCount; i++)
                if (active[i])
                    _passThrough[i] = SlotCache.Create(_input, input.Schema[i], _batchSize);
            _inputIdGetter = _input.GetIdGetter();
            _worker = stage.CreateWorker(_input, activeOutputs);
            for (int j = 0; j < activeOutputs.Length; j++)
                if (activeOutputs[j])
                    _outputGetters[j] = _worker.MakeGetter(j, () => _slot);
        }
    }

    public override DataViewSchema Schema { get; }

    public override long Position => _position;

    public override long Batch => 0;

    public override bool MoveNext()
    {
        if (_done)
            return false;
        if (_worker is null)
        {
            if (!_input.MoveNext())
            {
                _done = true;
                return false;
            }
            _position = _input.Position;
            return true;
        }
        if (_slot + 1 < _count)
        {
            _slot++;
            _position = _positions[_slot];
            return true;
        }
        _count = 0;
        while (_count < _batchSize && _input.MoveNext())
        {
            long pos = _input.Position;
            _positions[_count] = pos;
            foreach (var cache in _passThrough)
                cache?.Store(_count);
            DataViewRowId id = default;
            _inputIdGetter!(ref id);
            _ids[2 * _count] = (long)id.Low;
            _ids[2 * _count + 1] = (long)id.High;
            _worker.ReadRow(_count, pos);
            _count++;
        }
        if (_count == 0)
        {
            _done = true;
            return false;
        }
        _worker.Process(_count);
        _slot = 0;
        _position = _positions[0];
        return true;
    }

    public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

    public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
    {
        if (!_active[column.Index])
            throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor; request it when creating the cursor.");
        if (column.Index < _inputCount)
        {
            if (_worker is null)
                return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            return ((SlotCache<TValue>)_passThrough[column.Index]!).MakeGetter(() => _slot);
        }
        var getter = _outputGetters[column.Index - _inputCount];
        return getter as ValueGetter<TValue>
            ?? throw new InvalidOperationException($"Column '{column.Name}' has type {column.Type}; it cannot be read as {typeof(TValue).Name}.");
    }

    public override ValueGetter<DataViewRowId> GetIdGetter()
    {
        if (_worker is null)
            return _input.GetIdGetter();
        return (ref DataViewRowId value) => value = new DataViewRowId((ulong)_ids[2 * _slot], (ulong)_ids[2 * _slot + 1]);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _worker?.Dispose();
            _input.Dispose();
        }
        base.Dispose(disposing);
    }
}

/// <summary>A row-to-row mapper: one input row at a time (prediction engines), cached by the input's position.</summary>
internal sealed class StageRowMapper : IRowToRowMapper
{
    private readonly DiffusionTransformer _stage;

    public StageRowMapper(DiffusionTransformer stage, DataViewSchema inputSchema, DataViewSchema outputSchema)
    {
        _stage = stage;
        InputSchema = inputSchema;
        OutputSchema = outputSchema;
    }

    public DataViewSchema InputSchema { get; }

    public DataViewSchema OutputSchema { get; }

    public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
    {
        var result = new List<DataViewSchema.Column>();
        bool anyOutput = false;
        foreach (var c in dependingColumns)
        {
            if (c.Index < InputSchema.Count)
                result.Add(InputSchema[c.Index]);
            else
                anyOutput = true;
        }
        if (anyOutput)
            foreach (string name in _stage.GetInputColumnNames(InputSchema))
                result.Add(InputSchema[name]);
        return result.Distinct();
    }

    public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
    {
        _stage.Model.ThrowIfDisposed();
        var active = new bool[OutputSchema.Count];
        foreach (var c in activeColumns)
            active[c.Index] = true;
        return new MappedRow(_stage, input, OutputSchema, active);
    }

    private sealed class MappedRow : DataViewRow
    {
        private readonly DataViewRow _input;
        private readonly bool[] _active;
        private readonly int _inputCount;
        private readonly StageWorker? _worker;
        private readonly Delegate?[] _getters;
        private long _computed = -1;

        public MappedRow(DiffusionTransformer stage, DataViewRow input, DataViewSchema schema, bool[] active)
        {
            _input = input;
            Schema = schema;
            _active = active;
            _inputCount = input.Schema.Count;
            var activeOutputs = new bool[schema.Count - _inputCount];
            bool any = false;
            for (int i = _inputCount; i < schema.Count; i++)
                any |= activeOutputs[i - _inputCount] = active[i];
            _getters = new Delegate?[activeOutputs.Length];
            if (any)
            {
                _worker = stage.CreateWorker(input, activeOutputs);
                for (int j = 0; j < activeOutputs.Length; j++)
                    if (activeOutputs[j])
                        _getters[j] = _worker.MakeGetter(j, EnsureComputed);
            }
        }

        public override DataViewSchema Schema { get; }

        public override long Position => _input.Position;

        public override long Batch => _input.Batch;

        private int EnsureComputed()
        {
            if (_computed != _input.Position)
            {
                _worker!.ReadRow(0, _input.Position);
                _worker.Process(1);
                _computed = _input.Position;
            }
            return 0;
        }

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (column.Index < _inputCount)
                return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            if (!_active[column.Index])
                throw new InvalidOperationException($"Column '{column.Name}' is not active in this row.");
            return _getters[column.Index - _inputCount] as ValueGetter<TValue>
                ?? throw new InvalidOperationException($"Column '{column.Name}' has type {column.Type}; it cannot be read as {typeof(TValue).Name}.");
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
                _worker?.Dispose();
            base.Dispose(disposing);
        }
    }
}
