using System.Reflection;
using System.Runtime.InteropServices;
using TorchSharp;

namespace DreamBooth.Runtime;

/// <summary>Which libtorch the process runs on.</summary>
public enum TorchBackend
{
    /// <summary>libtorch-cpu from NuGet (the default build).</summary>
    Cpu,
    /// <summary>libtorch-cuda from NuGet (build with <c>-p:TorchBackend=cuda</c>).</summary>
    Cuda,
    /// <summary>An existing PyTorch install: <c>DREAMBOOTH_LIBTORCH=/path/to/site-packages/torch/lib</c> (a CUDA build, or a CPU-only one, which then runs on the CPU).</summary>
    External,
}

/// <summary>What <see cref="TorchRuntime.Initialize"/> loaded.</summary>
/// <param name="LibTorchSharpPath">The file actually loaded (the libstdc++ compatibility copy when one was needed).</param>
/// <param name="LibTorchSharpSource">Where that file came from: the TorchSharp package, or a user's build named by
/// <c>DREAMBOOTH_LIBTORCHSHARP</c> (with the path as given).</param>
public sealed record TorchRuntimeInfo(
    TorchBackend Backend,
    string LibTorchDirectory,
    string LibTorchSharpPath,
    bool LibStdCxxCompatCopy,
    bool CudaAvailable,
    int CudaDeviceCount,
    string TorchSharpVersion,
    string LibTorchSharpSource = TorchRuntime.PackageSource);

/// <summary>
/// Loads the native torch libraries once per process, before TorchSharp touches them:
/// picks the libtorch (NuGet CPU/CUDA or an existing PyTorch install), applies the libstdc++
/// compatibility copy when the host needs it, and routes TorchSharp's native imports to them.
/// Every entry point (CLI, tests, notebooks) calls <see cref="Initialize"/> first.
/// </summary>
public static class TorchRuntime
{
    public const string LibTorchEnv = "DREAMBOOTH_LIBTORCH";
    public const string BackendEnv = "DREAMBOOTH_BACKEND";
    public const string CacheEnv = "DREAMBOOTH_CACHE";
    /// <summary>A user-supplied <c>libLibTorchSharp.so</c>, e.g. TorchSharp's native sources rebuilt against another libtorch.</summary>
    public const string LibTorchSharpEnv = "DREAMBOOTH_LIBTORCHSHARP";
    public const string PackageSource = "TorchSharp package";
    /// <summary>The libtorch TorchSharp's package LibTorchSharp was built against (TorchSharp 0.107: libtorch-cpu 2.10.0).</summary>
    public const string BuiltAgainstLibTorch = "2.10.0";
    /// <summary>An export every LibTorchSharp build has; a file without it is some other library.</summary>
    public const string ProbeExport = "THSTorch_manual_seed";

    static readonly object Gate = new();
    static TorchRuntimeInfo? _info;
    static readonly Dictionary<string, IntPtr> Handles = new(StringComparer.Ordinal);

    /// <summary>The loaded runtime, or null before <see cref="Initialize"/>.</summary>
    public static TorchRuntimeInfo? Current => _info;

    /// <summary>Per-user cache folder of the workbench (<c>$DREAMBOOTH_CACHE</c>, else XDG cache).</summary>
    public static string CacheDirectory
    {
        get
        {
            var env = Environment.GetEnvironmentVariable(CacheEnv);
            if (!string.IsNullOrEmpty(env)) return env;
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(home, ".cache") : xdg, "dreambooth-notebooks");
        }
    }

    /// <summary>Loads torch (idempotent). <paramref name="backend"/> null = from the environment, else CPU.</summary>
    public static TorchRuntimeInfo Initialize(TorchBackend? backend = null)
    {
        lock (Gate)
        {
            if (_info is not null) return _info;
            var external = Environment.GetEnvironmentVariable(LibTorchEnv);
            var chosen = backend ?? (!string.IsNullOrEmpty(external) ? TorchBackend.External : ParseBackend(Environment.GetEnvironmentVariable(BackendEnv)));
            _info = OperatingSystem.IsLinux() ? LoadLinux(chosen, external) : LoadDefault(chosen);
            return _info;
        }
    }

    static TorchBackend ParseBackend(string? value) => value?.Trim().ToLowerInvariant() switch
    {
        null or "" or "cpu" => TorchBackend.Cpu,
        "cuda" => TorchBackend.Cuda,
        _ => throw new TorchLoadException($"{BackendEnv}='{value}': expected cpu or cuda (or set {LibTorchEnv} to a PyTorch lib folder)"),
    };

    static TorchRuntimeInfo LoadDefault(TorchBackend backend)
    {
        torch.InitializeDeviceType(backend == TorchBackend.Cpu ? DeviceType.CPU : DeviceType.CUDA);
        return Describe(backend, "(TorchSharp default)", "(TorchSharp default)", false);
    }

    static TorchRuntimeInfo LoadLinux(TorchBackend backend, string? externalDir)
    {
        string torchSharpVersion = TorchSharpVersion();
        string libTorchDir;
        if (backend == TorchBackend.External)
        {
            if (string.IsNullOrEmpty(externalDir) || !File.Exists(Path.Combine(externalDir, "libtorch.so")))
                throw new TorchLoadException($"{LibTorchEnv}='{externalDir}': expected a folder holding libtorch.so (e.g. .../site-packages/torch/lib)");
            libTorchDir = Path.GetFullPath(externalDir);
        }
        else
        {
            libTorchDir = CandidateDirectories(backend == TorchBackend.Cuda ? "libtorch-cuda-12.8-linux-x64" : "libtorch-cpu-linux-x64", null)
                .FirstOrDefault(d => File.Exists(Path.Combine(d, "libtorch.so")))
                ?? throw new TorchLoadException($"libtorch.so not found next to the application or in the NuGet cache; restore the {(backend == TorchBackend.Cuda ? "TorchSharp-cuda-linux" : "TorchSharp-cpu")} package, or set {LibTorchEnv}");
        }

        var (libTorchSharp, source) = FindLibTorchSharp(torchSharpVersion);
        // an existing PyTorch may be a CPU-only build (no libc10_cuda.so): then it runs on the CPU
        bool cpuOnly = backend == TorchBackend.Cpu
                       || (backend == TorchBackend.External && !File.Exists(Path.Combine(libTorchDir, "libc10_cuda.so")));

        // Dependencies first, by full path, so the (possibly relocated) LibTorchSharp binds to these by soname.
        string[] order = cpuOnly
            ? ["libc10.so", "libtorch_cpu.so", "libtorch.so"]
            : ["libc10.so", "libc10_cuda.so", "libtorch_cpu.so", "libtorch_cuda.so", "libtorch.so"];
        foreach (var lib in order)
        {
            var path = Path.Combine(libTorchDir, lib);
            if (!File.Exists(path))
            {
                if (lib.Contains("cuda")) throw new TorchLoadException($"{path} not found: the {backend} backend needs a CUDA build of libtorch");
                throw new TorchLoadException($"{path} not found");
            }
            Handles[Path.GetFileNameWithoutExtension(lib)[3..]] = LoadOrExplain(path);
        }

        string loadable;
        bool patched;
        try { loadable = LibStdCxxCompat.EnsureLoadableCopy(libTorchSharp, Path.Combine(CacheDirectory, "native"), out patched); }
        catch (IOException e) { throw new TorchLoadException($"cannot write the libstdc++ compatibility copy under {CacheDirectory} ({e.Message}); set {CacheEnv} to a writable folder", e); }
        var handle = LoadOrExplain(loadable, source);
        if (!NativeLibrary.TryGetExport(handle, ProbeExport, out _))
            throw new TorchLoadException($"{libTorchSharp} (from {source}): not a LibTorchSharp build (it exports no {ProbeExport})");
        Handles["LibTorchSharp"] = handle;

        NativeLibrary.SetDllImportResolver(typeof(torch).Assembly, Resolve);
        try
        {
            torch.InitializeDeviceType(cpuOnly ? DeviceType.CPU : DeviceType.CUDA);
        }
        catch (Exception e) when (e is not TorchLoadException)
        {
            throw new TorchLoadException($"TorchSharp could not initialize the {backend} backend from {libTorchDir}: {e.Message}", e);
        }
        return Describe(backend, libTorchDir, loadable, patched, source);
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? path)
    {
        var key = name;
        if (key.StartsWith("lib", StringComparison.Ordinal) && key != "LibTorchSharp") key = key[3..];
        if (key.EndsWith(".so", StringComparison.Ordinal)) key = key[..^3];
        return Handles.TryGetValue(key, out var h) ? h : IntPtr.Zero;
    }

    /// <summary>
    /// The LibTorchSharp to load: <c>DREAMBOOTH_LIBTORCHSHARP</c> when set (checked to be a shared library for this
    /// process's architecture), else the TorchSharp package's, next to the app or in the NuGet cache.
    /// </summary>
    static (string Path, string Source) FindLibTorchSharp(string torchSharpVersion)
    {
        var user = Environment.GetEnvironmentVariable(LibTorchSharpEnv);
        if (!string.IsNullOrEmpty(user))
        {
            string full = Path.GetFullPath(user);
            if (!File.Exists(full))
                throw new TorchLoadException($"{LibTorchSharpEnv}='{user}': no such file (expected a libLibTorchSharp.so built from TorchSharp's native sources; see docs/backends.md)");
            if (ElfSharedObjectProblem(full) is { } problem)
                throw new TorchLoadException($"{LibTorchSharpEnv}='{user}': {problem}");
            return (full, $"{LibTorchSharpEnv} ({full})");
        }
        string found = CandidateDirectories("torchsharp", torchSharpVersion)
            .Select(d => Path.Combine(d, "libLibTorchSharp.so"))
            .FirstOrDefault(File.Exists)
            ?? throw new TorchLoadException($"libLibTorchSharp.so not found next to the application or in the NuGet cache (restore the TorchSharp package, or set {LibTorchSharpEnv})");
        return (found, PackageSource);
    }

    /// <summary>
    /// The version of the Python torch whose lib/ folder is <paramref name="libTorchDirectory"/> (its ../version.py, as
    /// pip installs it), or null when there is none (NuGet's libtorch, a plain libtorch download).
    /// </summary>
    public static string? PythonTorchVersion(string libTorchDirectory)
    {
        var file = Path.Combine(libTorchDirectory, "..", "version.py");
        if (!File.Exists(file)) return null;
        foreach (var line in File.ReadLines(file))
        {
            var t = line.Trim();
            if (!t.StartsWith("__version__", StringComparison.Ordinal)) continue;
            int a = t.IndexOfAny(['\'', '"']), b = t.LastIndexOfAny(['\'', '"']);
            return a >= 0 && b > a ? t[(a + 1)..b] : null;
        }
        return null;
    }

    /// <summary>Null when <paramref name="path"/> is an ELF shared object for this process's architecture, else what it is instead.</summary>
    internal static string? ElfSharedObjectProblem(string path)
    {
        Span<byte> head = stackalloc byte[20];
        int read;
        try
        {
            using var f = File.OpenRead(path);
            read = f.ReadAtLeast(head, head.Length, throwOnEndOfStream: false);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return $"cannot be read ({e.Message})"; }
        if (read < head.Length || head[0] != 0x7F || head[1] != (byte)'E' || head[2] != (byte)'L' || head[3] != (byte)'F')
            return "not an ELF file (expected a libLibTorchSharp.so)";
        if (head[4] != 2 || head[5] != 1) return "not a 64-bit little-endian ELF file";
        ushort type = BitConverter.ToUInt16(head[16..18]), machine = BitConverter.ToUInt16(head[18..20]);
        if (type != 3) return $"an ELF file of type {type}, not a shared library (ET_DYN)";
        ushort expected = RuntimeInformation.ProcessArchitecture switch { Architecture.X64 => 62, Architecture.Arm64 => 183, _ => machine };
        if (machine != expected) return $"built for ELF machine {machine}, this process is {RuntimeInformation.ProcessArchitecture} (machine {expected})";
        return null;
    }

    static IntPtr LoadOrExplain(string path, string? source = null)
    {
        try { return NativeLibrary.Load(path); }
        catch (DllNotFoundException e)
        {
            string hint = e.Message.Contains("undefined symbol", StringComparison.Ordinal) && source is not null
                ? $" (this LibTorchSharp, from {source}, was built against another libtorch: list what is missing with tools/gpu/symbol_check.py, rebuild it against this libtorch and set {LibTorchSharpEnv}; see docs/backends.md)"
                : "";
            throw new TorchLoadException($"loading {path} failed: {e.Message}{hint}", e);
        }
    }

    static TorchRuntimeInfo Describe(TorchBackend backend, string libDir, string libTorchSharp, bool patched, string source = PackageSource)
    {
        bool cuda = backend != TorchBackend.Cpu && torch.cuda.is_available();
        return new TorchRuntimeInfo(backend, libDir, libTorchSharp, patched, cuda, cuda ? torch.cuda.device_count() : 0, TorchSharpVersion(), source);
    }

    static string TorchSharpVersion()
    {
        var v = typeof(torch).Assembly.GetName().Version;
        return v is null ? "unknown" : $"{v.Major}.{v.Minor}.{v.Build}";
    }

    /// <summary>Folders that may hold a package's linux-x64 natives: next to the app/assembly, then the NuGet cache.</summary>
    static IEnumerable<string> CandidateDirectories(string package, string? version)
    {
        var roots = new List<string> { AppContext.BaseDirectory };
        var asmDir = Path.GetDirectoryName(typeof(torch).Assembly.Location);
        if (!string.IsNullOrEmpty(asmDir)) roots.Add(asmDir);
        var self = Path.GetDirectoryName(typeof(TorchRuntime).Assembly.Location);
        if (!string.IsNullOrEmpty(self)) roots.Add(self);
        foreach (var r in roots.Distinct())
        {
            yield return r;
            yield return Path.Combine(r, "runtimes", "linux-x64", "native");
        }
        var nuget = Environment.GetEnvironmentVariable("NUGET_PACKAGES");
        if (string.IsNullOrEmpty(nuget)) nuget = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var pkg = Path.Combine(nuget, package);
        if (Directory.Exists(pkg))
        {
            IEnumerable<string> versions = version is not null && Directory.Exists(Path.Combine(pkg, version))
                ? [Path.Combine(pkg, version)]
                : Directory.GetDirectories(pkg).OrderDescending(StringComparer.Ordinal);
            foreach (var v in versions) yield return Path.Combine(v, "runtimes", "linux-x64", "native");
        }
    }
}
