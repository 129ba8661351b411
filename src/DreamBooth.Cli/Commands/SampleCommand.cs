using System.CommandLine;
using System.Globalization;
using DreamBooth.Checkpoints;
using DreamBooth.Pipelines;
using DreamBooth.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands;

/// <summary>`dreambooth sample`: txt2img with a checkpoint, PNGs with A1111 infotext.</summary>
public sealed class SampleCommand : ICliCommand
{
    public Command Build()
    {
        var model = new Option<string>("--model") { Description = "Checkpoint: .safetensors/.ckpt file, diffusers folder or Hugging Face repo id", Required = true };
        var prompt = new Option<string>("--prompt") { Description = "Prompt", Required = true };
        var negative = new Option<string>("--negative") { Description = "Negative prompt", DefaultValueFactory = _ => "" };
        var steps = new Option<int>("--steps") { Description = "Sampling steps", DefaultValueFactory = _ => 40 };
        var cfg = new Option<double>("--cfg") { Description = "Classifier-free guidance scale", DefaultValueFactory = _ => 7.5 };
        var sampler = new Option<string>("--sampler") { Description = $"Sampler: {string.Join(", ", SamplerFactory.Names)}", DefaultValueFactory = _ => SamplerFactory.Default };
        var seed = new Option<long>("--seed") { Description = "Seed of the first image (the next get seed+1, …); -1 = random", DefaultValueFactory = _ => -1 };
        var size = new Option<string?>("--size") { Description = "WIDTHxHEIGHT, multiples of 8 from 8 to 8192 (default: the model's native size: 512x512 for SD 1.x, 32x32 for the toy model)" };
        var count = new Option<int>("--count") { Description = "Number of images", DefaultValueFactory = _ => 1 };
        var batch = new Option<int>("--batch") { Description = "Images denoised together", DefaultValueFactory = _ => 1 };
        var clipSkip = new Option<int>("--clip-skip") { Description = "1 = last text-encoder layer, 2 = the one before, …", DefaultValueFactory = _ => 1 };
        var output = new Option<DirectoryInfo>("--output") { Description = "Folder for the PNGs", Required = true };
        var device = SamplingCli.DeviceOption();
        var dtype = SamplingCli.DtypeOption();

        var cmd = new Command("sample", "Generate images from a prompt (txt2img), saved as PNG with A1111-compatible parameters");
        foreach (var o in new Option[] { model, prompt, negative, steps, cfg, sampler, seed, size, count, batch, clipSkip, output, device, dtype })
            cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            // every setting is checked before the model loads: a bad --size or --output costs nothing
            string? sizeText = parse.GetValue(size);
            var (width, height) = sizeText is null ? (512, 512) : SamplingCli.ParseSize(sizeText);
            var request = new GenerationRequest
            {
                Prompt = parse.GetValue(prompt)!,
                NegativePrompt = parse.GetValue(negative) ?? "",
                Steps = parse.GetValue(steps),
                CfgScale = parse.GetValue(cfg),
                Sampler = SamplerFactory.Canonical(parse.GetValue(sampler)),
                Seed = parse.GetValue(seed),
                Width = width,
                Height = height,
                Count = parse.GetValue(count),
                BatchSize = parse.GetValue(batch),
                ClipSkip = parse.GetValue(clipSkip),
            };
            request.Validate();
            var outDir = parse.GetValue(output)!.FullName;
            IO.OutputPath.CheckFolder(outDir, "--output");
            CliApp.Torch();
            var options = SamplingCli.Options(parse.GetValue(device), parse.GetValue(dtype));
            using var sd = StableDiffusionModel.Load(parse.GetValue(model)!);
            using var pipeline = new Txt2ImgPipeline(sd, options);
            if (sizeText is null)
            {
                (width, height) = pipeline.NativeSize;
                request = request with { Width = width, Height = height };
            }
            request.Validate(pipeline.PixelMultiple);
            SamplingCli.WarnLongPrompts(pipeline, request, parse.InvocationConfiguration.Error);
            w.WriteLine($"model {sd.Name} [{sd.ShortHash ?? "no hash"}], {request.Sampler}, {request.Steps} steps, CFG {request.CfgScale.ToString(CultureInfo.InvariantCulture)}, {width}x{height}, on {options.Device} {options.Dtype}");
            var progress = new SamplingCli.StepPrinter(parse.InvocationConfiguration.Error);
            using var result = pipeline.Generate(request, progress, ct);
            Directory.CreateDirectory(outDir);
            int next = SamplingCli.NextFileIndex(outDir);
            foreach (var image in result.Images)
            {
                string path = Path.Combine(outDir, $"{next++:D5}-{image.Info.Seed.ToString(CultureInfo.InvariantCulture)}.png");
                image.SavePng(path);
                w.WriteLine($"{path}  seed {image.Info.Seed.ToString(CultureInfo.InvariantCulture)}");
            }
            w.WriteLine($"{result.Images.Count} image(s) in {result.Elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)} s, {result.SecondsPerStep.ToString("0.000", CultureInfo.InvariantCulture)} s/it");
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }
}

/// <summary>Options and output shared by the sampling commands.</summary>
internal static class SamplingCli
{
    public static Option<string> DeviceOption() => new("--device") { Description = "cpu, cuda or cuda:N", DefaultValueFactory = _ => "cpu" };
    public static Option<string> DtypeOption() => new("--dtype") { Description = "Text encoder and UNet dtype: fp32, fp16 or bf16 (the VAE stays fp32)", DefaultValueFactory = _ => "fp32" };

    public static PipelineOptions Options(string? device, string? dtype)
    {
        var d = (device ?? "cpu").Trim().ToLowerInvariant();
        if (!(d == "cpu" || d == "cuda" || (d.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(d[5..], NumberStyles.None, CultureInfo.InvariantCulture, out _))))
            throw new DreamBoothException($"--device: expected cpu, cuda or cuda:N, got '{device}'");
        if (d != "cpu" && !cuda.is_available()) throw new DreamBoothException($"--device {d}: CUDA is not available in this build/machine (see 'dreambooth doctor')");
        var type = (dtype ?? "fp32").Trim().ToLowerInvariant() switch
        {
            "fp32" or "float32" => ScalarType.Float32,
            "fp16" or "float16" or "half" => ScalarType.Float16,
            "bf16" or "bfloat16" => ScalarType.BFloat16,
            _ => throw new DreamBoothException($"--dtype: expected fp32, fp16 or bf16, got '{dtype}'"),
        };
        return new PipelineOptions { Device = torch.device(d), Dtype = type, VaeDtype = ScalarType.Float32 };
    }

    /// <summary>"WxH" for --size: each side a multiple of 8 from 8 to 8192, else a one-line error naming --size and the range.</summary>
    public static (int Width, int Height) ParseSize(string text)
    {
        var (w, h) = GenerationRequest.ParseSize(text);
        if (w < 8 || h < 8 || w > 8192 || h > 8192 || w % 8 != 0 || h % 8 != 0)
            throw new DreamBoothException($"--size '{text}': width and height must be multiples of 8 from 8 to 8192");
        return (w, h);
    }

    /// <summary>Says on stderr which prompt is cut and by how many tokens (the pipeline encodes at most 225).</summary>
    public static void WarnLongPrompts(Txt2ImgPipeline pipeline, GenerationRequest request, TextWriter err)
    {
        foreach (var warning in pipeline.PromptWarnings(request)) err.WriteLine($"warning: {warning}");
    }

    /// <summary>One more than the highest leading number of the PNGs in a folder (00012-….png → 13), so reruns never overwrite.</summary>
    public static int NextFileIndex(string dir)
    {
        int max = -1;
        foreach (var path in Directory.EnumerateFiles(dir, "*.png"))
        {
            var name = Path.GetFileName(path);
            int dash = name.IndexOf('-');
            if (dash > 0 && int.TryParse(name[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out var n)) max = Math.Max(max, n);
        }
        return max + 1;
    }

    /// <summary>Prints "batch b/B step s/S (x.xx s/it)" on one rewritten stderr line.</summary>
    public sealed class StepPrinter(TextWriter writer) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress p)
        {
            writer.Write($"\rbatch {p.Batch}/{p.BatchCount} step {p.Step}/{p.Steps} ({p.SecondsPerStep.ToString("0.00", CultureInfo.InvariantCulture)} s/it)   ");
            if (p.Step == p.Steps) writer.WriteLine();
        }
    }
}
