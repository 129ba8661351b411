using DreamBooth.Tests.Checkpoints;
using DreamBooth.Tests.Cli;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Reliability.Fuzz;

namespace DreamBooth.Tests.Reliability;

/// <summary>Hostile files through the real CLI: `dreambooth inspect` exits 2 with one stderr line, and a pickle payload never runs.</summary>
public class HostileCheckpointCliTests
{
    [Theory]
    [InlineData("os", "system", false)]
    [InlineData("builtins", "eval", false)]
    [InlineData("subprocess", "Popen", false)]
    [InlineData("__builtin__", "exec", false)]
    [InlineData("os", "system", true)]
    [InlineData("builtins", "eval", true)]
    [InlineData("subprocess", "Popen", true)]
    [InlineData("__builtin__", "exec", true)]
    public async Task Ckpt_whose_pickle_calls_a_dangerous_global_is_refused_and_its_payload_never_runs(string module, string name, bool stackGlobal)
    {
        using var dir = TestPaths.NewTempDir();
        string marker = dir.File("payload-ran");
        string arg = module switch
        {
            "os" or "subprocess" => $"touch {marker}",
            _ => $"open('{marker}', 'w').write('pwned')",
        };
        var p = new PickleWriter().Proto(stackGlobal ? 4 : 2);
        // a real state dict first, so the hostile part sits where a careless loader would already be trusting the file
        p.EmptyDict().BinPut().Mark().Str("global_step").Int(1).SetItems();
        if (stackGlobal) p.Str(module).Str(name).Op(0x93); else p.Global(module, name);
        p.Str(arg).Op(0x85).Reduce().Stop();
        string ckpt = dir.File("model.ckpt");
        TorchCheckpointWriter.Write(ckpt, p.ToArray(), []);
        long before = new FileInfo(ckpt).Length;

        var (code, stdout, stderr) = await CliTests.Run("inspect", ckpt);

        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.StartsWith("error: ", stderr);
        Assert.Contains($"{module}.{name}", stderr);
        Assert.False(File.Exists(marker), "the pickle payload ran");
        Assert.Equal(before, new FileInfo(ckpt).Length);
        Assert.Equal(["model.ckpt"], Directory.GetFiles(dir.Path).Select(Path.GetFileName));
    }

    [Fact]
    public async Task Fuzzed_checkpoints_rejected_by_the_readers_exit_2_with_one_line_through_the_cli()
    {
        using var dir = TestPaths.NewTempDir();
        int checkedCases = 0;
        foreach (var (target, ext) in new[] { (CheckpointFuzzTargets.SafeTensorsFiles, ".safetensors"), (CheckpointFuzzTargets.CkptFiles, ".ckpt") })
        {
            var seeds = target.Seeds();
            int found = 0;
            for (int i = 0; found < 6 && i < 200; i++)
            {
                var (input, mutations) = FuzzHarness.MakeCase(target, seeds, i, FuzzHarness.BaseSeed);
                try { target.Parse(input); continue; } // still valid: not a hostile case
                catch (Exception e) when (FuzzHarness.IsCleanError(e)) { }
                string path = dir.File($"bad-{i}{ext}");
                File.WriteAllBytes(path, input);
                var (code, stdout, stderr) = await CliTests.Run("inspect", path);
                Assert.True(code == 2, $"{target.Name} case {i} [{mutations}]: exit {code}, stderr {stderr}");
                Assert.Equal("", stdout);
                Assert.Single(stderr.Trim().Split('\n'));
                Assert.StartsWith("error: ", stderr);
                found++;
                checkedCases++;
            }
        }
        Assert.Equal(12, checkedCases);
    }
}
