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
/// SD1.5 architecture with random weights, for each size × {UNet+TE, UNet} × EMA × gradient checkpointing.
/// Step-level: it drives the models, <see cref="MasterWeights"/>, the optimizer and <see cref="EmaModel"/>
/// directly (the same parts the trainer loop uses), not the trainer loop itself. Warm-up steps, then timed
/// steps; one JSON line per case with it/s, ms/step, peak memory and achieved TFLOP/s.
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
        var optimizer = new Option<string>("--optimizer") { Description = "lion (per tensor, as the trainer uses) or flat-lion (flattened buffers)", DefaultValueFactory = _ => "lion" };
        var peak = new Option<double?>("--peak-tflops") { Description = "The device's dense bf16 peak in TFLOP/s for the % column (default: from the GPU name)" };
        var cmd = new Command("train", "DreamBooth training-step it/s, ms/step, peak memory and TFLOP/s on random SD1.5 weights (JSON lines)");
        foreach (var o in new Option[] { tiny, device, sizes, steps, warmup, dtype, trainTe, ema, gc, optimizer, peak }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            int timed = parse.GetValue(steps), warm = parse.GetValue(warmup);
            if (timed < 1 || warm < 0) throw new DreamBoothException("--steps must be at least 1 and --warmup at least 0");
            var opt = parse.GetValue(optimizer)!.Trim().ToLowerInvariant();
            if (opt is not ("lion" or "flat-lion")) throw new DreamBoothException($"--optimizer: expected lion or flat-lion, got '{opt}'");
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
                        {
                            ct.ThrowIfCancellationRequested();
                            var c = new Case(width, height, factor, te, useEma, checkpointing, opt, type, dev, warm, timed);
                            var r = Run(c, teConfig, unetConfig, ct);
                            double? tflop = isTiny ? null : StepTflop(width, height);
                            double? achieved = tflop / r.SecondsPerStep;
                            w.WriteLine(BenchSupport.Json(new
                            {
                                bench = "train",
                                model = isTiny ? "tiny-random" : "sd15-random",
                                loop = Loop,
                                width, height, batch = "1 instance + 1 prior", latents = "cached",
                                train_text_encoder = te, ema = useEma, gradient_checkpointing = checkpointing,
                                optimizer = opt, dtype = BenchSupport.DtypeName(type), masters = type == ScalarType.Float32 ? "shared fp32" : "fp32",
                                warmup_steps = warm, steps = timed,
                                it_per_s = BenchSupport.Round(1.0 / r.SecondsPerStep, 4),
                                ms_per_step = BenchSupport.Round(r.SecondsPerStep * 1000, 2),
                                peak_memory_mib = r.PeakMiB, memory_kind = r.MemoryKind,
                                step_tflop = tflop is null ? (double?)null : BenchSupport.Round(tflop.Value, 2),
                                achieved_tflops = achieved is null ? (double?)null : BenchSupport.Round(achieved.Value, 2),
                                peak_bf16_tflops = peakTflops,
                                percent_of_peak = achieved is null || peakTflops is null ? (double?)null : BenchSupport.Round(100 * achieved.Value / peakTflops.Value, 1),
                                last_loss = BenchSupport.Round(r.LastLoss, 5),
                                device = BenchSupport.DeviceName(dev),
                                load_average = BenchSupport.LoadAverage(),
                            }));
                        }
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }

    sealed record Case(int Width, int Height, int Factor, bool TrainTextEncoder, bool Ema, bool GradientCheckpointing, string Optimizer,
        ScalarType Dtype, Device Device, int Warmup, int Steps);

    sealed record Result(double SecondsPerStep, long? PeakMiB, string MemoryKind, double LastLoss);

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
        using var lion = c.Optimizer == "lion" ? new Lion(groups) : null;
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
        for (int step = 0; step < c.Warmup + c.Steps; step++)
        {
            ct.ThrowIfCancellationRequested();
            if (step == c.Warmup) { BenchSupport.Sync(c.Device); clock.Start(); }
            Tensor loss;
            using (var scope = NewDisposeScope())
            {
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
                loss = (instanceLoss + 1.0 * priorLoss).detach().MoveToOuterDisposeScope();
                (instanceLoss + 1.0 * priorLoss).backward();
            }
            unetMasters.CopyGradsToMasters();
            teMasters?.CopyGradsToMasters();
            if (lion is not null) { lion.Step(); lion.ZeroGrad(); }
            else { flat!.Step(); flat.ZeroGrad(); }
            unetMasters.CopyMastersToModel();
            teMasters?.CopyMastersToModel();
            ema?.Update(unetMasters.Names.Zip(unetMasters.Masters));
            if (step == c.Warmup + c.Steps - 1) lastLoss = loss.item<float>(); // the one host read: the logged loss
            loss.Dispose();
        }
        BenchSupport.Sync(c.Device);
        clock.Stop();
        cachedEmbeddings?.Dispose();
        return new Result(clock.Elapsed.TotalSeconds / c.Steps, memory.PeakMiB, memory.Kind, lastLoss);
    }

    /// <summary>GroupNorm weights start uninitialized in TorchSharp 0.107; PyTorch's init is (1, 0).</summary>
    static void ResetGroupNorms(nn.Module module)
    {
        using var _ = no_grad();
        foreach (var (_, m) in module.named_modules())
            if (m is TorchSharp.Modules.GroupNorm gn) { gn.weight?.fill_(1); gn.bias?.zero_(); }
    }

    /// <summary>
    /// Model FLOPs of one DreamBooth step (2 samples, forward + backward = 3 forwards; gradient-checkpointing
    /// recomputation not counted, as in MFU), from the UNet forward figures in docs/benchmarks.md: 0.89 TFLOP
    /// per sample at 512², 2.3 at 768², 4.9 at 1024², scaled by pixel count from the nearest anchor.
    /// </summary>
    public static double StepTflop(int width, int height)
    {
        (double Pixels, double Tflop)[] anchors = [(512.0 * 512, 0.89), (768.0 * 768, 2.3), (1024.0 * 1024, 4.9)];
        double px = (double)width * height;
        var a = anchors.MinBy(x => Math.Abs(Math.Log(px / x.Pixels)));
        return 3 * 2 * a.Tflop * px / a.Pixels;
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
