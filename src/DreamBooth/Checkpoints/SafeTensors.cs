using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using DreamBooth.IO;
using Microsoft.Win32.SafeHandles;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Checkpoints;

/// <summary>One tensor as the safetensors header describes it; offsets are relative to the data region.</summary>
public sealed record SafeTensorInfo(string Name, string DType, ScalarType ScalarType, long[] Shape, long Begin, long End)
{
    public long ByteLength => End - Begin;
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// The safetensors format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length,
/// a JSON header (name → dtype/shape/data_offsets, optional <c>__metadata__</c>), then the raw little-endian data.
/// <para>
/// Our own reader and writer rather than TorchSharp.PyBridge's: PyBridge reads the whole file into memory (so loading
/// a 4 GB checkpoint holds it twice), its validation of the header is loose, and its <c>SaveStateDict(string)</c>
/// overload recurses into itself forever. Here the reader validates the whole header against the file, then reads
/// each tensor's bytes with positioned reads straight into the destination tensor's storage (or, when the dtype
/// changes, through one small staging buffer). It does not memory-map the data: mapped pages count in the process's
/// resident set until unmapped, which made a load peak at model + file (docs/checkpoints.md, "Loading").
/// </para>
/// </summary>
public static class SafeTensors
{
    /// <summary>Largest header we accept (the reference implementation uses the same bound).</summary>
    public const long MaxHeaderBytes = 100_000_000;
    /// <summary>Deepest JSON nesting a valid header needs is 3 (root → entry → shape/offsets); anything deeper is refused.</summary>
    public const int MaxJsonDepth = 4;
    public const string MetadataKey = "__metadata__";

    public static SafeTensorsFile Open(string path) => SafeTensorsFile.OpenFile(path);

    /// <summary>Opens with a given staging-buffer size for dtype conversion (tests use a tiny one to cross chunk boundaries).</summary>
    internal static SafeTensorsFile Open(string path, int stagingBytes) => SafeTensorsFile.OpenFile(path, stagingBytes);

    /// <summary>The real file behind symlinks (the HF cache's snapshots/ are links into blobs/; FileInfo.Length of a link is the link's own size).</summary>
    public static string ResolveLinks(string path)
    {
        var full = System.IO.Path.GetFullPath(path);
        var target = new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true);
        return target?.FullName ?? full;
    }

    /// <summary>Dtype name in the safetensors header ↔ torch scalar type and element size. F8 types are recognised but refused.</summary>
    public static bool TryGetScalarType(string dtype, out ScalarType type, out int elementSize)
    {
        (type, elementSize) = dtype switch
        {
            "F64" => (ScalarType.Float64, 8),
            "F32" => (ScalarType.Float32, 4),
            "F16" => (ScalarType.Float16, 2),
            "BF16" => (ScalarType.BFloat16, 2),
            "I64" => (ScalarType.Int64, 8),
            "I32" => (ScalarType.Int32, 4),
            "I16" => (ScalarType.Int16, 2),
            "I8" => (ScalarType.Int8, 1),
            "U8" => (ScalarType.Byte, 1),
            "BOOL" => (ScalarType.Bool, 1),
            _ => ((ScalarType)(-1), 0),
        };
        return elementSize > 0;
    }

    public static string DTypeName(ScalarType type) => type switch
    {
        ScalarType.Float64 => "F64",
        ScalarType.Float32 => "F32",
        ScalarType.Float16 => "F16",
        ScalarType.BFloat16 => "BF16",
        ScalarType.Int64 => "I64",
        ScalarType.Int32 => "I32",
        ScalarType.Int16 => "I16",
        ScalarType.Int8 => "I8",
        ScalarType.Byte => "U8",
        ScalarType.Bool => "BOOL",
        _ => throw new DreamBoothException($"safetensors cannot store tensors of type {type}"),
    };

    public static int ElementSize(ScalarType type) => type switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        ScalarType.Int8 or ScalarType.Byte or ScalarType.Bool => 1,
        _ => throw new DreamBoothException($"unsupported tensor type {type}"),
    };

    /// <summary>
    /// Writes <paramref name="tensors"/> (any device; copied to CPU one at a time) atomically: keys sorted,
    /// <c>__metadata__</c> first, header padded with spaces to a multiple of 8 bytes as the format asks.
    /// </summary>
    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var names = tensors.Keys.OrderBy(k => k, StringComparer.Ordinal).ToList();
        var header = BuildHeader(names.Select(n => (n, tensors[n].dtype, tensors[n].shape)), metadata, out _);
        AtomicFile.Write(path, stream =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)header.Length);
            stream.Write(len);
            stream.Write(header);
            foreach (var name in names)
            {
                using var scope = NewDisposeScope();
                var t = tensors[name];
                var cpu = t.device_type == DeviceType.CPU && t.is_contiguous() ? t : t.detach().cpu().contiguous();
                WriteTensorBytes(stream, cpu);
            }
        });
    }

    /// <summary>The header bytes (JSON + space padding) for tensors written in the given order.</summary>
    internal static byte[] BuildHeader(IEnumerable<(string Name, ScalarType Type, long[] Shape)> entries,
        IReadOnlyDictionary<string, string>? metadata, out long dataLength)
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                w.WriteStartObject(MetadataKey);
                foreach (var (k, v) in metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteString(k, v);
                w.WriteEndObject();
            }
            long offset = 0;
            foreach (var (name, type, shape) in entries)
            {
                if (name == MetadataKey) throw new DreamBoothException($"a tensor cannot be named {MetadataKey}");
                long bytes = shape.Aggregate(1L, (a, b) => a * b) * ElementSize(type);
                w.WriteStartObject(name);
                w.WriteString("dtype", DTypeName(type));
                w.WriteStartArray("shape");
                foreach (var d in shape) w.WriteNumberValue(d);
                w.WriteEndArray();
                w.WriteStartArray("data_offsets");
                w.WriteNumberValue(offset);
                w.WriteNumberValue(offset + bytes);
                w.WriteEndArray();
                w.WriteEndObject();
                offset += bytes;
            }
            dataLength = offset;
            w.WriteEndObject();
        }
        int pad = (int)((8 - buffer.Length % 8) % 8);
        for (int i = 0; i < pad; i++) buffer.WriteByte((byte)' ');
        return buffer.ToArray();
    }

    /// <summary>Writes a contiguous CPU tensor's raw bytes in chunks (no managed copy of the whole tensor).</summary>
    internal static unsafe void WriteTensorBytes(Stream stream, Tensor cpuContiguous)
    {
        long total = cpuContiguous.NumberOfElements * ElementSize(cpuContiguous.dtype);
        if (total == 0) return;
        var span = cpuContiguous.bytes;
        if (span.Length != total) throw new InvalidOperationException($"tensor byte view has {span.Length} bytes, expected {total}");
        const int chunk = 1 << 24;
        for (int off = 0; off < span.Length; off += chunk)
            stream.Write(span.Slice(off, Math.Min(chunk, span.Length - off)));
    }
}

/// <summary>
/// An open, validated safetensors file. Tensor data is read on demand with positioned reads (no memory mapping, no
/// whole-file buffer); tensors loaded from it are independent of the file. Reads may run on several threads at once.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    /// <summary>Largest staging buffer used when <see cref="ReadInto(SafeTensorInfo, Tensor)"/> converts dtypes (per call).</summary>
    public int StagingBytes { get; }
    public const int DefaultStagingBytes = 1 << 20;

    readonly SafeFileHandle _handle;
    readonly Dictionary<string, SafeTensorInfo> _byName;
    bool _disposed;

    public string Path { get; }
    /// <summary>Tensors in data-offset order.</summary>
    public IReadOnlyList<SafeTensorInfo> Tensors { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    public long HeaderLength { get; }
    public long DataOffset => 8 + HeaderLength;
    public long FileLength { get; }

    /// <summary>Bytes of tensor data read from the file so far: a whole-model load reads each byte once.</summary>
    public long BytesRead => Interlocked.Read(ref _bytesRead);
    long _bytesRead;

    SafeTensorsFile(string path, SafeFileHandle handle, long fileLength, long headerLength,
        List<SafeTensorInfo> tensors, Dictionary<string, string> metadata, int stagingBytes)
    {
        Path = path; _handle = handle; FileLength = fileLength; HeaderLength = headerLength; StagingBytes = stagingBytes;
        Tensors = tensors;
        _byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        Metadata = metadata;
    }

    public IEnumerable<string> Keys => Tensors.Select(t => t.Name);
    public bool Contains(string name) => _byName.ContainsKey(name);
    public SafeTensorInfo Info(string name) =>
        _byName.TryGetValue(name, out var info) ? info : throw new DreamBoothException($"{Path}: no tensor named '{name}'");

    internal static SafeTensorsFile OpenFile(string path, int stagingBytes = DefaultStagingBytes)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(stagingBytes, 8);
        var full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full)) throw new DreamBoothException($"{full}: file not found");
        var real = SafeTensors.ResolveLinks(full);
        SafeFileHandle handle;
        try
        {
            // FileShare.Delete: a writer may atomically replace the path (rename over it) while this inode is open.
            handle = File.OpenHandle(real, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        }
        catch (FileNotFoundException) { throw new DreamBoothException($"{full}: file not found"); }
        catch (IOException e) { throw new DreamBoothException($"{full}: cannot open ({e.Message})", e); }
        catch (UnauthorizedAccessException e) { throw new DreamBoothException($"{full}: permission denied", e); }
        try
        {
            long length = RandomAccess.GetLength(handle);
            if (length < 8) throw new DreamBoothException($"{full}: not a safetensors file ({length} bytes, the 8-byte header length is missing)");
            Span<byte> len = stackalloc byte[8];
            ReadExactly(handle, full, len, 0);
            ulong n = BinaryPrimitives.ReadUInt64LittleEndian(len);
            if (n > SafeTensors.MaxHeaderBytes)
                throw new DreamBoothException($"{full}: header length {n} exceeds the {SafeTensors.MaxHeaderBytes}-byte limit");
            if ((long)n > length - 8)
                throw new DreamBoothException($"{full}: header length {n} runs past the end of the {length}-byte file (truncated or not safetensors)");
            if (n < 2) throw new DreamBoothException($"{full}: header length {n} is too small for a JSON object");
            var header = new byte[(int)n];
            ReadExactly(handle, full, header, 8);
            var (tensors, metadata) = ParseHeader(full, header, length - 8 - (long)n);
            return new SafeTensorsFile(full, handle, length, (long)n, tensors, metadata, stagingBytes);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Fills <paramref name="destination"/> from <paramref name="offset"/>; a short read means the file shrank since it was opened.</summary>
    static void ReadExactly(SafeFileHandle handle, string path, Span<byte> destination, long offset)
    {
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(handle, destination, offset);
            if (n <= 0) throw new DreamBoothException($"{path}: the file ended at byte {offset}, before the data its header describes (changed or truncated while open)");
            destination = destination[n..];
            offset += n;
        }
    }

    /// <summary>Validates a header against the data region's length: every rule of the format, errors naming file and tensor.</summary>
    internal static (List<SafeTensorInfo>, Dictionary<string, string>) ParseHeader(string file, byte[] header, long dataLength)
    {
        // JsonElement decodes names and strings lazily: an unpaired surrogate escape ("\ud800") surfaces as
        // InvalidOperationException only when a name or string is read
        try { return ParseHeaderChecked(file, header, dataLength); }
        catch (InvalidOperationException e) { throw new DreamBoothException($"{file}: header holds an invalid string ({FirstLine(e.Message)})"); }
    }

    static (List<SafeTensorInfo>, Dictionary<string, string>) ParseHeaderChecked(string file, byte[] header, long dataLength)
    {
        string text;
        try { text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(header); }
        catch (DecoderFallbackException) { throw new DreamBoothException($"{file}: header is not valid UTF-8"); }
        if (!text.TrimStart().StartsWith('{')) throw new DreamBoothException($"{file}: header is not a JSON object");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(text, new JsonDocumentOptions { MaxDepth = SafeTensors.MaxJsonDepth, AllowTrailingCommas = false, CommentHandling = JsonCommentHandling.Disallow });
        }
        catch (JsonException e) { throw new DreamBoothException($"{file}: header is not valid JSON ({FirstLine(e.Message)})"); }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new DreamBoothException($"{file}: header is not a JSON object");
            var tensors = new List<SafeTensorInfo>();
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var prop in doc.RootElement.EnumerateObject())
            {
                var name = prop.Name;
                if (!seen.Add(name)) throw new DreamBoothException($"{file}: duplicate entry '{name}' in header");
                if (name == SafeTensors.MetadataKey)
                {
                    if (prop.Value.ValueKind != JsonValueKind.Object) throw new DreamBoothException($"{file}: __metadata__ must be an object of strings");
                    foreach (var m in prop.Value.EnumerateObject())
                    {
                        if (m.Value.ValueKind != JsonValueKind.String) throw new DreamBoothException($"{file}: __metadata__ value '{m.Name}' is not a string");
                        if (!metadata.TryAdd(m.Name, m.Value.GetString()!)) throw new DreamBoothException($"{file}: duplicate __metadata__ key '{m.Name}'");
                    }
                    continue;
                }
                tensors.Add(ParseEntry(file, name, prop.Value));
            }
            // Coverage: sorted by offsets, each tensor starts where the previous ended, the last ends at the file's end.
            tensors.Sort((a, b) => a.Begin != b.Begin ? a.Begin.CompareTo(b.Begin) : a.End.CompareTo(b.End));
            long expected = 0;
            foreach (var t in tensors)
            {
                if (t.End > dataLength) throw new DreamBoothException($"{file}: tensor '{t.Name}' data_offsets [{t.Begin}, {t.End}] run past the {dataLength}-byte data region");
                if (t.Begin < expected) throw new DreamBoothException($"{file}: tensor '{t.Name}' data_offsets [{t.Begin}, {t.End}] overlap the previous tensor (ends at {expected})");
                if (t.Begin > expected) throw new DreamBoothException($"{file}: gap in the data region before tensor '{t.Name}' (bytes {expected}..{t.Begin} belong to no tensor)");
                expected = t.End;
            }
            if (expected != dataLength)
                throw new DreamBoothException($"{file}: {dataLength - expected} bytes of trailing data after the last tensor (the data region must be fully covered)");
            return (tensors, metadata);
        }
    }

    static SafeTensorInfo ParseEntry(string file, string name, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new DreamBoothException($"{file}: tensor '{name}' entry is not an object");
        string? dtype = null; long[]? shape = null; long[]? offsets = null;
        foreach (var p in e.EnumerateObject())
        {
            switch (p.Name)
            {
                case "dtype":
                    if (dtype is not null) throw new DreamBoothException($"{file}: tensor '{name}' has two dtype fields");
                    if (p.Value.ValueKind != JsonValueKind.String) throw new DreamBoothException($"{file}: tensor '{name}' dtype is not a string");
                    dtype = p.Value.GetString()!;
                    break;
                case "shape":
                    if (shape is not null) throw new DreamBoothException($"{file}: tensor '{name}' has two shape fields");
                    shape = IntArray(file, name, "shape", p.Value);
                    break;
                case "data_offsets":
                    if (offsets is not null) throw new DreamBoothException($"{file}: tensor '{name}' has two data_offsets fields");
                    offsets = IntArray(file, name, "data_offsets", p.Value);
                    break;
                default:
                    throw new DreamBoothException($"{file}: tensor '{name}' has unknown field '{p.Name}'");
            }
        }
        if (dtype is null || shape is null || offsets is null)
            throw new DreamBoothException($"{file}: tensor '{name}' lacks {(dtype is null ? "dtype" : shape is null ? "shape" : "data_offsets")}");
        if (dtype.StartsWith("F8", StringComparison.Ordinal))
            throw new DreamBoothException($"{file}: tensor '{name}' has dtype {dtype}; 8-bit float checkpoints are not supported (convert to F16/BF16/F32)");
        if (!SafeTensors.TryGetScalarType(dtype, out var type, out int elementSize))
            throw new DreamBoothException($"{file}: tensor '{name}' has unknown or unsupported dtype '{dtype}'");
        if (offsets.Length != 2) throw new DreamBoothException($"{file}: tensor '{name}' data_offsets must be [begin, end]");
        if (offsets[1] < offsets[0]) throw new DreamBoothException($"{file}: tensor '{name}' data_offsets [{offsets[0]}, {offsets[1]}] end before they begin");
        if (shape.Length > 16) throw new DreamBoothException($"{file}: tensor '{name}' has {shape.Length} dimensions (at most 16 supported)");
        // shape × element size, overflow-checked: a hostile shape must not wrap around to a plausible size.
        System.Numerics.BigInteger bytes = elementSize;
        foreach (var d in shape) bytes *= d;
        if (bytes != offsets[1] - offsets[0])
            throw new DreamBoothException($"{file}: tensor '{name}' is {dtype} {Shape(shape)} = {bytes} bytes but its data_offsets span {offsets[1] - offsets[0]} bytes");
        return new SafeTensorInfo(name, dtype, type, shape, offsets[0], offsets[1]);
    }

    static long[] IntArray(string file, string name, string field, JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Array) throw new DreamBoothException($"{file}: tensor '{name}' {field} is not an array");
        int n = e.GetArrayLength();
        if (n > 64) throw new DreamBoothException($"{file}: tensor '{name}' {field} has {n} entries");
        var result = new long[n];
        int i = 0;
        foreach (var v in e.EnumerateArray())
        {
            if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x) || x < 0)
                throw new DreamBoothException($"{file}: tensor '{name}' {field} holds {v.GetRawText()}, expected non-negative integers");
            result[i++] = x;
        }
        return result;
    }

    static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";
    static string FirstLine(string s) => s.Split('\n')[0].Trim();

    /// <summary>Loads one tensor: a new CPU tensor whose storage receives the bytes straight from the file.</summary>
    public Tensor Load(string name) => Load(Info(name));

    public Tensor Load(SafeTensorInfo info)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckSize(info);
        var t = torch.empty(info.Shape, info.ScalarType);
        try
        {
            ReadBytes(info, 0, t.bytes);
            return t;
        }
        catch
        {
            t.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Reads tensor <paramref name="name"/> into <paramref name="destination"/>: a contiguous CPU tensor with as many
    /// elements (its shape may differ, e.g. a 1×1 conv kernel read into a linear weight). Same dtype: the bytes go
    /// straight into the destination's storage. Another dtype: read in chunks of at most <see cref="StagingBytes"/> and
    /// converted into the destination (fp16 ↔ fp32 and bf16 → fp32 on the CPU's vector units, others by torch), so no
    /// second full-size copy of the tensor exists at any time. Safe to call from several threads at once.
    /// </summary>
    public void ReadInto(string name, Tensor destination) => ReadInto(Info(name), destination);

    public void ReadInto(SafeTensorInfo info, Tensor destination)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        CheckSize(info);
        if (destination.device_type != DeviceType.CPU || !destination.is_contiguous())
            throw new ArgumentException($"'{info.Name}': the destination must be a contiguous CPU tensor", nameof(destination));
        if (destination.NumberOfElements != info.ElementCount)
            throw new DreamBoothException($"{Path}: tensor '{info.Name}' has {info.ElementCount} elements, the destination {destination.NumberOfElements}");
        if (info.ByteLength == 0) return;
        if (destination.dtype == info.ScalarType)
        {
            ReadBytes(info, 0, destination.bytes);
            return;
        }
        int elementSize = SafeTensors.ElementSize(info.ScalarType);
        long chunk = Math.Max(1, StagingBytes / elementSize);
        if (FloatConversion.Supports(info.ScalarType, destination.dtype))
        {
            var stage = ArrayPool<byte>.Shared.Rent((int)(chunk * elementSize));
            try
            {
                var dst = destination.bytes;
                int dstSize = (int)destination.ElementSize;
                for (long start = 0; start < info.ElementCount; start += chunk)
                {
                    int count = (int)Math.Min(chunk, info.ElementCount - start);
                    var src = stage.AsSpan(0, count * elementSize);
                    ReadBytes(info, start * elementSize, src);
                    FloatConversion.Convert(info.ScalarType, src, destination.dtype, dst.Slice((int)(start * dstSize), count * dstSize));
                }
            }
            finally { ArrayPool<byte>.Shared.Return(stage); }
            return;
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var staging = torch.empty(Math.Min(chunk, info.ElementCount), info.ScalarType);
        var flat = destination.view(-1);
        for (long start = 0; start < info.ElementCount; start += chunk)
        {
            long count = Math.Min(chunk, info.ElementCount - start);
            var part = staging.narrow(0, 0, count);
            ReadBytes(info, start * elementSize, part.bytes);
            flat.narrow(0, start, count).copy_(part);
        }
    }

    void CheckSize(SafeTensorInfo info)
    {
        if (info.ByteLength > int.MaxValue)
            throw new DreamBoothException($"{Path}: tensor '{info.Name}' is {info.ByteLength} bytes; tensors over 2 GiB are not supported");
    }

    void ReadBytes(SafeTensorInfo info, long offset, Span<byte> destination)
    {
        if (destination.Length == 0) return;
        ReadExactly(_handle, Path, destination, DataOffset + info.Begin + offset);
        Interlocked.Add(ref _bytesRead, destination.Length);
    }

    /// <summary>Loads every tensor (or those <paramref name="include"/> accepts) into new CPU tensors.</summary>
    public IReadOnlyDictionary<string, Tensor> LoadAll(Func<string, bool>? include = null)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var info in Tensors)
                if (include is null || include(info.Name)) result[info.Name] = Load(info);
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
        return result;
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _handle.Dispose();
    }
}
