using System.Buffers.Binary;
using System.Text;

namespace DreamBooth.Runtime;

/// <summary>
/// Reads and edits the symbol-version requirements (<c>.gnu.version_r</c>, <c>Elf64_Verneed</c> /
/// <c>Elf64_Vernaux</c>) of a little-endian ELF64 shared object held in memory.
/// </summary>
/// <remarks>
/// Used to mark one version requirement as weak (<c>VER_FLG_WEAK</c>), which makes glibc's loader
/// accept the library when the system library lacks that version. This is only sound when no symbol
/// of that version is actually relocated; <see cref="LibStdCxxCompat"/> checks that for the one case
/// we patch.
/// </remarks>
public static class ElfVersionPatcher
{
    public const ushort VerFlagWeak = 0x2;
    const uint ShtGnuVerneed = 0x6ffffffe;

    /// <summary>One <c>Elf64_Vernaux</c> entry: a version required from a file.</summary>
    public sealed record VersionNeed(string File, string Version, ushort Flags, ushort Index, int FlagsOffset);

    /// <summary>Lists every version requirement in the image.</summary>
    public static IReadOnlyList<VersionNeed> ReadVersionNeeds(ReadOnlySpan<byte> elf, string? nameForErrors = null)
    {
        string name = nameForErrors ?? "ELF image";
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException($"{name}: not an ELF file");
        if (elf[4] != 2) throw new InvalidDataException($"{name}: not a 64-bit ELF file (EI_CLASS={elf[4]})");
        if (elf[5] != 1) throw new InvalidDataException($"{name}: not a little-endian ELF file (EI_DATA={elf[5]})");

        ulong shoff = U64(elf, 0x28, name);
        ushort shentsize = U16(elf, 0x3A, name);
        ushort shnum = U16(elf, 0x3C, name);
        if (shentsize < 64) throw new InvalidDataException($"{name}: section header size {shentsize} < 64");

        var result = new List<VersionNeed>();
        for (int i = 0; i < shnum; i++)
        {
            int sh = Checked(shoff + (ulong)(i * shentsize), 64, elf.Length, name);
            uint type = U32(elf, sh + 4, name);
            if (type != ShtGnuVerneed) continue;
            ulong offset = U64(elf, sh + 0x18, name);
            ulong size = U64(elf, sh + 0x20, name);
            uint link = U32(elf, sh + 0x28, name);
            uint info = U32(elf, sh + 0x2C, name); // number of Verneed entries
            Checked(offset, (long)size, elf.Length, name);

            int strSh = Checked(shoff + (ulong)(link * shentsize), 64, elf.Length, name);
            ulong strOff = U64(elf, strSh + 0x18, name);
            ulong strSize = U64(elf, strSh + 0x20, name);
            Checked(strOff, (long)strSize, elf.Length, name);
            var strtab = elf.Slice((int)strOff, (int)strSize);

            int vn = (int)offset;
            for (uint n = 0; n < info; n++)
            {
                Checked((ulong)vn, 16, elf.Length, name);
                ushort cnt = U16(elf, vn + 2, name);
                string file = CString(strtab, U32(elf, vn + 4, name), name);
                uint aux = U32(elf, vn + 8, name);
                uint next = U32(elf, vn + 12, name);
                int va = vn + (int)aux;
                for (int a = 0; a < cnt; a++)
                {
                    Checked((ulong)va, 16, elf.Length, name);
                    ushort flags = U16(elf, va + 4, name);
                    ushort index = U16(elf, va + 6, name);
                    string version = CString(strtab, U32(elf, va + 8, name), name);
                    result.Add(new VersionNeed(file, version, flags, index, va + 4));
                    uint vnaNext = U32(elf, va + 12, name);
                    if (vnaNext == 0) break;
                    va += (int)vnaNext;
                }
                if (next == 0) break;
                vn += (int)next;
            }
        }
        return result;
    }

    /// <summary>Names of the dynamic symbols bound to <paramref name="version"/> (via <c>.gnu.version</c>).</summary>
    public static IReadOnlyList<string> SymbolsRequiringVersion(ReadOnlySpan<byte> elf, string version, string? nameForErrors = null)
    {
        string name = nameForErrors ?? "ELF image";
        var indices = ReadVersionNeeds(elf, name).Where(n => n.Version == version).Select(n => n.Index).ToHashSet();
        var names = new List<string>();
        if (indices.Count == 0) return names;
        ulong shoff = U64(elf, 0x28, name);
        ushort shentsize = U16(elf, 0x3A, name);
        ushort shnum = U16(elf, 0x3C, name);
        int versym = -1, dynsym = -1;
        for (int i = 0; i < shnum; i++)
        {
            int sh = Checked(shoff + (ulong)(i * shentsize), 64, elf.Length, name);
            uint type = U32(elf, sh + 4, name);
            if (type == 0x6fffffff) versym = sh;      // SHT_GNU_versym
            else if (type == 11) dynsym = sh;         // SHT_DYNSYM
        }
        if (versym < 0 || dynsym < 0) throw new InvalidDataException($"{name}: no .gnu.version or .dynsym section");
        ulong symOff = U64(elf, dynsym + 0x18, name), symSize = U64(elf, dynsym + 0x20, name);
        uint symLink = U32(elf, dynsym + 0x28, name);
        int strSh = Checked(shoff + (ulong)(symLink * shentsize), 64, elf.Length, name);
        ulong strOff = U64(elf, strSh + 0x18, name), strSize = U64(elf, strSh + 0x20, name);
        Checked(strOff, (long)strSize, elf.Length, name);
        Checked(symOff, (long)symSize, elf.Length, name);
        var strtab = elf.Slice((int)strOff, (int)strSize);
        ulong vsOff = U64(elf, versym + 0x18, name);
        long count = (long)(symSize / 24);
        Checked(vsOff, count * 2, elf.Length, name);
        for (long k = 0; k < count; k++)
        {
            ushort vi = (ushort)(U16(elf, (int)vsOff + (int)(k * 2), name) & 0x7fff);
            if (!indices.Contains(vi)) continue;
            uint nameIdx = U32(elf, (int)symOff + (int)(k * 24), name);
            names.Add(CString(strtab, nameIdx, name));
        }
        return names;
    }

    /// <summary>
    /// Sets <c>VER_FLG_WEAK</c> on the requirement of <paramref name="version"/> in place.
    /// Returns false when the image does not require that version (nothing changed).
    /// </summary>
    public static bool MarkVersionWeak(Span<byte> elf, string version, string? nameForErrors = null)
    {
        bool changed = false;
        foreach (var need in ReadVersionNeeds(elf, nameForErrors))
        {
            if (need.Version != version) continue;
            ushort flags = (ushort)(need.Flags | VerFlagWeak);
            BinaryPrimitives.WriteUInt16LittleEndian(elf.Slice(need.FlagsOffset, 2), flags);
            changed = true;
        }
        return changed;
    }

    static int Checked(ulong offset, long length, int fileLength, string name)
    {
        if (length < 0 || offset > (ulong)fileLength || (ulong)length > (ulong)fileLength - offset)
            throw new InvalidDataException($"{name}: ELF structure at offset {offset} (+{length}) lies beyond the end of the file ({fileLength} bytes)");
        return (int)offset;
    }

    static ushort U16(ReadOnlySpan<byte> b, int at, string name) { Checked((ulong)at, 2, b.Length, name); return BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(at)); }
    static uint U32(ReadOnlySpan<byte> b, int at, string name) { Checked((ulong)at, 4, b.Length, name); return BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(at)); }
    static ulong U64(ReadOnlySpan<byte> b, int at, string name) { Checked((ulong)at, 8, b.Length, name); return BinaryPrimitives.ReadUInt64LittleEndian(b.Slice(at)); }

    static string CString(ReadOnlySpan<byte> strtab, uint at, string name)
    {
        if (at >= strtab.Length) throw new InvalidDataException($"{name}: string index {at} outside the string table");
        var s = strtab.Slice((int)at);
        int end = s.IndexOf((byte)0);
        if (end < 0) throw new InvalidDataException($"{name}: unterminated string at {at}");
        return Encoding.ASCII.GetString(s.Slice(0, end));
    }
}
