using DreamBooth.Checkpoints;
using DreamBooth.Schedulers;
using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

/// <summary>
/// The trainer's step (<see cref="DreamBoothStep"/>) driven directly, on the tiny models: the flattened Lion with its
/// device-side finite check against the per-tensor Lion, and what a non-finite step leaves behind.
/// </summary>
public class DreamBoothStepTests
{
    /// <summary>bf16 masters, both groups with weight decay and clipping that acts, EMA with warm-up (lerp weights on both sides of 0.5), accumulation 2.</summary>
    static TrainingConfig Config(string optimizer) => new()
    {
        MixedPrecision = "bf16", Optimizer = optimizer, LearningRate = 1e-3, TextEncoderLearningRate = 2e-3,
        WeightDecay = 0.1, TextEncoderWeightDecay = 0.3, MaxGradNorm = 0.01, TextEncoderMaxGradNorm = 0.02,
        UseEma = true, EmaDecay = 0.9, EmaWarmup = true, GradientCheckpointing = false, GradientAccumulationSteps = 2,
    };

    static DreamBoothStep NewStep(StableDiffusionModel m, TrainingConfig c, int total, int textEncoderSteps, Func<IReadOnlyList<ParamGroup>, TrainingOptimizer>? optimizer = null) =>
        new(c, m.UNet, m.TextEncoder, NoiseSchedule.FromConfigJson(m.SchedulerConfigJson), torch.CPU, total, textEncoderSteps, optimizer);

    /// <summary>Batch <paramref name="b"/> of step <paramref name="s"/>: batch 0 is an instance and a class sample (joint), batch 1 an instance sample.</summary>
    static StepInputs Inputs(int s, int b, bool nan = false)
    {
        var g = new Generator((ulong)(1000 + 10 * s + b));
        int n = b == 0 ? 2 : 1;
        var latents = torch.randn([n, 4, 8, 8], generator: g);
        if (nan) latents[0, 0, 0, 0].fill_(float.NaN);
        var ids = torch.randint(0, 49406, [n, 77], generator: g, dtype: ScalarType.Int64);
        return new StepInputs(latents, ids, ids, Instances: 1, Classes: n - 1);
    }

    static StepOutcome RunStep(DreamBoothStep step, int s, int index, bool nan = false)
    {
        using var scope = NewDisposeScope();
        var losses = new List<Tensor>();
        for (int b = 0; b < 2; b++)
            losses.Add(step.TrainStep(Inputs(s, b, nan && b == 0), priorWeight: 0.75, new Generator((ulong)(7 + s))));
        return step.OptimizerStep(index, losses);
    }

    static void AssertSame(DreamBoothStep a, StableDiffusionModel ma, DreamBoothStep b, StableDiffusionModel mb, string when)
    {
        foreach (var (x, y) in new[] { (a.UNetMasters, b.UNetMasters), (a.TextEncoderMasters, b.TextEncoderMasters) })
            for (int i = 0; i < x.Masters.Count; i++)
                Assert.True(x.Masters[i].BitEqual(y.Masters[i]), $"{when}: master {x.Names[i]} differs");
        foreach (var ((name, p), (_, q)) in ma.UNet.named_parameters().Concat(ma.TextEncoder.named_parameters())
                     .Zip(mb.UNet.named_parameters().Concat(mb.TextEncoder.named_parameters())))
            Assert.True(p.BitEqual(q), $"{when}: compute weight {name} differs");
        Assert.Equal(a.Ema!.Updates, b.Ema!.Updates);
        foreach (var (name, e) in a.Ema.Shadow) Assert.True(e.BitEqual(b.Ema.Shadow[name]), $"{when}: EMA {name} differs");
        var sa = a.Optimizer.StateDict();
        var sb = b.Optimizer.StateDict();
        Assert.Equal(sa.Keys.Order(), sb.Keys.Order());
        foreach (var (k, t) in sa) Assert.True(t.BitEqual(sb[k]), $"{when}: optimizer state {k} differs");
    }

    [Fact]
    public void The_flattened_lion_with_its_device_check_steps_bit_for_bit_like_the_per_tensor_lion()
    {
        // the recipe's optimizer as the trainer runs it (FlatLion, update and EMA conditional on the device-side check,
        // EMA one lerp over the flat UNet masters) against the per-tensor Lion read back before its update and a
        // per-tensor EMA: six steps of two batches, the text encoder frozen after three, every bit compared each step
        using var ma = DreamBoothTrainerTests.TinyModel();
        using var mb = DreamBoothTrainerTests.TinyModel();
        using var flat = NewStep(ma, Config("lion"), total: 6, textEncoderSteps: 3);
        using var perTensor = NewStep(mb, Config("lion"), total: 6, textEncoderSteps: 3, optimizer: groups => new Lion(groups));
        Assert.IsType<FlatLion>(flat.Optimizer);
        Assert.True(flat.Optimizer.CanSkipOnDevice);
        Assert.False(perTensor.Optimizer.CanSkipOnDevice);
        AssertSame(flat, ma, perTensor, mb, "before");
        bool clipped = false;
        for (int s = 0; s < 6; s++)
        {
            if (s == 3) { flat.FreezeTextEncoder(); perTensor.FreezeTextEncoder(); }
            var x = RunStep(flat, s, s);
            var y = RunStep(perTensor, s, s);
            Assert.True(x.Applied && y.Applied);
            Assert.Equal(y.Batches, x.Batches);
            Assert.True(double.IsFinite(x.Batches[0].Prior) && double.IsNaN(x.Batches[1].Prior));   // joint batch, then instances only
            Assert.Equal(y.GradNorm, x.GradNorm);
            Assert.Equal(y.TextEncoderGradNorm, x.TextEncoderGradNorm);
            clipped |= x.GradNorm > 0.01;
            AssertSame(flat, ma, perTensor, mb, $"step {s + 1}");
        }
        Assert.True(clipped, "the UNet clip never acted");
        Assert.DoesNotContain(flat.Optimizer.StateDict().Keys, k => k.StartsWith("text_encoder/"));
        // the EMA followed the flat buffer in one lerp, the reference per weight: the same bits either way
        Assert.Equal(6, flat.Ema!.FlatUpdates);
        Assert.Equal(0, perTensor.Ema!.FlatUpdates);
    }

    [Theory]
    [InlineData("lion")]    // conditional on the device
    [InlineData("adamw")]   // read back first, then not queued
    public void A_non_finite_step_changes_no_weight_moment_or_ema_and_does_not_count(string optimizer)
    {
        using var ma = DreamBoothTrainerTests.TinyModel();
        using var mb = DreamBoothTrainerTests.TinyModel();
        using var a = NewStep(ma, Config(optimizer), total: 4, textEncoderSteps: 4);
        using var b = NewStep(mb, Config(optimizer), total: 4, textEncoderSteps: 4);
        for (int s = 0; s < 2; s++) { RunStep(a, s, s); RunStep(b, s, s); }
        AssertSame(a, ma, b, mb, "after two steps");

        // a NaN in one latent: NaN loss and gradients. Nothing of it may reach a weight, a moment, the EMA or a counter
        var bad = RunStep(a, 2, index: 2, nan: true);
        Assert.False(bad.Applied);
        Assert.True(double.IsNaN(bad.Batches[0].Loss) && double.IsNaN(bad.GradNorm));
        Assert.True(double.IsFinite(bad.Batches[1].Loss));
        AssertSame(a, ma, b, mb, "after the NaN step");

        // and the next step (same index: a skipped step is not counted) is the one b takes without ever seeing it
        Assert.True(RunStep(a, 3, index: 2).Applied);
        Assert.True(RunStep(b, 3, index: 2).Applied);
        AssertSame(a, ma, b, mb, "after the step that followed");
    }
}

public class NoiseScheduleUploadTests
{
    [Fact]
    public void The_schedule_uploads_its_alphas_once_per_device_and_add_noise_still_follows_the_formula()
    {
        // a host → CUDA copy waits for the device's queue: the step's add_noise (and v-target) must reuse one upload
        var s = NoiseSchedule.StableDiffusion15.WithPredictionType(PredictionType.VPrediction);
        Assert.Same(s.AlphasCumprodOn(CPU), s.AlphasCumprodOn(CPU));
        var x0 = torch.randn(2, 4, 3, 3);
        var noise = torch.randn(2, 4, 3, 3);
        var t = torch.tensor(new long[] { 3, 800 });
        var first = s.AddNoise(x0, noise, t);
        var again = s.AddNoise(x0, noise, t);
        Assert.True(first.BitEqual(again));
        for (int i = 0; i < 2; i++)
        {
            double ac = s.AlphasCumprod[i == 0 ? 3 : 800];
            var expected = (x0[i].to(ScalarType.Float64) * Math.Sqrt(ac) + noise[i].to(ScalarType.Float64) * Math.Sqrt(1 - ac)).to(ScalarType.Float32);
            Assert.True((first[i] - expected).abs().max().item<float>() < 1e-6f);
        }
        Assert.True(s.Target(x0, noise, t).BitEqual(s.GetVelocity(x0, noise, t)));
        Assert.Same(s.AlphasCumprodOn(CPU), s.AlphasCumprodOn(CPU));
    }
}
