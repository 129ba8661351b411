using DreamBooth.Checkpoints;
using DreamBooth.Models.UNet;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Reliability;

/// <summary>Tests that count process-wide tensors and file handles run alone.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialResourceCollection { public const string Name = "serial resource counts"; }

/// <summary>
/// A 50-step CPU run of the DreamBooth step on the tiny UNet (noise → predict → MSE → backward → AdamW, with a
/// save every 10 steps) keeps the live tensor count and the open file handles flat; fp16 overflow from a scaled-up
/// loss is caught by the loss scaler (step skipped, scale halved, masters untouched) and training then proceeds.
/// </summary>
[Collection(SerialResourceCollection.Name)]
public class TrainingStepResourceTests(ITestOutputHelper output)
{
    static int OpenFileHandles() => Directory.GetFiles("/proc/self/fd").Length;

    static long SettledTensors()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return Tensor.TotalCount;
    }

    static double Step(UNet2DConditionModel unet, TrainingOptimizer opt, Generator g, double lossScale = 1.0, MasterWeights? masters = null, LossScaler? scaler = null)
    {
        using var scope = NewDisposeScope();
        var dtype = masters?.ComputeDtype ?? ScalarType.Float32;
        var latents = randn([2, 4, 8, 8], generator: g);
        var noise = randn([2, 4, 8, 8], generator: g);
        var t = randint(0, 1000, [2], generator: g, dtype: ScalarType.Int64);
        var text = randn([2, 77, 32], generator: g);
        var alpha = (1.0 - t.to(ScalarType.Float32) / 1000.0).view(-1, 1, 1, 1);
        var noisy = alpha.sqrt() * latents + (1 - alpha).sqrt() * noise;
        var pred = unet.forward(noisy.to(dtype), t, text.to(dtype));
        var loss = (pred.to(ScalarType.Float32) - noise).pow(2).mean();
        (loss * (scaler?.Scale ?? 1.0) * lossScale).backward();
        bool finite = masters?.CopyGradsToMasters(1.0 / (scaler?.Scale ?? 1.0)) ?? true;
        scaler?.Update(finite);
        if (finite) { opt.Step(); masters?.CopyMastersToModel(); }
        opt.ZeroGrad();
        return finite ? loss.item<float>() : double.NaN;
    }

    [Fact]
    public void Fifty_steps_with_saves_keep_live_tensors_and_file_handles_flat()
    {
        using var dir = TestPaths.NewTempDir();
        torch.manual_seed(3);
        using var unet = new UNet2DConditionModel(UNet2DConditionConfig.Tiny);
        unet.train();
        using var opt = new AdamW([new ParamGroup("unet", unet.parameters().Cast<Tensor>().ToList(), 1e-4, 0.01)]);
        var g = new Generator(5);
        long tensorsAt5 = 0; int fdsAt5 = 0;
        var tensors = new List<long>();
        for (int step = 1; step <= 50; step++)
        {
            Step(unet, opt, g);
            if (step % 10 == 0)
                SafeTensors.Save(Path.Combine(dir.Path, $"tiny-{step:D4}.safetensors"), unet.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value));
            if (step == 5) { tensorsAt5 = SettledTensors(); fdsAt5 = OpenFileHandles(); }
            if (step >= 5) tensors.Add(SettledTensors());
        }
        long tensorsAt50 = SettledTensors();
        int fdsAt50 = OpenFileHandles();
        output.WriteLine($"live tensors step 5: {tensorsAt5}, step 50: {tensorsAt50}; open fds {fdsAt5} → {fdsAt50}");
        ReliabilityFigures.Record("resources", $"50 tiny CPU steps + 5 saves: live tensors {tensorsAt5} → {tensorsAt50}, open file handles {fdsAt5} → {fdsAt50}");
        Assert.Equal(tensorsAt5, tensorsAt50);
        Assert.All(tensors, n => Assert.Equal(tensorsAt5, n));
        Assert.InRange(fdsAt50, 0, fdsAt5 + 2); // the runtime may open a descriptor of its own; saves must not leak one each
        foreach (var f in Directory.GetFiles(dir.Path))
        {
            using var st = SafeTensors.Open(f);
            Assert.Equal(unet.state_dict().Count, st.Keys.Count());
        }
    }

    [Fact]
    public void Fp16_overflow_from_a_scaled_up_loss_is_skipped_by_the_loss_scaler_and_training_recovers()
    {
        torch.manual_seed(4);
        using var unet = new UNet2DConditionModel(UNet2DConditionConfig.Tiny);
        unet.train();
        using var masters = new MasterWeights(unet, ScalarType.Float16);
        using var opt = new AdamW([new ParamGroup("unet", masters.Masters, 1e-3, 0.0)]);
        var scaler = new LossScaler(enabled: true, initialScale: 65536, growthInterval: 1000);
        var g = new Generator(6);
        var before = masters.Masters.Select(m => m.clone()).ToList();

        // a loss scaled far past fp16's range (65504): every gradient overflows, the step is skipped, the scale halves
        double scaleBefore = scaler.Scale;
        Assert.True(double.IsNaN(Step(unet, opt, g, lossScale: 1e8, masters: masters, scaler: scaler)));
        Assert.Equal(scaleBefore / 2, scaler.Scale);
        for (int i = 0; i < before.Count; i++) Assert.True(before[i].eq(masters.Masters[i]).all().item<bool>(), masters.Names[i]);
        Assert.All(unet.parameters(), p => Assert.True(p.grad is null || p.grad.abs().sum().item<float>() == 0));

        // with an ordinary loss the scaler finds a scale that fits and the masters move, with finite values
        int applied = 0;
        for (int i = 0; i < 30 && applied < 3; i++)
            if (!double.IsNaN(Step(unet, opt, g, masters: masters, scaler: scaler))) applied++;
        Assert.Equal(3, applied);
        Assert.Contains(Enumerable.Range(0, before.Count), i => !before[i].eq(masters.Masters[i]).all().item<bool>());
        Assert.All(masters.Masters, m => Assert.True(m.isfinite().all().item<bool>()));
        foreach (var b in before) b.Dispose();
    }
}

/// <summary>
/// The trainer's step (<see cref="DreamBoothStep"/>: bf16 masters, the flattened Lion that frees its gradient buffer
/// between steps, conditional update and EMA, one read) keeps the live tensor count flat over 30 steps, the text
/// encoder frozen half way.
/// </summary>
[Collection(SerialResourceCollection.Name)]
public class DreamBoothStepResourceTests
{
    [Fact]
    public void Thirty_trainer_steps_keep_live_tensors_flat()
    {
        using var m = DreamBooth.Tests.Training.DreamBoothTrainerTests.TinyModel();
        var config = new TrainingConfig { MixedPrecision = "bf16", UseEma = true, GradientCheckpointing = false, LearningRate = 1e-4 };
        using var step = new DreamBoothStep(config, m.UNet, m.TextEncoder, DreamBooth.Schedulers.NoiseSchedule.FromConfigJson(m.SchedulerConfigJson),
            torch.CPU, totalSteps: 30, textEncoderSteps: 15);
        var g = new Generator(9);
        using var ids = randint(0, 49406, [2, 77], generator: g, dtype: ScalarType.Int64);   // one prompt pair: the frozen TE's cache holds one entry
        long at5 = 0;
        var counts = new List<long>();
        for (int s = 0; s < 30; s++)
        {
            if (s == 15) step.FreezeTextEncoder();
            using (var scope = NewDisposeScope())
            {
                var latents = randn([2, 4, 8, 8], generator: g);
                var losses = step.TrainStep(new StepInputs(latents, ids, ids, 1, 1), 0.75, g);
                Assert.True(step.OptimizerStep(s, [losses]).Applied);
            }
            if (s == 16) at5 = Settled();   // after the freeze, once its text embeddings are cached
            if (s > 16) counts.Add(Settled());
        }
        Assert.All(counts, n => Assert.Equal(at5, n));
    }

    static long Settled()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return Tensor.TotalCount;
    }
}
