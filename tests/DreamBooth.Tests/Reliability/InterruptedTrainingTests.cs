using System.Text.Json.Nodes;
using DreamBooth.Checkpoints;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Training;
using DreamBooth.Training;
using Xunit.Abstractions;

namespace DreamBooth.Tests.Reliability;

/// <summary>
/// `dreambooth train` on the tiny model as a child process, SIGKILLed at random moments and mid-save (the moment an
/// AtomicFile temp file appears), then resumed with `--resume`: every checkpoint present after each kill is complete
/// and loadable, the state pointer names a loadable state, and the final weights equal an uninterrupted run's bitwise.
/// </summary>
[Collection(SerialResourceCollection.Name)]
public class InterruptedTrainingTests(ITestOutputHelper output)
{
    const int Epochs = 6;

    static void AssertEveryCheckpointLoads(string outDir)
    {
        if (!Directory.Exists(outDir)) return;
        foreach (var f in Directory.GetFiles(outDir, "*.safetensors"))
        {
            using var st = SafeTensors.Open(f);
            var all = st.LoadAll();
            Assert.NotEmpty(all);
            foreach (var t in all.Values) t.Dispose();
        }
        string pointer = Path.Combine(outDir, DreamBoothTrainer.StateFileName);
        if (File.Exists(pointer))
        {
            var state = JsonNode.Parse(File.ReadAllText(pointer))!["state"]!.GetValue<string>();
            foreach (var t in TensorStateFile.Load(Path.Combine(outDir, state)).Values) t.Dispose();
        }
    }

    static Dictionary<string, byte[]> FinalWeights(string outDir)
    {
        string final = Path.Combine(outDir, $"tiny_{Epochs:D4}.safetensors");
        Assert.True(File.Exists(final), $"{final} missing; have {string.Join(", ", Directory.GetFiles(outDir).Select(Path.GetFileName))}");
        using var st = SafeTensors.Open(final);
        return st.LoadAll().ToDictionary(kv => kv.Key, kv => { var b = kv.Value.bytes.ToArray(); kv.Value.Dispose(); return b; });
    }

    [Fact]
    public void Train_killed_at_random_moments_and_mid_save_resumes_to_bitwise_equal_final_weights()
    {
        using var dir = TestPaths.NewTempDir();
        string modelDir = dir.File("tiny-model");
        using (var m = DreamBoothTrainerTests.TinyModel()) m.SaveDiffusers(modelDir);
        var baseCfg = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with { PretrainedModel = modelDir, Epochs = Epochs, SaveEveryEpochs = 1 };

        string refOut = dir.File("reference");
        string refCfg = dir.File("reference.json");
        (baseCfg with { OutputDir = refOut }).Save(refCfg);
        var (code, err, elapsed) = KillHarness.Run(TimeSpan.FromMinutes(4), "train", "--config", refCfg);
        Assert.True(code == 0, err);
        var expected = FinalWeights(refOut);

        string outDir = dir.File("killed");
        string cfg = dir.File("killed.json");
        (baseCfg with { OutputDir = outDir }).Save(cfg);
        string[] Args() => File.Exists(Path.Combine(outDir, DreamBoothTrainer.StateFileName))
            ? ["train", "--resume", outDir] : ["train", "--config", cfg];

        int rounds = KillHarness.Rounds(3);
        var rng = new Random(17);
        int kills = 0, midSave = 0;
        for (int round = 0; kills < rounds && round < rounds * 3; round++)
        {
            bool atSave = round % 2 == 1;
            var delay = TimeSpan.FromSeconds((0.3 + 0.6 * rng.NextDouble()) * elapsed.TotalSeconds);
            var args = Args();
            string how = KillHarness.KillDuring(outDir, atSave, delay, elapsed * 3, args);
            output.WriteLine($"round {round}: {how} ({args[1]})");
            if (how.StartsWith("killed")) { kills++; if (how.Contains("mid-save")) midSave++; }
            else if (File.Exists(Path.Combine(outDir, $"tiny_{Epochs:D4}.safetensors")))
            {
                Directory.Delete(outDir, recursive: true); // finished first: start over so the next kill lands mid-run
                continue;
            }
            AssertEveryCheckpointLoads(outDir);
        }
        Assert.Equal(rounds, kills);

        (code, err, _) = KillHarness.Run(TimeSpan.FromMinutes(4), Args());
        Assert.True(code == 0, err);
        AssertEveryCheckpointLoads(outDir);
        var actual = FinalWeights(outDir);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (k, v) in expected) Assert.True(v.AsSpan().SequenceEqual(actual[k]), $"{k} differs from the uninterrupted run");
        int orphans = KillHarness.TempFiles(outDir).Count;
        output.WriteLine($"{kills} kills ({midSave} mid-save) survived; final weights bitwise equal; {orphans} orphaned temp files; 0 bytes lost");
        ReliabilityFigures.Record("kill", $"train: {kills} SIGKILLs ({midSave} mid-save) survived, --resume final weights bitwise equal to the uninterrupted run, {orphans} orphaned temp files, 0 bytes lost");
    }
}
