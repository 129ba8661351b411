using System.CommandLine;
using System.Diagnostics;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// `dreambooth bench grad-check`: the training step's look at its gradients after backward, on the UNet's and the
/// text encoder's parameter shapes with random fp32 gradients: "per-tensor" is what the trainer did before issue 15
/// (isfinite().all() read back for each gradient, then each group's norm read back), "one-read" is what it does now
/// (<see cref="GradientClipping.MoveGradsAndNorms"/>: both groups' norms on the device, one transfer; the norms are the
/// finite check). One JSON line per way, with the device reads each makes.
/// </summary>
public sealed class BenchGradCheckCommand : IBenchSubcommand
{
    public Command Build()
    {
        var tiny = BenchSupport.TinyOption();
        var device = BenchSupport.DeviceOption();
        var steps = new Option<int>("--steps") { Description = "Timed checks per way", DefaultValueFactory = _ => 5 };
        var cmd = new Command("grad-check", "The step's gradient check + grad norms: a read per tensor vs one read (JSON lines)");
        foreach (var o in new Option[] { tiny, device, steps }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            int n = parse.GetValue(steps);
            if (n < 1) throw new DreamBoothException("--steps: expected at least 1");
            CliApp.Torch();
            var dev = BenchSupport.ParseDevice(parse.GetValue(device));
            bool isTiny = parse.GetValue(tiny) ?? dev.type != DeviceType.CUDA;
            manual_seed(1);
            using var unet = new UNet2DConditionModel(isTiny ? UNet2DConditionConfig.Tiny : UNet2DConditionConfig.StableDiffusion15);
            using var te = new CLIPTextModel(isTiny ? CLIPTextConfig.Tiny : CLIPTextConfig.StableDiffusion15);
            unet.to(dev);
            te.to(dev);
            using var unetMasters = new MasterWeights(unet, ScalarType.Float32);
            using var teMasters = new MasterWeights(te, ScalarType.Float32);
            var groups = new IReadOnlyList<Tensor>[] { unetMasters.Masters, teMasters.Masters };
            long values = groups.Sum(g => g.Sum(p => p.NumberOfElements));
            void SetGrads()
            {
                using var _ = no_grad();
                foreach (var p in groups.SelectMany(g => g)) { using var g = randn_like(p); p.grad = g; }
            }
            SetGrads();
            foreach (var way in new[] { "per-tensor", "one-read" })
            {
                ct.ThrowIfCancellationRequested();
                long reads = 0;
                double Check()
                {
                    if (way == "one-read")
                    {
                        long before = HostRead.Count;
                        var norms = GradientClipping.MoveGradsAndNorms([unetMasters, teMasters], groups, 1.0);
                        reads = HostRead.Count - before;
                        return norms[0];
                    }
                    // before issue 15: MasterWeights' finite check read each gradient's isfinite().all() back, then
                    // ClipGradNorm read each group's norm back
                    reads = 0;
                    using (var scope = NewDisposeScope())
                        foreach (var p in groups.SelectMany(g => g))
                        {
                            using var g = p.grad;
                            if (g is null) continue;
                            reads++;
                            if (!g.isfinite().all().item<bool>()) return double.NaN;
                        }
                    double first = 0;
                    foreach (var g in groups)
                    {
                        using var scope = NewDisposeScope();
                        var norm = torch.stack(g.Select(p => p.grad!.to(ScalarType.Float32).norm()).ToArray()).norm().item<float>();
                        reads++;
                        if (g == groups[0]) first = norm;
                    }
                    return first;
                }
                double norm = Check(); // warm-up
                BenchSupport.Sync(dev);
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < n; i++) norm = Check();
                BenchSupport.Sync(dev);
                double s = clock.Elapsed.TotalSeconds / n;
                w.WriteLine(BenchSupport.Json(new
                {
                    bench = "grad-check",
                    way,
                    model = isTiny ? "tiny-unet+te" : "sd15-unet+te",
                    tensors = groups.Sum(g => g.Count),
                    values,
                    device_reads = reads,
                    steps = n,
                    ms_per_check = BenchSupport.Round(s * 1000, 3),
                    unet_grad_norm = BenchSupport.Round(norm, 3),
                    device = BenchSupport.DeviceName(dev),
                    load_average = BenchSupport.LoadAverage(),
                }));
            }
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }
}
