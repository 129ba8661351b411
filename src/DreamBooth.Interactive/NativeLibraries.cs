using System.Reflection;
using System.Runtime.InteropServices;

namespace DreamBooth.Interactive;

/// <summary>
/// Native libraries of managed packages for the notebook kernel. A notebook references the library with
/// <c>#r "…/DreamBooth.Core.dll"</c>, and the kernel then has no deps.json for it: a package whose natives sit in
/// <c>runtimes/&lt;rid&gt;/native/</c> (SkiaSharp, used for grid labels and the data overlays) is not found
/// ("Unable to load shared library 'libSkiaSharp'"). TorchSharp is loaded by <c>TorchRuntime</c>, ONNX Runtime
/// probes that folder itself; for the others this resolver looks there.
/// </summary>
public static class NativeLibraries
{
    static readonly HashSet<Assembly> Registered = [];

    /// <summary>Lets <paramref name="assembly"/>'s P/Invokes find their natives under runtimes/&lt;rid&gt;/native next to it. Safe to call again.</summary>
    public static void Register(Assembly assembly)
    {
        lock (Registered)
        {
            if (!Registered.Add(assembly)) return;
            try { NativeLibrary.SetDllImportResolver(assembly, Resolve); }
            catch (InvalidOperationException) { } // the host already set one for this assembly: it knows better
        }
    }

    /// <summary>Candidate folders for natives next to <paramref name="assembly"/>, most specific first.</summary>
    public static IEnumerable<string> SearchFolders(Assembly assembly)
    {
        var dir = Path.GetDirectoryName(assembly.Location);
        if (string.IsNullOrEmpty(dir)) yield break;
        string arch = RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
        string os = OperatingSystem.IsWindows() ? "win" : OperatingSystem.IsMacOS() ? "osx" : "linux";
        foreach (var rid in new[] { RuntimeInformation.RuntimeIdentifier, $"{os}-{arch}", os }.Distinct())
            yield return Path.Combine(dir, "runtimes", rid, "native");
        yield return dir;
    }

    static IntPtr Resolve(string name, Assembly assembly, DllImportSearchPath? searchPath)
    {
        if (NativeLibrary.TryLoad(name, assembly, searchPath, out var handle)) return handle;
        var names = new List<string> { name };
        if (OperatingSystem.IsWindows()) names.Add(name + ".dll");
        else if (OperatingSystem.IsMacOS()) { names.Add(name + ".dylib"); names.Add("lib" + name + ".dylib"); }
        else { names.Add(name + ".so"); names.Add("lib" + name + ".so"); }
        foreach (var folder in SearchFolders(assembly))
            foreach (var n in names)
            {
                var path = Path.Combine(folder, n);
                if (File.Exists(path) && NativeLibrary.TryLoad(path, out handle)) return handle;
            }
        return IntPtr.Zero;
    }
}
