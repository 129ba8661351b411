using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Pipelines;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// `dreambooth bench sample`: txt2img denoising speed (it/s of the sampling loop, CFG 7.5, so each step runs
/// the UNet on 2 × batch latents) for random SD1.5 weights at each size and batch; one JSON line per case.
/// </summary>
public sealed class BenchSampleCommand : IBenchSubcommand
{
    public Command Build()
    {
        var tiny = BenchSupport.TinyOption();
        var device = BenchSupport.DeviceOption();
        var sizes = new Option<string?>("--sizes") { Description = "WIDTHxHEIGHT list (default 512x512,768x1024; tiny: 64x64,96x128)" };
        var batches = new Option<string>("--batches") { Description = "Batch sizes", DefaultValueFactory = _ => "1,8" };
        var steps = new Option<int>("--steps") { Description = "Timed sampling steps per case (at least 2)", DefaultValueFactory = _ => 20 };
        var dtype = new Option<string?>("--dtype") { Description = "UNet and text encoder dtype (default fp16 on CUDA, fp32 on CPU; the VAE stays fp32)" };
        var sampler = new Option<string>("--sampler") { Description = "Sampler", DefaultValueFactory = _ => "Euler" };
        var cfg = new Option<double>("--cfg") { Description = "Classifier-free guidance scale", DefaultValueFactory = _ => 7.5 };
        var cmd = new Command("sample", "txt2img it/s and peak memory per size and batch on random SD1.5 weights (JSON lines)");
        foreach (var o in new Option[] { tiny, device, sizes, batches, steps, dtype, sampler, cfg }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            int n = parse.GetValue(steps);
            if (n < 2) throw new DreamBoothException("--steps: expected at least 2 (the first step is not timed)");
            CliApp.Torch();
            var dev = BenchSupport.ParseDevice(parse.GetValue(device));
            bool isTiny = parse.GetValue(tiny) ?? dev.type != DeviceType.CUDA;
            var type = BenchSupport.ParseDtype(parse.GetValue(dtype) ?? (dev.type == DeviceType.CUDA ? "fp16" : "fp32"), "--dtype");
            var sizeList = BenchSupport.ParseSizes(parse.GetValue(sizes) ?? (isTiny ? "64x64,96x128" : "512x512,768x1024"), 8);
            var batchList = BenchSupport.ParseInts(parse.GetValue(batches)!, "--batches");

            using var sd = StableDiffusionModel.CreateRandom(
                isTiny ? CLIPTextConfig.Tiny : CLIPTextConfig.StableDiffusion15,
                isTiny ? UNet2DConditionConfig.Tiny : UNet2DConditionConfig.StableDiffusion15,
                isTiny ? AutoencoderKLConfig.Tiny : AutoencoderKLConfig.StableDiffusion15,
                BenchSupport.ByteTokenizer(), seed: 1);
            using var pipeline = new Txt2ImgPipeline(sd, new PipelineOptions { Device = dev, Dtype = type, VaeDtype = ScalarType.Float32 });
            foreach (var (width, height) in sizeList)
                foreach (var batch in batchList)
                {
                    ct.ThrowIfCancellationRequested();
                    var request = new GenerationRequest
                    {
                        Prompt = "a photo of sks dog on the beach", NegativePrompt = "blurry", Steps = n, CfgScale = parse.GetValue(cfg),
                        Sampler = parse.GetValue(sampler)!, Width = width, Height = height, Seed = 1, BatchSize = batch, Count = batch,
                    };
                    var seeds = Enumerable.Range(1, batch).Select(s => (long)s).ToList();
                    // warm-up: allocator, kernels, prompt cache, VAE decode at this size
                    foreach (var img in pipeline.GenerateBatch(request with { Steps = 2 }, seeds, null, ct)) img.Dispose();
                    GC.Collect();
                    using var memory = new BenchSupport.PeakMemory(dev);
                    var stamps = new List<double>();
                    var clock = Stopwatch.StartNew();
                    var progress = new SyncProgress<SamplingProgress>(p => { BenchSupport.Sync(dev); stamps.Add(clock.Elapsed.TotalSeconds); });
                    var images = pipeline.GenerateBatch(request, seeds, progress, ct);
                    double total = clock.Elapsed.TotalSeconds;
                    foreach (var img in images) img.Dispose();
                    // steps 2..n: the first step also encodes the prompt pair and draws the noise
                    double loop = stamps[^1] - stamps[0];
                    double itPerS = (n - 1) / loop;
                    w.WriteLine(BenchSupport.Json(new
                    {
                        bench = "sample",
                        implementation = "ours",
                        @case = $"{width}x{height} b{batch} cfg{request.CfgScale.ToString(System.Globalization.CultureInfo.InvariantCulture)} {BenchSupport.DtypeName(type)}",
                        model = isTiny ? "tiny-random" : "sd15-random",
                        width, height, batch, steps = n, cfg = request.CfgScale, sampler = request.Sampler,
                        unet_batch = request.CfgScale != 1.0 ? 2 * batch : batch,
                        it_per_s = BenchSupport.Significant(itPerS),
                        s_per_it = BenchSupport.Significant(1.0 / itPerS),
                        images_per_s = BenchSupport.Round(batch / total, 4),
                        images_per_min = BenchSupport.Round(60 * batch / total, 2),
                        seconds_total = BenchSupport.Round(total, 3),
                        peak_memory_mib = memory.PeakMiB, memory_kind = memory.Kind,
                        device = BenchSupport.DeviceName(dev), dtype = BenchSupport.DtypeName(type),
                        load_average = BenchSupport.LoadAverage(),
                    }));
                }
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }

    /// <summary>Calls back on the reporting thread (Progress&lt;T&gt; would post to the thread pool and lose the timing).</summary>
}
