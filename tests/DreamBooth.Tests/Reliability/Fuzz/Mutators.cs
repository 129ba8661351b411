using System.Buffers.Binary;
using System.Text;

namespace DreamBooth.Tests.Reliability.Fuzz;

/// <summary>One named, deterministic way of damaging a valid file.</summary>
public delegate byte[] Mutation(byte[] seed, Random rng);

/// <summary>
/// Seeded mutators over valid seed files: generic byte damage (bit flips, truncation, splices,
/// little-endian integer edits) plus JSON-aware damage (numbers swapped for NaN/negative/huge values,
/// deep nesting, invalid UTF-8). Every case is reproducible from (target, case index, base seed).
/// </summary>
public static class Mutators
{
    static readonly long[] InterestingLongs =
    [
        0, 1, -1, 2, 7, 8, 255, 256, 0x7FFF, 0xFFFF, int.MaxValue, int.MinValue, uint.MaxValue,
        (long)int.MaxValue + 1, 1L << 40, long.MaxValue, long.MinValue, 100_000_000, -8,
    ];

    static readonly string[] InterestingNumbers =
    [
        "NaN", "-1", "0", "-0", "1e309", "-1e309", "9223372036854775808", "-9223372036854775809",
        "2147483648", "1.5", "4294967296", "1e-400", "Infinity", "\"NaN\"", "null", "true", "[]", "{}", "\"\"",
    ];

    public static readonly IReadOnlyList<(string Name, Mutation Apply)> Binary =
    [
        ("bitflip", BitFlip),
        ("truncate", Truncate),
        ("interesting-byte", InterestingByte),
        ("int32-field", (s, r) => IntField(s, r, 4)),
        ("int64-field", (s, r) => IntField(s, r, 8)),
        ("delete-range", DeleteRange),
        ("duplicate-range", DuplicateRange),
        ("insert-random", InsertRandom),
        ("non-utf8", NonUtf8),
        ("append-garbage", AppendGarbage),
    ];

    public static readonly IReadOnlyList<(string Name, Mutation Apply)> Json =
    [
        ("json-number", JsonNumber),
        ("json-deep-nesting", DeepNesting),
        ("json-string-garbage", JsonStringGarbage),
        ("json-drop-token", JsonDropToken),
        ("json-duplicate-key", JsonDuplicateKey),
        ("json-huge-string", JsonHugeString),
    ];

    public static byte[] BitFlip(byte[] s, Random r)
    {
        if (s.Length == 0) return [0xFF];
        var b = (byte[])s.Clone();
        int flips = 1 + r.Next(8);
        for (int i = 0; i < flips; i++) b[r.Next(b.Length)] ^= (byte)(1 << r.Next(8));
        return b;
    }

    public static byte[] Truncate(byte[] s, Random r) => s.Length == 0 ? s : s[..r.Next(s.Length)];

    public static byte[] InterestingByte(byte[] s, Random r)
    {
        if (s.Length == 0) return [0];
        var b = (byte[])s.Clone();
        byte[] vals = [0x00, 0xFF, 0x7F, 0x80, 0x01, (byte)'{', (byte)'"', (byte)'\\', 0x0A];
        b[r.Next(b.Length)] = vals[r.Next(vals.Length)];
        return b;
    }

    /// <summary>Overwrites an integer field (lengths, offsets, counts, shapes) with a boundary value, often near the start where headers live.</summary>
    public static byte[] IntField(byte[] s, Random r, int width)
    {
        if (s.Length < width) return s;
        var b = (byte[])s.Clone();
        int limit = r.Next(2) == 0 ? Math.Min(b.Length - width, 64) : b.Length - width;
        int at = r.Next(limit + 1);
        long v = r.Next(3) == 0 ? (width == 4 ? r.Next() : r.NextInt64()) * (r.Next(2) == 0 ? 1 : -1) : InterestingLongs[r.Next(InterestingLongs.Length)];
        if (width == 4) BinaryPrimitives.WriteInt32LittleEndian(b.AsSpan(at), unchecked((int)v));
        else BinaryPrimitives.WriteInt64LittleEndian(b.AsSpan(at), v);
        return b;
    }

    public static byte[] DeleteRange(byte[] s, Random r)
    {
        if (s.Length < 2) return s;
        int a = r.Next(s.Length), n = 1 + r.Next(Math.Min(64, s.Length - a));
        return [.. s.AsSpan(0, a), .. s.AsSpan(a + n)];
    }

    public static byte[] DuplicateRange(byte[] s, Random r)
    {
        if (s.Length < 2) return s;
        int a = r.Next(s.Length), n = 1 + r.Next(Math.Min(256, s.Length - a));
        int at = r.Next(s.Length);
        return [.. s.AsSpan(0, at), .. s.AsSpan(a, n), .. s.AsSpan(at)];
    }

    public static byte[] InsertRandom(byte[] s, Random r)
    {
        var junk = new byte[1 + r.Next(16)];
        r.NextBytes(junk);
        int at = r.Next(s.Length + 1);
        return [.. s.AsSpan(0, at), .. junk, .. s.AsSpan(at)];
    }

    /// <summary>Invalid UTF-8: overlong NUL, lone continuation byte, surrogate half, 0xFF.</summary>
    public static byte[] NonUtf8(byte[] s, Random r)
    {
        byte[][] bad = [[0xC0, 0x80], [0x80], [0xED, 0xA0, 0x80], [0xFF, 0xFE], [0xF4, 0x90, 0x80, 0x80], [0xE2, 0x82]];
        var junk = bad[r.Next(bad.Length)];
        int at = r.Next(s.Length + 1);
        if (r.Next(2) == 0 && s.Length > junk.Length)
        {
            var b = (byte[])s.Clone();
            at = r.Next(s.Length - junk.Length);
            junk.CopyTo(b, at);
            return b;
        }
        return [.. s.AsSpan(0, at), .. junk, .. s.AsSpan(at)];
    }

    public static byte[] AppendGarbage(byte[] s, Random r)
    {
        var junk = new byte[1 + r.Next(4096)];
        r.NextBytes(junk);
        return [.. s, .. junk];
    }

    // ---- JSON-aware -------------------------------------------------------------------------------

    static byte[] ReplaceSpan(byte[] s, int start, int length, string with) =>
        [.. s.AsSpan(0, start), .. Encoding.UTF8.GetBytes(with), .. s.AsSpan(start + length)];

    /// <summary>Finds a random number token and replaces it with NaN, a negative, an overflow or another type.</summary>
    public static byte[] JsonNumber(byte[] s, Random r)
    {
        var spans = new List<(int Start, int Len)>();
        for (int i = 0; i < s.Length; i++)
        {
            if (s[i] is (byte)'-' or >= (byte)'0' and <= (byte)'9' && (i == 0 || s[i - 1] is (byte)':' or (byte)' ' or (byte)'[' or (byte)','))
            {
                int j = i + 1;
                while (j < s.Length && s[j] is >= (byte)'0' and <= (byte)'9' or (byte)'.' or (byte)'e' or (byte)'E' or (byte)'-' or (byte)'+') j++;
                spans.Add((i, j - i));
                i = j;
            }
        }
        if (spans.Count == 0) return BitFlip(s, r);
        var (start, len) = spans[r.Next(spans.Count)];
        return ReplaceSpan(s, start, len, InterestingNumbers[r.Next(InterestingNumbers.Length)]);
    }

    /// <summary>Wraps a value in thousands of arrays/objects (or prepends them) to probe recursion limits.</summary>
    public static byte[] DeepNesting(byte[] s, Random r)
    {
        int depth = r.Next(2) == 0 ? 70 + r.Next(100) : 10_000 + r.Next(90_000);
        var sb = new StringBuilder();
        bool arrays = r.Next(2) == 0;
        for (int i = 0; i < depth; i++) sb.Append(arrays ? "[" : "{\"a\":");
        sb.Append('1');
        for (int i = 0; i < depth; i++) sb.Append(arrays ? ']' : '}');
        int colon = Array.IndexOf(s, (byte)':');
        if (colon < 0 || r.Next(4) == 0) return Encoding.UTF8.GetBytes(sb.ToString());
        int end = colon + 1;
        while (end < s.Length && s[end] is not ((byte)',' or (byte)'}' or (byte)'\n')) end++;
        return ReplaceSpan(s, colon + 1, end - colon - 1, sb.ToString());
    }

    public static byte[] JsonStringGarbage(byte[] s, Random r)
    {
        int q = IndexOfNth(s, (byte)'"', r);
        if (q < 0) return NonUtf8(s, r);
        string[] junk = ["\\u0000", "\\ud800", "../../etc/passwd", "\u0001\u001f", "C:\\\\CON", "\\\\", "\\u", "\n", "\u202e"];
        return ReplaceSpan(s, q + 1, 0, junk[r.Next(junk.Length)]);
    }

    public static byte[] JsonDropToken(byte[] s, Random r)
    {
        byte[] structural = [(byte)'{', (byte)'}', (byte)'[', (byte)']', (byte)':', (byte)',', (byte)'"'];
        var idx = Enumerable.Range(0, s.Length).Where(i => structural.Contains(s[i])).ToArray();
        if (idx.Length == 0) return Truncate(s, r);
        int at = idx[r.Next(idx.Length)];
        return [.. s.AsSpan(0, at), .. s.AsSpan(at + 1)];
    }

    public static byte[] JsonDuplicateKey(byte[] s, Random r)
    {
        int brace = Array.IndexOf(s, (byte)'{');
        int q = Array.IndexOf(s, (byte)'"', Math.Max(brace, 0));
        if (brace < 0 || q < 0) return InsertRandom(s, r);
        int q2 = Array.IndexOf(s, (byte)'"', q + 1);
        if (q2 < 0) return s;
        string key = Encoding.UTF8.GetString(s, q, q2 - q + 1);
        return ReplaceSpan(s, brace + 1, 0, key + ": [1,2,3], ");
    }

    public static byte[] JsonHugeString(byte[] s, Random r)
    {
        int q = IndexOfNth(s, (byte)'"', r);
        if (q < 0) return AppendGarbage(s, r);
        return ReplaceSpan(s, q + 1, 0, new string('x', 1 << (10 + r.Next(11))));
    }

    static int IndexOfNth(byte[] s, byte b, Random r)
    {
        int count = s.Count(x => x == b);
        if (count == 0) return -1;
        int n = r.Next(count);
        for (int i = 0; i < s.Length; i++)
            if (s[i] == b && n-- == 0) return i;
        return -1;
    }
}
