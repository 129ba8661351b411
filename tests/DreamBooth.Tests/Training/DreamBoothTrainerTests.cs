using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Text;
using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

/// <summary>The loop on the tiny random model (CPU): every test runs a few steps of 64×64 images.</summary>
public class DreamBoothTrainerTests
{
    static readonly Lazy<ClipTokenizer> Tokenizer = new(() => ClipTokenizer.FromBpeGz(TestPaths.ClipBpeGz));

    static readonly object TinyGate = new();
    static readonly Dictionary<long, Dictionary<string, Tensor>> TinyWeights = new();

    /// <summary>
    /// The tiny random model of <paramref name="seed"/>, bit-identical on every call: the first call's weights are
    /// kept and copied into later instances (random init draws from torch's global generator, which tests in
    /// other classes use at the same time).
    /// </summary>
    internal static StableDiffusionModel TinyModel(long seed = 1)
    {
        lock (TinyGate)
        {
            var m = StableDiffusionModel.CreateRandom(CLIPTextConfig.Tiny, UNet2DConditionConfig.Tiny, AutoencoderKLConfig.Tiny, Tokenizer.Value, seed);
            var parts = new (string Prefix, nn.Module Module)[] { ("te.", m.TextEncoder), ("unet.", m.UNet), ("vae.", m.Vae) };
            using (torch.no_grad())
            {
                if (!TinyWeights.TryGetValue(seed, out var w))
                {
                    TinyWeights[seed] = parts.SelectMany(p => p.Module.state_dict().Select(kv => (p.Prefix + kv.Key, kv.Value.detach().clone().DetachFromDisposeScope())))
                        .ToDictionary(x => x.Item1, x => x.Item2);
                }
                else
                {
                    foreach (var (prefix, module) in parts)
                        foreach (var (k, v) in module.state_dict()) v.copy_(w[prefix + k]);
                }
            }
            return m;
        }
    }

    static void WriteImage(string path, int w, int h, int seed)
    {
        var rnd = new Random(seed);
        using var img = new Image<Rgb24>(w, h);
        byte r = (byte)rnd.Next(256), g = (byte)rnd.Next(256), b = (byte)rnd.Next(256);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                img[x, y] = new Rgb24((byte)(r + x * 2), (byte)(g + y * 3), (byte)(b ^ (x * y)));
        img.SaveAsPng(path);
    }

    /// <summary>Two 64×64 instance images (with .txt captions) and two class images; a fast fp32 config.</summary>
    internal static TrainingConfig TinyConfig(TempDir dir, bool prior = true)
    {
        var inst = Directory.CreateDirectory(dir.File("inst")).FullName;
        var cls = Directory.CreateDirectory(dir.File("class")).FullName;
        for (int i = 0; i < 2; i++)
        {
            WriteImage(Path.Combine(inst, $"i{i}.png"), 64, 64, i);
            File.WriteAllText(Path.Combine(inst, $"i{i}.txt"), $"photo, smiling, outdoors, tag{i}");
            WriteImage(Path.Combine(cls, $"c{i}.png"), 64, 64, 100 + i);
        }
        return new TrainingConfig
        {
            PretrainedModel = "tiny-random",
            OutputDir = dir.File("out"),
            Name = "tiny",
            Concepts = [new ConceptConfig { InstanceDir = inst, InstancePrompt = "ohwx man, [filewords]", ClassDir = prior ? cls : "", GenerateClassImages = false }],
            Epochs = 2,
            SaveEveryEpochs = 0,
            MaxResolution = 64,
            MixedPrecision = "no",
            LearningRate = 1e-4,
            TextEncoderLearningRate = 1e-4,
            UseEma = false,
            CacheLatents = true,
            Device = "cpu",
            Seed = 7,
        };
    }

    static List<TrainingEvent> Run(TrainingConfig c, StableDiffusionModel m, CancellationToken ct = default, Action<TrainingEvent, DreamBoothTrainer>? onEvent = null)
    {
        var events = new List<TrainingEvent>();
        using var t = new DreamBoothTrainer(c, m);
        t.Run(new Sync(e => { events.Add(e); onEvent?.Invoke(e, t); }), ct);
        return events;
    }

    sealed class Sync(Action<TrainingEvent> a) : IProgress<TrainingEvent> { public void Report(TrainingEvent v) => a(v); }

    static Dictionary<string, Tensor> Snapshot(nn.Module m) =>
        m.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach().to(ScalarType.Float32).clone());

    static Dictionary<string, Tensor> LoadSave(string path)
    {
        using var f = SafeTensors.Open(path);
        return f.LoadAll().ToDictionary(kv => kv.Key, kv => kv.Value);
    }

    [Fact]
    public void Loss_falls_when_overfitting_two_images()
    {
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir, prior: false) with { Epochs = 40, BatchSize = 2, Optimizer = "adamw", LearningRate = 2e-3, TextEncoderStepRatio = 0, LrScheduler = "constant" };
        using var m = TinyModel();
        var steps = Run(c, m).Where(e => e.Kind == TrainingEventKind.Step).Select(e => e.Loss).ToList();
        Assert.Equal(40, steps.Count);
        double first = steps.Take(8).Average(), last = steps.TakeLast(8).Average();
        Assert.True(last < 0.7 * first, $"loss did not fall: first 8 avg {first:F4}, last 8 avg {last:F4}");
    }

    [Fact]
    public void Joint_stepping_loss_is_instance_plus_weighted_prior_and_both_are_logged()
    {
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir) with { Epochs = 4, ScalePriorLoss = true, PriorLossWeight = 0.8, PriorLossWeightMin = 0.2, PriorLossTargetEpochs = 2, PriorStepping = "joint" };
        using var m = TinyModel();
        var steps = Run(c, m).Where(e => e.Kind == TrainingEventKind.Step).ToList();
        Assert.All(steps, e =>
        {
            Assert.False(double.IsNaN(e.PriorLoss));
            Assert.Equal(e.InstanceLoss + e.PriorLossWeight * e.PriorLoss, e.Loss, 5);
        });
        // scale prior loss: 0.8 at epoch 0, 0.5 at epoch 1, the minimum 0.2 from epoch 2 on
        Assert.Equal([0.8, 0.5, 0.2, 0.2], steps.GroupBy(e => e.Epoch).Select(g => Math.Round(g.First().PriorLossWeight, 6)));
        var csv = File.ReadAllLines(Path.Combine(c.OutputDir, "log.csv"));
        Assert.Equal(TrainingEvent.CsvHeader, csv[0]);
        Assert.Equal(steps.Count + 1, csv.Length);
    }

    [Fact]
    public void Saves_every_n_epochs_and_at_the_end_in_single_file_layout_with_metadata()
    {
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir) with { Epochs = 5, SaveEveryEpochs = 2, UseEma = true, SaveEmaWeights = true, TextEncoderStepRatio = 0 };
        using var m = TinyModel();
        var saved = Run(c, m).Where(e => e.Kind == TrainingEventKind.Saved).Select(e => Path.GetFileName(e.Path!)).ToList();
        Assert.Equal(["tiny_0002.safetensors", "tiny_0004.safetensors", "tiny_0005.safetensors"], saved);
        foreach (var s in saved)
            Assert.True(File.Exists(Path.Combine(c.OutputDir, s.Replace(".safetensors", "_ema.safetensors"))));
        // every checkpoint stays (the x/y plot compares them); only the newest training state does
        Assert.Equal(["tiny_0005.state"], Directory.GetFiles(c.OutputDir, "*.state").Select(Path.GetFileName));
        using var f = SafeTensors.Open(Path.Combine(c.OutputDir, "tiny_0004.safetensors"));
        Assert.Equal("4", f.Metadata["dreambooth_epoch"]);
        Assert.Equal("16", f.Metadata["dreambooth_step"]);   // 4 epochs × (2 instance + 2 class steps)
        Assert.Contains("\"learning_rate\"", f.Metadata["dreambooth_config"]);
        Assert.Contains(f.Keys, k => k.StartsWith("model.diffusion_model."));
        Assert.Contains(f.Keys, k => k.StartsWith("first_stage_model."));
        Assert.Contains(f.Keys, k => k.StartsWith("cond_stage_model.transformer."));
        // the EMA file differs from the trained weights (decay 0.9999 keeps it near the base)
        var plain = LoadSave(Path.Combine(c.OutputDir, "tiny_0005.safetensors"));
        var ema = LoadSave(Path.Combine(c.OutputDir, "tiny_0005_ema.safetensors"));
        string key = plain.Keys.First(k => k.StartsWith("model.diffusion_model.") && k.EndsWith("weight"));
        Assert.False(plain[key].BitEqual(ema[key]));
    }

    [Fact]
    public void Keep_last_n_deletes_older_saves()
    {
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir, prior: false) with { Epochs = 3, SaveEveryEpochs = 1, KeepLastSaves = 2, TextEncoderStepRatio = 0 };
        using var m = TinyModel();
        Run(c, m);
        Assert.Equal(["tiny_0002.safetensors", "tiny_0003.safetensors"], Directory.GetFiles(c.OutputDir, "tiny_*.safetensors").Select(Path.GetFileName).Order());
        Assert.False(File.Exists(Path.Combine(c.OutputDir, "tiny_0001.state")));
    }

    [Fact]
    public void Cancel_saves_a_loadable_checkpoint_and_resume_is_bitwise_equal()
    {
        // bf16 masters, Lion, EMA, prior (alternate steps: 4 a epoch), flip, TE trained for half the steps, accumulation 1
        using var dirA = TestPaths.NewTempDir();
        var a = TinyConfig(dirA) with { Epochs = 3, SaveEveryEpochs = 3, MixedPrecision = "bf16", Optimizer = "lion", UseEma = true, SaveEmaWeights = true, Hflip = true, TextEncoderStepRatio = 0.5, OffsetNoise = 0.1 };
        using (var m = TinyModel()) Run(a, m);

        using var dirB = TestPaths.NewTempDir();
        var b = TinyConfig(dirB) with { Epochs = 3, SaveEveryEpochs = 3, MixedPrecision = "bf16", Optimizer = "lion", UseEma = true, SaveEmaWeights = true, Hflip = true, TextEncoderStepRatio = 0.5, OffsetNoise = 0.1 };
        using var cts = new CancellationTokenSource();
        TrainingEvent? cancelled = null;
        using (var m = TinyModel())
            Run(b, m, cts.Token, (e, _) =>
            {
                if (e.Kind == TrainingEventKind.Step && e.Step == 6) cts.Cancel();
                if (e.Kind == TrainingEventKind.Cancelled) cancelled = e;
            });
        Assert.NotNull(cancelled);
        Assert.Equal("tiny_0001_s000006.safetensors", Path.GetFileName(cancelled!.Path));
        using (var f = SafeTensors.Open(cancelled.Path!))
        {
            Assert.Equal("true", f.Metadata["dreambooth_cancelled"]);
            Assert.NotEmpty(f.LoadAll());
        }
        var resumed = DreamBoothTrainer.ReadResumeConfig(b.OutputDir);
        Assert.Equal(b.ToJson(), resumed.ToJson());
        using (var m = TinyModel())
        using (var t = new DreamBoothTrainer(resumed, m))
        {
            t.LoadState(b.OutputDir);
            Assert.Equal(6, t.Step);
            var r = t.Run();
            Assert.Equal(12, r.Steps);
        }
        foreach (var file in new[] { "tiny_0003.safetensors", "tiny_0003_ema.safetensors" })
        {
            var x = LoadSave(Path.Combine(a.OutputDir, file));
            var y = LoadSave(Path.Combine(b.OutputDir, file));
            Assert.Equal(x.Keys.Order(), y.Keys.Order());
            foreach (var k in x.Keys) Assert.True(x[k].BitEqual(y[k]), $"{file}: {k} differs after resume");
        }
    }

    [Fact]
    public void The_trainers_flattened_lion_is_the_per_tensor_lion_and_resumes_its_state_bitwise()
    {
        // "lion" in the trainer is FlatLion (update and EMA conditional on the device, EMA one lerp over the flat UNet
        // masters). Against the per-tensor Lion with its per-weight EMA: bf16, both groups with weight decay and
        // clipping, EMA, alternate prior steps, TE frozen half way. A: per-tensor, 12 steps. B: per-tensor to step 6,
        // cancelled (its state), resumed by the flattened trainer to 12. C: flattened, 12 steps. Saves bit for bit.
        TrainingConfig Config(TempDir dir) => TinyConfig(dir) with
        {
            Epochs = 3, SaveEveryEpochs = 3, MixedPrecision = "bf16", Optimizer = "lion", UseEma = true, SaveEmaWeights = true,
            TextEncoderStepRatio = 0.5, WeightDecay = 0.1, TextEncoderWeightDecay = 0.2, MaxGradNorm = 0.05, TextEncoderMaxGradNorm = 0.05,
            SaveDtype = "fp32",   // the masters' own bits
        };
        Func<IReadOnlyList<ParamGroup>, TrainingOptimizer> perTensor = groups => new Lion(groups);
        using var dirA = TestPaths.NewTempDir();
        var a = Config(dirA);
        using (var m = TinyModel())
        using (var t = new DreamBoothTrainer(a, m, null, null, default, null, perTensor))
        {
            Assert.IsType<Lion>(t.Optimizer);
            t.Run();
            Assert.Equal(0, t.Ema!.FlatUpdates);
        }

        using var dirB = TestPaths.NewTempDir();
        var b = Config(dirB);
        using var cts = new CancellationTokenSource();
        using (var m = TinyModel())
        using (var t = new DreamBoothTrainer(b, m, null, null, default, null, perTensor))
            t.Run(new Sync(e => { if (e.Kind == TrainingEventKind.Step && e.Step == 6) cts.Cancel(); }), cts.Token);
        using (var m = TinyModel())
        using (var t = new DreamBoothTrainer(DreamBoothTrainer.ReadResumeConfig(b.OutputDir), m))
        {
            Assert.IsType<FlatLion>(t.Optimizer);
            t.LoadState(b.OutputDir);
            Assert.Equal(6, t.Step);
            Assert.Equal(12, t.Run().Steps);
            Assert.Equal(6, t.Ema!.FlatUpdates);
        }

        using var dirC = TestPaths.NewTempDir();
        var c = Config(dirC);
        using (var m = TinyModel())
        using (var t = new DreamBoothTrainer(c, m))
        {
            var gradNorms = new List<double>();
            t.Run(new Sync(e => { if (e.Kind == TrainingEventKind.Step) gradNorms.Add(e.GradNorm); }));
            Assert.Contains(gradNorms, n => n > 0.05);   // the clip acted
            Assert.Equal(12, t.Ema!.FlatUpdates);
        }
        foreach (var file in new[] { "tiny_0003.safetensors", "tiny_0003_ema.safetensors" })
        {
            var x = LoadSave(Path.Combine(a.OutputDir, file));
            foreach (var other in new[] { b.OutputDir, c.OutputDir })
            {
                var y = LoadSave(Path.Combine(other, file));
                Assert.Equal(x.Keys.Order(), y.Keys.Order());
                foreach (var k in x.Keys) Assert.True(x[k].BitEqual(y[k]), $"{file} in {Path.GetFileName(Path.GetDirectoryName(other))}: {k} differs from the per-tensor Lion's");
            }
        }
    }

    [Fact]
    public void Text_encoder_trains_for_round_ratio_times_steps_then_is_frozen()
    {
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir) with { Epochs = 4, TextEncoderStepRatio = 0.75, Optimizer = "adamw" };
        using var m = TinyModel();
        var start = Snapshot(m.TextEncoder);
        Dictionary<string, Tensor>? atFreeze = null;
        int frozenAt = -1;
        using var t = new DreamBoothTrainer(c, m);
        Assert.Equal(16, t.TotalSteps);   // 4 epochs × (2 instance + 2 class steps)
        Assert.Equal(12, t.TextEncoderSteps);
        t.Run(new Sync(e =>
        {
            if (e.Kind != TrainingEventKind.TextEncoderFrozen) return;
            frozenAt = e.Step;
            atFreeze = Snapshot(m.TextEncoder);
            Assert.DoesNotContain(t.Optimizer.StateDict().Keys, k => k.StartsWith("text_encoder/"));
            Assert.False(m.TextEncoder.training);
        }));
        Assert.Equal(12, frozenAt);
        var end = Snapshot(m.TextEncoder);
        Assert.Contains(start.Keys, k => !start[k].BitEqual(atFreeze![k]));   // trained before
        Assert.All(end.Keys, k => Assert.True(end[k].BitEqual(atFreeze![k]), k));   // not after
        Assert.All(m.TextEncoder.parameters(), p => Assert.False(p.requires_grad));
    }

    [Fact]
    public void Freeze_clip_normalization_really_freezes_the_layer_norms()
    {
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir) with { Epochs = 1, TextEncoderStepRatio = 1.0, FreezeClipNormalization = true, Optimizer = "adamw", LearningRate = 1e-3, TextEncoderLearningRate = 1e-3, WeightDecay = 0.5, TextEncoderWeightDecay = 0.5 };
        using var m = TinyModel();
        var start = Snapshot(m.TextEncoder);
        Run(c, m);
        var end = Snapshot(m.TextEncoder);
        var norms = start.Keys.Where(k => k.Contains("layer_norm") || k.Contains("final_layer_norm")).ToList();
        Assert.NotEmpty(norms);
        Assert.All(norms, k => Assert.True(start[k].BitEqual(end[k]), $"{k} moved"));
        Assert.Contains(start.Keys.Except(norms), k => !start[k].BitEqual(end[k]));
    }

    /// <summary>One Lion step (2 instance images in one batch, no prior): the weights of both models before and after.</summary>
    static (Dictionary<string, Tensor> Te0, Dictionary<string, Tensor> Te1, Dictionary<string, Tensor> Unet1) OneLionStep(TempDir dir, double teLr, double teWd)
    {
        var c = TinyConfig(dir, prior: false) with
        {
            Epochs = 1, BatchSize = 2, TextEncoderStepRatio = 1.0, Optimizer = "lion", LearningRate = 1e-3, WeightDecay = 0,
            TextEncoderLearningRate = teLr, TextEncoderWeightDecay = teWd, MaxGradNorm = 0, TextEncoderMaxGradNorm = 0, LrScheduler = "constant",
        };
        using var m = TinyModel();
        var te0 = Snapshot(m.TextEncoder);
        using (var t = new DreamBoothTrainer(c, m)) Assert.Equal(1, t.Run().Steps);
        return (te0, Snapshot(m.TextEncoder), Snapshot(m.UNet));
    }

    [Fact]
    public void Text_encoder_lr_and_weight_decay_act_on_the_text_encoder_alone()
    {
        // Lion's first step (momentum 0): w1 = w0·(1 − lr·wd) − lr·sign(g). Changing only the TE's LR or only its
        // weight decay must change the TE by exactly that, and leave the UNet bit-identical (one step: the UNet's
        // gradient does not depend on the TE's optimizer settings).
        const double lr = 1e-3;
        using var dirA = TestPaths.NewTempDir();
        using var dirB = TestPaths.NewTempDir();
        using var dirC = TestPaths.NewTempDir();
        var a = OneLionStep(dirA, teLr: lr, teWd: 0);
        var b = OneLionStep(dirB, teLr: 3 * lr, teWd: 0);
        var c = OneLionStep(dirC, teLr: lr, teWd: 0.5);
        long moved = 0, total = 0;
        foreach (var (k, w0) in a.Te0)
        {
            var dA = a.Te1[k] - w0;
            var tol = 1e-7 + 4e-7 * w0.abs();   // fp32 rounding of w and of w ± lr: a few ulps of |w|
            // every element moved by 0 (no gradient) or by exactly lr
            var size = dA.abs();
            Assert.True((size.lt(tol) | (size - lr).abs().lt(tol)).all().item<bool>(), $"{k}: a TE step of lr {lr} moved by other than 0 or lr");
            if (!k.Contains("token_embedding"))   // (its rows of tokens the prompts never use have no gradient)
            {
                moved += size.gt(lr / 2).sum().item<long>();
                total += size.numel();
            }
            // three times the LR: three times the move, same direction
            Assert.True(((b.Te1[k] - w0) - 3 * dA).abs().lt(3 * tol).all().item<bool>(), $"{k}: TE LR ×3 did not move it ×3");
            // weight decay 0.5: an extra −lr·0.5·w0 on top of the same sign step
            Assert.True(((c.Te1[k] - a.Te1[k]) - (-lr * 0.5) * w0).abs().lt(tol).all().item<bool>(), $"{k}: TE weight decay did not act as −lr·wd·w");
        }
        Assert.True(moved > total / 2, $"only {moved} of {total} TE weights (token table aside) moved by lr");
        Assert.All(a.Unet1.Keys, k => Assert.True(a.Unet1[k].BitEqual(b.Unet1[k]) && a.Unet1[k].BitEqual(c.Unet1[k]), $"{k}: the UNet changed with the TE's settings"));
    }

    [Theory]
    [InlineData("lion", 1)]
    [InlineData("lion", 2)]
    [InlineData("adamw", 1)]
    public void A_step_reads_the_device_once_and_with_lion_only_after_its_update_is_queued(string optimizer, int accumulation)
    {
        // every device → host read of the loop goes through HostRead: one per optimizer step (each batch's losses, both
        // grad norms and the finite check in one transfer), however many batches and gradient tensors. With the
        // flattened Lion it comes after the update and EMA are queued (they are conditional on the device); an
        // optimizer that steps per tensor reads before its update instead. The phases the step reports show where.
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir) with { Epochs = 2, TextEncoderStepRatio = 0.5, UseEma = true, Optimizer = optimizer, GradientAccumulationSteps = accumulation };
        using var m = TinyModel();
        Assert.True(m.UNet.parameters().Count() + m.TextEncoder.parameters().Count() > 100);
        using var t = new DreamBoothTrainer(c, m);
        var phases = new List<(string Name, long Reads)>();
        t.Training.PhaseStarted = name => phases.Add((name, HostRead.Count));
        long before = HostRead.Count;
        var r = t.Run();
        Assert.Equal(8 / accumulation, r.Steps);
        Assert.Equal(r.Steps, HostRead.Count - before);

        var perStep = Enumerable.Repeat(new[] { "forward", "backward" }, accumulation).SelectMany(x => x)
            .Concat(optimizer == "lion" ? ["gradients", "optimizer", "ema", "read"] : ["gradients", "read", "optimizer", "ema"]);
        Assert.Equal(Enumerable.Repeat(perStep, r.Steps).SelectMany(x => x), phases.Select(p => p.Name));
        // no read anywhere but in "read": at each phase the count is what the reads of earlier "read" phases made
        for (int i = 0; i < phases.Count; i++)
            Assert.Equal(before + phases.Take(i).Count(p => p.Name == "read"), phases[i].Reads);
    }

    [Fact]
    public void Latent_cache_is_reused_across_runs_and_holds_both_flips()
    {
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir) with { Epochs = 3, Hflip = true, TextEncoderStepRatio = 0 };
        using (var m = TinyModel())
        using (var t = new DreamBoothTrainer(c, m))
        {
            t.Run();
            Assert.Equal(0, t.LatentCache!.LoadedFromDisk);
            Assert.True(t.LatentCache.Encoded > 4, $"encoded {t.LatentCache.Encoded}: flip variants not cached separately");
        }
        int files = Directory.GetFiles(Path.Combine(c.OutputDir, "latent_cache"), "*.latent").Length;
        Assert.InRange(files, 5, 8);   // 4 images × up to 2 flips
        using (var m = TinyModel())
        using (var t = new DreamBoothTrainer(c with { Epochs = 1 }, m))
        {
            t.Run();
            Assert.Equal(0, t.LatentCache!.Encoded);
            Assert.True(t.LatentCache.LoadedFromDisk > 0);
        }
    }

    [Fact]
    public void NaN_loss_stops_naming_the_step()
    {
        using var dir = TestPaths.NewTempDir();
        var c = TinyConfig(dir) with { Epochs = 1 };
        using var m = TinyModel();
        using (torch.no_grad()) m.UNet.named_parameters().First(kv => kv.name == "conv_in.weight").parameter.fill_(float.NaN);
        var e = Assert.Throws<DreamBoothException>(() => Run(c, m));
        Assert.Contains("loss is NaN at step 1 (epoch 1)", e.Message);
    }

    // Each setting changes what the run does: same seed, one setting changed → different weights or loss.
    public static TheoryData<string> ActingSettings => new()
    {
        "learning_rate", "weight_decay", "optimizer_adamw", "optimizer_adamw8bit", "lr_scheduler", "max_grad_norm",
        "text_encoder_max_grad_norm", "offset_noise", "clip_skip", "hflip", "dynamic_image_normalization", "shuffle_tags",
        "pad_tokens", "max_token_length", "prior_loss_weight", "gradient_accumulation_steps", "batch_size", "seed",
        "mixed_precision_bf16", "train_unet", "ema_decay", "cache_latents",
    };

    [Theory]
    [MemberData(nameof(ActingSettings))]
    public void Each_setting_acts(string setting)
    {
        using var dir = TestPaths.NewTempDir();
        var baseCfg = BaseActingConfig(dir);
        var changed = setting switch
        {
            "learning_rate" => baseCfg with { LearningRate = 2e-3 },
            "weight_decay" => baseCfg with { WeightDecay = 0.5 },
            "optimizer_adamw" => baseCfg with { Optimizer = "adamw" },
            "optimizer_adamw8bit" => baseCfg with { Optimizer = "adamw8bit" },
            "lr_scheduler" => baseCfg with { LrScheduler = "linear" },
            "max_grad_norm" => baseCfg with { Optimizer = "adamw", MaxGradNorm = 1e-3 },
            "text_encoder_max_grad_norm" => baseCfg with { Optimizer = "adamw", TextEncoderMaxGradNorm = 1e-4 },
            "offset_noise" => baseCfg with { OffsetNoise = 0.5 },
            "clip_skip" => baseCfg with { ClipSkip = 2 },
            "hflip" => baseCfg with { Hflip = true },
            "dynamic_image_normalization" => baseCfg with { DynamicImageNormalization = true },
            "shuffle_tags" => baseCfg with { ShuffleTags = false },
            "pad_tokens" => baseCfg with { PadTokens = false },
            "max_token_length" => baseCfg with { MaxTokenLength = 150 },
            "prior_loss_weight" => baseCfg with { PriorLossWeight = 0.1 },
            "gradient_accumulation_steps" => baseCfg with { GradientAccumulationSteps = 2 },
            "batch_size" => baseCfg with { BatchSize = 2 },
            "seed" => baseCfg with { Seed = 8 },
            "mixed_precision_bf16" => baseCfg with { MixedPrecision = "bf16" },
            "train_unet" => baseCfg with { TrainUnet = false },
            "ema_decay" => baseCfg with { EmaDecay = 0.5 },
            "cache_latents" => baseCfg with { CacheLatents = false },
            _ => throw new ArgumentException(setting),
        };
        var x = Baseline.Value;
        var y = RunAndLoad(changed with { OutputDir = dir.File("b") });
        string file = setting == "ema_decay" ? "ema" : "plain";
        if (setting == "cache_latents")
        {
            // caching must not change the result: same distribution, same per-step sample
            Assert.All(x[file].Keys, k => Assert.True(x[file][k].BitEqual(y[file][k]), k));
            Assert.False(Directory.Exists(Path.Combine(dir.File("b"), "latent_cache")));
            return;
        }
        Assert.Contains(x[file].Keys, k => !x[file][k].BitEqual(y[file][k]));
    }

    /// <summary>The unchanged run, shared by every case (its inputs are rebuilt identically in each case's temp folder).</summary>
    static readonly Lazy<Dictionary<string, Dictionary<string, Tensor>>> Baseline = new(() =>
    {
        var dir = TestPaths.NewTempDir();
        return RunAndLoad(BaseActingConfig(dir) with { OutputDir = dir.File("a") });
    });

    static TrainingConfig BaseActingConfig(TempDir dir) =>
        TinyConfig(dir) with { Epochs = 1, TextEncoderStepRatio = 1.0, Optimizer = "lion", LearningRate = 1e-3, TextEncoderLearningRate = 1e-3, MaxGradNorm = 0, WeightDecay = 0, UseEma = true, EmaDecay = 0.9, SaveEveryEpochs = 1, SaveEmaWeights = true, LrScheduler = "constant" };

    static Dictionary<string, Dictionary<string, Tensor>> RunAndLoad(TrainingConfig c)
    {
        using var m = TinyModel();
        Run(c, m);
        string stem = Path.Combine(c.OutputDir, $"tiny_{c.Epochs:0000}");
        return new() { ["plain"] = LoadSave(stem + ".safetensors"), ["ema"] = LoadSave(stem + "_ema.safetensors") };
    }
}
