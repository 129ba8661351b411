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

    /// <summary>
    /// Loads every tensor onto the CPU (caller owns them). The file is untrusted: counts, ranks, shapes and
    /// lengths are checked against each other and against the bytes left in the file before anything is allocated.
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"{path}: training state file not found");
        using var stream = File.OpenRead(path);
        using var r = new BinaryReader(stream, Encoding.UTF8);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        string at = "the header";
        try
        {
            string magic = Encoding.ASCII.GetString(r.ReadBytes(Magic.Length));
            if (magic != Magic) throw new DreamBoothException($"{path}: not a training state file (bad magic)");
            int n = r.ReadInt32();
            // each entry takes at least 1 (name) + 4 (dtype) + 4 (rank) + 8 (length) bytes
            if (n < 0 || n > (stream.Length - stream.Position) / 17)
                throw new DreamBoothException($"{path}: corrupt training state file (tensor count {n} does not fit the file)");
            for (int i = 0; i < n; i++)
            {
                at = $"tensor #{i}";
                string name = r.ReadString();
                at = $"tensor '{name}'";
                int code = r.ReadInt32();
                long elementSize = ElementSize((ScalarType)code);
                if (elementSize == 0) throw new DreamBoothException($"{path}: corrupt training state file ({at} has unknown dtype {code})");
                var dtype = (ScalarType)code;
                int rank = r.ReadInt32();
                if (rank is < 0 or > MaxRank) throw new DreamBoothException($"{path}: corrupt training state file ({at} has rank {rank}, expected 0..{MaxRank})");
                var shape = new long[rank];
                long expected = elementSize;
                for (int k = 0; k < rank; k++)
                {
                    shape[k] = r.ReadInt64();
                    if (shape[k] < 0) throw new DreamBoothException($"{path}: corrupt training state file ({at} has negative dimension {shape[k]})");
                    expected = shape[k] == 0 || expected == 0 ? 0 : expected > long.MaxValue / shape[k] ? -1 : expected * shape[k];
                    if (expected < 0) throw new DreamBoothException($"{path}: corrupt training state file ({at} has a shape too large to exist)");
                }
                long len = r.ReadInt64();
                if (len != expected)
                    throw new DreamBoothException($"{path}: corrupt training state file ({at}: {len} data bytes for shape [{string.Join(", ", shape)}] {dtype}, expected {expected})");
                if (len > stream.Length - stream.Position)
                    throw new DreamBoothException($"{path}: training state file is truncated at {at}");
                if (len > int.MaxValue) throw new DreamBoothException($"{path}: {at} is larger than 2 GiB, which this format does not store");
                if (result.ContainsKey(name)) throw new DreamBoothException($"{path}: corrupt training state file ({at} appears twice)");
                var data = r.ReadBytes((int)len);
                if (data.Length != len) throw new DreamBoothException($"{path}: training state file is truncated at {at}");
                var t = torch.empty(shape, dtype);
                if (len > 0) t.bytes = data;
                result[name] = t;
            }
        }
        catch (Exception e) when (e is IOException or FormatException or DecoderFallbackException or DreamBoothException)
        {
            foreach (var t in result.Values) t.Dispose();
            if (e is DreamBoothException) throw;
            throw new DreamBoothException($"{path}: training state file is truncated or corrupt at {at}", e);
        }
        return result;
    }

    const int MaxRank = 16;

    /// <summary>Bytes per element of the dtypes this format stores; 0 for anything else.</summary>
    static long ElementSize(ScalarType t) => t switch
    {
        ScalarType.Byte or ScalarType.Int8 or ScalarType.Bool => 1,
        ScalarType.Int16 or ScalarType.Float16 or ScalarType.BFloat16 => 2,
        ScalarType.Int32 or ScalarType.Float32 => 4,
        ScalarType.Int64 or ScalarType.Float64 or ScalarType.ComplexFloat32 => 8,
        ScalarType.ComplexFloat64 => 16,
        _ => 0,
    };

    public static Tensor Scalar(long v) => torch.tensor(v, ScalarType.Int64);
    public static Tensor Scalar(double v) => torch.tensor(v, ScalarType.Float64);
}
