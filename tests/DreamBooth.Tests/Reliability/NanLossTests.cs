using DreamBooth.Checkpoints;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Training;
using DreamBooth.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Reliability;

/// <summary>A NaN that appears mid-run (after a good save) stops training naming the step, and the last good checkpoint stays intact and finite.</summary>
public class NanLossTests
{
    sealed class Sync(Action<TrainingEvent> a) : IProgress<TrainingEvent> { public void Report(TrainingEvent v) => a(v); }

    [Fact]
    public void Nan_after_the_first_save_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with { Epochs = 3, SaveEveryEpochs = 1 };
        using var m = DreamBoothTrainerTests.TinyModel();
        string? goodSave = null;
        byte[]? goodBytes = null;
        using var trainer = new DreamBoothTrainer(c, m);
        var e = Assert.Throws<DreamBoothException>(() => trainer.Run(new Sync(ev =>
        {
            if (ev.Kind == TrainingEventKind.Saved && goodSave is null && ev.Path!.EndsWith(".safetensors"))
            {
                goodSave = ev.Path;
                goodBytes = File.ReadAllBytes(goodSave);
                // inject: the next forward pass produces NaN
                using (torch.no_grad()) m.UNet.named_parameters().First(kv => kv.name == "conv_in.weight").parameter.fill_(float.NaN);
            }
        })));
        Assert.NotNull(goodSave);
        Assert.Matches(@"loss is NaN at step \d+ \(epoch 2\)", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(goodBytes, File.ReadAllBytes(goodSave!));
        using var st = SafeTensors.Open(goodSave!);
        foreach (var (k, t) in st.LoadAll())
        {
            Assert.True(t.to(ScalarType.Float32).isfinite().all().item<bool>(), k);
            t.Dispose();
        }
        // no later checkpoint holding the NaN weights was written
        Assert.DoesNotContain(Directory.GetFiles(c.OutputDir, "*.safetensors"), f => string.CompareOrdinal(Path.GetFileName(f), Path.GetFileName(goodSave)) > 0);
    }
}
