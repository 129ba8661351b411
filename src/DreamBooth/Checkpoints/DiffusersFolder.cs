using System.Text.Json;
using static TorchSharp.torch;

namespace DreamBooth.Checkpoints;

/// <summary>
/// The diffusers folder layout: <c>model_index.json</c> and one folder per component (<c>unet/</c>, <c>vae/</c>,
/// <c>text_encoder/</c>, <c>tokenizer/</c>, <c>scheduler/</c>), each with <c>config.json</c> and its weights as
/// <c>diffusion_pytorch_model.safetensors</c> / <c>model.safetensors</c>, sharded (<c>*.safetensors.index.json</c>) or legacy <c>.bin</c>.
/// </summary>
public static class DiffusersFolder
{
    public const string ModelIndex = "model_index.json";
    public static readonly string[] WeightComponents = ["unet", "vae", "text_encoder"];

    public static bool IsDiffusersFolder(string dir) => Directory.Exists(dir) && File.Exists(Path.Combine(dir, ModelIndex));

    /// <summary>Weight file names tried in order for a component folder (safetensors first, then legacy pickles).</summary>
    static readonly string[] Stems = ["diffusion_pytorch_model", "model"];

    /// <summary>The weights of a component folder as one tensor file (shards joined), or null when the folder has none.</summary>
    public static ITensorFile? OpenWeights(string componentDir, string? variant = null)
    {
        if (!Directory.Exists(componentDir)) return null;
        var v = string.IsNullOrEmpty(variant) ? "" : "." + variant;
        foreach (var ext in new[] { "safetensors", "bin" })
            foreach (var stem in Stems)
            {
                var single = Path.Combine(componentDir, $"{stem}{v}.{ext}");
                if (File.Exists(single)) return TensorFile.Open(single);
                var index = Path.Combine(componentDir, $"{stem}{v}.{ext}.index.json");
                if (File.Exists(index)) return ShardedTensorFile.Open(index);
            }
        return null;
    }

    /// <summary>Reads model_index.json: component name → [library, class] (entries that are not such pairs are skipped).</summary>
    public static IReadOnlyDictionary<string, (string Library, string Class)> ReadModelIndex(string dir)
    {
        var path = Path.Combine(dir, ModelIndex);
        var result = new Dictionary<string, (string, string)>(StringComparer.Ordinal);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { MaxDepth = 16 });
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new DreamBoothException($"{path}: expected a JSON object");
            foreach (var p in doc.RootElement.EnumerateObject())
                if (p.Value.ValueKind == JsonValueKind.Array && p.Value.GetArrayLength() == 2
                    && p.Value[0].ValueKind == JsonValueKind.String && p.Value[1].ValueKind == JsonValueKind.String)
                    result[p.Name] = (p.Value[0].GetString()!, p.Value[1].GetString()!);
        }
        catch (JsonException e) { throw new DreamBoothException($"{path}: not valid JSON ({e.Message.Split('\n')[0]})", e); }
        return result;
    }

    /// <summary>Writes model_index.json for an SD 1.x pipeline folder.</summary>
    public static string ModelIndexJson(string schedulerClass = "PNDMScheduler") => $$"""
        {
          "_class_name": "StableDiffusionPipeline",
          "_diffusers_version": "0.21.0",
          "feature_extractor": [null, null],
          "requires_safety_checker": false,
          "safety_checker": [null, null],
          "scheduler": ["diffusers", "{{schedulerClass}}"],
          "text_encoder": ["transformers", "CLIPTextModel"],
          "tokenizer": ["transformers", "CLIPTokenizer"],
          "unet": ["diffusers", "UNet2DConditionModel"],
          "vae": ["diffusers", "AutoencoderKL"]
        }
        """;
}

/// <summary>Several safetensors/.bin shards joined through their <c>*.index.json</c> (<c>weight_map</c>: tensor → shard file).</summary>
public sealed class ShardedTensorFile : ITensorFile
{
    readonly Dictionary<string, ITensorFile> _byTensor;
    readonly List<ITensorFile> _shards;

    public string Path { get; }
    public string Format => $"sharded {(_shards.Count > 0 ? _shards[0].Format : "")} ({_shards.Count} shards)";
    public IEnumerable<string> Keys => _byTensor.Keys;
    public IReadOnlyDictionary<string, string> Metadata { get; }

    ShardedTensorFile(string path, Dictionary<string, ITensorFile> byTensor, List<ITensorFile> shards, Dictionary<string, string> metadata)
    {
        Path = path; _byTensor = byTensor; _shards = shards; Metadata = metadata;
    }

    public static ShardedTensorFile Open(string indexPath)
    {
        var dir = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;
        var shards = new Dictionary<string, ITensorFile>(StringComparer.Ordinal);
        var byTensor = new Dictionary<string, ITensorFile>(StringComparer.Ordinal);
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(indexPath), new JsonDocumentOptions { MaxDepth = 8 });
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
                throw new DreamBoothException($"{indexPath}: no weight_map object");
            foreach (var p in map.EnumerateObject())
            {
                var file = p.Value.GetString() ?? throw new DreamBoothException($"{indexPath}: weight_map['{p.Name}'] is not a file name");
                if (file.Contains('/') || file.Contains('\\') || file.StartsWith('.'))
                    throw new DreamBoothException($"{indexPath}: weight_map['{p.Name}'] = '{file}' must name a file beside the index");
                if (!shards.TryGetValue(file, out var shard))
                {
                    var shardPath = System.IO.Path.Combine(dir, file);
                    if (!File.Exists(shardPath)) throw new DreamBoothException($"{indexPath}: shard '{file}' is missing");
                    shards[file] = shard = TensorFile.Open(shardPath);
                }
                if (!shard.Contains(p.Name)) throw new DreamBoothException($"{indexPath}: tensor '{p.Name}' is not in shard '{file}'");
                byTensor[p.Name] = shard;
            }
            foreach (var (file, shard) in shards)
                foreach (var k in shard.Keys)
                    if (!byTensor.ContainsKey(k)) throw new DreamBoothException($"{indexPath}: shard '{file}' holds tensor '{k}' that the index does not list");
            var meta = shards.Values.SelectMany(s => s.Metadata).GroupBy(kv => kv.Key).ToDictionary(g => g.Key, g => g.First().Value);
            return new ShardedTensorFile(System.IO.Path.GetFullPath(indexPath), byTensor, shards.Values.ToList(), meta);
        }
        catch (JsonException e)
        {
            foreach (var s in shards.Values) s.Dispose();
            throw new DreamBoothException($"{indexPath}: not valid JSON ({e.Message.Split('\n')[0]})", e);
        }
        catch
        {
            foreach (var s in shards.Values) s.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _byTensor.ContainsKey(name);
    ITensorFile Shard(string name) => _byTensor.TryGetValue(name, out var s) ? s : throw new DreamBoothException($"{Path}: no tensor named '{name}'");
    public (ScalarType Type, long[] Shape) Describe(string name) => Shard(name).Describe(name);
    public Tensor Load(string name) => Shard(name).Load(name);
    public void ReadInto(string name, Tensor destination) => Shard(name).ReadInto(name, destination);

    public void Dispose()
    {
        foreach (var s in _shards) s.Dispose();
    }
}
