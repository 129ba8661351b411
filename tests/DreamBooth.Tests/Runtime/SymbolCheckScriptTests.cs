using System.Diagnostics;
using System.Text.Json;
using DreamBooth.Runtime;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Runtime;

/// <summary>
/// tools/gpu/symbol_check.py, the first step of a GPU visit (python3 and binutils' nm on the PATH): the package's
/// LibTorchSharp finds every symbol in the libtorch it was built against, a libtorch that lacks some is caught and the
/// missing symbols are named (demangled), and the export check compares a rebuilt library with the package's.
/// </summary>
public class SymbolCheckScriptTests
{
    static string Script => Path.Combine(TestPaths.RepoRoot, "tools", "gpu", "symbol_check.py");

    static string PackageLibTorchSharp() =>
        new[] { Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"), Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so") }
            .First(File.Exists);

    static (int Code, JsonElement? Line, string Err) Run(params string[] args)
    {
        var psi = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Script);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("python3 is needed for tools/gpu/symbol_check.py");
        var err = p.StandardError.ReadToEndAsync();
        var @out = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        var first = @out.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault();
        return (p.ExitCode, first is null ? null : JsonDocument.Parse(first).RootElement.Clone(), err.Result);
    }

    [Fact]
    public void The_package_library_finds_every_symbol_in_the_libtorch_it_was_built_against()
    {
        string libDir = TorchRuntime.Initialize().LibTorchDirectory; // NuGet libtorch-cpu 2.10.0
        var (code, line, err) = Run("--libtorchsharp", PackageLibTorchSharp(), "--libdir", libDir);
        Assert.True(code == 0, err);
        var r = line!.Value;
        Assert.True(r.GetProperty("ok").GetBoolean());
        Assert.Equal(0, r.GetProperty("missing_count").GetInt32());
        Assert.True(r.GetProperty("checked").GetInt32() > 1000, r.ToString()); // c10/at/torch symbols, not just libc
        Assert.True(r.GetProperty("system_symbols").GetInt32() > 0);
    }

    [Fact]
    public void A_libtorch_without_c10_is_caught_and_the_missing_symbols_are_named()
    {
        string real = TorchRuntime.Initialize().LibTorchDirectory;
        using var dir = TestPaths.NewTempDir();
        File.CreateSymbolicLink(dir.File("libtorch_cpu.so"), Path.Combine(real, "libtorch_cpu.so"));
        File.CreateSymbolicLink(dir.File("libtorch.so"), Path.Combine(real, "libtorch.so"));
        File.Copy(Path.Combine(real, "libtorch_global_deps.so"), dir.File("libc10.so")); // a real library, but not c10
        var (code, line, err) = Run("--libtorchsharp", PackageLibTorchSharp(), "--libdir", dir.Path);
        Assert.True(code == 3, err);
        var r = line!.Value;
        Assert.False(r.GetProperty("ok").GetBoolean());
        Assert.True(r.GetProperty("missing_count").GetInt32() > 10);
        var missing = r.GetProperty("missing").EnumerateArray().ToList();
        Assert.All(missing, m => Assert.StartsWith("_Z", m.GetProperty("mangled").GetString())); // C++ symbols only: the C runtime's are not checked
        Assert.Contains(missing, m => m.GetProperty("demangled").GetString()!.StartsWith("c10::", StringComparison.Ordinal));
    }

    [Fact]
    public void Export_check_and_bad_input()
    {
        string lib = PackageLibTorchSharp();
        var (code, line, err) = Run("--libtorchsharp", lib, "--compare-exports", lib);
        Assert.True(code == 0, err);
        Assert.True(line!.Value.GetProperty("exports").GetInt32() > 1000);
        // a library that is not LibTorchSharp lacks its exports
        string c10 = Path.Combine(TorchRuntime.Initialize().LibTorchDirectory, "libc10.so");
        (code, line, _) = Run("--libtorchsharp", c10, "--compare-exports", lib);
        Assert.Equal(3, code);
        // libc10 exports none of TorchSharp's functions: every one of them is missing
        Assert.Equal(line!.Value.GetProperty("reference_exports").GetInt32(), line.Value.GetProperty("missing_count").GetInt32());
        Assert.All(line.Value.GetProperty("missing").EnumerateArray(), m => Assert.Contains("_", m.GetString()));
        (code, _, err) = Run("--libtorchsharp", "/nonexistent/libLibTorchSharp.so", "--libdir", "/tmp");
        Assert.Equal(2, code);
        Assert.Contains("no such file", err);
    }
}
