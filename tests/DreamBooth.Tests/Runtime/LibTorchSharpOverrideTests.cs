using System.Diagnostics;
using DreamBooth.Runtime;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Runtime;

/// <summary>
/// <c>DREAMBOOTH_LIBTORCHSHARP</c>: a user-supplied libLibTorchSharp.so (TorchSharp's native sources rebuilt against
/// another libtorch) is the one loaded, doctor says so, and a missing or wrong file is a one-line exit-2 error.
/// Each case runs the real CLI in a child process, since torch loads once per process.
/// </summary>
public class LibTorchSharpOverrideTests
{
    static string CliDll => Path.Combine(AppContext.BaseDirectory, "dreambooth.dll");

    /// <summary>The package's libLibTorchSharp.so (the original, not the libstdc++ compatibility copy).</summary>
    static string PackageLibTorchSharp()
    {
        string[] candidates =
        [
            Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"),
            Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so"),
        ];
        return candidates.First(File.Exists);
    }

    internal static (int Code, string Out, string Err) RunCli(IDictionary<string, string?> env, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        foreach (var (k, v) in env)
            if (v is null) psi.Environment.Remove(k); else psi.Environment[k] = v;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var @out = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(3))) { p.Kill(entireProcessTree: true); throw new TimeoutException($"dreambooth {string.Join(' ', args)}"); }
        p.WaitForExit();
        return (p.ExitCode, @out.Result, err.Result);
    }

    /// <summary>The child's variables: the LibTorchSharp override as given; the libtorch of this process unless one is given.</summary>
    static Dictionary<string, string?> Env(string? libTorchSharp, string? libTorch = null) => new()
    {
        [TorchRuntime.LibTorchSharpEnv] = libTorchSharp,
        [TorchRuntime.LibTorchEnv] = libTorch ?? Environment.GetEnvironmentVariable(TorchRuntime.LibTorchEnv),
        [TorchRuntime.BackendEnv] = Environment.GetEnvironmentVariable(TorchRuntime.BackendEnv),
    };

    [Fact]
    public void Doctor_loads_and_names_the_user_supplied_library()
    {
        using var dir = TestPaths.NewTempDir();
        string copy = dir.File("libLibTorchSharp.so");
        File.Copy(PackageLibTorchSharp(), copy);
        var (code, stdout, stderr) = RunCli(Env(copy), "doctor");
        Assert.True(code == 0, stderr);
        Assert.Contains($"  from          {TorchRuntime.LibTorchSharpEnv} ({copy})", stdout);
        Assert.Contains($"LibTorchSharp override {copy}", stdout);
        // loaded as is, or (on a host whose libstdc++ lacks GLIBCXX_3.4.32) as the compatibility copy of that file
        var loaded = stdout.Split('\n').Single(l => l.StartsWith("LibTorchSharp   ", StringComparison.Ordinal))["LibTorchSharp   ".Length..].Trim();
        Assert.True(loaded == copy || loaded.StartsWith(Path.Combine(TorchRuntime.CacheDirectory, "native"), StringComparison.Ordinal), loaded);

        var (code2, plain, _) = RunCli(Env(null), "doctor");
        Assert.Equal(0, code2);
        Assert.Contains($"  from          {TorchRuntime.PackageSource}", plain);
    }

    [Fact]
    public void A_shared_library_that_is_not_LibTorchSharp_is_refused_after_loading_it()
    {
        // a real x86-64 shared object that loads fine but is not TorchSharp's: proves the override is what gets loaded
        using var dir = TestPaths.NewTempDir();
        string other = dir.File("libLibTorchSharp.so");
        File.Copy(Path.Combine(TorchRuntime.Initialize().LibTorchDirectory, "libtorch.so"), other);
        var (code, _, stderr) = RunCli(Env(other), "doctor");
        Assert.Equal(2, code);
        Assert.Contains("not a LibTorchSharp build", stderr);
        Assert.Contains(TorchRuntime.ProbeExport, stderr);
        Assert.Single(stderr.Trim().Split('\n'));
    }

    [Fact]
    public void A_missing_or_non_ELF_file_is_a_user_error_naming_the_variable()
    {
        using var dir = TestPaths.NewTempDir();
        string missing = dir.File("nope/libLibTorchSharp.so");
        var (code, _, stderr) = RunCli(Env(missing), "doctor");
        Assert.Equal(2, code);
        Assert.Contains($"{TorchRuntime.LibTorchSharpEnv}='{missing}': no such file", stderr);
        Assert.Single(stderr.Trim().Split('\n'));

        string text = dir.File("libLibTorchSharp.so");
        File.WriteAllText(text, "not a library\n");
        (code, _, stderr) = RunCli(Env(text), "doctor");
        Assert.Equal(2, code);
        Assert.Contains($"{TorchRuntime.LibTorchSharpEnv}='{text}': not an ELF file", stderr);
        Assert.False(File.Exists(missing));
        Assert.Equal("not a library\n", File.ReadAllText(text)); // the user's file is never touched
    }

    [Fact]
    public void Elf_header_check_accepts_the_real_library_and_names_what_else_it_found()
    {
        Assert.Null(TorchRuntime.ElfSharedObjectProblem(PackageLibTorchSharp()));
        using var dir = TestPaths.NewTempDir();
        var bytes = File.ReadAllBytes(PackageLibTorchSharp())[..64];
        string exe = dir.File("exe.so");
        var asExe = (byte[])bytes.Clone();
        asExe[16] = 2; // ET_EXEC
        File.WriteAllBytes(exe, asExe);
        Assert.Contains("not a shared library", TorchRuntime.ElfSharedObjectProblem(exe));
        string arm = dir.File("arm.so");
        var asArm = (byte[])bytes.Clone();
        asArm[18] = 183; // EM_AARCH64 on an x86-64 process (or the other way round)
        if (System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture == System.Runtime.InteropServices.Architecture.Arm64) asArm[18] = 62;
        File.WriteAllBytes(arm, asArm);
        Assert.Contains("built for ELF machine", TorchRuntime.ElfSharedObjectProblem(arm));
        string shortFile = dir.File("short.so");
        File.WriteAllBytes(shortFile, bytes[..10]);
        Assert.Contains("not an ELF file", TorchRuntime.ElfSharedObjectProblem(shortFile));
    }

    [Fact]
    public void An_existing_cpu_only_libtorch_folder_runs_on_the_cpu_and_doctor_names_its_torch_version()
    {
        // a pip-like layout, torch/lib + torch/version.py, over the NuGet libtorch-cpu files (no libc10_cuda.so)
        string nuget = TorchRuntime.Initialize().LibTorchDirectory;
        Assert.False(File.Exists(Path.Combine(nuget, "libc10_cuda.so")));
        using var dir = TestPaths.NewTempDir();
        string lib = Path.Combine(dir.Path, "torch", "lib");
        Directory.CreateDirectory(lib);
        foreach (var f in Directory.GetFiles(nuget, "lib*.so*")) File.CreateSymbolicLink(Path.Combine(lib, Path.GetFileName(f)), f);
        File.WriteAllText(Path.Combine(dir.Path, "torch", "version.py"), "__version__ = '2.11.0+cpu'\ngit_version = 'x'\n");
        Assert.Equal("2.11.0+cpu", TorchRuntime.PythonTorchVersion(lib));
        Assert.Null(TorchRuntime.PythonTorchVersion(nuget));

        var (code, stdout, stderr) = RunCli(Env(null, lib), "doctor");
        Assert.True(code == 0, stderr);
        Assert.Contains("backend         external (loaded)", stdout);
        Assert.Contains($"libtorch        {lib}", stdout);
        Assert.Contains($"  PyTorch       2.11.0+cpu (TorchSharp 0.107.0's LibTorchSharp was built against libtorch {TorchRuntime.BuiltAgainstLibTorch}; another version", stdout);
        Assert.Contains("CUDA            not available", stdout);
    }
}
