using System.IO.Compression;
using System.Text;
using DreamBooth.Checkpoints;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Checkpoints;

/// <summary>
/// Writes pickles opcode by opcode, as Python's pickle protocol 2 does for a torch state dict, so tests can build
/// .ckpt files byte by byte, including hostile ones.
/// </summary>
sealed class PickleWriter
{
    readonly MemoryStream _s = new();
    int _memo;
    public byte[] ToArray() => _s.ToArray();
    public PickleWriter Op(byte op) { _s.WriteByte(op); return this; }
    public PickleWriter Proto(int v = 2) => Op(0x80).Op((byte)v);
    public PickleWriter Mark() => Op((byte)'(');
    public PickleWriter Stop() => Op((byte)'.');
    public PickleWriter EmptyDict() => Op((byte)'}');
    public PickleWriter EmptyTuple() => Op((byte)')');
    public PickleWriter Tuple() => Op((byte)'t');
    public PickleWriter Reduce() => Op((byte)'R');
    public PickleWriter SetItems() => Op((byte)'u');
    public PickleWriter SetItem() => Op((byte)'s');
    public PickleWriter False() => Op(0x89);
    public PickleWriter BinPut() { Op((byte)'q').Op((byte)(_memo++ & 0xff)); return this; }
    public PickleWriter BinGet(int i) => Op((byte)'h').Op((byte)i);
    public PickleWriter Global(string module, string name) { Op((byte)'c'); var b = Encoding.ASCII.GetBytes($"{module}\n{name}\n"); _s.Write(b); return this; }
    public PickleWriter Str(string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        Op((byte)'X');
        _s.Write(BitConverter.GetBytes((uint)b.Length));
        _s.Write(b);
        return this;
    }
    public PickleWriter Int(long v)
    {
        if (v is >= 0 and < 256) return Op((byte)'K').Op((byte)v);
        if (v is >= int.MinValue and <= int.MaxValue) { Op((byte)'J'); _s.Write(BitConverter.GetBytes((int)v)); return this; }
        Op(0x8a).Op(8); _s.Write(BitConverter.GetBytes(v)); return this;
    }
    public PickleWriter IntTuple(long[] xs) { Mark(); foreach (var x in xs) Int(x); return Tuple(); }
    public PickleWriter PersId() => Op((byte)'Q');
}

/// <summary>Builds PyTorch-style zip checkpoints: archive/data.pkl + archive/data/&lt;key&gt; + archive/version.</summary>
static class TorchCheckpointWriter
{
    public static string StorageName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "FloatStorage",
        ScalarType.Float16 => "HalfStorage",
        ScalarType.BFloat16 => "BFloat16Storage",
        ScalarType.Int64 => "LongStorage",
        ScalarType.Float64 => "DoubleStorage",
        ScalarType.Int32 => "IntStorage",
        _ => throw new ArgumentException(t.ToString()),
    };

    /// <summary>The pickle of {"state_dict": OrderedDict(name → tensor), "global_step": step} (or just the OrderedDict).</summary>
    public static byte[] StateDictPickle(IReadOnlyList<(string Name, Tensor T)> tensors, bool wrapInStateDict, long globalStep = 470000)
    {
        var p = new PickleWriter().Proto();
        if (wrapInStateDict) p.EmptyDict().BinPut().Mark().Str("state_dict");
        p.Global("collections", "OrderedDict").BinPut().EmptyTuple().Reduce().BinPut().Mark();
        for (int i = 0; i < tensors.Count; i++)
        {
            var (name, t) = tensors[i];
            long[] stride = new long[t.shape.Length];
            long acc = 1;
            for (int d = t.shape.Length - 1; d >= 0; d--) { stride[d] = acc; acc *= t.shape[d]; }
            p.Str(name);
            p.Global("torch._utils", "_rebuild_tensor_v2").BinPut();
            p.Mark();
            p.Mark().Str("storage").Global("torch", StorageName(t.dtype)).Str(i.ToString()).Str("cpu").Int(t.NumberOfElements).Tuple().PersId();
            p.Int(0).IntTuple(t.shape).IntTuple(stride).False();
            p.Global("collections", "OrderedDict").EmptyTuple().Reduce();
            p.Tuple().Reduce().BinPut();
        }
        p.SetItems();
        if (wrapInStateDict) p.Str("global_step").Int(globalStep).SetItems();
        return p.Stop().ToArray();
    }

    public static void Write(string path, byte[] pickle, IReadOnlyList<Tensor> storages, string prefix = "archive/", bool compressPickle = false)
    {
        using var fs = File.Create(path);
        using var zip = new ZipArchive(fs, ZipArchiveMode.Create);
        void Add(string name, byte[] data, CompressionLevel level)
        {
            var e = zip.CreateEntry(prefix + name, level);
            using var s = e.Open();
            s.Write(data);
        }
        Add("data.pkl", pickle, compressPickle ? CompressionLevel.Optimal : CompressionLevel.NoCompression);
        Add("byteorder", "little"u8.ToArray(), CompressionLevel.NoCompression);
        for (int i = 0; i < storages.Count; i++)
        {
            var c = storages[i].contiguous();
            Add($"data/{i}", c.bytes.ToArray(), CompressionLevel.NoCompression);
        }
        Add("version", "3\n"u8.ToArray(), CompressionLevel.NoCompression);
    }

    public static void WriteStateDict(string path, IReadOnlyList<(string Name, Tensor T)> tensors, bool wrapInStateDict = true) =>
        Write(path, StateDictPickle(tensors, wrapInStateDict), tensors.Select(t => t.T).ToList());
}
