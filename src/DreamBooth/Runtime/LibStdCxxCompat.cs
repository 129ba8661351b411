using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace DreamBooth.Runtime;

/// <summary>
/// TorchSharp 0.107's <c>libLibTorchSharp.so</c> asks for <c>GLIBCXX_3.4.32</c> (GCC 13) only for
/// <c>std::ios_base_library_init()</c>, a symbol it references but never relocates. Hosts with an older
/// libstdc++ (Debian 12, Ubuntu 22.04) refuse to load it. When — and only when — the system libstdc++
/// lacks that version, we load a copy whose requirement is marked weak. The NuGet original and system
/// files are never touched; the copy lives in a per-user cache keyed by the original's hash.
/// </summary>
public static class LibStdCxxCompat
{
    public const string MissingVersion = "GLIBCXX_3.4.32";
    /// <summary>The only symbols the patch is known to be sound for.</summary>
    static readonly string[] KnownSymbols = ["_ZSt21ios_base_library_initv"];

    /// <summary>True when the process's libstdc++.so.6 defines <see cref="MissingVersion"/>.</summary>
    public static bool SystemHasVersion(string version = MissingVersion)
    {
        if (!OperatingSystem.IsLinux()) return true;
        if (!NativeLibrary.TryLoad("libstdc++.so.6", out var handle)) return true; // nothing to compare with; let the loader speak
        // Any symbol of that version would do; ios_base_library_init is the one GCC 13 introduced with it.
        return DlVSym(handle, "_ZSt21ios_base_library_initv", version) != IntPtr.Zero;
    }

    /// <summary>
    /// Returns the path of a loadable copy of <paramref name="original"/>: the original itself when no
    /// patch is needed, otherwise a patched copy in <paramref name="cacheDir"/> (made once, atomically).
    /// </summary>
    public static string EnsureLoadableCopy(string original, string cacheDir, out bool patched)
    {
        patched = false;
        byte[] bytes = File.ReadAllBytes(original);
        var needs = ElfVersionPatcher.ReadVersionNeeds(bytes, original);
        if (!needs.Any(n => n.Version == MissingVersion) || SystemHasVersion())
            return original;

        var symbols = ElfVersionPatcher.SymbolsRequiringVersion(bytes, MissingVersion, original);
        var unknown = symbols.Except(KnownSymbols).ToList();
        if (unknown.Count > 0)
            throw new TorchLoadException(
                $"{original} needs {MissingVersion} for symbols this workaround does not cover ({string.Join(", ", unknown)}); " +
                "install a libstdc++ from GCC 13 or newer");

        string hash = Convert.ToHexStringLower(SHA256.HashData(bytes))[..16];
        string dir = Path.Combine(cacheDir, hash);
        string target = Path.Combine(dir, Path.GetFileName(original));
        patched = true;
        if (File.Exists(target)) return target;

        ElfVersionPatcher.MarkVersionWeak(bytes, MissingVersion, original);
        Directory.CreateDirectory(dir);
        string tmp = target + "." + Environment.ProcessId + ".tmp";
        File.WriteAllBytes(tmp, bytes);
        File.Move(tmp, target, overwrite: true);
        return target;
    }

    [DllImport("libc.so.6", EntryPoint = "dlvsym")]
    static extern IntPtr DlVSymLibc(IntPtr handle, string symbol, string version);

    [DllImport("libdl.so.2", EntryPoint = "dlvsym")]
    static extern IntPtr DlVSymLibdl(IntPtr handle, string symbol, string version);

    static IntPtr DlVSym(IntPtr handle, string symbol, string version)
    {
        try { return DlVSymLibc(handle, symbol, version); }
        catch (EntryPointNotFoundException) { return DlVSymLibdl(handle, symbol, version); }
    }
}

/// <summary>The native torch libraries could not be loaded; the message names the library and the reason.</summary>
public sealed class TorchLoadException(string message, Exception? inner = null) : DreamBoothException(message, inner!);
