using System;
using System.Collections.Generic;

namespace MLNet.Diffusion.Lora;

/// <summary>
/// The LoRA sets of a batch's rows, for the stages that apply them per row (EncodePrompt reads A1111 tags out of the
/// prompt; DenoiseLatents reads them from EncodePrompt's LoRA column), and one worker (<typeparamref name="T"/>: a
/// PromptEncoder or a LatentDenoiser) per set, built on a model that carries the set (the stage's model's own LoRAs plus
/// the row's) and kept for the cursor's life. Each such model pins its sessions in the LoRA cache until disposed.
/// </summary>
internal sealed class RowLoras<T> : IDisposable
    where T : class, IDisposable
{
    private readonly StableDiffusionModel _model;
    private readonly string? _column;
    private readonly Func<StableDiffusionModel, T> _create;
    private readonly string[] _tags;
    private readonly LoraSet[] _sets;
    private readonly Dictionary<string, LoraSet> _parsed = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (StableDiffusionModel Model, T Worker)> _workers = new(StringComparer.Ordinal);
    private readonly List<LoraPromptTag> _scratch = new();

    /// <param name="model">The stage's model.</param>
    /// <param name="column">The LoRA column (EncodePrompt: the one it writes; null: tags are an error).</param>
    /// <param name="batchSize">Rows per batch.</param>
    /// <param name="create">Builds a worker on a model that carries a row set.</param>
    public RowLoras(StableDiffusionModel model, string? column, int batchSize, Func<StableDiffusionModel, T> create)
    {
        _model = model;
        _column = column;
        _create = create;
        _tags = new string[batchSize];
        _sets = new LoraSet[batchSize];
        Array.Fill(_tags, "");
        Array.Fill(_sets, LoraSet.Empty);
    }

    /// <summary>
    /// EncodePrompt: takes the LoRA tags out of <paramref name="prompt"/> (A1111 reads them from the prompt only; a
    /// negative prompt's text is encoded as written) and records the row's set.
    /// </summary>
    public void ReadPrompt(int slot, long position, ref string prompt)
    {
        _tags[slot] = "";
        _sets[slot] = LoraSet.Empty;
        if (!LoraPromptTags.Contains(prompt))
            return;
        _scratch.Clear();
        string stripped = LoraPromptTags.Extract(prompt, _scratch, $"Row {position}");
        if (_scratch.Count == 0)
            return;
        if (_column is null)
            throw new InvalidOperationException($"Row {position}: the prompt has LoRA tags ({LoraPromptTags.Format(_scratch)}). Set EncodePromptOptions.LoraColumnName, "
                + "and DenoiseLatentsOptions.LoraColumnName to the same column, so that the text encoder and the UNet both apply them.");
        prompt = stripped;
        Record(slot, LoraPromptTags.Format(_scratch), position);
    }

    /// <summary>DenoiseLatents: the row's LoRA column value (tags in EncodePrompt's canonical form, or empty).</summary>
    public void ReadTags(int slot, long position, string tags)
    {
        _tags[slot] = "";
        _sets[slot] = LoraSet.Empty;
        if (tags.Length == 0)
            return;
        Record(slot, tags, position);
    }

    private void Record(int slot, string tags, long position)
    {
        if (!_parsed.TryGetValue(tags, out var set))
        {
            _scratch.Clear();
            string rest = LoraPromptTags.Extract(tags, _scratch, $"Row {position}");
            if (rest.Trim().Length != 0)
                throw new FormatException($"Row {position}: LoRA column '{_column}' holds '{tags}', which is not a list of <lora:name:scale> tags.");
            set = _model.ResolveTags(_scratch);
            _parsed[tags] = set;
        }
        _tags[slot] = tags;
        _sets[slot] = set;
    }

    /// <summary>The row's tags in canonical form (the LoRA column's value).</summary>
    public string Tags(int slot) => _tags[slot];

    /// <summary>The id of the row's own set ("" when the row names no LoRA), for grouping.</summary>
    public string SetId(int slot) => _sets[slot].Id;

    /// <summary>Whether any of the first <paramref name="count"/> rows names a LoRA.</summary>
    public bool AnyTagged(int count)
    {
        for (int i = 0; i < count; i++)
            if (!_sets[i].IsEmpty)
                return true;
        return false;
    }

    /// <summary>The worker for the row's set: <paramref name="plain"/> (the stage model's) when the row names none.</summary>
    public T For(int slot, T plain)
    {
        var set = _sets[slot];
        if (set.IsEmpty)
            return plain;
        if (!_workers.TryGetValue(set.Id, out var entry))
        {
            var model = _model.ForLoraSet(_model.LoraSet.Union(set));
            try
            {
                entry = (model, _create(model));
            }
            catch
            {
                model.Dispose();
                throw;
            }
            _workers.Add(set.Id, entry);
        }
        return entry.Worker;
    }

    /// <summary>The first <paramref name="count"/> rows grouped by set, in order of first appearance, each with its worker.</summary>
    public List<(T Worker, List<int> Rows)> Groups(int count, T plain)
    {
        var groups = new List<(T, List<int>)>();
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < count; i++)
        {
            string id = _sets[i].Id;
            if (!index.TryGetValue(id, out int g))
            {
                index.Add(id, g = groups.Count);
                groups.Add((For(i, plain), new List<int>()));
            }
            groups[g].Item2.Add(i);
        }
        return groups;
    }

    /// <summary>Disposes the per-set workers and their models (which unpins their sessions).</summary>
    public void Dispose()
    {
        foreach (var (model, worker) in _workers.Values)
        {
            worker.Dispose();
            model.Dispose();
        }
        _workers.Clear();
    }
}
