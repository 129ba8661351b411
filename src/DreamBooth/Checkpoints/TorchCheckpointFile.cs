using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Checkpoints;

/// <summary>A file of named tensors (safetensors or a PyTorch .ckpt/.bin): what the loaders and `inspect` read through.</summary>
public interface ITensorFile : IDisposable
{
    string Path { get; }
    /// <summary>Format name for people: "safetensors" or "pytorch-zip (.ckpt/.bin)".</summary>
    string Format { get; }
    IEnumerable<string> Keys { get; }
    bool Contains(string name);
    /// <summary>Type and shape of a tensor without reading its data.</summary>
    (ScalarType Type, long[] Shape) Describe(string name);
    Tensor Load(string name);
    /// <summary>
    /// Reads tensor <paramref name="name"/> into <paramref name="destination"/>, a contiguous CPU tensor with the same
    /// number of elements (dtype converted), without keeping a second full-size copy of it: the loader's path. Safe to
    /// call from several threads at once (a loader fills many tensors in parallel).
    /// </summary>
    void ReadInto(string name, Tensor destination);
    IReadOnlyDictionary<string, string> Metadata { get; }
}

/// <summary>Opens a tensor file by its content (zip signature → PyTorch; otherwise safetensors).</summary>
public static class TensorFile
{
    public static ITensorFile Open(string path)
    {
        var full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full)) throw new DreamBoothException($"{full}: file not found");
        if (ZipReader.LooksLikeZip(full)) return TorchCheckpointFile.Open(full);
        var ext = System.IO.Path.GetExtension(full).ToLowerInvariant();
        if (ext is ".ckpt" or ".pt" or ".pth" or ".bin")
            throw new DreamBoothException($"{full}: not a PyTorch zip checkpoint (legacy pre-1.6 pickle files are not supported; re-save it with a recent torch or convert to .safetensors)");
        return new SafeTensorsAdapter(SafeTensors.Open(full));
    }

    sealed class SafeTensorsAdapter(SafeTensorsFile f) : ITensorFile
    {
        public string Path => f.Path;
        public string Format => "safetensors";
        public IEnumerable<string> Keys => f.Keys;
        public bool Contains(string name) => f.Contains(name);
        public (ScalarType, long[]) Describe(string name) { var i = f.Info(name); return (i.ScalarType, i.Shape); }
        public Tensor Load(string name) => f.Load(name);
        public void ReadInto(string name, Tensor destination) => f.ReadInto(name, destination);
        public IReadOnlyDictionary<string, string> Metadata => f.Metadata;
        public void Dispose() => f.Dispose();
    }
}

/// <summary>
/// A PyTorch zip checkpoint (<c>torch.save</c> since 1.6: <c>archive/data.pkl</c> + <c>archive/data/&lt;key&gt;</c>),
/// read without executing anything: the pickle runs in <see cref="SafePickle"/>, tensors are copied from the stored
/// zip entries into new tensors only when asked for. The state dict is the top-level dict, or its <c>state_dict</c>
/// entry (Lightning / LDM checkpoints); non-tensor values (global_step, epoch...) are ignored.
/// </summary>
public sealed class TorchCheckpointFile : ITensorFile
{
    public const long MaxPickleBytes = 256L << 20;

    readonly ZipReader _zip;
    readonly string _prefix;
    readonly Dictionary<string, PickleTensor> _tensors;
    readonly Dictionary<string, ZipEntryInfo> _entries;
    readonly Dictionary<string, Tensor> _storages = new(StringComparer.Ordinal);
    readonly Dictionary<string, int> _uses;

    public string Path => _zip.Path;
    public string Format => "pytorch-zip (.ckpt/.bin)";
    public IEnumerable<string> Keys => _tensors.Keys;
    public IReadOnlyDictionary<string, string> Metadata { get; } = new Dictionary<string, string>();
    /// <summary>Top-level entries that are not the state dict (e.g. global_step), as text.</summary>
    public IReadOnlyDictionary<string, string> Extras { get; }

    TorchCheckpointFile(ZipReader zip, string prefix, Dictionary<string, PickleTensor> tensors, Dictionary<string, string> extras)
    {
        _zip = zip; _prefix = prefix; _tensors = tensors; Extras = extras;
        _entries = zip.Entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
        _uses = tensors.Values.GroupBy(t => t.Storage.Key).ToDictionary(g => g.Key, g => g.Count(), StringComparer.Ordinal);
    }

    public static TorchCheckpointFile Open(string path)
    {
        var zip = ZipReader.Open(path);
        try
        {
            var pkl = zip.Entries.Where(e => e.Name.EndsWith("data.pkl", StringComparison.Ordinal) && e.Name.Count(c => c == '/') <= 1).ToList();
            if (pkl.Count != 1)
                throw new DreamBoothException($"{zip.Path}: {(pkl.Count == 0 ? "no data.pkl" : "several data.pkl")} in the archive (not a PyTorch checkpoint)");
            var prefix = pkl[0].Name[..^"data.pkl".Length];
            var bytes = zip.ReadAll(pkl[0], MaxPickleBytes);
            var root = SafePickle.Load(bytes, zip.Path);
            if (root is not Dictionary<object, object?> top)
                throw new DreamBoothException($"{zip.Path}: the pickle holds a {root?.GetType().Name ?? "None"}, not a state dict");
            var dict = top.TryGetValue("state_dict", out var sd) && sd is Dictionary<object, object?> inner ? inner : top;
            var tensors = new Dictionary<string, PickleTensor>(StringComparer.Ordinal);
            var extras = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var (k, v) in dict)
            {
                if (k is string name && v is PickleTensor t) tensors[name] = t;
                else if (v is long or double or string or bool) extras[k.ToString()!] = v.ToString()!;
            }
            if (!ReferenceEquals(dict, top))
                foreach (var (k, v) in top)
                    if (v is long or double or string or bool) extras[k.ToString()!] = v.ToString()!;
            // Every storage a tensor needs must exist, be stored, and hold exactly count × element size bytes.
            var entries = zip.Entries.ToDictionary(e => e.Name, StringComparer.Ordinal);
            foreach (var (name, t) in tensors)
            {
                var entryName = prefix + "data/" + t.Storage.Key;
                if (!entries.TryGetValue(entryName, out var e))
                    throw new DreamBoothException($"{zip.Path}: tensor '{name}' refers to missing storage record '{entryName}'");
                if (t.Storage.ElementCount > int.MaxValue / SafeTensors.ElementSize(t.Storage.Type))
                    throw new DreamBoothException($"{zip.Path}: storage of tensor '{name}' is over 2 GiB (not supported)");
                long expected = t.Storage.ElementCount * SafeTensors.ElementSize(t.Storage.Type);
                if (e.UncompressedSize != expected)
                    throw new DreamBoothException($"{zip.Path}: storage '{entryName}' of tensor '{name}' holds {e.UncompressedSize} bytes, expected {expected}");
                if (e.Method != 0)
                    throw new DreamBoothException($"{zip.Path}: storage '{entryName}' of tensor '{name}' is compressed (PyTorch stores tensor data uncompressed)");
            }
            return new TorchCheckpointFile(zip, prefix, tensors, extras);
        }
        catch
        {
            zip.Dispose();
            throw;
        }
    }

    public bool Contains(string name) => _tensors.ContainsKey(name);

    public (ScalarType Type, long[] Shape) Describe(string name)
    {
        var t = Get(name);
        return (t.Storage.Type, t.Shape);
    }

    PickleTensor Get(string name) =>
        _tensors.TryGetValue(name, out var t) ? t : throw new DreamBoothException($"{Path}: no tensor named '{name}'");

    /// <summary>A new, contiguous CPU tensor with the data of <paramref name="name"/>.</summary>
    public Tensor Load(string name)
    {
        var t = Get(name);
        long count = t.Shape.Aggregate(1L, (a, b) => a * b);
        if (_uses[t.Storage.Key] == 1 && t.Offset == 0 && count == t.Storage.ElementCount && IsContiguous(t.Shape, t.Stride))
        {
            // The usual case: one tensor owns its whole storage. Copy the bytes straight in, no second buffer.
            var direct = torch.empty(t.Shape, t.Storage.Type);
            if (count > 0) _zip.CopyStored(_entries[_prefix + "data/" + t.Storage.Key], 0, direct.bytes);
            return direct;
        }
        var storage = Storage(t.Storage);
        using var scope = NewDisposeScope();
        return storage.as_strided(t.Shape, t.Stride, t.Offset).clone().MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Same dtype and the tensor owns its whole storage: the stored bytes go straight into <paramref name="destination"/>.
    /// Otherwise the tensor is loaded (one tensor's worth of memory) and copied over.
    /// </summary>
    public void ReadInto(string name, Tensor destination)
    {
        var t = Get(name);
        long count = t.Shape.Aggregate(1L, (a, b) => a * b);
        if (destination.device_type != DeviceType.CPU || !destination.is_contiguous())
            throw new ArgumentException($"'{name}': the destination must be a contiguous CPU tensor", nameof(destination));
        if (destination.NumberOfElements != count)
            throw new DreamBoothException($"{Path}: tensor '{name}' has {count} elements, the destination {destination.NumberOfElements}");
        if (count == 0) return;
        if (destination.dtype == t.Storage.Type && _uses[t.Storage.Key] == 1 && t.Offset == 0 && count == t.Storage.ElementCount && IsContiguous(t.Shape, t.Stride))
        {
            _zip.CopyStored(_entries[_prefix + "data/" + t.Storage.Key], 0, destination.bytes);
            return;
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        Tensor source;
        lock (_storages) source = Load(name); // the storage cache is shared between tensors
        destination.view(-1).copy_(source.view(-1));
    }

    static bool IsContiguous(long[] shape, long[] stride)
    {
        long expected = 1;
        for (int i = shape.Length - 1; i >= 0; i--)
        {
            if (shape[i] != 1 && stride[i] != expected) return false;
            expected *= shape[i];
        }
        return true;
    }

    Tensor Storage(PickleStorage s)
    {
        if (_storages.TryGetValue(s.Key, out var cached)) return cached;
        var entry = _entries[_prefix + "data/" + s.Key];
        var t = torch.empty([s.ElementCount], s.Type);
        if (s.ElementCount > 0) _zip.CopyStored(entry, 0, t.bytes);
        _storages[s.Key] = t;
        return t;
    }

    /// <summary>Frees storages read so far (tensors already loaded keep their own copies).</summary>
    public void ReleaseCache()
    {
        foreach (var t in _storages.Values) t.Dispose();
        _storages.Clear();
    }

    public void Dispose()
    {
        ReleaseCache();
        _zip.Dispose();
    }
}
