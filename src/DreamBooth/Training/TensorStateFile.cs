using System.Text;
using DreamBooth.IO;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>
/// A named set of tensors (optimizer state, EMA, RNG states, counters) written bit-exactly to one file,
/// atomically. Layout: magic "DBSTATE1", count, then per tensor: name, dtype, rank, shape, byte length, bytes.
/// </summary>
public static class TensorStateFile
{
    const string Magic = "DBSTATE1";

    public static void Save(string path, IReadOnlyDictionary<string, Tensor> tensors)
    {
        AtomicFile.Write(path, s =>
        {
            using var w = new BinaryWriter(s, Encoding.UTF8, leaveOpen: true);
            w.Write(Encoding.ASCII.GetBytes(Magic));
            w.Write(tensors.Count);
            foreach (var (name, t) in tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                using var c = t.detach().cpu().contiguous();
                w.Write(name);
                w.Write((int)c.dtype);
                w.Write(c.shape.Length);
                foreach (long d in c.shape) w.Write(d);
                var bytes = c.bytes;
                w.Write((long)bytes.Length);
                w.Write(bytes);
            }
        });
    }

    /// <summary>Loads every tensor onto the CPU (caller owns them).</summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"{path}: training state file not found");
        using var r = new BinaryReader(File.OpenRead(path), Encoding.UTF8);
        string magic = Encoding.ASCII.GetString(r.ReadBytes(Magic.Length));
        if (magic != Magic) throw new DreamBoothException($"{path}: not a training state file (bad magic)");
        int n = r.ReadInt32();
        var result = new Dictionary<string, Tensor>(n);
        try
        {
            for (int i = 0; i < n; i++)
            {
                string name = r.ReadString();
                var dtype = (ScalarType)r.ReadInt32();
                int rank = r.ReadInt32();
                var shape = new long[rank];
                for (int k = 0; k < rank; k++) shape[k] = r.ReadInt64();
                long len = r.ReadInt64();
                var data = r.ReadBytes(checked((int)len));
                if (data.Length != len) throw new DreamBoothException($"{path}: truncated at tensor '{name}'");
                var t = torch.empty(shape, dtype);
                if (len > 0) t.bytes = data;
                result[name] = t;
            }
        }
        catch (EndOfStreamException)
        {
            foreach (var t in result.Values) t.Dispose();
            throw new DreamBoothException($"{path}: training state file is truncated");
        }
        return result;
    }

    public static Tensor Scalar(long v) => torch.tensor(v, ScalarType.Int64);
    public static Tensor Scalar(double v) => torch.tensor(v, ScalarType.Float64);
}
