using System.Security.Cryptography;
using static TorchSharp.torch;

namespace DreamBooth.Checkpoints;

/// <summary>One part of a checkpoint (UNet, VAE, text encoder, EMA copy, other tensors).</summary>
public sealed record ComponentSummary(string Name, int TensorCount, long ParameterCount, IReadOnlyDictionary<string, int> DTypes);

/// <summary>What `dreambooth inspect` reports: read from headers only (no tensor data loaded).</summary>
public sealed record CheckpointReport(
    string Path,
    string Format,
    string Layout,
    long SizeBytes,
    string? Sha256,
    IReadOnlyList<ComponentSummary> Components,
    IReadOnlyDictionary<string, string> Metadata)
{
    /// <summary>A1111's short hash: the first 10 hex digits of the file's SHA-256 (null for folders).</summary>
    public string? ShortHash => Sha256?[..10];
    public int TensorCount => Components.Sum(c => c.TensorCount);
    public long ParameterCount => Components.Sum(c => c.ParameterCount);
}

public static class CheckpointInspector
{
    /// <summary>Describes a single-file checkpoint (.safetensors/.ckpt), a diffusers component file, or a diffusers folder.</summary>
    public static CheckpointReport Inspect(string path, bool hash = true)
    {
        var full = System.IO.Path.GetFullPath(path);
        if (Directory.Exists(full)) return InspectFolder(full);
        if (!File.Exists(full)) throw new DreamBoothException($"{full}: no such file or folder");
        using var file = TensorFile.Open(full);
        var groups = file.Keys.GroupBy(SingleFileComponent).OrderBy(g => Order(g.Key));
        var components = groups.Select(g => Summarize(g.Key, file, g)).ToList();
        bool ldm = components.Any(c => c.Name is "unet" or "vae" or "text_encoder");
        var meta = new Dictionary<string, string>(file.Metadata);
        if (file is TorchCheckpointFile ckpt) foreach (var (k, v) in ckpt.Extras) meta.TryAdd(k, v);
        return new CheckpointReport(full, file.Format, ldm ? "single-file (LDM / A1111)" : "plain state dict",
            new FileInfo(SafeTensors.ResolveLinks(full)).Length, hash ? Sha256Of(full) : null, components, meta);
    }

    static CheckpointReport InspectFolder(string dir)
    {
        if (!DiffusersFolder.IsDiffusersFolder(dir))
            throw new DreamBoothException($"{dir}: a folder but not a diffusers model (no {DiffusersFolder.ModelIndex})");
        var index = DiffusersFolder.ReadModelIndex(dir);
        var components = new List<ComponentSummary>();
        var meta = new Dictionary<string, string>(StringComparer.Ordinal);
        long size = 0;
        foreach (var (name, (library, cls)) in index.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            meta[name] = $"{library}.{cls}";
            var sub = System.IO.Path.Combine(dir, name);
            using var weights = DiffusersFolder.OpenWeights(sub);
            if (weights is null) continue;
            components.Add(Summarize(name, weights, weights.Keys));
        }
        foreach (var f in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)) size += new FileInfo(SafeTensors.ResolveLinks(f)).Length;
        return new CheckpointReport(dir, "diffusers folder", "diffusers", size, null, components, meta);
    }

    static ComponentSummary Summarize(string name, ITensorFile file, IEnumerable<string> keys)
    {
        int count = 0; long parameters = 0;
        var dtypes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        foreach (var k in keys)
        {
            var (type, shape) = file.Describe(k);
            count++;
            parameters += shape.Aggregate(1L, (a, b) => a * b);
            var t = SafeTensors.DTypeName(type);
            dtypes[t] = dtypes.GetValueOrDefault(t) + 1;
        }
        return new ComponentSummary(name, count, parameters, dtypes);
    }

    /// <summary>The component a single-file key belongs to.</summary>
    public static string SingleFileComponent(string key) => key switch
    {
        _ when key.StartsWith(LdmKeyMap.UNetPrefix, StringComparison.Ordinal) => "unet",
        _ when key.StartsWith(LdmKeyMap.VaePrefix, StringComparison.Ordinal) => "vae",
        _ when key.StartsWith("cond_stage_model.", StringComparison.Ordinal) => "text_encoder",
        _ when key.StartsWith(LdmKeyMap.EmaPrefix, StringComparison.Ordinal) => "unet_ema",
        _ when key.StartsWith("conditioner.", StringComparison.Ordinal) => "text_encoders (SDXL)",
        _ => "other",
    };

    static int Order(string component) => component switch { "unet" => 0, "vae" => 1, "text_encoder" => 2, "unet_ema" => 3, _ => 4 };

    public static string Sha256Of(string file)
    {
        using var fs = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(fs));
    }
}
