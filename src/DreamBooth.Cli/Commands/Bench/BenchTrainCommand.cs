using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Schedulers;
using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// `dreambooth bench train`: the DreamBooth training step (1 instance + 1 prior sample, cached latents) on the
/// SD1.5 architecture with random weights, for each size × {UNet+TE, UNet} × EMA × gradient checkpointing × optimizer.
/// It runs the trainer's own step: <see cref="DreamBoothStep"/> (what <see cref="DreamBoothTrainer"/> calls for every
/// step: <see cref="DreamBoothStep.TrainStep"/> then <see cref="DreamBoothStep.OptimizerStep"/> with its one host read)
/// with the recipe's settings (LR, weight decay, UNet clipping at 1, EMA decay), fed random cached latents instead
/// of a data set. Warm-up steps, then timed steps; then, when asked, a few profiled steps with a synchronisation at
/// each phase boundary (<see cref="DreamBoothStep.PhaseStarted"/>: forward, backward, gradients, optimizer, EMA, read),
/// which give for each phase the time the host spent issuing it against the time until the device finished it. One
/// JSON line per case with it/s, ms/step, peak memory, the step's model FLOPs (<see cref="FlopCount"/>) and achieved TFLOP/s.
/// </summary>
public sealed class BenchTrainCommand : IBenchSubcommand
{
    public const string Loop = "trainer step: DreamBoothStep.TrainStep + OptimizerStep (what DreamBoothTrainer runs), random cached latents";

    public Command Build()
    {
        var tiny = BenchSupport.TinyOption();
        var device = BenchSupport.DeviceOption();
        var sizes = new Option<string?>("--sizes") { Description = "Training image sizes WIDTHxHEIGHT (default 512x512,768x1024; tiny: 64x64)" };
        var steps = new Option<int>("--steps") { Description = "Timed steps per case", DefaultValueFactory = _ => 20 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed steps first", DefaultValueFactory = _ => 3 };
        var dtype = new Option<string?>("--dtype") { Description = "Compute dtype; fp32 masters are kept for bf16/fp16 (default bf16 on CUDA, fp32 on CPU: CPU bf16 kernels are many times slower)" };
        var trainTe = new Option<string>("--train-text-encoder") { Description = "on, off or both", DefaultValueFactory = _ => "both" };
        var ema = new Option<string>("--ema") { Description = "on, off or both", DefaultValueFactory = _ => "both" };
        var gc = new Option<string>("--gradient-checkpointing") { Description = "on, off or both", DefaultValueFactory = _ => "both" };
        var optimizer = new Option<string>("--optimizer") { Description = $"Comma-separated: {string.Join(", ", Optimizers)} (lion, adamw, adamw8bit as the trainer uses them: lion over flattened buffers, the others per tensor; lion-per-tensor for comparison)", DefaultValueFactory = _ => "lion" };
        var peak = new Option<double?>("--peak-tflops") { Description = "The device's dense bf16 peak in TFLOP/s for the % column (default: from the GPU name)" };
        var profile = new Option<int>("--profile-steps") { Description = "Extra steps after the timed ones with a synchronisation after each phase (forward, backward, optimizer, EMA): host-issue vs device-done ms per phase; 0 = none", DefaultValueFactory = _ => 2 };
        var cmd = new Command("train", "DreamBooth training-step it/s, ms/step, peak memory and TFLOP/s on random SD1.5 weights (JSON lines)");
        foreach (var o in new Option[] { tiny, device, sizes, steps, warmup, dtype, trainTe, ema, gc, optimizer, peak, profile }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            int timed = parse.GetValue(steps), warm = parse.GetValue(warmup), profiled = parse.GetValue(profile);
            if (timed < 1 || warm < 0) throw new DreamBoothException("--steps must be at least 1 and --warmup at least 0");
            if (profiled < 0) throw new DreamBoothException("--profile-steps must be at least 0");
            var optimizerList = ParseOptimizers(parse.GetValue(optimizer)!);
            CliApp.Torch();
            var dev = BenchSupport.ParseDevice(parse.GetValue(device));
            bool isTiny = parse.GetValue(tiny) ?? dev.type != DeviceType.CUDA;
            var type = BenchSupport.ParseDtype(parse.GetValue(dtype) ?? (dev.type == DeviceType.CUDA ? "bf16" : "fp32"), "--dtype");
            var teConfig = isTiny ? CLIPTextConfig.Tiny : CLIPTextConfig.StableDiffusion15;
            var unetConfig = isTiny ? UNet2DConditionConfig.Tiny : UNet2DConditionConfig.StableDiffusion15;
            int factor = isTiny ? 2 : 8; // VAE downsampling of the cached latents
            int multiple = factor * unetConfig.DownsampleFactor;
            var sizeList = BenchSupport.ParseSizes(parse.GetValue(sizes) ?? (isTiny ? "64x64" : "512x512,768x1024"), multiple);
            double? peakTflops = parse.GetValue(peak) ?? (dev.type == DeviceType.CUDA ? Bf16PeakTflops(BenchSupport.DeviceName(dev)) : null);
            foreach (var (width, height) in sizeList)
                foreach (var te in BenchSupport.ParseSwitch(parse.GetValue(trainTe)!, "--train-text-encoder").Reverse())
                    foreach (var useEma in BenchSupport.ParseSwitch(parse.GetValue(ema)!, "--ema").Reverse())
                        foreach (var checkpointing in BenchSupport.ParseSwitch(parse.GetValue(gc)!, "--gradient-checkpointing"))
                            foreach (var opt in optimizerList)
                            {
                                ct.ThrowIfCancellationRequested();
                                var c = new Case(width, height, factor, te, useEma, checkpointing, opt, type, dev, warm, timed, profiled);
                                var r = Run(c, teConfig, unetConfig, ct);
                                double tflop = FlopCount.TrainStepFlops(unetConfig, teConfig, height / factor, width / factor, te) / 1e12;
                                double achieved = tflop / r.SecondsPerStep;
                                w.WriteLine(BenchSupport.Json(new
                                {
                                    bench = "train",
                                    implementation = "ours",
                                    @case = CaseName(width, height, te, useEma, checkpointing, opt, type),
                                    model = isTiny ? "tiny-random" : "sd15-random",
                                    loop = Loop,
                                    width, height, batch = "1 instance + 1 prior", latents = "cached",
                                    train_text_encoder = te, ema = useEma, gradient_checkpointing = checkpointing,
                                    optimizer = opt, dtype = BenchSupport.DtypeName(type), masters = type == ScalarType.Float32 ? "shared fp32" : "fp32",
                                    warmup_steps = warm, steps = timed,
                                    it_per_s = BenchSupport.Significant(1.0 / r.SecondsPerStep),
                                    ms_per_step = BenchSupport.Round(r.SecondsPerStep * 1000, 2),
                                    peak_memory_mib = r.PeakMiB, memory_kind = r.MemoryKind,
                                    step_tflop = BenchSupport.Round(tflop, isTiny ? 9 : 3),
                                    flop_count = "model FLOPs: 3 x forward x 2 samples (UNet; + text encoder when trained), convolutions and matmuls, no GC recompute",
                                    achieved_tflops = BenchSupport.Round(achieved, isTiny ? 6 : 2),
                                    peak_bf16_tflops = peakTflops,
                                    percent_of_peak = peakTflops is null ? (double?)null : BenchSupport.Round(100 * achieved / peakTflops.Value, 1),
                                    profile_steps = profiled,
                                    phases_ms = r.Phases,
                                    last_loss = BenchSupport.Round(r.LastLoss, 5),
                                    device = BenchSupport.DeviceName(dev),
                                    load_average = BenchSupport.LoadAverage(),
                                }));
                            }
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }

    /// <summary>The optimizers a case can use.</summary>
    public static readonly string[] Optimizers = ["lion", "lion-per-tensor", "adamw", "adamw8bit"];

    static List<string> ParseOptimizers(string value)
    {
        var list = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(v => v.ToLowerInvariant()).Distinct().ToList();
        foreach (var v in list)
            if (!Optimizers.Contains(v)) throw new DreamBoothException($"--optimizer: expected one or more of {string.Join(", ", Optimizers)}, got '{v}'");
        if (list.Count == 0) throw new DreamBoothException($"--optimizer: expected one or more of {string.Join(", ", Optimizers)}");
        return list;
    }

    /// <summary>The case's name as the reference driver (tools/gpu/reference/train_ref.py) writes it, so lines pair up.</summary>
    public static string CaseName(int width, int height, bool te, bool ema, bool gc, string optimizer, ScalarType dtype) =>
        $"{width}x{height} {(te ? "unet+te" : "unet")} ema-{(ema ? "on" : "off")} gc-{(gc ? "on" : "off")} {optimizer} {BenchSupport.DtypeName(dtype)}";

    sealed record Case(int Width, int Height, int Factor, bool TrainTextEncoder, bool Ema, bool GradientCheckpointing, string Optimizer,
        ScalarType Dtype, Device Device, int Warmup, int Steps, int ProfileSteps);

    sealed record Result(double SecondsPerStep, long? PeakMiB, string MemoryKind, double LastLoss, IReadOnlyDictionary<string, PhaseTimer.Phase>? Phases);

    static Result Run(Case c, CLIPTextConfig teConfig, UNet2DConditionConfig unetConfig, CancellationToken ct)
    {
        GC.Collect();
        using var memory = new BenchSupport.PeakMemory(c.Device);
        manual_seed(1);
        using var textEncoder = new CLIPTextModel(teConfig);
        using var unet = new UNet2DConditionModel(unetConfig);
        ResetGroupNorms(unet);
        unet.to(c.Device);
        textEncoder.to(c.Device);

        // the recipe's settings (LR, weight decay, UNet clip 1, EMA decay) but what the case varies
        var config = new TrainingConfig
        {
            MixedPrecision = c.Dtype switch { ScalarType.BFloat16 => "bf16", ScalarType.Float16 => "fp16", _ => "no" },
            Optimizer = c.Optimizer == "lion-per-tensor" ? "lion" : c.Optimizer,
            UseEma = c.Ema,
            EmaDevice = "device",
            GradientCheckpointing = c.GradientCheckpointing,
            PriorStepping = "joint",
        };
        int total = c.Warmup + c.Steps + c.ProfileSteps;
        using var step = new DreamBoothStep(config, unet, textEncoder, NoiseSchedule.StableDiffusion15, c.Device, total,
            textEncoderSteps: c.TrainTextEncoder ? total : 0, optimizer: c.Optimizer == "lion-per-tensor" ? groups => new Lion(groups) : null);

        // cached latents of the instance and the prior image, and their token ids
        long lh = c.Height / c.Factor, lw = c.Width / c.Factor;
        using var latents = (randn(2, unetConfig.InChannels, lh, lw, device: c.Device) * 0.18215).DetachFromDisposeScope();
        using var idsHost = randint(0, 49406, [2, 77], dtype: ScalarType.Int64).DetachFromDisposeScope();
        using var ids = idsHost.to(c.Device).DetachFromDisposeScope();
        var inputs = new StepInputs(latents, ids, idsHost, Instances: 1, Classes: 1);
        var gen = c.Device.type == DeviceType.CPU ? new Generator(7) : new Generator(7, c.Device);

        double lastLoss = double.NaN;
        var clock = new Stopwatch();
        var timer = new PhaseTimer(c.Device);
        step.PhaseStarted = timer.Begin;
        for (int s = 0; s < total; s++)
        {
            ct.ThrowIfCancellationRequested();
            if (s == c.Warmup) { BenchSupport.Sync(c.Device); clock.Start(); }
            if (s == c.Warmup + c.Steps) { BenchSupport.Sync(c.Device); clock.Stop(); timer.Enabled = true; }
            using var scope = NewDisposeScope();
            var losses = step.TrainStep(inputs, config.PriorLossWeight, gen);
            var outcome = step.OptimizerStep(s, [losses]);   // the trainer's one read of the step
            timer.End();
            lastLoss = outcome.Batches[0].Loss;
        }
        if (clock.IsRunning) { BenchSupport.Sync(c.Device); clock.Stop(); }
        return new Result(clock.Elapsed.TotalSeconds / c.Steps, memory.PeakMiB, memory.Kind, lastLoss, c.ProfileSteps > 0 ? timer.Averages() : null);
    }

    /// <summary>GroupNorm weights start uninitialized in TorchSharp 0.107; PyTorch's init is (1, 0).</summary>
    internal static void ResetGroupNorms(nn.Module module)
    {
        using var _ = no_grad();
        foreach (var (_, m) in module.named_modules())
            if (m is TorchSharp.Modules.GroupNorm gn) { gn.weight?.fill_(1); gn.bias?.zero_(); }
    }

    /// <summary>Dense bf16 tensor-core peak (vendor spec, TFLOP/s) by GPU name; null when unknown.</summary>
    public static double? Bf16PeakTflops(string deviceName)
    {
        var n = deviceName.ToUpperInvariant();
        if (n.Contains("H200")) return 989;
        if (n.Contains("H100")) return n.Contains("PCIE") ? 756 : 989;
        if (n.Contains("A100")) return 312;
        if (n.Contains("L40S")) return 362;
        if (n.Contains("4090")) return 165;
        if (n.Contains("A10G")) return 70;
        if (n.Contains("L4")) return 121;
        if (n.Contains("3090")) return 71;
        return null;
    }
}
