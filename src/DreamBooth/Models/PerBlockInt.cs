using System.Text.Json;
using System.Text.Json.Serialization;

namespace DreamBooth.Models;

/// <summary>
/// A diffusers config value that is either one int for every block or a list with one int per block
/// (<c>attention_head_dim: 8</c> in SD1.x, <c>[5, 10, 20, 20]</c> in SD2.x). Written back in the form it was read.
/// </summary>
[JsonConverter(typeof(PerBlockIntConverter))]
public sealed record PerBlockInt
{
    public PerBlockInt(int value) { Values = [value]; IsList = false; }
    public PerBlockInt(IEnumerable<int> values) { Values = values.ToArray(); IsList = true; }

    public IReadOnlyList<int> Values { get; }
    public bool IsList { get; }

    /// <summary>The value for block <paramref name="index"/> of <paramref name="blockCount"/>; fails when a list has the wrong length.</summary>
    public int For(int index, int blockCount, string key)
    {
        if (!IsList) return Values[0];
        if (Values.Count != blockCount)
            throw new DreamBoothException($"config key '{key}' has {Values.Count} entries; expected one per block ({blockCount})");
        return Values[index];
    }

    public static implicit operator PerBlockInt(int value) => new(value);

    public bool Equals(PerBlockInt? other) => other is not null && IsList == other.IsList && Values.SequenceEqual(other.Values);
    public override int GetHashCode() => Values.Aggregate(IsList ? 17 : 3, (h, v) => h * 31 + v);
    public override string ToString() => IsList ? "[" + string.Join(", ", Values) + "]" : Values[0].ToString();
}

sealed class PerBlockIntConverter : JsonConverter<PerBlockInt>
{
    public override PerBlockInt Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
    {
        if (reader.TokenType == JsonTokenType.Number) return new PerBlockInt(reader.GetInt32());
        if (reader.TokenType != JsonTokenType.StartArray) throw new JsonException("expected an int or a list of ints");
        var list = new List<int>();
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.Number) throw new JsonException("expected an int in the list");
            list.Add(reader.GetInt32());
        }
        return new PerBlockInt(list);
    }

    public override void Write(Utf8JsonWriter writer, PerBlockInt value, JsonSerializerOptions options)
    {
        if (!value.IsList) { writer.WriteNumberValue(value.Values[0]); return; }
        writer.WriteStartArray();
        foreach (var v in value.Values) writer.WriteNumberValue(v);
        writer.WriteEndArray();
    }
}

/// <summary>Reading and writing diffusers-style config.json files for the model config records.</summary>
static class ModelConfigJson
{
    internal static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
    };

    internal static T Parse<T>(string json, string source)
    {
        try
        {
            return JsonSerializer.Deserialize<T>(json, Options)
                ?? throw new DreamBoothException($"{source}: expected a JSON object, found null");
        }
        catch (JsonException e)
        {
            throw new DreamBoothException($"{source}: invalid config JSON at {e.Path ?? "$"}: {e.Message}", e);
        }
    }

    internal static T Load<T>(string path)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"{path}: config file not found");
        return Parse<T>(File.ReadAllText(path), path);
    }

    internal static string ToJson<T>(T value) => JsonSerializer.Serialize(value, Options);

    internal static void Require(bool condition, string key, string message)
    {
        if (!condition) throw new DreamBoothException($"config key '{key}': {message}");
    }
}
