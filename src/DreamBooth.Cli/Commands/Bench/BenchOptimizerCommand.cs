using System.CommandLine;
using System.Diagnostics;
using DreamBooth.Models.UNet;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// `dreambooth bench optimizer`: one Lion step over the UNet's parameter tensors, per tensor (<see cref="Lion"/>,
/// about seven kernels per tensor) against flattened buffers (<see cref="FlatLion"/>, a few kernels per 16 Mi
/// values), and the flattened one as the trainer runs it: conditional on a device-side finite check (the gradient
/// zeroed where the check fails, the factors chosen on the device: one more pass). Same parameters, same random
/// gradients; one JSON line per variant.
/// </summary>
public sealed class BenchOptimizerCommand : IBenchSubcommand
{
    public Command Build()
    {
        var tiny = BenchSupport.TinyOption();
        var device = BenchSupport.DeviceOption();
        var steps = new Option<int>("--steps") { Description = "Timed steps per optimizer", DefaultValueFactory = _ => 5 };
        var cmd = new Command("optimizer", "Lion step time per tensor vs over flattened buffers, on the UNet's parameter shapes (JSON lines)");
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
            unet.to(dev);
            var parameters = unet.parameters().Cast<Tensor>().ToList();
            long count = parameters.Sum(p => p.NumberOfElements);
            using (no_grad())
                foreach (var p in parameters) { using var g = randn_like(p); p.grad = g; }
            foreach (var (name, conditional) in new[] { ("lion", false), ("flat-lion", false), ("flat-lion", true) })
            {
                ct.ThrowIfCancellationRequested();
                GC.Collect();
                using var memory = new BenchSupport.PeakMemory(dev);
                var group = new ParamGroup("unet", parameters, 1e-6, 1e-2);
                using var lion = name == "lion" ? new Lion([group]) : null;
                using var flat = name == "flat-lion" ? new FlatLion([group]) : null;
                using var apply = conditional ? ones([], ScalarType.Bool, dev) : null;
                void Step() { if (lion is not null) lion.Step(); else flat!.Step(apply); }
                Step(); // warm-up: allocates the state
                BenchSupport.Sync(dev);
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < n; i++) Step();
                BenchSupport.Sync(dev);
                double s = clock.Elapsed.TotalSeconds / n;
                w.WriteLine(BenchSupport.Json(new
                {
                    bench = "optimizer",
                    optimizer = name,
                    conditional,
                    model = isTiny ? "tiny-unet" : "sd15-unet",
                    tensors = parameters.Count,
                    parameters = count,
                    steps = n,
                    ms_per_step = BenchSupport.Round(s * 1000, 3),
                    // Lion reads p, g, m and writes p, m: about 20 bytes per fp32 parameter
                    effective_gb_per_s = BenchSupport.Round(20.0 * count / s / 1e9, 2),
                    peak_memory_mib = memory.PeakMiB, memory_kind = memory.Kind,
                    device = BenchSupport.DeviceName(dev),
                    load_average = BenchSupport.LoadAverage(),
                }));
            }
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }
}
