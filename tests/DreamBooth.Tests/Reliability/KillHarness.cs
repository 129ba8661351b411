using System.Diagnostics;
using System.Security.Cryptography;

namespace DreamBooth.Tests.Reliability;

/// <summary>
/// Runs the real CLI (`dotnet dreambooth.dll ...`) as a child process and kills it with SIGKILL (Process.Kill on
/// Unix) either after a random delay or the moment a temp file of <see cref="DreamBooth.IO.AtomicFile"/> appears
/// (a save in progress).
/// </summary>
public static class KillHarness
{
    /// <summary>Kill rounds per interrupted-run test: small in CI, <c>DREAMBOOTH_KILL_ROUNDS</c> (e.g. 20) for the soak.</summary>
    public static int Rounds(int ciDefault) =>
        int.TryParse(Environment.GetEnvironmentVariable("DREAMBOOTH_KILL_ROUNDS"), out int n) && n > 0 ? n : ciDefault;

    static string CliDll => Path.Combine(AppContext.BaseDirectory, "dreambooth.dll");

    public static Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        // drain the pipes so a chatty child never blocks on a full pipe
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    /// <summary>Runs to completion; returns exit code and stderr.</summary>
    public static (int Code, string Err, TimeSpan Elapsed) Run(TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(CliDll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        var sw = Stopwatch.StartNew();
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var @out = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(timeout)) { p.Kill(entireProcessTree: true); throw new TimeoutException($"dreambooth {string.Join(' ', args)} ran past {timeout}"); }
        p.WaitForExit();
        return (p.ExitCode, err.Result + @out.Result, sw.Elapsed);
    }

    /// <summary>
    /// Starts the CLI and SIGKILLs it: when <paramref name="midSave"/>, as soon as a `.*.tmp` file appears under
    /// <paramref name="watch"/> (polling every 1 ms), else after <paramref name="delay"/>. Returns how it ended.
    /// </summary>
    public static string KillDuring(string watch, bool midSave, TimeSpan delay, TimeSpan limit, params string[] args)
    {
        var orphans = TempFiles(watch); // left by earlier killed runs: only a new temp file means a save is in progress
        using var p = Start(args);
        var sw = Stopwatch.StartNew();
        while (!p.HasExited && sw.Elapsed < limit)
        {
            if (midSave ? TempFiles(watch).Except(orphans).Any() : sw.Elapsed >= delay)
            {
                try { p.Kill(); } catch (InvalidOperationException) { }
                p.WaitForExit();
                return midSave ? $"killed mid-save at {sw.Elapsed.TotalSeconds:F2}s" : $"killed at {sw.Elapsed.TotalSeconds:F2}s";
            }
            Thread.Sleep(midSave ? 1 : 5);
        }
        if (!p.HasExited) { p.Kill(); p.WaitForExit(); return "killed at the limit"; }
        return $"finished before the kill (exit {p.ExitCode})";
    }

    public static HashSet<string> TempFiles(string dir) =>
        Directory.Exists(dir) ? Directory.EnumerateFiles(dir, ".*.tmp", SearchOption.AllDirectories).ToHashSet() : [];

    public static Dictionary<string, string> HashTree(string dir, Func<string, bool>? include = null) =>
        Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
            .Where(f => include?.Invoke(f) ?? true)
            .ToDictionary(f => Path.GetRelativePath(dir, f), f => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(f))));
}
