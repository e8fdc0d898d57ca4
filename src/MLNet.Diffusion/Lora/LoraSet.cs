using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Security.Cryptography;
using System.Text;
using MLNet.Diffusion.SafeTensors;

namespace MLNet.Diffusion.Lora;

/// <summary>One resolved LoRA of a set: its full path, display name, multiplier and the SHA-256 of its data section.</summary>
/// <param name="Path">The file's full path.</param>
/// <param name="Name">The file name without extension (A1111's LoRA name).</param>
/// <param name="Scale">The multiplier.</param>
/// <param name="DataSha256">Lower-case hex SHA-256 of the bytes after the header (<see cref="SafeTensorsFile.ComputeDataSha256"/>).</param>
internal sealed record LoraSetEntry(string Path, string Name, float Scale, string DataSha256);

/// <summary>
/// A set of LoRAs applied together. Its <see cref="Id"/> depends only on the files' contents (data hashes) and the
/// scales, so the same files under other names or paths share sessions, and a file edited in place does not reuse stale
/// ones. Entries are kept in a canonical order (hash, then scale) so that the order the user lists them in neither
/// changes the id nor the merged weights' rounding.
/// </summary>
internal sealed class LoraSet : IEquatable<LoraSet>
{
    private LoraSet(IReadOnlyList<LoraSetEntry> entries, string id)
    {
        Entries = entries;
        Id = id;
    }

    /// <summary>The set with no LoRA.</summary>
    public static LoraSet Empty { get; } = new([], "");

    /// <summary>The LoRAs in canonical order.</summary>
    public IReadOnlyList<LoraSetEntry> Entries { get; }

    /// <summary>"" for the empty set, else 32 hex digits of SHA-256 over the entries' data hashes and scales.</summary>
    public string Id { get; }

    /// <summary>Whether the set holds no LoRA.</summary>
    public bool IsEmpty => Entries.Count == 0;

    /// <summary>Builds a set; <paramref name="hashOf"/> returns the data SHA-256 of a full path (callers cache it).</summary>
    public static LoraSet Create(IEnumerable<LoraReference> loras, Func<string, string> hashOf)
    {
        ArgumentNullException.ThrowIfNull(loras);
        var entries = new List<LoraSetEntry>();
        foreach (var lora in loras)
        {
            if (lora is null || string.IsNullOrWhiteSpace(lora.Path))
                throw new ArgumentException("A LoRA reference has no path.", nameof(loras));
            if (!float.IsFinite(lora.Scale))
                throw new ArgumentOutOfRangeException(nameof(loras), lora.Scale, $"The scale of LoRA '{lora.Path}' must be finite.");
            string full = System.IO.Path.GetFullPath(lora.Path);
            if (!File.Exists(full))
                throw new FileNotFoundException($"LoRA file '{full}' does not exist.", full);
            entries.Add(new LoraSetEntry(full, System.IO.Path.GetFileNameWithoutExtension(full), lora.Scale, hashOf(full)));
        }
        return FromEntries(entries);
    }

    /// <summary>This set followed by <paramref name="other"/>'s LoRAs.</summary>
    public LoraSet Union(LoraSet other)
    {
        if (other.IsEmpty)
            return this;
        if (IsEmpty)
            return other;
        var entries = new List<LoraSetEntry>(Entries);
        entries.AddRange(other.Entries);
        return FromEntries(entries);
    }

    /// <summary>
    /// AUTOMATIC1111's <c>Lora hashes</c> value for PNG parameters: <c>name: hash12, name: hash12</c> with the first 12
    /// hex digits of each file's data SHA-256 (stable-diffusion-webui extensions-builtin/Lora
    /// <c>network.NetworkOnDisk.shorthash</c> over <c>hashes.addnet_hash_safetensors</c>). A1111 writes the value quoted
    /// (it contains ',' and ':'); null for the empty set.
    /// </summary>
    public string? FormatA1111Hashes()
    {
        if (IsEmpty)
            return null;
        var names = new HashSet<string>(StringComparer.Ordinal);
        var text = new StringBuilder();
        foreach (var entry in Entries)
        {
            if (!names.Add(entry.Name))
                continue;
            if (text.Length > 0)
                text.Append(", ");
            text.Append(entry.Name.Replace(":", "", StringComparison.Ordinal).Replace(",", "", StringComparison.Ordinal)).Append(": ").Append(entry.DataSha256, 0, 12);
        }
        return text.ToString();
    }

    private static LoraSet FromEntries(List<LoraSetEntry> entries)
    {
        if (entries.Count == 0)
            return Empty;
        entries.Sort((a, b) =>
        {
            int c = string.CompareOrdinal(a.DataSha256, b.DataSha256);
            return c != 0 ? c : a.Scale.CompareTo(b.Scale);
        });
        var key = new StringBuilder();
        foreach (var entry in entries)
            key.Append(entry.DataSha256).Append(':').Append(BitConverter.SingleToInt32Bits(entry.Scale).ToString("x8", CultureInfo.InvariantCulture)).Append(';');
        string id = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(key.ToString())), 0, 16).ToLowerInvariant();
        return new LoraSet(entries, id);
    }

    /// <inheritdoc/>
    public bool Equals(LoraSet? other) => other is not null && other.Id == Id;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as LoraSet);

    /// <inheritdoc/>
    public override int GetHashCode() => Id.GetHashCode(StringComparison.Ordinal);
}
