using System;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace MLNet.Diffusion.Schedulers;

/// <summary>
/// Saves <see cref="SchedulerOptions"/> as the registered name whose defaults they equal (<c>"euler-a"</c>: what pipeline
/// files held before options existed, so old files load and new ones stay readable), or else as an object naming the
/// scheduler and holding the keys that are set: <c>{"Name": "ddim", "Eta": 0.5}</c>.
/// </summary>
internal sealed class SchedulerOptionsJsonConverter : JsonConverter<SchedulerOptions>
{
    private const string NameProperty = "Name";

    public override SchedulerOptions? Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        switch (reader.TokenType)
        {
            case JsonTokenType.Null:
                return null;
            case JsonTokenType.String:
                return Lookup(reader.GetString()!);
            case JsonTokenType.StartObject:
                using (var doc = JsonDocument.ParseValue(ref reader))
                {
                    var root = doc.RootElement;
                    if (!root.TryGetProperty(NameProperty, out var name) || name.ValueKind != JsonValueKind.String)
                        throw new JsonException($"Scheduler options need a \"{NameProperty}\" string naming the scheduler (one of: {string.Join(", ", SchedulerFactory.Names)}).");
                    var type = Lookup(name.GetString()!).GetType();
                    // The derived records carry no converter of their own, so this reads their properties ("Name" is not one).
                    return (SchedulerOptions?)root.Deserialize(type, options);
                }
            default:
                throw new JsonException($"Scheduler options must be a name or an object, not {reader.TokenType}.");
        }
    }

    public override void Write(Utf8JsonWriter writer, SchedulerOptions value, JsonSerializerOptions options)
    {
        if (SchedulerFactory.NameOfDefaults(value) is { } name)
        {
            writer.WriteStringValue(name);
            return;
        }
        writer.WriteStartObject();
        writer.WriteString(NameProperty, SchedulerFactory.FamilyName(value));
        using (var doc = JsonSerializer.SerializeToDocument(value, value.GetType(), options))
        {
            foreach (var p in doc.RootElement.EnumerateObject())
                p.WriteTo(writer);
        }
        writer.WriteEndObject();
    }

    private static SchedulerOptions Lookup(string name)
    {
        try
        {
            return SchedulerFactory.GetOptions(name);
        }
        catch (ArgumentException e)
        {
            throw new JsonException(e.Message, e);
        }
    }
}
