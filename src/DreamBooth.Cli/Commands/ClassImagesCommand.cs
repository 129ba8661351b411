using System.CommandLine;
using System.Globalization;
using DreamBooth.Checkpoints;
using DreamBooth.Pipelines;
using DreamBooth.Schedulers;

namespace DreamBooth.Cli.Commands;

/// <summary>`dreambooth class-images`: top a class folder up to the needed count (resumable).</summary>
public sealed class ClassImagesCommand : ICliCommand
{
    public Command Build()
    {
        var model = new Option<string>("--model") { Description = "Checkpoint: .safetensors/.ckpt file, diffusers folder or Hugging Face repo id", Required = true };
        var classDir = new Option<DirectoryInfo>("--class-dir") { Description = "Class image folder (existing images of any size count)", Required = true };
        var classPrompt = new Option<string>("--class-prompt") { Description = "Prompt for generated class images, e.g. \"man\"", Required = true };
        var count = new Option<int>("--count") { Description = "Class images needed in all (class images per instance image × instance images)", Required = true };
        var negative = new Option<string>("--negative") { Description = "Class negative prompt", DefaultValueFactory = _ => "" };
        var batch = new Option<int>("--batch") { Description = "Class batch size", DefaultValueFactory = _ => 4 };
        var steps = new Option<int>("--steps") { Description = "Sampling steps", DefaultValueFactory = _ => 40 };
        var cfg = new Option<double>("--cfg") { Description = "Classifier-free guidance scale", DefaultValueFactory = _ => 7.5 };
        var sampler = new Option<string>("--sampler") { Description = $"Sampler: {string.Join(", ", SamplerFactory.Names)}", DefaultValueFactory = _ => SamplerFactory.Default };
        var size = new Option<string?>("--size") { Description = "WIDTHxHEIGHT of generated images, multiples of 8 from 8 to 8192: use your photos' training size (768x1024 for the recipe's prepared photos), as `train` does (default: the model's native size: 512x512 for SD 1.x)" };
        var seed = new Option<long>("--seed") { Description = "Base seed (image i gets seed+i); -1 = random, kept when resuming", DefaultValueFactory = _ => -1 };
        var clipSkip = new Option<int>("--clip-skip") { Description = "Clip skip", DefaultValueFactory = _ => 1 };
        var device = SamplingCli.DeviceOption();
        var dtype = SamplingCli.DtypeOption();

        var cmd = new Command("class-images", "Generate the missing class (regularization) images: existing ones count, only the shortfall is generated; resumable");
        foreach (var o in new Option[] { model, classDir, classPrompt, count, negative, batch, steps, cfg, sampler, size, seed, clipSkip, device, dtype })
            cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            string? sizeText = parse.GetValue(size);
            var (width, height) = sizeText is null ? (512, 512) : SamplingCli.ParseSize(sizeText);
            var request = new ClassImageRequest
            {
                ClassDirectory = parse.GetValue(classDir)!.FullName,
                Needed = parse.GetValue(count),
                ClassPrompt = parse.GetValue(classPrompt)!,
                NegativePrompt = parse.GetValue(negative) ?? "",
                BatchSize = parse.GetValue(batch),
                Steps = parse.GetValue(steps),
                CfgScale = parse.GetValue(cfg),
                Sampler = SamplerFactory.Canonical(parse.GetValue(sampler)),
                Width = width,
                Height = height,
                Seed = parse.GetValue(seed),
                ClipSkip = parse.GetValue(clipSkip),
            };
            if (request.Needed < 0) throw new DreamBoothException($"--count: expected >= 0, got {request.Needed}");
            new GenerationRequest { Prompt = request.ClassPrompt, NegativePrompt = request.NegativePrompt, Steps = request.Steps, CfgScale = request.CfgScale,
                Sampler = request.Sampler, Seed = request.Seed, Width = width, Height = height, BatchSize = request.BatchSize, ClipSkip = request.ClipSkip }.Validate();
            IO.OutputPath.CheckFolder(request.ClassDirectory, "--class-dir");
            var (existing, unreadable) = ClassImageGenerator.Scan(request.ClassDirectory);
            if (existing.Count >= request.Needed)
            {
                w.WriteLine($"class images in {request.ClassDirectory}: needed {request.Needed}, found {existing.Count}, skipped (unreadable) {unreadable.Count}: nothing to generate");
                return Task.FromResult(CliApp.Ok);
            }
            CliApp.Torch();
            var options = SamplingCli.Options(parse.GetValue(device), parse.GetValue(dtype));
            using var sd = StableDiffusionModel.Load(parse.GetValue(model)!);
            using var pipeline = new Txt2ImgPipeline(sd, options);
            if (sizeText is null) request = request with { Width = pipeline.NativeSize.Width, Height = pipeline.NativeSize.Height };
            var err = parse.InvocationConfiguration.Error;
            SamplingCli.WarnLongPrompts(pipeline, new GenerationRequest { Prompt = request.ClassPrompt, NegativePrompt = request.NegativePrompt }, err);
            var progress = new Printer(w, err);
            var report = new ClassImageGenerator(pipeline).Run(request, progress, ct);
            w.WriteLine(report.ToString());
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }

    sealed class Printer(TextWriter output, TextWriter error) : IProgress<ClassImageProgress>
    {
        public void Report(ClassImageProgress p)
        {
            if (p.LastFile is not null) output.WriteLine($"[{p.Generated}/{p.ToGenerate}] {p.LastFile}");
            else if (p.Sampling is { } s)
                error.Write($"\rimages {p.Generated}/{p.ToGenerate} step {s.Step}/{s.Steps} ({s.SecondsPerStep.ToString("0.00", CultureInfo.InvariantCulture)} s/it)   ");
        }
    }
}
