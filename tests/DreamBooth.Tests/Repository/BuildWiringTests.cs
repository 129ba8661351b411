using System.Diagnostics;
using System.Reflection;
using System.Text.RegularExpressions;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Repository;

/// <summary>
/// What a newcomer's first commands rely on: building the CLI builds the notebook library, the headless notebook
/// script names the notebook and cell that failed, and every command the docs give builds one configuration.
/// </summary>
public partial class BuildWiringTests
{
    /// <summary>The configuration this test assembly was built with (the one `dotnet test -c …` built).</summary>
    static string Configuration => typeof(BuildWiringTests).Assembly.GetCustomAttribute<AssemblyConfigurationAttribute>()!.Configuration;

    [Fact]
    public void Building_only_the_cli_refreshes_the_notebook_library()
    {
        // The README's first command (dotnet run of the CLI) must leave the notebooks runnable: building the CLI
        // project alone builds DreamBooth.Interactive, which copies itself to artifacts/notebook-lib/. The solution
        // build already put the library there, so age the copy and check the CLI build replaces it.
        var lib = Path.Combine(TestPaths.RepoRoot, "artifacts", "notebook-lib", "DreamBooth.Interactive.dll");
        Assert.True(File.Exists(lib), $"{lib} missing after the solution build");
        var aged = new DateTime(2001, 1, 1, 0, 0, 0, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(lib, aged);

        var (code, output) = Run(TestPaths.RepoRoot, TimeSpan.FromMinutes(5), "dotnet", "build", "src/DreamBooth.Cli/DreamBooth.Cli.csproj",
            "-c", Configuration, "--no-restore", "-nodeReuse:false", "-v:q", "-clp:NoSummary");
        Assert.True(code == 0, $"dotnet build of the CLI exited {code}:\n{output}");
        Assert.NotEqual(aged, File.GetLastWriteTimeUtc(lib));
        var built = Path.Combine(TestPaths.RepoRoot, "src", "DreamBooth.Interactive", "bin", Configuration, "net10.0", "DreamBooth.Interactive.dll");
        Assert.Equal(File.ReadAllBytes(built), File.ReadAllBytes(lib));
    }

    [Fact]
    public void Notebook_library_links_the_build_output_instead_of_copying_1_7_GB()
    {
        // a hard link where the file system allows (artifacts/ and bin/ on one device): one inode, no second copy
        var built = Path.Combine(TestPaths.RepoRoot, "src", "DreamBooth.Interactive", "bin", Configuration, "net10.0", "runtimes", "linux-x64", "native", "libtorch_cpu.so");
        var lib = Path.Combine(TestPaths.RepoRoot, "artifacts", "notebook-lib", "runtimes", "linux-x64", "native", "libtorch_cpu.so");
        Assert.True(File.Exists(built) && File.Exists(lib), $"{built} or {lib} missing");
        var (code, output) = Run(TestPaths.RepoRoot, TimeSpan.FromMinutes(1), "stat", "-c", "%d %i", built, lib);
        Assert.True(code == 0, output);
        var ids = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var (device0, device1) = (ids[0].Split(' ')[0], ids[1].Split(' ')[0]);
        if (device0 != device1) return; // on two file systems a copy is all there can be
        Assert.True(ids[0] == ids[1], $"{lib} is a copy of {built}, not a link (left by an older build: remove artifacts/notebook-lib and build again)");
    }

    [Fact]
    public void Build_outputs_link_libtorch_from_the_nuget_cache_instead_of_copying_1_7_GB_each()
    {
        // CLI, notebook library and tests each carry libtorch (1.7 GB): hard links to the NuGet cache's file where
        // both are on one file system (Directory.Build.props), so a fresh clone's build adds no 5 GB of copies
        var packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var cached = Directory.EnumerateFiles(Path.Combine(packages, "libtorch-cpu-linux-x64"), "libtorch_cpu.so", SearchOption.AllDirectories).Single();
        string Native(string project) => Path.Combine(TestPaths.RepoRoot, "src", project, "bin", Configuration, "net10.0", "runtimes", "linux-x64", "native", "libtorch_cpu.so");
        var outputs = new[] { Native("DreamBooth.Cli"), Native("DreamBooth.Interactive"), Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libtorch_cpu.so") };
        var (code, output) = Run(TestPaths.RepoRoot, TimeSpan.FromMinutes(1), "stat", ["-c", "%d %i", cached, .. outputs]);
        Assert.True(code == 0, output);
        var ids = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        for (int i = 1; i < ids.Length; i++)
        {
            if (ids[i].Split(' ')[0] != ids[0].Split(' ')[0]) continue; // on another file system a copy is all there can be
            Assert.True(ids[i] == ids[0], $"{outputs[i - 1]} is a copy of {cached}, not a link (a build from before the hard links: remove the bin/ folders and artifacts/notebook-lib, and build again)");
        }
    }

    [Fact]
    public void The_cli_carries_nothing_of_the_notebook_kernel()
    {
        // the build-order reference must not make the CLI load the notebook library or the kernel's packages
        var cliBin = Path.Combine(TestPaths.RepoRoot, "src", "DreamBooth.Cli", "bin", Configuration, "net10.0");
        var cliDeps = File.ReadAllText(Path.Combine(cliBin, "dreambooth.deps.json"));
        Assert.DoesNotContain("DreamBooth.Interactive", cliDeps);
        Assert.DoesNotContain("Plotly", cliDeps);
        Assert.DoesNotContain("Microsoft.DotNet.Interactive", cliDeps);
        Assert.Contains("DreamBooth.Core", cliDeps);
        Assert.False(File.Exists(Path.Combine(cliBin, "DreamBooth.Interactive.dll")));
    }

    [Fact]
    public void Headless_script_exits_1_naming_the_notebook_and_the_cell_that_failed()
    {
        using var tmp = TestPaths.NewTempDir();
        var nb = tmp.File("fails-at-three.dib");
        File.WriteAllText(nb, """
            #!meta

            {"kernelInfo":{"defaultKernelName":"csharp","items":[{"aliases":[],"languageName":"csharp","name":"csharp"}]}}

            #!markdown

            A notebook whose third cell fails; the fourth still runs in dotnet-repl.

            #!csharp

            var answer = 6 * 7;
            answer

            #!csharp

            throw new InvalidOperationException("deliberate failure " + answer);

            #!csharp

            "after the failure"
            """);
        var (code, output) = Run(TestPaths.RepoRoot, TimeSpan.FromMinutes(5), "bash", "notebooks/run-headless.sh", "--output", tmp.File("out"), nb);
        Assert.True(code == 1, $"exit {code}, expected 1:\n{output}");
        Assert.Contains("fails-at-three.dib FAILED at cell 3 (throw new InvalidOperationException(\"deliberate failure \" + answer);): System.InvalidOperationException: deliberate failure 42", output);
        Assert.True(File.Exists(tmp.File("out/fails-at-three.ipynb")), output);
    }

    [Fact]
    public void Every_documented_build_command_uses_the_release_configuration()
    {
        // One configuration everywhere: a command without -c Release builds a second 1.7 GB Debug tree first.
        var root = TestPaths.RepoRoot;
        var files = new[] { "README.md", ".ci/run" }.Select(f => Path.Combine(root, f))
            .Concat(Directory.GetFiles(Path.Combine(root, "docs"), "*.md", SearchOption.AllDirectories))
            .Concat(Directory.GetFiles(Path.Combine(root, "notebooks"), "*.*", SearchOption.AllDirectories).Where(f => f.EndsWith(".dib") || f.EndsWith(".sh")))
            .Concat(Directory.GetFiles(Path.Combine(root, ".devcontainer"), "*", SearchOption.AllDirectories))
            .Concat(Directory.GetFiles(Path.Combine(root, "src"), "*.cs", SearchOption.AllDirectories).Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}")));
        var commands = new List<string>();
        var wrong = new List<string>();
        foreach (var file in files)
        {
            var lines = File.ReadAllLines(file);
            for (int i = 0; i < lines.Length; i++)
                foreach (Match m in DotnetCommand().Matches(lines[i]))
                {
                    var command = m.Value.Trim();
                    if (command.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length < 3) continue; // a mention ("`dotnet run`"), not a command
                    commands.Add(command);
                    if (!ReleaseConfiguration().IsMatch(command)) wrong.Add($"{Path.GetRelativePath(root, file)}:{i + 1}: {command}");
                }
        }
        Assert.Contains(commands, c => c.StartsWith("dotnet run --project src/DreamBooth.Cli -c Release -- doctor"));
        Assert.True(wrong.Count == 0, "commands without -c Release:\n" + string.Join('\n', wrong));
    }

    [GeneratedRegex(@"dotnet (run|build|test|publish)\b[^`""\n|&;]*")]
    private static partial Regex DotnetCommand();

    [GeneratedRegex(@"(-c|--configuration)[ =]Release\b")]
    private static partial Regex ReleaseConfiguration();

    static (int Code, string Output) Run(string workDir, TimeSpan timeout, string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = workDir, RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in args) psi.ArgumentList.Add(a);
        // the test host inherits MSBuild's variables from `dotnet test`; the child build sets its own
        foreach (var key in psi.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList()) psi.Environment.Remove(key);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(entireProcessTree: true); throw new TimeoutException($"{file} {string.Join(' ', args)} ran past {timeout}"); }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr.Result);
    }
}
