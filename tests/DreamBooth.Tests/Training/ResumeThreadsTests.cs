using DreamBooth.Checkpoints;
using DreamBooth.Data;
using DreamBooth.Runtime;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Toy;
using DreamBooth.Training;

namespace DreamBooth.Tests.Training;

/// <summary>
/// Resume determinism against the torch CPU thread count, on the embedded toy model: its tensors are big enough for
/// libtorch to split sums across threads (the tiny random model's are not, so it cannot show the effect). CPU sums are
/// deterministic for a fixed thread count and differ in the last bits between counts; a resumed run is therefore
/// bitwise equal to an uninterrupted one exactly when both use the same count, and `train --resume` uses the count
/// the run started with.
/// </summary>
[Collection(DreamBooth.Tests.Models.SerialModelTests.Name)]
public class ResumeThreadsTests
{
    const int Epochs = 2;   // 14 steps of the 7 toy instance images

    static async Task<TrainingConfig> ToyConfig(TempDir dir, string outName)
    {
        string inst = dir.File("instance");
        string cls = dir.File("class");
        if (!Directory.Exists(inst))
        {
            await DatasetPreparer.RunAsync(ToyAssets.SubjectDirectory, inst, new PrepareOptions
            {
                Size = new Bucket(32, 32), BucketMaxResolution = 32, BucketMinSide = 32, BucketStep = 32,
            });
            ToyWorld.WriteClassImages(cls, 14, 1234, 32);
        }
        var options = new ToyDemoOptions { OutputDir = dir.Path, Epochs = Epochs, SaveEveryEpochs = Epochs, ClassImagesPerInstance = 2 };
        return options.TrainingConfig(ToyAssets.CheckpointPath, inst, cls) with { OutputDir = dir.File(outName) };
    }

    /// <summary>The final save's tensors as bytes; the run folder is deleted (a toy run's saves and states are tens of MB).</summary>
    static Dictionary<string, byte[]> Final(TrainingConfig c)
    {
        Dictionary<string, byte[]> weights;
        using (var st = SafeTensors.Open(Path.Combine(c.OutputDir, $"{c.Name}_{Epochs:D4}.safetensors")))
            weights = st.LoadAll().ToDictionary(kv => kv.Key, kv => { var b = kv.Value.bytes.ToArray(); kv.Value.Dispose(); return b; });
        Directory.Delete(c.OutputDir, recursive: true);
        return weights;
    }

    /// <summary>Trains on this thread with <paramref name="threads"/> torch threads, optionally cancelled after a step.</summary>
    static void Train(TrainingConfig c, int threads, int cancelAfterStep = -1)
    {
        using var _ = TorchThreads.Use(threads);
        using var cts = new CancellationTokenSource();
        using var m = StableDiffusionModel.Load(c.PretrainedModel, ToyAssets.LoadOptions());
        using var t = new DreamBoothTrainer(c, m);
        var r = t.Run(new SyncProgress<TrainingEvent>(e => { if (e.Kind == TrainingEventKind.Step && e.Step == cancelAfterStep) cts.Cancel(); }), cts.Token);
        Assert.Equal(cancelAfterStep > 0, r.Cancelled);
    }

    static void Resume(TrainingConfig c, int threads)
    {
        using var _ = TorchThreads.Use(threads);
        using var m = StableDiffusionModel.Load(c.PretrainedModel, ToyAssets.LoadOptions());
        using var t = new DreamBoothTrainer(DreamBoothTrainer.ReadResumeConfig(c.OutputDir), m);
        t.LoadState(c.OutputDir);
        Assert.Equal(5, t.Step);
        t.Run();
    }

    static int Differing(Dictionary<string, byte[]> a, Dictionary<string, byte[]> b) =>
        a.Keys.Count(k => !a[k].AsSpan().SequenceEqual(b[k]));

    [Fact]
    public async Task Resume_is_bitwise_with_the_thread_count_of_the_original_run_and_differs_with_another()
    {
        using var dir = TestPaths.NewTempDir();
        var full1 = await ToyConfig(dir, "full1");
        Train(full1, 1);
        var full = new Dictionary<int, Dictionary<string, byte[]>> { [1] = Final(full1) };
        var full2 = await ToyConfig(dir, "full2");
        Train(full2, 2);
        full[2] = Final(full2);
        // the thread count changes the result: otherwise this test could not tell anything
        Assert.True(Differing(full[1], full[2]) > 0, "1 and 2 threads trained bitwise equal weights: the toy is too small to split sums");

        foreach (int n in new[] { 1, 2 })
        {
            var r = await ToyConfig(dir, $"resume{n}");
            Train(r, n, cancelAfterStep: 5);
            Resume(r, n);
            Assert.Equal(0, Differing(full[n], Final(r)));
        }
        var cross = await ToyConfig(dir, "resume1then2");
        Train(cross, 1, cancelAfterStep: 5);
        Resume(cross, 2);
        Assert.True(Differing(full[1], Final(cross)) > 0, "resumed with another thread count, yet bitwise equal");
    }

    /// <summary>A StringWriter that cancels once a written line matches (Ctrl+C at a known step).</summary>
    sealed class CancelOn(Func<string, bool> when, CancellationTokenSource cts) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value is not null && when(value)) cts.Cancel();
        }
    }

    [Fact]
    public async Task Train_resume_uses_the_thread_count_the_run_started_with()
    {
        using var dir = TestPaths.NewTempDir();
        // the run and the reference train with 1 thread
        var reference = await ToyConfig(dir, "reference");
        reference.Save(dir.File("reference.json"));
        var (code, stdout, err) = await Cli.CliTests.Run("train", "--config", dir.File("reference.json"), "--threads", "1");
        Assert.True(code == 0, err + stdout);
        var expected = Final(reference);

        var run = await ToyConfig(dir, "run");
        run.Save(dir.File("run.json"));
        using var cts = new CancellationTokenSource();
        var output = new CancelOn(line => line.StartsWith("step 5/", StringComparison.Ordinal), cts);
        code = await DreamBooth.Cli.CliApp.RunAsync(["train", "--config", dir.File("run.json"), "--threads", "1", "--log-every", "1"], output, new StringWriter(), cts.Token);
        Assert.Equal(0, code);
        Assert.Contains($"cancelled at step 5; resume with: dreambooth train --resume {run.OutputDir}", output.ToString());
        Assert.Equal(1, DreamBoothTrainer.ReadResumeThreads(run.OutputDir));

        // the process default is 2 threads here: a resume that took the default, not the run's count, would differ
        using (TorchThreads.Use(2))
            (code, stdout, err) = await Cli.CliTests.Run("train", "--resume", run.OutputDir);
        Assert.True(code == 0, err + stdout);
        Assert.Contains("resuming with 1 torch thread(s)", stdout);
        Assert.Equal(0, Differing(expected, Final(run)));
    }
}
