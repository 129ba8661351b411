using System.Diagnostics;
using System.Text.Json;

namespace DreamBooth.Tests.SelfHost;

/// <summary>
/// A fixture for <see cref="TestHostProgramTests"/>: fails only when DREAMBOOTH_SELFHOST_PROBE=fail, so a child run of
/// the self-hosted test assembly can be made to see one failure.
/// </summary>
public class SelfHostProbe
{
    public const string Env = "DREAMBOOTH_SELFHOST_PROBE";

    [Fact]
    public void Environment_probe() => Assert.NotEqual("fail", Environment.GetEnvironmentVariable(Env));
}

/// <summary>The published test assembly runs its own tests (no `dotnet test` on the GPU machine): selection, JSON, exit codes.</summary>
public class TestHostProgramTests
{
    static (int Code, List<JsonElement> Lines, string Err) RunSelf(string? probe, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "DreamBooth.Tests.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        if (probe is null) psi.Environment.Remove(SelfHostProbe.Env); else psi.Environment[SelfHostProbe.Env] = probe;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var @out = p.StandardOutput.ReadToEndAsync();
        if (!p.WaitForExit(TimeSpan.FromMinutes(2))) { p.Kill(entireProcessTree: true); throw new TimeoutException("self-hosted test run"); }
        p.WaitForExit();
        var lines = @out.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
        return (p.ExitCode, lines, err.Result);
    }

    [Fact]
    public void A_failing_test_gives_exit_1_and_a_json_line_naming_it()
    {
        var (code, lines, err) = RunSelf("fail", "--filter", "SelfHostProbe.");
        Assert.True(code == 1, err);
        var failed = Assert.Single(lines, l => l.GetProperty("step").GetString() == "test_failed");
        Assert.StartsWith("DreamBooth.Tests.SelfHost.SelfHostProbe.Environment_probe", failed.GetProperty("name").GetString());
        Assert.Contains("NotEqual", failed.GetProperty("message").GetString());
        var summary = lines[^1];
        Assert.Equal("tests", summary.GetProperty("step").GetString());
        Assert.Equal((1, 0, 1), (summary.GetProperty("selected").GetInt32(), summary.GetProperty("passed").GetInt32(), summary.GetProperty("failed").GetInt32()));
    }

    [Fact]
    public void A_terminated_run_still_prints_the_counts_so_far()
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "DreamBooth.Tests.dll"));
        foreach (var a in new[] { "--filter", "DreamBooth.Tests." , "--exclude", "SelfHost" }) psi.ArgumentList.Add(a);
        using var p = new Process { StartInfo = psi };
        var output = new List<string>();
        using var started = new ManualResetEventSlim();
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.Add(e.Data);
            if (e.Data.Contains("\"tests_started\"", StringComparison.Ordinal)) started.Set();
        };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        Assert.True(started.Wait(TimeSpan.FromMinutes(2)), "no tests_started line");
        Thread.Sleep(TimeSpan.FromSeconds(3)); // tests running (the whole assembly takes minutes)
        using (var kill = Process.Start("kill", ["-TERM", p.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)])) kill.WaitForExit();
        Assert.True(p.WaitForExit(TimeSpan.FromSeconds(60)), "the test host did not stop on SIGTERM");
        p.WaitForExit();
        List<JsonElement> lines;
        lock (output) lines = output.Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
        var summary = Assert.Single(lines, l => l.GetProperty("step").GetString() == "tests");
        Assert.True(summary.GetProperty("interrupted").GetBoolean());
        Assert.True(summary.GetProperty("selected").GetInt32() > 100);
        Assert.True(summary.GetProperty("passed").GetInt32() < summary.GetProperty("selected").GetInt32());
    }

    [Fact]
    public void Passing_tests_give_exit_0_and_the_counts()
    {
        var (code, lines, err) = RunSelf(null, "--filter", "SelfHostProbe.|ModelConfigTests", "--exclude", "Nonexistent");
        Assert.True(code == 0, err);
        var summary = Assert.Single(lines, l => l.GetProperty("step").GetString() == "tests");
        Assert.Equal(summary.GetProperty("selected").GetInt32(), Assert.Single(lines, l => l.GetProperty("step").GetString() == "tests_started").GetProperty("selected").GetInt32());
        int selected = summary.GetProperty("selected").GetInt32();
        Assert.True(selected > 1);
        Assert.Equal(selected, summary.GetProperty("passed").GetInt32());
        Assert.Equal(0, summary.GetProperty("failed").GetInt32());
    }

    [Fact]
    public void No_selected_test_or_a_bad_argument_is_exit_2()
    {
        var (code, lines, _) = RunSelf(null, "--filter", "NoSuchTestAnywhere");
        Assert.Equal(2, code);
        Assert.Equal("no test selected", Assert.Single(lines).GetProperty("error").GetString());
        var (code2, _, err) = RunSelf(null, "--frobnicate");
        Assert.Equal(2, code2);
        Assert.Contains("--frobnicate", err);
    }

    [Fact]
    public void Selection_is_substring_of_the_full_name_any_filter_and_no_exclude()
    {
        var o = TestHostProgram.Options.Parse(["--filter", "Models.|Training.", "--exclude", "Notebook|Kill"]);
        Assert.True(o.Selects("DreamBooth.Tests.Models.UNetTests.Forward"));
        Assert.True(o.Selects("DreamBooth.Tests.Training.LionTests.Step"));
        Assert.False(o.Selects("DreamBooth.Tests.Data.CropTests.Crop"));
        Assert.False(o.Selects("DreamBooth.Tests.Training.KillTests.Resume"));
        Assert.True(TestHostProgram.Options.Parse([]).Selects("Anything.At.All"));
    }
}
