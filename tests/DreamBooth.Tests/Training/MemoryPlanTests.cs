using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Models;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

/// <summary>
/// The memory arithmetic (<see cref="MemoryPlan"/>, docs/memory.md): each counted part against the tensors a tiny run
/// really holds, and against the full SD 1.5 architecture built on the meta device; the docs' table is the plan's.
/// </summary>
public class MemoryPlanTests(ITestOutputHelper output)
{
    sealed class Sync(Action<TrainingEvent> a) : IProgress<TrainingEvent> { public void Report(TrainingEvent v) => a(v); }

    static long Bytes(IEnumerable<Tensor> ts) => ts.Sum(t => t.NumberOfElements * t.ElementSize);

    static long Item(MemoryPlan p, string what) => p.Items.Single(i => i.What == what).Bytes;

    /// <summary>Bytes of the optimizer's momentum (what a state file stores; FlatLion's gradient buffer and scratch are a step's, not the state's).</summary>
    static long Momentum(DreamBooth.Training.Optimizers.TrainingOptimizer o)
    {
        var d = o.StateDict(copy: false);
        try { return d.Where(kv => kv.Key.EndsWith("/exp_avg", StringComparison.Ordinal)).Sum(kv => kv.Value.NumberOfElements * kv.Value.ElementSize); }
        finally { foreach (var t in d.Values) t.Dispose(); }
    }

    [Fact]
    public void Each_counted_part_is_the_bytes_of_the_tensors_a_tiny_run_holds()
    {
        using var dir = TestPaths.NewTempDir();
        // the recipe's precision, optimizer and EMA on the tiny model; the text encoder trains throughout so its
        // optimizer state is still there at the end
        var config = DreamBoothTrainerTests.TinyConfig(dir) with { MixedPrecision = "bf16", Optimizer = "lion", UseEma = true, TextEncoderStepRatio = 1.0, Epochs = 1 };
        using var model = DreamBoothTrainerTests.TinyModel();
        var plan = MemoryPlan.For(config, ModelFootprint.Of(model), 64, 64, images: 4, cuda: false);
        output.WriteLine(plan.ToString());
        using var trainer = new DreamBoothTrainer(config, model);
        string? saved = null;
        trainer.Run(new Sync(e => { if (e.Kind == TrainingEventKind.Saved) saved = e.Path; }));

        Assert.Equal(Bytes(model.UNet.parameters()), Item(plan, "UNet weights"));          // bf16 compute copy
        Assert.Equal(ScalarType.BFloat16, model.UNet.parameters().First().dtype);
        Assert.Equal(Bytes(model.TextEncoder.parameters()), Item(plan, "text encoder weights"));
        Assert.Equal(Bytes(model.Vae.state_dict().Values.Where(t => t.is_floating_point())), Item(plan, "VAE weights"));
        // every weight of both trains here, so the optimizer's parameters are all the fp32 masters
        var masters = trainer.Optimizer.Groups.SelectMany(g => g.Params).ToList();
        Assert.All(masters, m => Assert.Equal(ScalarType.Float32, m.dtype));
        Assert.Equal(Bytes(masters), Item(plan, "fp32 masters"));
        Assert.Equal(Momentum(trainer.Optimizer), Item(plan, "lion state"));
        Assert.DoesNotContain(plan.Items, i => i.What == "resume: optimizer state read" && i.Bytes > 0);   // read straight into the flat momentum
        Assert.True(TrainingOptimizer.ReadsStateInPlace(config.Optimizer));
        foreach (var name in new[] { "adamw", "adamw8bit" })
        {
            Assert.False(TrainingOptimizer.ReadsStateInPlace(name));
            using var other = TrainingOptimizer.Create(name, [new ParamGroup("g", [torch.zeros(3).requires_grad_(true)], 1e-3, 0.0)]);
            Assert.Empty(other.StateTargets());
        }
        Assert.Equal(Bytes(trainer.Ema!.Shadow.Values), Item(plan, "EMA"));
        Assert.Equal(trainer.LatentCache!.Bytes, Item(plan, "latent cache"));   // 2 photos + 2 class images
        // a save gathers every float tensor in save_dtype (fp16): the checkpoint's float data
        using var file = SafeTensors.Open(saved!);
        Assert.Equal(file.Tensors.Where(t => t.ScalarType == ScalarType.Float16).Sum(t => t.ByteLength), Item(plan, "save: checkpoint tensors"));
        // the optimizer's fp32 gradients: one per trained weight
        long largest = masters.Max(m => m.NumberOfElements);
        Assert.Equal(4 * masters.Sum(m => m.NumberOfElements) + 2 * largest + 3 * 4 * largest, Item(plan, "fp32 gradients + update temporaries"));
    }

    [Fact]
    public void Once_the_text_encoder_is_frozen_its_optimizer_state_and_gradients_are_not_counted()
    {
        using var dir = TestPaths.NewTempDir();
        // the text encoder trains for the first half of the steps, then its optimizer state is dropped
        var config = DreamBoothTrainerTests.TinyConfig(dir) with { MixedPrecision = "bf16", Optimizer = "lion", UseEma = true, TextEncoderStepRatio = 0.5, Epochs = 1 };
        using var model = DreamBoothTrainerTests.TinyModel();
        var footprint = ModelFootprint.Of(model);
        var frozen = MemoryPlan.For(config, footprint, 64, 64, images: 4, cuda: false, textEncoderTraining: false);
        var training = MemoryPlan.For(config, footprint, 64, 64, images: 4, cuda: false, textEncoderTraining: true);
        using var trainer = new DreamBoothTrainer(config, model);
        trainer.Run(null);
        long unet = footprint.UNetParameters.Sum(), te = footprint.TextEncoderParameters.Sum();
        Assert.Equal(Momentum(trainer.Optimizer), Item(frozen, "lion state"));       // the UNet's momentum only
        Assert.Equal(4 * unet, Item(frozen, "lion state"));
        Assert.Equal(4 * te, Item(training, "lion state") - Item(frozen, "lion state"));
        Assert.Equal(4 * te, Item(training, "fp32 gradients + update temporaries") - Item(frozen, "fp32 gradients + update temporaries")
                             - 14 * (Math.Max(footprint.LargestUNetParameter, footprint.LargestTextEncoderParameter) - footprint.LargestUNetParameter));
        // the masters stay (saves read them), so the resident weights do not change
        Assert.Equal(Item(training, "fp32 masters"), Item(frozen, "fp32 masters"));
    }

    [Fact]
    public void Ema_on_the_cpu_and_fp32_compute_move_and_drop_what_they_say()
    {
        var recipe = new TrainingConfig { Concepts = [new ConceptConfig { InstanceDir = "i", ClassDir = "c" }] };
        var sd = ModelFootprint.StableDiffusion15;
        var gpu = MemoryPlan.For(recipe, sd, 768, 1024, 1515, cuda: true);
        var emaCpu = MemoryPlan.For(recipe with { EmaDevice = "cpu" }, sd, 768, 1024, 1515, cuda: true);
        Assert.Equal(MemoryPlace.Device, gpu.Items.Single(i => i.What == "EMA").Where);
        Assert.Equal(MemoryPlace.Host, emaCpu.Items.Single(i => i.What == "EMA").Where);
        Assert.Equal(4L * 859_520_964, gpu.ResidentBytes - emaCpu.ResidentBytes);
        // fp32 compute: the weights are the masters (no copy), activations double
        var fp32 = MemoryPlan.For(recipe with { MixedPrecision = "no" }, sd, 768, 1024, 1515, cuda: true);
        Assert.DoesNotContain(fp32.Items, i => i.What == "fp32 masters");
        Assert.Equal(4L * 859_520_964, Item(fp32, "UNet weights"));
        // joint stepping: 2 samples a forward; alternate: 1
        Assert.Equal(1, gpu.SamplesPerStep);
        Assert.Equal(2, MemoryPlan.For(recipe with { PriorStepping = "joint" }, sd, 768, 1024, 1515, cuda: true).SamplesPerStep);
        // activations grow with the image area, and gradient checkpointing shrinks them
        long Backward(MemoryPlan p) => p.Items.Single(i => i.Phase == MemoryPhase.Backward).Bytes;
        var noGc = recipe with { GradientCheckpointing = false, PriorStepping = "joint" };
        Assert.True(Backward(MemoryPlan.For(noGc, sd, 768, 1024, 1515, true)) > Backward(MemoryPlan.For(noGc, sd, 512, 512, 1515, true)));
        Assert.True(Backward(MemoryPlan.For(noGc, sd, 768, 1024, 1515, true)) > Backward(MemoryPlan.For(noGc with { GradientCheckpointing = true }, sd, 768, 1024, 1515, true)));
        // another architecture: weights counted, activations not predicted (measured for SD 1.5 only)
        using var tiny = DreamBoothTrainerTests.TinyModel();
        Assert.False(MemoryPlan.For(recipe, ModelFootprint.Of(tiny), 64, 64, 4, cuda: false).ActivationsKnown);
    }

    [Fact]
    public void The_sd15_parts_are_the_architectures_tensors_built_on_the_meta_device()
    {
        ModelFootprint meta;
        long unet, te, vae, largestUnet, largestTe;
        using (Layers.OnMeta())
        {
            using var t = new CLIPTextModel(CLIPTextConfig.StableDiffusion15);
            using var u = new UNet2DConditionModel(UNet2DConditionConfig.StableDiffusion15);
            using var v = new AutoencoderKL(AutoencoderKLConfig.StableDiffusion15);
            Assert.Equal(DeviceType.META, u.parameters().First().device_type);
            meta = ModelFootprint.Of(t, u, v);
            unet = u.parameters().Sum(p => p.NumberOfElements);
            te = t.parameters().Sum(p => p.NumberOfElements);
            vae = v.state_dict().Values.Where(x => x.is_floating_point()).Sum(x => x.NumberOfElements);
            largestUnet = u.parameters().Max(p => p.NumberOfElements);
            largestTe = t.parameters().Max(p => p.NumberOfElements);
        }
        Assert.Equal((largestUnet, largestTe), (ModelFootprint.StableDiffusion15.LargestUNetParameter, ModelFootprint.StableDiffusion15.LargestTextEncoderParameter));
        var recipe = new TrainingConfig { Concepts = [new ConceptConfig { InstanceDir = "i", ClassDir = "c" }] };
        foreach (var cuda in new[] { true, false })
        {
            var fromMeta = MemoryPlan.For(recipe, meta, 768, 1024, 1515, cuda);
            var fromConstant = MemoryPlan.For(recipe, ModelFootprint.StableDiffusion15, 768, 1024, 1515, cuda);
            Assert.Equal(fromMeta.Items.Select(i => (i.What, i.Bytes)), fromConstant.Items.Select(i => (i.What, i.Bytes)));
            Assert.Equal(2 * unet, Item(fromMeta, "UNet weights"));                // bf16
            Assert.Equal(2 * te, Item(fromMeta, "text encoder weights"));
            Assert.Equal(4 * vae, Item(fromMeta, "VAE weights"));
            Assert.Equal(4 * (unet + te), Item(fromMeta, "fp32 masters"));
            Assert.Equal(4 * (unet + te), Item(fromMeta, "lion state"));           // both train at the start
            Assert.Equal(4 * unet, Item(fromMeta, "EMA"));
            Assert.Equal(1515 * (2L * 4 * 4 * 96 * 128), Item(fromMeta, "latent cache"));   // mean + std fp32 at 96×128
        }
    }

    [Fact]
    public void The_look_up_table_in_docs_memory_md_is_the_plans()
    {
        string table = MemoryPlan.Table(ModelFootprint.StableDiffusion15);
        output.WriteLine(table);
        string doc = File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "docs", "memory.md")).ReplaceLineEndings("\n");
        Assert.True(doc.Contains(table, StringComparison.Ordinal), "docs/memory.md's table differs from MemoryPlan.Table(ModelFootprint.StableDiffusion15); paste the output above");
    }

    [Fact]
    public void The_memory_log_has_a_line_per_phase_with_the_peak()
    {
        using var dir = TestPaths.NewTempDir();
        var config = DreamBoothTrainerTests.TinyConfig(dir) with { Epochs = 2, SaveEveryEpochs = 1 };
        using var model = DreamBoothTrainerTests.TinyModel();
        string log = dir.File("memory.jsonl");
        using (var memory = new PhaseMemoryLog(log))
        {
            memory.Mark(PhaseMemoryLog.Load);
            using var trainer = new DreamBoothTrainer(config, model);
            memory.Mark(PhaseMemoryLog.Setup);
            trainer.Run(memory.Wrap(null));
        }
        var lines = File.ReadAllLines(log).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
        var phases = lines.Select(l => l.GetProperty("phase").GetString()).ToList();
        output.WriteLine(string.Join(", ", phases));
        // 2 photos with their class images, alternate steps: 4 steps an epoch, a save after each epoch
        Assert.Equal(["load", "setup", "first_step", "step", "step", "step", "save", "step", "step", "step", "step", "save", "end"], phases);
        Assert.Equal([1, 2, 3, 4, 4, 5, 6, 7, 8, 8, 8], lines.Skip(2).Select(l => l.GetProperty("step").GetInt32()));
        Assert.All(lines, l => Assert.True(l.GetProperty("peak_rss_bytes").GetInt64() >= l.GetProperty("rss_bytes").GetInt64() - (4 << 20) && l.GetProperty("peak_rss_bytes").GetInt64() > 0));
        Assert.All(lines, l => Assert.True(l.GetProperty("peak_since_last_line").GetBoolean()));
    }
}
