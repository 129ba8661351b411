using System.Buffers.Binary;
using System.Text;
using TorchSharp;

namespace DreamBooth.Checkpoints;

/// <summary>A pickled tuple (kept distinct from lists).</summary>
public sealed record PickleTuple(object?[] Items);
/// <summary>A module-level name the pickle referred to; only allow-listed ones ever exist.</summary>
public sealed record PickleGlobal(string Module, string Name)
{
    public override string ToString() => $"{Module}.{Name}";
}
/// <summary>A reference to a tensor storage record inside the checkpoint archive (persistent id).</summary>
public sealed record PickleStorage(torch.ScalarType Type, string Key, string Location, long ElementCount);
/// <summary>A tensor the pickle describes: a strided view of a storage. Nothing is read until it is materialized.</summary>
public sealed record PickleTensor(PickleStorage Storage, long Offset, long[] Shape, long[] Stride);
/// <summary>A value we recognise but do not model (numpy scalars in training bookkeeping): inert data.</summary>
public sealed record PickleOpaque(string Description);

/// <summary>
/// A pickle "virtual machine" that understands only what a PyTorch state dict needs: containers, numbers, strings,
/// tensor rebuilds and storages. It never imports or calls anything: a GLOBAL outside the allow-list is refused on
/// sight ("refusing to load X: pickle references os.system"), and unknown opcodes are errors.
/// </summary>
public static class SafePickle
{
    public const int MaxStackDepth = 100_000;
    public const int MaxMemo = 10_000_000;

    static readonly Dictionary<string, torch.ScalarType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["torch.DoubleStorage"] = torch.ScalarType.Float64,
        ["torch.FloatStorage"] = torch.ScalarType.Float32,
        ["torch.HalfStorage"] = torch.ScalarType.Float16,
        ["torch.BFloat16Storage"] = torch.ScalarType.BFloat16,
        ["torch.LongStorage"] = torch.ScalarType.Int64,
        ["torch.IntStorage"] = torch.ScalarType.Int32,
        ["torch.ShortStorage"] = torch.ScalarType.Int16,
        ["torch.CharStorage"] = torch.ScalarType.Int8,
        ["torch.ByteStorage"] = torch.ScalarType.Byte,
        ["torch.BoolStorage"] = torch.ScalarType.Bool,
    };

    static readonly HashSet<string> Functions = new(StringComparer.Ordinal)
    {
        "collections.OrderedDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        // inert data some training scripts leave beside the weights (numpy scalars for global_step, epoch)
        "_codecs.encode",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.dtype",
    };

    public static bool IsAllowed(string qualified) => StorageTypes.ContainsKey(qualified) || Functions.Contains(qualified);

    sealed class Mark { public static readonly Mark Instance = new(); }

    /// <summary>Runs the pickle and returns its top-level object. <paramref name="source"/> names the file in errors.</summary>
    public static object? Load(ReadOnlySpan<byte> data, string source)
    {
        var stack = new List<object?>();
        var marks = new Stack<int>();
        var memo = new Dictionary<long, object?>();
        int pos = 0;

        DreamBoothException Bad(string what) => new($"{source}: malformed pickle at byte {pos} ({what})");
        object? Pop()
        {
            if (stack.Count == 0 || (marks.Count > 0 && stack.Count <= marks.Peek())) throw Bad("stack underflow");
            var v = stack[^1];
            stack.RemoveAt(stack.Count - 1);
            return v;
        }
        object? Peek() => stack.Count > 0 ? stack[^1] : throw Bad("stack underflow");
        void Push(object? v)
        {
            if (stack.Count >= MaxStackDepth) throw Bad("stack too deep");
            stack.Add(v);
        }
        List<object?> PopMark()
        {
            if (marks.Count == 0) throw Bad("no MARK");
            int m = marks.Pop();
            var items = stack.GetRange(m, stack.Count - m);
            stack.RemoveRange(m, stack.Count - m);
            return items;
        }
        ReadOnlySpan<byte> Take(ReadOnlySpan<byte> d, long n)
        {
            if (n < 0 || n > d.Length - pos) throw Bad($"needs {n} bytes, {d.Length - pos} left");
            var s = d.Slice(pos, (int)n);
            pos += (int)n;
            return s;
        }
        string Utf8(ReadOnlySpan<byte> b)
        {
            try { return new UTF8Encoding(false, true).GetString(b); }
            catch (DecoderFallbackException) { throw Bad("string is not UTF-8"); }
        }
        string Line(ReadOnlySpan<byte> d)
        {
            int nl = d[pos..].IndexOf((byte)'\n');
            if (nl < 0 || nl > 256) throw Bad("unterminated GLOBAL name");
            var s = Encoding.ASCII.GetString(d.Slice(pos, nl));
            pos += nl + 1;
            return s;
        }
        void Memoize(long key, object? v)
        {
            if (memo.Count >= MaxMemo && !memo.ContainsKey(key)) throw Bad("memo too large");
            memo[key] = v;
        }
        object? Get(long key) => memo.TryGetValue(key, out var v) ? v : throw Bad($"memo key {key} not set");
        PickleGlobal Global(string module, string name)
        {
            var q = $"{module}.{name}";
            if (!IsAllowed(q))
                throw new DreamBoothException($"refusing to load {source}: pickle references {q} (only tensor rebuild is allowed)");
            return new PickleGlobal(module, name);
        }

        while (true)
        {
            if (pos >= data.Length) throw Bad("ends without STOP");
            byte op = data[pos++];
            switch (op)
            {
                case 0x80: Take(data, 1); break;                                  // PROTO
                case 0x95: Take(data, 8); break;                                  // FRAME (framing is advisory)
                case (byte)'.': return stack.Count == 1 ? stack[0] : throw Bad($"STOP with {stack.Count} values on the stack");
                case (byte)'(': marks.Push(stack.Count); break;                   // MARK
                case (byte)'}': Push(new Dictionary<object, object?>()); break;   // EMPTY_DICT
                case (byte)']': Push(new List<object?>()); break;                 // EMPTY_LIST
                case (byte)')': Push(new PickleTuple([])); break;                 // EMPTY_TUPLE
                case (byte)'N': Push(null); break;
                case 0x88: Push(true); break;
                case 0x89: Push(false); break;
                case (byte)'K': Push((long)Take(data, 1)[0]); break;              // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(data, 2))); break;
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(data, 4))); break;
                case 0x8a:                                                        // LONG1
                {
                    int n = Take(data, 1)[0];
                    if (n > 8) throw Bad($"integer of {n} bytes");
                    var b = Take(data, n);
                    long v = 0;
                    for (int i = n - 1; i >= 0; i--) v = (v << 8) | b[i];
                    if (n is > 0 and < 8 && (b[n - 1] & 0x80) != 0) v -= 1L << (8 * n);
                    Push(v);
                    break;
                }
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(data, 8))); break; // BINFLOAT
                case (byte)'X': Push(Utf8(Take(data, BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4))))); break;
                case 0x8c: Push(Utf8(Take(data, Take(data, 1)[0]))); break;      // SHORT_BINUNICODE
                case 0x8d: Push(Utf8(Take(data, (long)Math.Min(BinaryPrimitives.ReadUInt64LittleEndian(Take(data, 8)), long.MaxValue)))); break;
                case (byte)'U': Push(Encoding.Latin1.GetString(Take(data, Take(data, 1)[0]))); break; // SHORT_BINSTRING
                case (byte)'T': Push(Encoding.Latin1.GetString(Take(data, BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4))))); break;
                case (byte)'C': Push(Take(data, Take(data, 1)[0]).ToArray()); break; // SHORT_BINBYTES
                case (byte)'B': Push(Take(data, BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4))).ToArray()); break;
                case (byte)'q': Memoize(Take(data, 1)[0], Peek()); break;         // BINPUT
                case (byte)'r': Memoize(BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4)), Peek()); break;
                case 0x94: Memoize(memo.Count, Peek()); break;                    // MEMOIZE
                case (byte)'h': Push(Get(Take(data, 1)[0])); break;               // BINGET
                case (byte)'j': Push(Get(BinaryPrimitives.ReadUInt32LittleEndian(Take(data, 4)))); break;
                case (byte)'0': Pop(); break;                                     // POP
                case (byte)'1': PopMark(); break;                                 // POP_MARK
                case (byte)'2': Push(Peek()); break;                              // DUP
                case (byte)'t': Push(new PickleTuple(PopMark().ToArray())); break; // TUPLE
                case 0x85: { var a = Pop(); Push(new PickleTuple([a])); break; }
                case 0x86: { var b = Pop(); var a = Pop(); Push(new PickleTuple([a, b])); break; }
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new PickleTuple([a, b, c])); break; }
                case (byte)'l': Push(PopMark()); break;                           // LIST
                case (byte)'d':                                                   // DICT
                {
                    var items = PopMark();
                    var d = new Dictionary<object, object?>();
                    SetItems(d, items);
                    Push(d);
                    break;
                }
                case (byte)'a': { var v = Pop(); AsList(Peek()).Add(v); break; } // APPEND
                case (byte)'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; } // APPENDS
                case (byte)'s': { var v = Pop(); var k = Pop(); SetItems(AsDict(Peek()), [k, v]); break; } // SETITEM
                case (byte)'u': { var items = PopMark(); SetItems(AsDict(Peek()), items); break; }         // SETITEMS
                case (byte)'c': { var module = Line(data); var name = Line(data); Push(Global(module, name)); break; } // GLOBAL
                case 0x93:                                                        // STACK_GLOBAL
                {
                    var name = Pop() as string ?? throw Bad("STACK_GLOBAL name is not a string");
                    var module = Pop() as string ?? throw Bad("STACK_GLOBAL module is not a string");
                    Push(Global(module, name));
                    break;
                }
                case (byte)'Q': Push(PersistentLoad(Pop(), source)); break;      // BINPERSID
                case (byte)'R':                                                   // REDUCE
                {
                    var args = Pop() as PickleTuple ?? throw Bad("REDUCE arguments are not a tuple");
                    var fn = Pop() as PickleGlobal ?? throw Bad("REDUCE of something that is not an allowed global");
                    Push(Reduce(fn, args.Items, source));
                    break;
                }
                case (byte)'b':                                                   // BUILD
                {
                    var state = Pop();
                    var target = Peek();
                    // OrderedDict state dicts carry `_metadata` (module versions); tensors may carry an empty state.
                    if (target is not (Dictionary<object, object?> or PickleTensor or PickleOpaque))
                        throw new DreamBoothException($"refusing to load {source}: pickle sets state on a {Describe(target)} (only tensor rebuild is allowed)");
                    _ = state;
                    break;
                }
                case 0x81: case 0x92:                                             // NEWOBJ, NEWOBJ_EX
                case (byte)'i': case (byte)'o': case (byte)'P':                   // INST, OBJ, PERSID (text)
                case 0x82: case 0x83: case 0x84:                                  // EXT1/2/4
                    throw new DreamBoothException($"refusing to load {source}: pickle constructs objects with opcode 0x{op:x2} (only tensor rebuild is allowed)");
                default:
                    throw Bad($"unsupported opcode 0x{op:x2}");
            }
        }

        List<object?> AsList(object? o) => o as List<object?> ?? throw Bad("APPEND to something that is not a list");
        Dictionary<object, object?> AsDict(object? o) => o as Dictionary<object, object?> ?? throw Bad("SETITEM on something that is not a dict");
        void SetItems(Dictionary<object, object?> d, List<object?> items)
        {
            if (items.Count % 2 != 0) throw Bad("odd number of dict items");
            for (int i = 0; i < items.Count; i += 2)
            {
                var k = items[i] ?? throw Bad("None as a dict key");
                if (k is not (string or long or bool or double or PickleTuple)) throw Bad($"unsupported dict key {Describe(k)}");
                d[k] = items[i + 1];
            }
        }
    }

    static string Describe(object? o) => o switch
    {
        null => "None",
        PickleGlobal g => g.ToString(),
        _ => o.GetType().Name,
    };

    static object PersistentLoad(object? pid, string source)
    {
        if (pid is not PickleTuple { Items: [string tag, PickleGlobal type, string key, string location, long count, ..] } || tag != "storage")
            throw new DreamBoothException($"{source}: unsupported persistent id {Describe(pid)} (expected a tensor storage)");
        if (!StorageTypes.TryGetValue(type.ToString(), out var st))
            throw new DreamBoothException($"{source}: storage of unsupported type {type}");
        if (count < 0) throw new DreamBoothException($"{source}: storage '{key}' has negative size {count}");
        return new PickleStorage(st, key, location, count);
    }

    static object? Reduce(PickleGlobal fn, object?[] args, string source)
    {
        switch (fn.ToString())
        {
            case "collections.OrderedDict":
                if (args.Length != 0) throw new DreamBoothException($"{source}: OrderedDict with constructor arguments is not supported");
                return new Dictionary<object, object?>();
            case "torch._utils._rebuild_tensor_v2":
            {
                if (args is not [PickleStorage storage, long offset, PickleTuple size, PickleTuple stride, ..])
                    throw new DreamBoothException($"{source}: _rebuild_tensor_v2 with unexpected arguments");
                var shape = Longs(size, source);
                var strides = Longs(stride, source);
                if (shape.Length != strides.Length) throw new DreamBoothException($"{source}: tensor on storage '{storage.Key}' has {shape.Length} sizes but {strides.Length} strides");
                if (offset < 0) throw new DreamBoothException($"{source}: tensor on storage '{storage.Key}' has negative offset");
                // The furthest element the view touches must lie inside the storage.
                System.Numerics.BigInteger last = offset, count = 1;
                for (int i = 0; i < shape.Length; i++) { last += (System.Numerics.BigInteger)(shape[i] - 1) * strides[i]; count *= shape[i]; }
                if (count > storage.ElementCount)
                    throw new DreamBoothException($"{source}: tensor view [{string.Join(", ", shape)}] has more elements than its storage '{storage.Key}' ({storage.ElementCount})");
                if (count > 0 && last >= storage.ElementCount)
                    throw new DreamBoothException($"{source}: tensor view [{string.Join(", ", shape)}] at offset {offset} reaches element {last} of storage '{storage.Key}' holding {storage.ElementCount}");
                return new PickleTensor(storage, offset, shape, strides);
            }
            case "torch._utils._rebuild_parameter":
            case "torch._utils._rebuild_parameter_with_state":
                return args.Length >= 1 && args[0] is PickleTensor t ? t : throw new DreamBoothException($"{source}: _rebuild_parameter without a tensor");
            case "_codecs.encode":
                return args is [string s, ..] ? Encoding.Latin1.GetBytes(s) : throw new DreamBoothException($"{source}: _codecs.encode with unexpected arguments");
            default:
                return new PickleOpaque(fn.ToString());
        }
    }

    static long[] Longs(PickleTuple t, string source)
    {
        if (t.Items.Length > 16) throw new DreamBoothException($"{source}: tensor with {t.Items.Length} dimensions");
        var r = new long[t.Items.Length];
        for (int i = 0; i < r.Length; i++)
        {
            if (t.Items[i] is not long v || v < 0) throw new DreamBoothException($"{source}: tensor size/stride {Describe(t.Items[i])} is not a non-negative integer");
            r[i] = v;
        }
        return r;
    }
}
