using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;
using System.Text.Json.Nodes;
using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Tests.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Reliability.Fuzz;

/// <summary>
/// Checkpoint readers (safetensors, PyTorch zip .ckpt, the pickle VM) with format-aware mutations: header
/// length, offsets out of range or overlapping, dtype/shape/size mismatches, NaN and negative shapes, huge
/// headers; zip size/offset/method fields and deflate bombs; pickle opcode soup.
/// </summary>
public static class CheckpointFuzzTargets
{
    static string ScratchDir()
    {
        string dir = Path.Combine(Path.GetTempPath(), "dreambooth-tests", "fuzz-ckpt-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        return dir;
    }

    /// <summary>A handful of real tiny-text-encoder tensors in several dtypes (small, so 10⁴ cases stay fast).</summary>
    static List<(string Name, Tensor T)> SeedTensors()
    {
        using var te = new CLIPTextModel(CLIPTextConfig.Tiny with { VocabSize = 64, MaxPositionEmbeddings = 8 });
        var sd = te.state_dict();
        var picked = sd.Where(kv => kv.Key.Contains("layers.0.") || kv.Key.Contains("embeddings")).Take(8).ToList();
        var list = new List<(string, Tensor)>();
        int i = 0;
        foreach (var (k, v) in picked)
        {
            var dtype = (i++ % 3) switch { 0 => ScalarType.Float32, 1 => ScalarType.Float16, _ => ScalarType.BFloat16 };
            list.Add((k, v.detach().to(dtype).clone()));
        }
        list.Add(("scalar", torch.tensor(3L)));
        list.Add(("empty", torch.empty(0, 4)));
        return list;
    }

    public static FuzzTarget SafeTensorsFiles
    {
        get
        {
            string dir = ScratchDir();
            return new FuzzTarget("safetensors reader",
                () =>
                {
                    var tensors = SeedTensors();
                    var a = Path.Combine(dir, "seed-a.safetensors");
                    SafeTensors.Save(a, tensors.ToDictionary(t => t.Name, t => t.T), new Dictionary<string, string> { ["format"] = "pt", ["ss_note"] = "seed" });
                    var b = Path.Combine(dir, "seed-b.safetensors");
                    SafeTensors.Save(b, tensors.Take(2).ToDictionary(t => t.Name, t => t.T));
                    foreach (var (_, t) in tensors) t.Dispose();
                    return [File.ReadAllBytes(a), File.ReadAllBytes(b)];
                },
                [.. Mutators.Binary, .. Mutators.Json, ("st-header-length", SafeTensorsHeaderLength), ("st-entry", SafeTensorsEntry),
                 ("st-entry", SafeTensorsEntry), ("st-entry", SafeTensorsEntry), ("st-huge-header", SafeTensorsHugeHeader)],
                b =>
                {
                    string path = Path.Combine(dir, "case.safetensors");
                    File.WriteAllBytes(path, b);
                    using var f = SafeTensors.Open(path, stagingBytes: 16);
                    foreach (var t in f.LoadAll().Values) t.Dispose();
                    // the loader's path: into a destination of another float type, in chunks
                    foreach (var info in f.Tensors)
                    {
                        using var into = empty(info.Shape, info.ScalarType == ScalarType.Float32 ? ScalarType.Float16 : ScalarType.Float32);
                        f.ReadInto(info, into);
                    }
                },
                Weight: 3);
        }
    }

    public static FuzzTarget CkptFiles
    {
        get
        {
            string dir = ScratchDir();
            return new FuzzTarget("PyTorch .ckpt reader",
                () =>
                {
                    var tensors = SeedTensors();
                    var a = Path.Combine(dir, "seed-a.ckpt");
                    TorchCheckpointWriter.WriteStateDict(a, tensors);
                    var b = Path.Combine(dir, "seed-b.ckpt");
                    TorchCheckpointWriter.Write(b, TorchCheckpointWriter.StateDictPickle(tensors.Take(3).ToList(), wrapInStateDict: false),
                        tensors.Take(3).Select(t => t.T).ToList(), compressPickle: true);
                    foreach (var (_, t) in tensors) t.Dispose();
                    return [File.ReadAllBytes(a), File.ReadAllBytes(b)];
                },
                [.. Mutators.Binary, ("zip-field", ZipField), ("zip-field", ZipField), ("zip-field", ZipField), ("zip-bomb", ZipBomb), ("pickle-soup", CkptWithPickleSoup)],
                b =>
                {
                    string path = Path.Combine(dir, "case.ckpt");
                    File.WriteAllBytes(path, b);
                    using var f = TorchCheckpointFile.Open(path);
                    foreach (var k in f.Keys.ToList()) f.Load(k).Dispose();
                    foreach (var k in f.Keys.ToList())
                    {
                        var (type, shape) = f.Describe(k);
                        using var into = empty(shape, type);
                        f.ReadInto(k, into);
                    }
                },
                Weight: 3);
        }
    }

    public static FuzzTarget Pickles => new("pickle VM (SafePickle)",
        () =>
        {
            var tensors = SeedTensors();
            var p = TorchCheckpointWriter.StateDictPickle(tensors, wrapInStateDict: true);
            foreach (var (_, t) in tensors) t.Dispose();
            return [p];
        },
        [.. Mutators.Binary, ("pickle-soup", (s, r) => PickleSoup(r)), ("pickle-soup", (s, r) => PickleSoup(r)), ("pickle-splice", PickleSplice)],
        b => SafePickle.Load(b, "fuzz.ckpt"),
        Weight: 2);

    public static IEnumerable<FuzzTarget> All => [SafeTensorsFiles, CkptFiles, Pickles];

    // ---- safetensors ------------------------------------------------------------------------------

    static (JsonObject Header, byte[] Data)? SplitSafeTensors(byte[] s)
    {
        if (s.Length < 8) return null;
        long n = BinaryPrimitives.ReadInt64LittleEndian(s);
        if (n <= 0 || n > s.Length - 8) return null;
        try
        {
            if (JsonNode.Parse(s.AsSpan(8, (int)n)) is not JsonObject h) return null;
            _ = h.ToJsonString(); // materialize lazily checked parts (duplicate keys, invalid UTF-8) now
            if (h.Any(kv => kv.Key != "__metadata__" && kv.Value is JsonObject e && e["data_offsets"] is not JsonArray { Count: 2 })) return null;
            return (h, s[(8 + (int)n)..]);
        }
        catch (Exception e) when (e is not OutOfMemoryException) { return null; }
    }

    static byte[] JoinSafeTensors(string header, byte[] data)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var len = new byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(len, h.Length);
        return [.. len, .. h, .. data];
    }

    static byte[] SafeTensorsHeaderLength(byte[] s, Random r)
    {
        if (s.Length < 8) return s;
        var b = (byte[])s.Clone();
        long n = BinaryPrimitives.ReadInt64LittleEndian(b);
        long[] values = [0, 1, 7, n - 1, n + 1, s.Length - 8, s.Length - 7, s.Length, 100_000_001, long.MaxValue, -1, int.MaxValue, 1L << 33];
        BinaryPrimitives.WriteInt64LittleEndian(b, values[r.Next(values.Length)]);
        return b;
    }

    /// <summary>Edits one tensor entry of the header: offsets out of range/overlapping/reversed, dtype, shape (NaN, negative, huge, size mismatch).</summary>
    static byte[] SafeTensorsEntry(byte[] s, Random r)
    {
        if (SplitSafeTensors(s) is not var (header, data)) return Mutators.BitFlip(s, r);
        var names = header.Where(kv => kv.Key != "__metadata__" && kv.Value is JsonObject).Select(kv => kv.Key).ToList();
        if (names.Count == 0) return Mutators.BitFlip(s, r);
        var e = (JsonObject)header[names[r.Next(names.Count)]]!;
        var other = (JsonObject)header[names[r.Next(names.Count)]]!;
        var offs = e["data_offsets"]!.AsArray();
        long begin, end;
        try { begin = offs[0]!.GetValue<long>(); end = offs[1]!.GetValue<long>(); }
        catch (Exception ex) when (ex is InvalidOperationException or FormatException or NullReferenceException) { return Mutators.BitFlip(s, r); }
        switch (r.Next(12))
        {
            case 0: e["data_offsets"] = new JsonArray(begin, data.Length + 1 + r.Next(1000)); break;
            case 1: e["data_offsets"] = new JsonArray(end, begin); break;
            case 2: e["data_offsets"] = other["data_offsets"]!.DeepClone(); break; // overlap another tensor
            case 3: e["data_offsets"] = new JsonArray(begin + 1, end + 1); break;
            case 4: e["data_offsets"] = new JsonArray(-8, end); break;
            case 5: e["dtype"] = new[] { "F64", "I8", "BOOL", "F8_E4M3", "U64", "X99", "", "f32" }[r.Next(8)]; break;
            case 6: e["shape"] = new JsonArray(-1, 4); break;
            case 7: e["shape"] = JsonNode.Parse("[1e30, 1e30]"); break;
            case 8: e["shape"] = new JsonArray(long.MaxValue, long.MaxValue, 4); break;
            case 9: e["shape"] = new JsonArray(3); break; // size mismatch with the offsets
            case 10: e["data_offsets"] = new JsonArray(begin, long.MaxValue); break;
            default: e.Remove(new[] { "dtype", "shape", "data_offsets" }[r.Next(3)]); break;
        }
        string text = header.ToJsonString();
        if (r.Next(8) == 0) text = text.Replace("[-1,4]", "[NaN,4]"); // a literal NaN is not JSON
        return JoinSafeTensors(text, data);
    }

    /// <summary>A header padded to megabytes (a valid but absurd header) or claiming more than the reader's header limit.</summary>
    static byte[] SafeTensorsHugeHeader(byte[] s, Random r)
    {
        if (SplitSafeTensors(s) is not var (header, data)) return s;
        if (r.Next(2) == 0)
        {
            header["__metadata__"] = new JsonObject { ["junk"] = new string('x', 1 << (16 + r.Next(6))) };
            return JoinSafeTensors(header.ToJsonString(), data);
        }
        return JoinSafeTensors(header.ToJsonString() + new string(' ', 1 << (16 + r.Next(6))), data);
    }

    // ---- zip / ckpt -------------------------------------------------------------------------------

    /// <summary>Overwrites a size, offset, count, method or name-length field of a zip record with a boundary value.</summary>
    static byte[] ZipField(byte[] s, Random r)
    {
        var records = new List<(int At, (int Offset, int Width)[] Fields)>();
        for (int i = 0; i + 4 <= s.Length; i++)
        {
            uint sig = BinaryPrimitives.ReadUInt32LittleEndian(s.AsSpan(i));
            if (sig == 0x04034b50) records.Add((i, [(8, 2), (18, 4), (22, 4), (26, 2), (28, 2)]));                  // local: method, sizes, name/extra lengths
            else if (sig == 0x02014b50) records.Add((i, [(10, 2), (20, 4), (24, 4), (28, 2), (30, 2), (42, 4)]));   // central: method, sizes, lengths, local offset
            else if (sig == 0x06054b50) records.Add((i, [(8, 2), (10, 2), (12, 4), (16, 4), (20, 2)]));            // end: counts, size, offset, comment length
        }
        if (records.Count == 0) return Mutators.BitFlip(s, r);
        var (at, fields) = records[r.Next(records.Count)];
        var (off, width) = fields[r.Next(fields.Length)];
        if (at + off + width > s.Length) return s;
        var b = (byte[])s.Clone();
        uint[] values = [0, 1, 8, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, (uint)s.Length, (uint)s.Length + 1, 99, 12, 14];
        uint v = values[r.Next(values.Length)];
        if (width == 2) BinaryPrimitives.WriteUInt16LittleEndian(b.AsSpan(at + off), (ushort)v);
        else BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(at + off), v);
        return b;
    }

    /// <summary>Two deflate bombs built once: data.pkl and a storage record that inflate 64 MiB of zeros from ~64 KiB.</summary>
    static readonly Lazy<byte[][]> Bombs = new(() => new[] { "archive/data.pkl", "archive/data/0" }.Select(name =>
    {
        using var ms = new MemoryStream();
        using (var zip = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
        {
            using (var w = zip.CreateEntry(name, CompressionLevel.Optimal).Open())
            {
                var zeros = new byte[1 << 20];
                for (int i = 0; i < 64; i++) w.Write(zeros);
            }
            using (var w = zip.CreateEntry("archive/version").Open()) w.Write("3\n"u8);
        }
        return ms.ToArray();
    }).ToArray());

    /// <summary>A .ckpt whose data.pkl (or a storage) inflates to far more than it is, sometimes lying about the size too.</summary>
    static byte[] ZipBomb(byte[] s, Random r)
    {
        var b = (byte[])Bombs.Value[r.Next(2)].Clone();
        if (r.Next(2) == 0)
            for (int i = 0; i + 46 <= b.Length; i++)
                if (BinaryPrimitives.ReadUInt32LittleEndian(b.AsSpan(i)) == 0x02014b50)
                    BinaryPrimitives.WriteUInt32LittleEndian(b.AsSpan(i + 24), (uint)r.Next(1, 4096));
        return b;
    }

    static byte[] CkptWithPickleSoup(byte[] s, Random r)
    {
        using var ms = new MemoryStream();
        using (var zip = new ZipArchive(ms, ZipArchiveMode.Create, leaveOpen: true))
        {
            using (var w = zip.CreateEntry("archive/data.pkl", CompressionLevel.NoCompression).Open()) w.Write(PickleSoup(r));
            using (var w = zip.CreateEntry("archive/data/0", CompressionLevel.NoCompression).Open()) w.Write(new byte[64]);
        }
        return ms.ToArray();
    }

    // ---- pickle -----------------------------------------------------------------------------------

    static readonly byte[] Opcodes = "()01234FGIJKLMNPQRSTUVX]abcdeghijlopqrstu}.".Select(c => (byte)c)
        .Concat(new byte[] { 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98 })
        .ToArray();

    /// <summary>Random opcodes with random arguments, sometimes seeded with dangerous globals and memo/stack abuse.</summary>
    public static byte[] PickleSoup(Random r)
    {
        var p = new MemoryStream();
        p.WriteByte(0x80); p.WriteByte((byte)r.Next(0, 6));
        int n = 1 + r.Next(200);
        for (int i = 0; i < n; i++)
        {
            int choice = r.Next(20);
            if (choice == 0)
            {
                string[] g = ["os\nsystem\n", "builtins\neval\n", "subprocess\nPopen\n", "__builtin__\nexec\n", "torch._utils\n_rebuild_tensor_v2\n",
                    "collections\nOrderedDict\n", "torch\nFloatStorage\n", "posix\nsystem\n", "nt\nsystem\n", "builtins\ngetattr\n"];
                p.WriteByte((byte)'c'); p.Write(Encoding.ASCII.GetBytes(g[r.Next(g.Length)]));
                continue;
            }
            p.WriteByte(Opcodes[r.Next(Opcodes.Length)]);
            int args = r.Next(4) switch { 0 => 0, 1 => 1, 2 => 4, _ => r.Next(16) };
            for (int k = 0; k < args; k++)
                p.WriteByte(r.Next(3) == 0 ? (byte)0xFF : (byte)r.Next(256));
        }
        if (r.Next(2) == 0) p.WriteByte((byte)'.');
        return p.ToArray();
    }

    static byte[] PickleSplice(byte[] s, Random r)
    {
        var soup = PickleSoup(r);
        int at = r.Next(s.Length + 1);
        return [.. s.AsSpan(0, at), .. soup.AsSpan(2), .. s.AsSpan(at)];
    }
}
