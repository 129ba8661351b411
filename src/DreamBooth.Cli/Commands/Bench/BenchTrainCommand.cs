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
/// Step-level: it drives the models, <see cref="MasterWeights"/>, the optimizer and <see cref="EmaModel"/>
/// directly (the same parts the trainer loop uses), not the trainer loop itself. Warm-up steps, then timed
/// steps (no host synchronisation inside them but the last loss read); then, when asked, a few profiled steps with a
/// synchronisation after each phase (forward, backward, optimizer, EMA), which give for each phase the time the host
/// spent issuing it against the time until the device finished it. One JSON line per case with it/s, ms/step, peak
/// memory, the step's model FLOPs (<see cref="FlopCount"/>) and achieved TFLOP/s.
/// </summary>
public sealed class BenchTrainCommand : IBenchSubcommand
{
    public const string Loop = "step-level: CLIPTextModel + UNet2DConditionModel + MasterWeights + optimizer + EmaModel driven directly (not DreamBoothTrainer)";

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
        var optimizer = new Option<string>("--optimizer") { Description = $"Comma-separated: {string.Join(", ", Optimizers)} (lion, adamw, adamw8bit per tensor as the trainer uses them; flat-lion over flattened buffers)", DefaultValueFactory = _ => "lion" };
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
                                    it_per_s = BenchSupport.Round(1.0 / r.SecondsPerStep, 4),
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
    public static readonly string[] Optimizers = ["lion", "flat-lion", "adamw", "adamw8bit"];

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
        var schedule = NoiseSchedule.StableDiffusion15;
        GC.Collect();
        using var memory = new BenchSupport.PeakMemory(c.Device);
        manual_seed(1);
        using var textEncoder = new CLIPTextModel(teConfig);
        using var unet = new UNet2DConditionModel(unetConfig);
        ResetGroupNorms(unet);
        unet.GradientCheckpointing = c.GradientCheckpointing;
        unet.train();
        textEncoder.train(c.TrainTextEncoder);
        foreach (var p in textEncoder.parameters()) p.requires_grad_(c.TrainTextEncoder);

        // masters are captured in fp32 on the device, then the modules become the compute copies
        unet.to(c.Device);
        textEncoder.to(c.Device);
        using var unetMasters = new MasterWeights(unet, c.Dtype);
        using var teMasters = c.TrainTextEncoder ? new MasterWeights(textEncoder, c.Dtype) : null;
        if (!c.TrainTextEncoder) textEncoder.to(c.Dtype);
        var groups = new List<ParamGroup> { new("unet", unetMasters.Masters, 5e-7, 1e-2) };
        if (teMasters is not null) groups.Add(new ParamGroup("text_encoder", teMasters.Masters, 5e-7, 1e-2));
        using var perTensor = c.Optimizer == "flat-lion" ? null : TrainingOptimizer.Create(c.Optimizer, groups);
        using var flat = c.Optimizer == "flat-lion" ? new FlatLion(groups) : null;
        using var ema = c.Ema ? new EmaModel(unetMasters.Names.Zip(unetMasters.Masters), 0.9999, warmup: false, c.Device) : null;

        // cached latents of the instance and the prior image, and their token ids
        long lh = c.Height / c.Factor, lw = c.Width / c.Factor;
        using var latents = (randn(2, unetConfig.InChannels, lh, lw, device: c.Device) * 0.18215).DetachFromDisposeScope();
        using var ids = randint(0, 49406, [2, 77], dtype: ScalarType.Int64, device: c.Device).DetachFromDisposeScope();
        Tensor? cachedEmbeddings = null;
        if (!c.TrainTextEncoder)
            using (no_grad())
                cachedEmbeddings = textEncoder.forward(ids).DetachFromDisposeScope();

        double lastLoss = double.NaN;
        var clock = new Stopwatch();
        var timer = new PhaseTimer(c.Device);
        int total = c.Warmup + c.Steps;
        for (int step = 0; step < total + c.ProfileSteps; step++)
        {
            ct.ThrowIfCancellationRequested();
            if (step == c.Warmup) { BenchSupport.Sync(c.Device); clock.Start(); }
            if (step == total) { BenchSupport.Sync(c.Device); clock.Stop(); timer.Enabled = true; }
            Tensor loss;
            using (var scope = NewDisposeScope())
            {
                timer.Begin("forward");
                var noise = randn_like(latents);
                var timesteps = randint(0, schedule.NumTrainTimesteps, [2], dtype: ScalarType.Int64, device: c.Device);
                var noisy = schedule.AddNoise(latents, noise, timesteps);
                var encoderHiddenStates = cachedEmbeddings ?? textEncoder.forward(ids);
                var modelPred = unet.forward(noisy.to(c.Dtype), timesteps, encoderHiddenStates.to(c.Dtype)).to(ScalarType.Float32);
                var target = schedule.Target(latents, noise, timesteps);
                var (predInstance, predPrior) = (modelPred[0..1], modelPred[1..2]);
                var (targetInstance, targetPrior) = (target[0..1], target[1..2]);
                var instanceLoss = nn.functional.mse_loss(predInstance, targetInstance);
                var priorLoss = nn.functional.mse_loss(predPrior, targetPrior);
                var fullLoss = instanceLoss + 1.0 * priorLoss;
                loss = fullLoss.detach().MoveToOuterDisposeScope();
                timer.Begin("backward");
                fullLoss.backward();
            }
            timer.Begin("optimizer");
            unetMasters.CopyGradsToMasters();
            teMasters?.CopyGradsToMasters();
            if (perTensor is not null) { perTensor.Step(); perTensor.ZeroGrad(); }
            else { flat!.Step(); flat.ZeroGrad(); }
            unetMasters.CopyMastersToModel();
            teMasters?.CopyMastersToModel();
            if (ema is not null)
            {
                timer.Begin("ema");
                ema.Update(unetMasters.Names.Zip(unetMasters.Masters));
            }
            timer.End();
            if (step == total - 1) lastLoss = loss.item<float>(); // the one host read of the timed steps: the logged loss
            loss.Dispose();
        }
        if (clock.IsRunning) { BenchSupport.Sync(c.Device); clock.Stop(); }
        cachedEmbeddings?.Dispose();
        return new Result(clock.Elapsed.TotalSeconds / c.Steps, memory.PeakMiB, memory.Kind, lastLoss, c.ProfileSteps > 0 ? timer.Averages() : null);
    }

    /// <summary>GroupNorm weights start uninitialized in TorchSharp 0.107; PyTorch's init is (1, 0).</summary>
    static void ResetGroupNorms(nn.Module module)
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
