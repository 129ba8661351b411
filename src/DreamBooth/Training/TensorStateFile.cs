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
    public static Dictionary<string, Tensor> Load(string path) => Load(path, destination: null);

    /// <summary>
    /// Loads a state file, reading each tensor that <paramref name="destination"/> returns a tensor for straight into that
    /// tensor (it must have the entry's dtype and shape; on another device the bytes pass through one CPU tensor of that
    /// entry's size), and every other tensor onto the CPU (returned; the caller owns them). A resume thus holds the fp32
    /// masters and the EMA once, not once in the file's copy and once in place. The file is checked as by <see cref="Load(string)"/>;
    /// a dtype or shape that differs from its destination's is an error naming the entry. The callback is asked once per
    /// entry the file holds, so a caller that must see every one of its tensors filled checks the names it was asked for.
    /// </summary>
    public static Dictionary<string, Tensor> Load(string path, Func<string, Tensor?>? destination)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"{path}: training state file not found");
        using var stream = File.OpenRead(path);
        using var r = new BinaryReader(stream, Encoding.UTF8);
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var seen = new HashSet<string>(StringComparer.Ordinal);
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
                if (!seen.Add(name)) throw new DreamBoothException($"{path}: corrupt training state file ({at} appears twice)");
                var into = destination?.Invoke(name);
                if (into is not null && (into.dtype != dtype || !into.shape.SequenceEqual(shape)))
                    throw new DreamBoothException($"{path}: {at} is [{string.Join(", ", shape)}] {dtype}, expected [{string.Join(", ", into.shape)}] {into.dtype}");
                if (into is not null)
                {
                    if (len > 0) Fill(stream, into, shape, dtype);
                    continue;
                }
                var t = torch.empty(shape, dtype);
                result[name] = t;
                if (len > 0) stream.ReadExactly(t.bytes);   // straight into the tensor's memory
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

    /// <summary>Reads the raw bytes of a tensor of that shape and dtype from <paramref name="stream"/> into <paramref name="into"/>.</summary>
    static void Fill(Stream stream, Tensor into, long[] shape, ScalarType dtype)
    {
        using var _ = torch.no_grad();
        if (into.device_type == DeviceType.CPU && into.is_contiguous())
        {
            using var alias = into.detach();
            stream.ReadExactly(alias.bytes);
            return;
        }
        using var staging = torch.empty(shape, dtype);
        stream.ReadExactly(staging.bytes);
        into.copy_(staging);
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
