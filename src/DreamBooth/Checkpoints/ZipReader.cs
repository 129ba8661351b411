using System.Buffers.Binary;
using System.IO.Compression;
using System.IO.MemoryMappedFiles;
using System.Text;
using Microsoft.Win32.SafeHandles;

namespace DreamBooth.Checkpoints;

/// <summary>One entry of a zip archive's central directory, with the absolute offset of its data.</summary>
public sealed record ZipEntryInfo(string Name, int Method, long CompressedSize, long UncompressedSize, long DataOffset);

/// <summary>
/// A minimal, defensive zip reader for PyTorch checkpoints (zip64 aware). The directory and the pickle are read
/// through a memory map (only those pages are touched); stored tensor data is read with positioned reads straight
/// into the destination, so the file's pages never join the process's resident set; deflated entries are inflated with hard bounds (declared size, a ratio cap, and a total cap),
/// so a zip bomb ends in an error instead of filling memory.
/// </summary>
public sealed class ZipReader : IDisposable
{
    /// <summary>A deflated entry may expand at most this much (real checkpoints barely compress).</summary>
    public const long MaxDeflateRatio = 64;
    /// <summary>Largest deflated entry we inflate into memory (pickles are a few MB).</summary>
    public const long MaxDeflatedEntryBytes = 512L << 20;
    public const int MaxEntries = 1_000_000;

    readonly MemoryMappedFile _map;
    readonly MemoryMappedViewAccessor _view;
    readonly SafeFileHandle _handle;
    long _inflatedTotal;

    public string Path { get; }
    public long Length { get; }
    public IReadOnlyList<ZipEntryInfo> Entries { get; }

    ZipReader(string path, long length, MemoryMappedFile map, MemoryMappedViewAccessor view, SafeFileHandle handle, List<ZipEntryInfo> entries)
    {
        Path = path; Length = length; _map = map; _view = view; _handle = handle; Entries = entries;
    }

    public static bool LooksLikeZip(string path)
    {
        using var fs = File.OpenRead(path);
        Span<byte> sig = stackalloc byte[4];
        return fs.Length >= 22 && fs.Read(sig) == 4 && BinaryPrimitives.ReadUInt32LittleEndian(sig) == 0x04034b50;
    }

    public static ZipReader Open(string path)
    {
        var full = System.IO.Path.GetFullPath(path);
        if (!File.Exists(full)) throw new DreamBoothException($"{full}: file not found");
        var real = SafeTensors.ResolveLinks(full);
        long length = new FileInfo(real).Length;
        if (length < 22) throw new DreamBoothException($"{full}: not a zip archive ({length} bytes)");
        MemoryMappedFile map;
        try { map = MemoryMappedFile.CreateFromFile(real, FileMode.Open, null, 0, MemoryMappedFileAccess.Read); }
        catch (IOException e) { throw new DreamBoothException($"{full}: cannot open ({e.Message})", e); }
        catch (UnauthorizedAccessException e) { throw new DreamBoothException($"{full}: permission denied", e); }
        MemoryMappedViewAccessor? view = null;
        SafeFileHandle? handle = null;
        try
        {
            view = map.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            var entries = ReadCentralDirectory(full, view, length);
            handle = File.OpenHandle(real, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
            return new ZipReader(full, length, map, view, handle, entries);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            handle?.Dispose();
            view?.Dispose();
            map.Dispose();
            throw new DreamBoothException($"{full}: cannot open ({e.Message})", e);
        }
        catch
        {
            handle?.Dispose();
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    static List<ZipEntryInfo> ReadCentralDirectory(string file, MemoryMappedViewAccessor v, long length)
    {
        // End of central directory: the last 0x06054b50 within the final 64 KiB + 22 bytes.
        long eocd = -1;
        for (long p = length - 22; p >= Math.Max(0, length - 22 - 65535); p--)
            if (v.ReadUInt32(p) == 0x06054b50) { eocd = p; break; }
        if (eocd < 0) throw new DreamBoothException($"{file}: zip end-of-central-directory record not found (truncated or not a zip)");
        long count = v.ReadUInt16(eocd + 10);
        long cdSize = v.ReadUInt32(eocd + 12);
        long cdOffset = v.ReadUInt32(eocd + 16);
        if (count == 0xFFFF || cdSize == 0xFFFFFFFF || cdOffset == 0xFFFFFFFF)
        {
            long loc = eocd - 20;
            if (loc < 0 || v.ReadUInt32(loc) != 0x07064b50) throw new DreamBoothException($"{file}: zip64 locator missing");
            long z64 = (long)v.ReadUInt64(loc + 8);
            if (z64 < 0 || z64 + 56 > length || v.ReadUInt32(z64) != 0x06064b50) throw new DreamBoothException($"{file}: zip64 end-of-central-directory record out of range");
            count = (long)Math.Min(v.ReadUInt64(z64 + 32), long.MaxValue);
            cdSize = (long)Math.Min(v.ReadUInt64(z64 + 40), long.MaxValue);
            cdOffset = (long)Math.Min(v.ReadUInt64(z64 + 48), long.MaxValue);
        }
        if (count > MaxEntries) throw new DreamBoothException($"{file}: zip declares {count} entries (limit {MaxEntries})");
        if (cdOffset < 0 || cdSize < 0 || cdOffset > length || cdSize > length - cdOffset)
            throw new DreamBoothException($"{file}: zip central directory [{cdOffset}, +{cdSize}] lies outside the {length}-byte file");
        var entries = new List<ZipEntryInfo>((int)Math.Min(count, 4096));
        var names = new HashSet<string>(StringComparer.Ordinal);
        long pos = cdOffset, end = cdOffset + cdSize;
        for (long i = 0; i < count; i++)
        {
            if (pos + 46 > end || v.ReadUInt32(pos) != 0x02014b50) throw new DreamBoothException($"{file}: zip central directory entry {i} is malformed");
            int method = v.ReadUInt16(pos + 10);
            long csize = v.ReadUInt32(pos + 20);
            long usize = v.ReadUInt32(pos + 24);
            int nameLen = v.ReadUInt16(pos + 28), extraLen = v.ReadUInt16(pos + 30), commentLen = v.ReadUInt16(pos + 32);
            long local = v.ReadUInt32(pos + 42);
            if (pos + 46 + nameLen + extraLen + commentLen > end) throw new DreamBoothException($"{file}: zip central directory entry {i} runs past the directory");
            var nameBytes = new byte[nameLen];
            v.ReadArray(pos + 46, nameBytes, 0, nameLen);
            string name;
            try { name = new UTF8Encoding(false, true).GetString(nameBytes); }
            catch (DecoderFallbackException) { throw new DreamBoothException($"{file}: zip entry {i} has a name that is not UTF-8"); }
            // zip64 extended information: only the fields whose 32-bit values are saturated are present, in this order.
            long ex = pos + 46 + nameLen, exEnd = ex + extraLen;
            while (ex + 4 <= exEnd)
            {
                int id = v.ReadUInt16(ex), size = v.ReadUInt16(ex + 2);
                if (ex + 4 + size > exEnd) break;
                if (id == 0x0001)
                {
                    long q = ex + 4, qEnd = q + size;
                    if (usize == 0xFFFFFFFF && q + 8 <= qEnd) { usize = (long)Math.Min(v.ReadUInt64(q), long.MaxValue); q += 8; }
                    if (csize == 0xFFFFFFFF && q + 8 <= qEnd) { csize = (long)Math.Min(v.ReadUInt64(q), long.MaxValue); q += 8; }
                    if (local == 0xFFFFFFFF && q + 8 <= qEnd) { local = (long)Math.Min(v.ReadUInt64(q), long.MaxValue); }
                }
                ex += 4 + size;
            }
            if (local < 0 || local + 30 > length || v.ReadUInt32(local) != 0x04034b50)
                throw new DreamBoothException($"{file}: zip entry '{name}' has no local header at offset {local}");
            long data = local + 30 + v.ReadUInt16(local + 26) + v.ReadUInt16(local + 28);
            if (csize < 0 || data > length || csize > length - data)
                throw new DreamBoothException($"{file}: zip entry '{name}' data ({csize} bytes at {data}) runs past the end of the {length}-byte file");
            if (method == 0 && csize != usize)
                throw new DreamBoothException($"{file}: stored zip entry '{name}' declares {usize} bytes but holds {csize}");
            if (method != 0 && method != 8)
                throw new DreamBoothException($"{file}: zip entry '{name}' uses compression method {method} (only stored and deflate are supported)");
            if (!names.Add(name)) throw new DreamBoothException($"{file}: duplicate zip entry '{name}'");
            entries.Add(new ZipEntryInfo(name, method, csize, usize, data));
            pos += 46 + nameLen + extraLen + commentLen;
        }
        return entries;
    }

    /// <summary>Reads a whole (small) entry into memory, inflating deflated entries within the bounds above.</summary>
    public byte[] ReadAll(ZipEntryInfo e, long maxBytes)
    {
        if (e.UncompressedSize > maxBytes) throw new DreamBoothException($"{Path}: zip entry '{e.Name}' declares {e.UncompressedSize} bytes, over the {maxBytes}-byte limit (zip bomb?)");
        var result = new byte[e.UncompressedSize];
        if (e.Method == 0)
        {
            _view.ReadArray(e.DataOffset, result, 0, result.Length);
            return result;
        }
        if (e.UncompressedSize > MaxDeflatedEntryBytes || e.UncompressedSize > MaxDeflateRatio * Math.Max(e.CompressedSize, 1) + (1 << 20))
            throw new DreamBoothException($"{Path}: zip entry '{e.Name}' claims {e.UncompressedSize} bytes from {e.CompressedSize} compressed (zip bomb?)");
        _inflatedTotal += e.UncompressedSize;
        if (_inflatedTotal > MaxDeflatedEntryBytes) throw new DreamBoothException($"{Path}: zip inflates to more than {MaxDeflatedEntryBytes} bytes in total (zip bomb?)");
        using var raw = _map.CreateViewStream(e.DataOffset, e.CompressedSize, MemoryMappedFileAccess.Read);
        using var inflate = new DeflateStream(raw, CompressionMode.Decompress);
        int read = 0;
        try
        {
            while (read < result.Length)
            {
                int n = inflate.Read(result, read, result.Length - read);
                if (n == 0) break;
                read += n;
            }
            if (read != result.Length || inflate.Read(new byte[1], 0, 1) != 0)
                throw new DreamBoothException($"{Path}: zip entry '{e.Name}' inflates to a size other than the declared {e.UncompressedSize} bytes");
        }
        catch (InvalidDataException x) { throw new DreamBoothException($"{Path}: zip entry '{e.Name}' is corrupt ({x.Message})"); }
        return result;
    }

    /// <summary>Copies <paramref name="dst"/>.Length bytes of a stored entry, from <paramref name="offset"/>, with positioned reads.</summary>
    public void CopyStored(ZipEntryInfo e, long offset, Span<byte> dst)
    {
        if (e.Method != 0) throw new DreamBoothException($"{Path}: tensor data entry '{e.Name}' is compressed (PyTorch writes it stored)");
        if (offset < 0 || dst.Length > e.UncompressedSize - offset) throw new DreamBoothException($"{Path}: read past the end of zip entry '{e.Name}'");
        long position = e.DataOffset + offset;
        while (dst.Length > 0)
        {
            int n = RandomAccess.Read(_handle, dst, position);
            if (n <= 0) throw new DreamBoothException($"{Path}: the file ended at byte {position}, inside zip entry '{e.Name}' (changed or truncated while open)");
            dst = dst[n..];
            position += n;
        }
    }

    public void Dispose()
    {
        _handle.Dispose();
        _view.Dispose();
        _map.Dispose();
    }
}
