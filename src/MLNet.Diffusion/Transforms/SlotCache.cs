using System;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNet.Diffusion.Transforms;

/// <summary>Holds one pass-through column's values for the rows of a mini-batch.</summary>
internal interface ISlotCache
{
    /// <summary>Copies the input cursor's current value into <paramref name="slot"/>.</summary>
    void Store(int slot);
}

internal static class SlotCache
{
    private static readonly System.Reflection.MethodInfo s_create =
        typeof(SlotCache).GetMethod(nameof(CreateTyped), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!;

    /// <summary>Creates the cache for a column of any type (the generic argument is the column's raw type).</summary>
    public static ISlotCache Create(DataViewRow input, DataViewSchema.Column column, int slots) =>
        (ISlotCache)s_create.MakeGenericMethod(column.Type.RawType).Invoke(null, new object[] { input, column, slots })!;

    private static ISlotCache CreateTyped<T>(DataViewRow input, DataViewSchema.Column column, int slots) =>
        new SlotCache<T>(input.GetGetter<T>(column), slots);
}

/// <summary>
/// Values of one column for each batch slot. VBuffer values are deep-copied because upstream getters reuse their
/// buffers; other values (strings as ReadOnlyMemory, numbers, images) are stored as they are.
/// </summary>
internal sealed class SlotCache<T> : ISlotCache
{
    private static readonly bool s_isVBuffer = typeof(T).IsGenericType && typeof(T).GetGenericTypeDefinition() == typeof(VBuffer<>);
    private readonly ValueGetter<T> _getter;
    private readonly T[] _values;
    private readonly Copier? _copy;

    private delegate void Copier(ref T source, ref T destination);

    public SlotCache(ValueGetter<T> getter, int slots)
    {
        _getter = getter;
        _values = new T[slots];
        if (s_isVBuffer)
        {
            var m = typeof(SlotCache<T>).GetMethod(nameof(CopyVBuffer), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(typeof(T).GetGenericArguments()[0]);
            _copy = (Copier)Delegate.CreateDelegate(typeof(Copier), m);
        }
    }

    public void Store(int slot)
    {
        if (_copy is null)
        {
            _getter(ref _values[slot]);
            return;
        }
        T temp = default!;
        _getter(ref temp);
        _copy(ref temp, ref _values[slot]);
    }

    public ValueGetter<T> MakeGetter(Func<int> slot) => (ref T value) =>
    {
        if (_copy is null)
            value = _values[slot()];
        else
            _copy(ref _values[slot()], ref value);
    };

    private static void CopyVBuffer<TItem>(ref VBuffer<TItem> source, ref VBuffer<TItem> destination) => source.CopyTo(ref destination);
}
