using System.Diagnostics;
using System.Text.Json.Nodes;
using DreamBooth.Checkpoints;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Reliability;
using DreamBooth.Training;
using TorchSharp;
using static TorchSharp.torch;
using Xunit.Abstractions;

namespace DreamBooth.Tests.Training;

/// <summary>
/// What a run leaves on disk (issue 15 point 1): fp16 checkpoints by default, every checkpoint kept, only the newest
/// training state kept, and the preflight's arithmetic, checked against real files and a volume too small for the run.
/// </summary>
public class DiskAndSaveTests(ITestOutputHelper output)
{
    sealed class Sync(Action<TrainingEvent> a) : IProgress<TrainingEvent> { public void Report(TrainingEvent v) => a(v); }

    static TrainingConfig Config(TempDir dir, bool prior = true) =>
        DreamBoothTrainerTests.TinyConfig(dir, prior) with { Epochs = 3, SaveEveryEpochs = 1, TextEncoderStepRatio = 0.5, UseEma = true };

    [Fact]
    public void Checkpoints_are_fp16_by_default_every_one_is_kept_and_only_the_newest_training_state()
    {
        using var dir = TestPaths.NewTempDir();
        var c = Config(dir);
        Assert.Equal("fp16", new TrainingConfig().SaveDtype);
        using (var m = DreamBoothTrainerTests.TinyModel())
        using (var t = new DreamBoothTrainer(c, m)) t.Run();
        Assert.Equal(["tiny_0001.safetensors", "tiny_0002.safetensors", "tiny_0003.safetensors"],
            Directory.GetFiles(c.OutputDir, "*.safetensors").Select(Path.GetFileName).Order());
        using (var f = SafeTensors.Open(Path.Combine(c.OutputDir, "tiny_0002.safetensors")))
        {
            var floats = f.Tensors.Where(i => i.DType is "F16" or "BF16" or "F32").ToList();
            Assert.NotEmpty(floats);
            Assert.All(floats, i => Assert.Equal("F16", i.DType));
        }
        Assert.Equal(["tiny_0003.state"], Directory.GetFiles(c.OutputDir, "*.state").Select(Path.GetFileName));
        var pointer = JsonNode.Parse(File.ReadAllText(Path.Combine(c.OutputDir, DreamBoothTrainer.StateFileName)))!;
        Assert.Equal("tiny_0003.state", pointer["state"]!.GetValue<string>());
        Assert.Empty(Directory.GetFiles(c.OutputDir, ".*.tmp"));
    }

    [Theory]
    [InlineData("bf16", "BF16")]
    [InlineData("fp32", "F32")]
    public void Save_dtype_is_the_checkpoints_float_dtype(string saveDtype, string stored)
    {
        using var dir = TestPaths.NewTempDir();
        var c = Config(dir, prior: false) with { Epochs = 1, SaveDtype = saveDtype };
        using (var m = DreamBoothTrainerTests.TinyModel())
        using (var t = new DreamBoothTrainer(c, m)) t.Run();
        using var f = SafeTensors.Open(Path.Combine(c.OutputDir, "tiny_0001.safetensors"));
        Assert.All(f.Tensors.Where(i => i.DType is "F16" or "BF16" or "F32"), i => Assert.Equal(stored, i.DType));
        // "" no longer means anything: the doc used to say "the base model's dtype" while it saved fp32
        Assert.Contains("save_dtype = \"\" is not one of: fp16, bf16, fp32", (c with { SaveDtype = "" }).Validate(checkFolders: false));
    }

    [Fact]
    public void Keep_training_states_keeps_the_newest_n_and_zero_keeps_all()
    {
        using var dir = TestPaths.NewTempDir();
        var c = Config(dir, prior: false) with { KeepTrainingStates = 2 };
        using (var m = DreamBoothTrainerTests.TinyModel())
        using (var t = new DreamBoothTrainer(c, m)) t.Run();
        Assert.Equal(["tiny_0002.state", "tiny_0003.state"], Directory.GetFiles(c.OutputDir, "*.state").Select(Path.GetFileName).Order());

        using var dir2 = TestPaths.NewTempDir();
        var all = Config(dir2, prior: false) with { KeepTrainingStates = 0 };
        using (var m = DreamBoothTrainerTests.TinyModel())
        using (var t = new DreamBoothTrainer(all, m)) t.Run();
        Assert.Equal(3, Directory.GetFiles(all.OutputDir, "*.state").Length);
        Assert.Contains("keep_training_states = -1 is out of range", string.Join(";", (all with { KeepTrainingStates = -1 }).Validate(checkFolders: false)));
    }

    [Fact]
    public void A_state_written_after_the_pointer_was_last_switched_is_removed_by_the_next_save_and_resume_still_works()
    {
        // a crash after a new state was renamed into place but before the pointer switched leaves an orphan newer than
        // the pointer: resuming from the pointer's state must train on, and the orphan must go at the next save
        using var dir = TestPaths.NewTempDir();
        var c = Config(dir, prior: false) with { Epochs = 4 };
        using var cts = new CancellationTokenSource();
        using (var m = DreamBoothTrainerTests.TinyModel())
        using (var t = new DreamBoothTrainer(c, m))
            t.Run(new Sync(e => { if (e.Kind == TrainingEventKind.Saved && e.Epoch == 2) cts.Cancel(); }), cts.Token);
        Assert.Equal(["tiny_0002.state"], Directory.GetFiles(c.OutputDir, "*.state").Select(Path.GetFileName));
        File.Copy(Path.Combine(c.OutputDir, "tiny_0002.state"), Path.Combine(c.OutputDir, "tiny_0003.state"));   // the orphan
        using (var m = DreamBoothTrainerTests.TinyModel())
        using (var t = new DreamBoothTrainer(DreamBoothTrainer.ReadResumeConfig(c.OutputDir), m))
        {
            t.LoadState(c.OutputDir);
            Assert.Equal(2, t.Step / t.StepsPerEpoch);
            Assert.Equal(4 * t.StepsPerEpoch, t.Run().Steps);
        }
        Assert.Equal(["tiny_0004.state"], Directory.GetFiles(c.OutputDir, "*.state").Select(Path.GetFileName));
    }

    [Fact]
    public void Disk_arithmetic_matches_the_files_a_run_writes()
    {
        using var dir = TestPaths.NewTempDir();
        var c = Config(dir) with { KeepTrainingStates = 0, SaveEmaWeights = true };
        using var m = DreamBoothTrainerTests.TinyModel();
        var messages = new List<string>();
        DiskPlan plan;
        using (var t = new DreamBoothTrainer(c, m, setupProgress: new Sync(e => messages.Add(e.Message ?? ""))))
        {
            plan = t.DiskPlan;
            t.Run();
        }
        output.WriteLine(plan.ToString());
        Assert.Contains(messages, s => s.StartsWith("disk: what the run writes") && s.Contains("checkpoints") && s.Contains("training states"));
        var footprint = ModelFootprint.Of(m);

        // each checkpoint and each state is within 2 % of the prediction
        var ckpt = new FileInfo(Path.Combine(c.OutputDir, "tiny_0002.safetensors")).Length;
        Assert.InRange(footprint.CheckpointBytes(torch.ScalarType.Float16), ckpt, ckpt * 1.02 + 8192);
        var item = plan.Items.Single(i => i.What == "checkpoints");
        Assert.Equal(6, item.Count);   // 3 saves × (checkpoint + _ema)
        var states = Directory.GetFiles(c.OutputDir, "*.state").Select(f => new FileInfo(f).Length).ToList();
        var stateItem = plan.Items.Single(i => i.What == "training states");
        Assert.Equal(3, stateItem.Count);
        // the prediction is the state with the text encoder still training (the first state; later ones drop its moments)
        Assert.InRange(stateItem.BytesEach, states.Max(), states.Max() * 1.02 + 4096);

        // the latent cache: 2 instance + 2 class images, one flip each
        long cache = Directory.GetFiles(Path.Combine(c.OutputDir, "latent_cache"), "*.latent").Sum(f => new FileInfo(f).Length);
        Assert.InRange(plan.Items.Single(i => i.What == "latent cache").Bytes, cache, cache * 1.02 + 1024);
        // and the whole run: everything it wrote is covered
        long written = Directory.EnumerateFiles(c.OutputDir, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.True(plan.NeededBytes >= written * 0.95, $"predicted {plan.NeededBytes}, written {written}");
    }

    [Fact]
    public void The_recipe_arithmetic_for_sd15_sizes_is_what_the_docs_say()
    {
        // SD1.5's counts (UNet 859,520,964, text encoder 123,060,480, VAE 83,653,863) with the recipe:
        // 15 photos at 768x1024, 100 class images each, 200 epochs, a save every 10 → 20 fp16 checkpoints of 2.13 GB
        var sd15 = SdFootprint();
        var c = new TrainingConfig { OutputDir = "/nonexistent-out", Concepts = [new ConceptConfig { InstanceDir = "i", ClassDir = "c" }] };
        var need = new ClassImageNeed(0, "/nonexistent-class", 15, 100, 0, 0, true, [new ClassImageBucket(768, 1024, 15, 1500)]);
        var plan = DiskPlan.For(c, sd15, [need], freeSpace: _ => new VolumeSpace("/v", 200_000_000_000));
        var checkpoints = plan.Items.Single(i => i.What == "checkpoints");
        Assert.Equal(20, checkpoints.Count);
        Assert.InRange(checkpoints.BytesEach, 2_130_000_000, 2_140_000_000);
        var states = plan.Items.Single(i => i.What == "training states");
        Assert.Equal(2, states.Count);   // the kept one + the next while it is written
        // masters 4 B × 0.98 G (UNet + TE) + Lion 4 B × 0.98 G (both train) + EMA 4 B × 0.86 G (UNet) = 11.3 GB
        Assert.InRange(states.BytesEach, 11_298_000_000, 11_300_000_000);
        Assert.InRange(plan.Items.Single(i => i.What == "latent cache").Bytes, 590_000_000, 600_000_000);   // 1515 × 393 KB
        Assert.InRange(plan.Items.Single(i => i.What.StartsWith("class images")).Bytes, 3_530_000_000, 3_550_000_000);   // 1500 × 2.36 MB bound
        Assert.True(plan.Fits);
        output.WriteLine(plan.ToString());
    }

    static ModelFootprint SdFootprint() => ModelFootprint.StableDiffusion15;

    [Fact]
    public void Preflight_refuses_what_cannot_fit_naming_the_volume_and_the_arithmetic()
    {
        var sd15 = SdFootprint();
        var c = new TrainingConfig { OutputDir = "/nonexistent-out", Concepts = [new ConceptConfig { InstanceDir = "i", ClassDir = "c" }] };
        var need = new ClassImageNeed(0, "/nonexistent-class", 15, 100, 1500, 0, true, [new ClassImageBucket(768, 1024, 15, 0)]);
        var plan = DiskPlan.For(c, sd15, [need], freeSpace: _ => new VolumeSpace("/small", 40_000_000_000));
        Assert.False(plan.Fits);   // 20 × 2.13 + 2 × 11.3 + 0.6 ≈ 65.9 GB
        var e = Assert.Throws<DreamBoothException>(plan.ThrowIfItDoesNotFit);
        output.WriteLine(e.Message);
        Assert.Matches(@"^output_dir: the run needs 65\.\d\d GB on /small but only 40\.00 GB is free \(checkpoints 42\.65 GB \+ training states 22\.60 GB \+ latent cache 595\.\d MB \+ logs 3\.1 MB\)", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        // a resume from epoch 150 only writes the 5 saves ahead
        var resume = DiskPlan.For(c, sd15, [need], fromEpoch: 150, freeSpace: _ => new VolumeSpace("/small", 40_000_000_000));
        Assert.Equal(5, resume.Items.Single(i => i.What == "checkpoints").Count);
        Assert.True(resume.Fits);
        // keeping fewer checkpoints and fp32 change the arithmetic as they say
        Assert.Equal(3, DiskPlan.For(c with { KeepLastSaves = 2 }, sd15, [need], freeSpace: _ => null).Items.Single(i => i.What == "checkpoints").Count);
        Assert.InRange(DiskPlan.For(c with { SaveDtype = "fp32" }, sd15, [need], freeSpace: _ => null).Items.Single(i => i.What == "checkpoints").BytesEach, 4_260_000_000, 4_270_000_000);
    }

    [Fact]
    public void Cli_train_on_a_volume_too_small_exits_2_before_writing_anything()
    {
        using var dir = TestPaths.NewTempDir();
        string modelDir = dir.File("tiny-model");
        using (var m = DreamBoothTrainerTests.TinyModel()) m.SaveDiffusers(modelDir);
        string mnt = dir.File("mnt");
        Directory.CreateDirectory(mnt);
        var cfg = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with { PretrainedModel = modelDir, Epochs = 20, SaveEveryEpochs = 1, SaveDtype = "fp32", OutputDir = Path.Combine(mnt, "out") };
        string cfgPath = dir.File("cfg.json");
        cfg.Save(cfgPath);
        if (!Mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt))
        {
            output.WriteLine("tmpfs cannot be mounted here (not root or no CAP_SYS_ADMIN): covered by the injected free-space test only");
            return;
        }
        try
        {
            var (code, err, _) = KillHarness.Run(TimeSpan.FromMinutes(3), "train", "--config", cfgPath);
            output.WriteLine(err);
            Assert.Equal(2, code);
            Assert.Contains("output_dir: the run needs", err);
            Assert.Contains("free", err);
            Assert.Empty(Directory.GetFileSystemEntries(mnt));   // nothing written
        }
        finally
        {
            Mount("-u", mnt);
        }
    }

    static bool Mount(params string[] args)
    {
        bool unmount = args[0] == "-u";
        try
        {
            using var p = Process.Start(new ProcessStartInfo(unmount ? "umount" : "mount", unmount ? args[1..] : args) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }
}

/// <summary>The SD1.5 footprint constant against the architecture itself, built on the meta device (shapes only, no memory).</summary>
[Collection(DreamBooth.Tests.Models.SerialModelTests.Name)]
public class ModelFootprintTests
{
    [Fact]
    public void Sd15_footprint_constant_is_the_architectures()
    {
        var previous = torch.get_default_device();
        torch.set_default_device(new torch.Device(DeviceType.META));
        ModelFootprint real;
        try
        {
            using var te = new DreamBooth.Models.Clip.CLIPTextModel(DreamBooth.Models.Clip.CLIPTextConfig.StableDiffusion15);
            using var unet = new DreamBooth.Models.UNet.UNet2DConditionModel(DreamBooth.Models.UNet.UNet2DConditionConfig.StableDiffusion15);
            using var vae = new DreamBooth.Models.Vae.AutoencoderKL(DreamBooth.Models.Vae.AutoencoderKLConfig.StableDiffusion15);
            real = ModelFootprint.Of(te, unet, vae);
        }
        finally { torch.set_default_device(previous); }
        var k = ModelFootprint.StableDiffusion15;
        Assert.Equal((real.UNetFloats, real.TextEncoderFloats, real.VaeFloats, real.OtherBytes, real.Tensors, real.NameBytes),
                     (k.UNetFloats, k.TextEncoderFloats, k.VaeFloats, k.OtherBytes, k.Tensors, k.NameBytes));
        Assert.Equal((real.UNetParameters.Sum(), real.TextEncoderParameters.Sum(), real.LatentChannels, real.VaeDownsampleFactor),
                     (k.UNetParameters.Sum(), k.TextEncoderParameters.Sum(), k.LatentChannels, k.VaeDownsampleFactor));
        foreach (var o in TrainingConfig.Optimizers)
            Assert.InRange(k.StateBytes(o, true, true, true), real.StateBytes(o, true, true, true) * 0.999, real.StateBytes(o, true, true, true) * 1.001);
        Assert.Equal(real.CheckpointBytes(torch.ScalarType.Float16), k.CheckpointBytes(torch.ScalarType.Float16));
    }
}
