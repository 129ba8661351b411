using System.CommandLine;
using System.Diagnostics;
using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// `dreambooth bench forward`: one forward of each component on given inputs, for parity with another implementation
/// on the same weights and the same device (tools/gpu/reference/parity_fullsize.py runs diffusers/transformers on the
/// same files). <c>--write-random DIR</c> first writes a random-weight diffusers folder (SD1.5 or tiny), so both sides
/// load identical weights. Inputs (a .safetensors file, fp32 unless noted): <c>unet.sample</c>, <c>unet.timestep</c>,
/// <c>unet.encoder_hidden_states</c>, <c>text_encoder.input_ids</c> (int64), <c>vae.images</c> ([-1, 1]),
/// <c>vae.latents</c> (unscaled); any subset. Outputs, one set per dtype, cast to fp32: <c>{dtype}.unet</c>,
/// <c>{dtype}.text_encoder</c> (last hidden state), <c>{dtype}.vae.mean</c>, <c>{dtype}.vae.logvar</c>,
/// <c>{dtype}.vae.decode</c>. One JSON line per component and dtype with the forward's wall time (synchronised).
/// </summary>
public sealed class BenchForwardCommand : IBenchSubcommand
{
    public Command Build()
    {
        var tiny = BenchSupport.TinyOption();
        var device = BenchSupport.DeviceOption();
        var model = new Option<string?>("--model") { Description = "A diffusers folder or single file to load (default: the --write-random folder)" };
        var writeRandom = new Option<string?>("--write-random") { Description = "Write a random-weight diffusers folder here first (fp32; SD1.5 architecture, or the tiny one with --tiny); the folder must not exist" };
        var seed = new Option<long>("--seed") { Description = "Seed of the random weights", DefaultValueFactory = _ => 1 };
        var inputs = new Option<string?>("--inputs") { Description = "The inputs .safetensors file" };
        var outputs = new Option<string?>("--outputs") { Description = "Where to write the outputs .safetensors (must not exist)" };
        var dtypes = new Option<string>("--dtypes") { Description = "Compute dtypes to run, comma-separated (fp32, fp16, bf16)", DefaultValueFactory = _ => "fp32" };
        var cmd = new Command("forward", "One forward of the UNet, text encoder and VAE on given inputs per dtype, outputs to a file (parity with diffusers on the same weights); JSON lines with the forward times");
        foreach (var o in new Option[] { tiny, device, model, writeRandom, seed, inputs, outputs, dtypes }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            string? randomDir = parse.GetValue(writeRandom), modelPath = parse.GetValue(model) ?? randomDir;
            string? inputPath = parse.GetValue(inputs), outputPath = parse.GetValue(outputs);
            if (randomDir is not null && Path.Exists(randomDir)) throw new DreamBoothException($"--write-random {randomDir}: already exists (choose a new folder; nothing is overwritten)");
            if (modelPath is null) throw new DreamBoothException("--model: expected a diffusers folder or single file (or --write-random DIR)");
            if (inputPath is not null && !File.Exists(inputPath)) throw new DreamBoothException($"--inputs {inputPath}: no such file");
            if ((inputPath is null) != (outputPath is null)) throw new DreamBoothException("--inputs and --outputs go together");
            if (outputPath is not null && File.Exists(outputPath)) throw new DreamBoothException($"--outputs {outputPath}: already exists (nothing is overwritten)");
            var types = parse.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(t => BenchSupport.ParseDtype(t, "--dtypes")).Distinct().ToList();
            if (types.Count == 0) throw new DreamBoothException("--dtypes: expected at least one of fp32, fp16, bf16");
            CliApp.Torch();
            var dev = BenchSupport.ParseDevice(parse.GetValue(device));

            if (randomDir is not null)
            {
                bool isTiny = parse.GetValue(tiny) ?? false;
                var clock = Stopwatch.StartNew();
                using var sd = StableDiffusionModel.CreateRandom(
                    isTiny ? CLIPTextConfig.Tiny : CLIPTextConfig.StableDiffusion15,
                    isTiny ? UNet2DConditionConfig.Tiny : UNet2DConditionConfig.StableDiffusion15,
                    isTiny ? AutoencoderKLConfig.Tiny : AutoencoderKLConfig.StableDiffusion15,
                    BenchSupport.ByteTokenizer(), parse.GetValue(seed));
                string tmp = randomDir.TrimEnd('/') + ".partial";
                if (Directory.Exists(tmp)) Directory.Delete(tmp, recursive: true);
                sd.SaveDiffusers(tmp);
                Directory.Move(tmp, randomDir);
                w.WriteLine(BenchSupport.Json(new
                {
                    bench = "forward", step = "write_random", implementation = "ours", model = isTiny ? "tiny-random" : "sd15-random",
                    path = Path.GetFullPath(randomDir), seed = parse.GetValue(seed), seconds = BenchSupport.Round(clock.Elapsed.TotalSeconds, 2),
                }));
            }
            if (inputPath is null) return Task.FromResult(CliApp.Ok);

            var load = Stopwatch.StartNew();
            using var sdModel = StableDiffusionModel.Load(modelPath, new ModelLoadOptions());
            double loadSeconds = load.Elapsed.TotalSeconds;
            using var input = SafeTensors.Open(inputPath);
            var results = new Dictionary<string, Tensor>(StringComparer.Ordinal);
            try
            {
                foreach (var type in types)
                {
                    ct.ThrowIfCancellationRequested();
                    sdModel.To(dev, type);
                    string name = BenchSupport.DtypeName(type);
                    void Run(string component, Func<Dictionary<string, Tensor>> forward)
                    {
                        using var scope = NewDisposeScope();
                        using var _ = no_grad();
                        BenchSupport.Sync(dev);
                        var clock = Stopwatch.StartNew();
                        var outs = forward();
                        BenchSupport.Sync(dev);
                        double ms = clock.Elapsed.TotalMilliseconds;
                        foreach (var (key, t) in outs)
                            results[$"{name}.{key}"] = t.to(ScalarType.Float32, CPU).contiguous().DetachFromDisposeScope();
                        w.WriteLine(BenchSupport.Json(new
                        {
                            bench = "forward", implementation = "ours", @case = $"{component} {name}", component, dtype = name,
                            model = modelPath, forward_ms = BenchSupport.Round(ms, 2), load_seconds = BenchSupport.Round(loadSeconds, 2),
                            outputs = outs.ToDictionary(kv => kv.Key, kv => kv.Value.shape),
                            device = BenchSupport.DeviceName(dev),
                        }));
                    }
                    Tensor In(string key, ScalarType? as_ = null) => input.Load(key).to(as_ ?? type, dev);
                    if (input.Contains("unet.sample"))
                        Run("unet", () => new() { ["unet"] = sdModel.UNet.forward(In("unet.sample"), In("unet.timestep", ScalarType.Float32), In("unet.encoder_hidden_states")) });
                    if (input.Contains("text_encoder.input_ids"))
                        Run("text_encoder", () => new() { ["text_encoder"] = sdModel.TextEncoder.forward(In("text_encoder.input_ids", ScalarType.Int64)) });
                    if (input.Contains("vae.images"))
                        Run("vae_encode", () =>
                        {
                            using var posterior = sdModel.Vae.Encode(In("vae.images"));
                            return new() { ["vae.mean"] = posterior.Mean.alias(), ["vae.logvar"] = posterior.LogVar.alias() };
                        });
                    if (input.Contains("vae.latents"))
                        Run("vae_decode", () => new() { ["vae.decode"] = sdModel.Vae.Decode(In("vae.latents")) });
                }
                SafeTensors.Save(outputPath!, results, new Dictionary<string, string> { ["producer"] = "dreambooth bench forward", ["model"] = modelPath, ["device"] = BenchSupport.DeviceName(dev) });
            }
            finally
            {
                foreach (var t in results.Values) t.Dispose();
            }
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }
}
