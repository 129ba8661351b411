using System.Buffers.Binary;
using System.Text.Json;

namespace DreamBooth.Checkpoints;

/// <summary>One tensor of a TensorFlow.js weights manifest, dequantized to float32, in the manifest's own (TF) layout.</summary>
public sealed record TfjsTensor(string Name, long[] Shape, float[] Values, string Storage)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// The TensorFlow.js weights format (<c>*-weights_manifest.json</c> + binary shards), as face-api ships its nets: a
/// JSON array of groups, each naming its shard files (<c>paths</c>, concatenated in order) and its tensors
/// (<c>name</c>, <c>shape</c>, <c>dtype</c>, optional <c>quantization</c>) whose bytes follow each other in the
/// shards. Quantized tensors store <c>uint8</c>/<c>uint16</c> codes q with value = q × scale + min (computed in
/// double, stored as float32, as tfjs-core's decodeWeights does), or <c>float16</c> halves.
/// <para>
/// Strict: every entry is validated before any data is read (names unique, shapes non-negative, only float32
/// tensors, known quantizations, shard files inside the manifest's folder), the shards must hold exactly the bytes
/// the entries describe (a short shard names the tensor that runs past its end; extra bytes are an error too), and
/// float32 values must be finite.
/// </para>
/// </summary>
public static class TfjsWeightsManifest
{
    /// <summary>Largest manifest JSON accepted (face-api's are ≤ 20 KB).</summary>
    public const long MaxManifestBytes = 16 << 20;
    /// <summary>Largest group of shards read (they are read whole; face-api's largest net is 6.4 MB).</summary>
    public const long MaxWeightBytes = 1L << 30;

    public static IReadOnlyDictionary<string, TfjsTensor> Load(string manifestPath)
    {
        var full = Path.GetFullPath(manifestPath);
        if (!File.Exists(full)) throw new DreamBoothException($"weights manifest not found: {manifestPath}");
        var dir = Path.GetDirectoryName(full)!;
        if (new FileInfo(full).Length > MaxManifestBytes) throw new DreamBoothException($"{manifestPath}: larger than {MaxManifestBytes} bytes, not a weights manifest");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(File.ReadAllBytes(full), new JsonDocumentOptions { MaxDepth = 8 }); }
        catch (JsonException e) { throw new DreamBoothException($"{manifestPath}: not valid JSON ({e.Message.ReplaceLineEndings(" ")})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Array || doc.RootElement.GetArrayLength() == 0)
                throw new DreamBoothException($"{manifestPath}: expected a JSON array of weight groups");
            var result = new Dictionary<string, TfjsTensor>(StringComparer.Ordinal);
            int g = 0;
            foreach (var group in doc.RootElement.EnumerateArray())
            {
                var entries = ParseGroup(group, manifestPath, g, result);
                var shards = Shards(group, dir, manifestPath, g);
                ReadGroup(entries, shards, manifestPath, result);
                g++;
            }
            return result;
        }
    }

    sealed record Entry(string Name, long[] Shape, long Count, string Storage, int BytesPerElement, double Scale, double Min);

    static List<Entry> ParseGroup(JsonElement group, string manifest, int g, Dictionary<string, TfjsTensor> seen)
    {
        if (group.ValueKind != JsonValueKind.Object || !group.TryGetProperty("weights", out var weights) || weights.ValueKind != JsonValueKind.Array)
            throw new DreamBoothException($"{manifest}: group {g} has no \"weights\" array");
        var entries = new List<Entry>();
        var names = new HashSet<string>(seen.Keys, StringComparer.Ordinal);
        foreach (var w in weights.EnumerateArray())
        {
            string name = w.ValueKind == JsonValueKind.Object && w.TryGetProperty("name", out var n) && n.ValueKind == JsonValueKind.String ? n.GetString()! : "";
            if (name.Length == 0) throw new DreamBoothException($"{manifest}: group {g} has a weight without a name");
            if (!names.Add(name)) throw new DreamBoothException($"{manifest}: tensor '{name}' is listed twice");
            if (!w.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
                throw new DreamBoothException($"{manifest}: tensor '{name}' has no shape");
            var shape = new List<long>();
            long count = 1;
            foreach (var d in shapeEl.EnumerateArray())
            {
                if (d.ValueKind != JsonValueKind.Number || !d.TryGetInt64(out long v) || v < 0 || v > int.MaxValue)
                    throw new DreamBoothException($"{manifest}: tensor '{name}' has an invalid dimension {d}");
                shape.Add(v);
                count = checked(count * v);
                if (count > int.MaxValue) throw new DreamBoothException($"{manifest}: tensor '{name}' has more than {int.MaxValue} elements");
            }
            string dtype = w.TryGetProperty("dtype", out var dt) && dt.ValueKind == JsonValueKind.String ? dt.GetString()! : "";
            if (dtype != "float32") throw new DreamBoothException($"{manifest}: tensor '{name}' has dtype '{dtype}', only float32 tensors are supported");
            string storage = "float32";
            int bytes = 4;
            double scale = 1, min = 0;
            if (w.TryGetProperty("quantization", out var q) && q.ValueKind != JsonValueKind.Null)
            {
                storage = q.ValueKind == JsonValueKind.Object && q.TryGetProperty("dtype", out var qd) && qd.ValueKind == JsonValueKind.String ? qd.GetString()! : "";
                bytes = storage switch
                {
                    "uint8" => 1,
                    "uint16" => 2,
                    "float16" => 2,
                    _ => throw new DreamBoothException($"{manifest}: tensor '{name}' has quantization dtype '{storage}', expected uint8, uint16 or float16"),
                };
                if (storage != "float16")
                {
                    if (!q.TryGetProperty("scale", out var s) || s.ValueKind != JsonValueKind.Number || !q.TryGetProperty("min", out var m) || m.ValueKind != JsonValueKind.Number)
                        throw new DreamBoothException($"{manifest}: tensor '{name}' is {storage}-quantized but has no numeric scale and min");
                    scale = s.GetDouble();
                    min = m.GetDouble();
                    if (!double.IsFinite(scale) || !double.IsFinite(min)) throw new DreamBoothException($"{manifest}: tensor '{name}' has a non-finite scale or min");
                }
            }
            entries.Add(new Entry(name, shape.ToArray(), count, storage, bytes, scale, min));
        }
        return entries;
    }

    static List<string> Shards(JsonElement group, string dir, string manifest, int g)
    {
        if (!group.TryGetProperty("paths", out var paths) || paths.ValueKind != JsonValueKind.Array || paths.GetArrayLength() == 0)
            throw new DreamBoothException($"{manifest}: group {g} has no \"paths\" array");
        var files = new List<string>();
        foreach (var p in paths.EnumerateArray())
        {
            var rel = p.ValueKind == JsonValueKind.String ? p.GetString()! : "";
            if (rel.Length == 0 || rel != Path.GetFileName(rel) || rel is "." or "..")
                throw new DreamBoothException($"{manifest}: shard path '{rel}' must be a file name in the manifest's folder");
            var file = Path.Combine(dir, rel);
            if (!File.Exists(file)) throw new DreamBoothException($"{manifest}: weights file not found: {file}");
            files.Add(file);
        }
        return files;
    }

    static void ReadGroup(List<Entry> entries, List<string> shards, string manifest, Dictionary<string, TfjsTensor> result)
    {
        long available = shards.Sum(f => new FileInfo(f).Length);
        long needed = 0;
        foreach (var e in entries)
        {
            long end = needed + e.Count * e.BytesPerElement;
            if (end > available)
                throw new DreamBoothException($"{manifest}: tensor '{e.Name}' {Shape(e.Shape)} needs bytes {needed}..{end} but the weights ({string.Join(" + ", shards.Select(Path.GetFileName))}) end at {available}");
            needed = end;
        }
        if (available > MaxWeightBytes) throw new DreamBoothException($"{manifest}: the weights are {available} bytes, more than the {MaxWeightBytes} this reader loads");
        if (needed != available)
            throw new DreamBoothException($"{manifest}: the weights hold {available} bytes but the tensors listed need {needed}: {available - needed} bytes after the last tensor ('{entries.LastOrDefault()?.Name}') belong to none");
        var bytes = new byte[available];
        int at = 0;
        foreach (var f in shards)
        {
            using var s = File.OpenRead(f);
            s.ReadExactly(bytes, at, (int)s.Length);
            at += (int)s.Length;
        }
        int offset = 0;
        foreach (var e in entries)
        {
            var values = new float[e.Count];
            var span = bytes.AsSpan(offset, (int)(e.Count * e.BytesPerElement));
            switch (e.Storage)
            {
                case "uint8":
                    for (int i = 0; i < values.Length; i++) values[i] = (float)(span[i] * e.Scale + e.Min);
                    break;
                case "uint16":
                    for (int i = 0; i < values.Length; i++) values[i] = (float)(BinaryPrimitives.ReadUInt16LittleEndian(span[(2 * i)..]) * e.Scale + e.Min);
                    break;
                case "float16":
                    for (int i = 0; i < values.Length; i++) values[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(span[(2 * i)..]);
                    break;
                default:
                    for (int i = 0; i < values.Length; i++) values[i] = BinaryPrimitives.ReadSingleLittleEndian(span[(4 * i)..]);
                    break;
            }
            int bad = Array.FindIndex(values, v => !float.IsFinite(v));
            if (bad >= 0) throw new DreamBoothException($"{manifest}: tensor '{e.Name}' holds a non-finite value ({values[bad]}) at element {bad}");
            result[e.Name] = new TfjsTensor(e.Name, e.Shape, values, e.Storage);
            offset += span.Length;
        }
    }

    static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";
}
