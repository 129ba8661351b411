using System.CommandLine;
using System.Globalization;
using DreamBooth.Toy;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Cli.Commands;

/// <summary>`dreambooth toy ...`: the embedded toy world (renderer, sample subject, class images, probe).</summary>
public sealed class ToyCommand : ICliCommand
{
    public Command Build()
    {
        var cmd = new Command("toy", "The embedded toy world: render captioned scenes, write the sample subject and class images, measure pictures");
        cmd.Subcommands.Add(Subject());
        cmd.Subcommands.Add(ClassImages());
        cmd.Subcommands.Add(Render());
        cmd.Subcommands.Add(Probe());
        cmd.Subcommands.Add(Pretrain());
        cmd.Subcommands.Add(TokenizerCmd());
        cmd.Subcommands.Add(Export());
        return cmd;
    }

    static Command Export()
    {
        var model = new Option<string>("--model") { Description = "A toy model: diffusers folder (e.g. RUN/diffusers)", Required = true };
        var output = new Option<DirectoryInfo>("--output") { Description = "Model folder to write (toy-sd.safetensors, tokenizer/, config/)", Required = true };
        var cmd = new Command("export", "Write a toy model as the embedded layout: single-file fp16 toy-sd.safetensors + tokenizer/ + config/");
        cmd.Options.Add(model);
        cmd.Options.Add(output);
        cmd.SetAction(parse =>
        {
            var dir = parse.GetValue(output)!.FullName;
            IO.OutputPath.CheckFolder(dir, "--output");
            CliApp.Torch();
            using var sd = Checkpoints.StableDiffusionModel.Load(parse.GetValue(model)!);
            ToyAssets.Export(sd, dir, new Dictionary<string, string> { ["dreambooth.toy"] = "exported from " + Path.GetFileName(sd.SourcePath) });
            parse.InvocationConfiguration.Output.WriteLine($"wrote {Path.Combine(dir, ToyAssets.CheckpointFileName)}");
            return 0;
        });
        return cmd;
    }

    static Command TokenizerCmd()
    {
        var bpe = new Option<FileInfo>("--bpe") { Description = "CLIP's bpe_simple_vocab_16e6.txt.gz (or a tokenizer folder)", Required = true };
        var output = new Option<DirectoryInfo>("--output") { Description = "tokenizer/ folder to write (vocab.json, merges.txt, configs)", Required = true };
        var cmd = new Command("tokenizer", "Write the CLIP tokenizer folder the toy model ships with, derived from CLIP's BPE vocabulary");
        cmd.Options.Add(bpe);
        cmd.Options.Add(output);
        cmd.SetAction(parse =>
        {
            IO.OutputPath.CheckFolder(parse.GetValue(output)!.FullName, "--output");
            var tok = Text.ClipTokenizer.FromPath(parse.GetValue(bpe)!.FullName);
            tok.Save(parse.GetValue(output)!.FullName);
            parse.InvocationConfiguration.Output.WriteLine($"wrote {parse.GetValue(output)!.FullName} ({tok.VocabularySize} tokens)");
            return 0;
        });
        return cmd;
    }

    static Command Pretrain()
    {
        var d = new ToyPretrainOptions();
        var output = new Option<DirectoryInfo>("--output") { Description = "Run folder (diffusers/ model, samples/, pretrain.json, log)", Required = true };
        var steps = new Option<int>("--steps") { Description = "Text encoder + UNet training steps", DefaultValueFactory = _ => d.UNetSteps };
        var vaeSteps = new Option<int>("--vae-steps") { Description = "Autoencoder training steps", DefaultValueFactory = _ => d.VaeSteps };
        var seed = new Option<int>("--seed") { Description = "Seed of weights, data, batches and noise", DefaultValueFactory = _ => d.Seed };
        var dataset = new Option<int>("--dataset") { Description = "Number of captioned renders", DefaultValueFactory = _ => d.DatasetSize };
        var batch = new Option<int>("--batch") { Description = "Batch size", DefaultValueFactory = _ => d.BatchSize };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate of the text encoder + UNet (AdamW)", DefaultValueFactory = _ => d.UNetLearningRate };
        var vaeLr = new Option<double>("--vae-lr") { Description = "Peak learning rate of the autoencoder (AdamW)", DefaultValueFactory = _ => d.VaeLearningRate };
        var micro = new Option<bool>("--micro") { Description = "Use the micro test configs (16×16 pictures) instead of the embedded model's" };
        var threads = new Option<int>("--threads")
        {
            Description = "CPU threads for torch (1 is fastest on a busy 2-core machine: more threads spin against each other)",
            DefaultValueFactory = _ => 1,
        };
        var cmd = new Command("pretrain", "Pretrain the toy text-to-image model (VAE, then CLIP text encoder + UNet) from nothing on captioned toy-world renders");
        foreach (var o in new Option[] { output, steps, vaeSteps, seed, dataset, batch, lr, vaeLr, micro, threads }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            IO.OutputPath.CheckFolder(parse.GetValue(output)!.FullName, "--output");
            CliApp.Torch();
            var w = parse.InvocationConfiguration.Output;
            var options = d with
            {
                UNetSteps = parse.GetValue(steps), VaeSteps = parse.GetValue(vaeSteps), Seed = parse.GetValue(seed),
                DatasetSize = parse.GetValue(dataset), BatchSize = parse.GetValue(batch), Threads = parse.GetValue(threads),
                UNetLearningRate = parse.GetValue(lr), VaeLearningRate = parse.GetValue(vaeLr),
                Model = parse.GetValue(micro) ? ToyModelConfig.Micro : ToyModelConfig.Default,
            };
            var dir = parse.GetValue(output)!.FullName;
            var tokenizer = ToyAssets.Tokenizer();
            w.WriteLine($"toy pretrain: seed {options.Seed}, {options.DatasetSize} renders of {options.Model.ImageSize}px, VAE {options.VaeSteps} steps, UNet+TE {options.UNetSteps} steps, batch {options.BatchSize}, {options.Threads} thread(s)");
            var result = new ToyPretrainer(options, tokenizer).Run(dir, new SyncProgress<ToyPretrainProgress>(p => w.WriteLine(ToyPretrainer.Format(p))), ct);
            w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"done in {result.TotalTime:hh\\:mm\\:ss} (render {result.RenderTime.TotalSeconds:0}s, VAE {result.VaeTime.TotalSeconds:0}s, UNet+TE {result.UNetTime.TotalSeconds:0}s); parameters TE {result.TextEncoderParameters:N0}, UNet {result.UNetParameters:N0}, VAE {result.VaeParameters:N0}; scaling_factor {result.ScalingFactor}"));
            w.WriteLine($"model: {Path.Combine(result.ModelDirectory, ToyAssets.CheckpointFileName)} (+ tokenizer/, config/); diffusers folder: {result.DiffusersDirectory}");
            w.WriteLine($"previews: {Path.Combine(dir, "samples", "previews.png")}");
            return Task.FromResult(0);
        });
        return cmd;
    }

    /// <summary>Reports on the calling thread (Progress&lt;T&gt; would post to the thread pool and reorder lines).</summary>

    static Command Subject()
    {
        var output = new Option<DirectoryInfo>("--output") { Description = "Folder for the instance images (PNG + .txt caption)", Required = true };
        var size = new Option<int>("--size") { Description = "Image size in pixels (8 to 4096)", DefaultValueFactory = _ => ToyWorld.WorkingSize };
        var sheet = new Option<FileInfo?>("--sheet") { Description = "Also write the instance images as one contact-sheet PNG (3x zoom)" };
        var cmd = new Command("subject", $"Write the sample subject \"{ToyWorld.InstancePrompt}\": {ToyWorld.SubjectInstances.Count} instance images at different poses and backgrounds");
        cmd.Options.Add(output);
        cmd.Options.Add(sheet);
        cmd.Options.Add(size);
        cmd.SetAction(parse =>
        {
            CheckOutputs(parse.GetValue(output)!, parse.GetValue(sheet), parse.GetValue(size));
            var files = ToyWorld.WriteSubject(parse.GetValue(output)!.FullName, parse.GetValue(size));
            parse.InvocationConfiguration.Output.WriteLine($"wrote {files.Count} instance images to {parse.GetValue(output)!.FullName}");
            if (parse.GetValue(sheet) is { } sheetFile)
            {
                var images = files.Select(f => Image.Load<Rgb24>(f)).ToList();
                using var grid = ToyWorld.ContactSheet(images, 8, 3);
                IO.AtomicFile.Write(sheetFile.FullName, st => grid.SaveAsPng(st));
                foreach (var img in images) img.Dispose();
            }
            return 0;
        });
        return cmd;
    }

    static Command ClassImages()
    {
        var output = new Option<DirectoryInfo>("--output") { Description = "Folder for the class images (PNG + .txt caption)", Required = true };
        var count = new Option<int>("--count")
        {
            Description = "How many class images (default: 10 per instance image of the sample subject)",
            DefaultValueFactory = _ => ToyWorld.ClassImagesPerInstanceImage * ToyWorld.SubjectInstances.Count,
        };
        var seed = new Option<int>("--seed") { Description = "Seed of the renderer", DefaultValueFactory = _ => 1234 };
        var size = new Option<int>("--size") { Description = "Image size in pixels (8 to 4096)", DefaultValueFactory = _ => ToyWorld.WorkingSize };
        var cmd = new Command("class-images", $"Render real class images for the class word \"{ToyWorld.ClassWord}\" (random men of the toy world), deterministically from the seed");
        cmd.Options.Add(output);
        cmd.Options.Add(count);
        cmd.Options.Add(seed);
        cmd.Options.Add(size);
        cmd.SetAction(parse =>
        {
            CheckOutputs(parse.GetValue(output)!, null, parse.GetValue(size));
            var files = ToyWorld.WriteClassImages(parse.GetValue(output)!.FullName, parse.GetValue(count), parse.GetValue(seed), parse.GetValue(size));
            parse.InvocationConfiguration.Output.WriteLine($"wrote {files.Count} class images to {parse.GetValue(output)!.FullName}");
            return 0;
        });
        return cmd;
    }

    static Command Render()
    {
        var output = new Option<DirectoryInfo>("--output") { Description = "Folder for the scenes (PNG + .txt caption)", Required = true };
        var count = new Option<int>("--count") { Description = "How many scenes", DefaultValueFactory = _ => 16 };
        var seed = new Option<int>("--seed") { Description = "Seed of the renderer", DefaultValueFactory = _ => 0 };
        var size = new Option<int>("--size") { Description = "Image size in pixels (8 to 4096)", DefaultValueFactory = _ => ToyWorld.WorkingSize };
        var sheet = new Option<FileInfo?>("--sheet") { Description = "Also write all scenes as one contact-sheet PNG (8 per row, 3x zoom)" };
        var cmd = new Command("render", "Render random captioned scenes of the toy world (what the toy model was pretrained on)");
        cmd.Options.Add(output);
        cmd.Options.Add(sheet);
        cmd.Options.Add(count);
        cmd.Options.Add(seed);
        cmd.Options.Add(size);
        cmd.SetAction(parse =>
        {
            var dir = parse.GetValue(output)!.FullName;
            int n = parse.GetValue(count), s = parse.GetValue(size);
            if (n < 1) throw new DreamBoothException($"--count {n}: expected at least 1");
            CheckOutputs(parse.GetValue(output)!, parse.GetValue(sheet), s);
            Directory.CreateDirectory(dir);
            var rng = new Random(parse.GetValue(seed));
            var w = parse.InvocationConfiguration.Output;
            var images = new List<Image<Rgb24>>();
            for (int i = 0; i < n; i++)
            {
                var scene = ToyWorld.Sample(rng);
                var stem = Path.Combine(dir, $"scene-{i + 1:0000}");
                var img = ToyWorld.Render(scene, s, s);
                images.Add(img);
                IO.AtomicFile.Write(stem + ".png", st => img.SaveAsPng(st));
                var caption = ToyWorld.Caption(scene);
                IO.AtomicFile.WriteAllText(stem + ".txt", caption + "\n");
                w.WriteLine($"{Path.GetFileName(stem)}.png  {caption}");
            }
            if (parse.GetValue(sheet) is { } sheetFile)
            {
                using var grid = ToyWorld.ContactSheet(images, 8, 3);
                IO.AtomicFile.Write(sheetFile.FullName, st => grid.SaveAsPng(st));
                w.WriteLine($"contact sheet {sheetFile.FullName}");
            }
            foreach (var img in images) img.Dispose();
            return 0;
        });
        return cmd;
    }

    /// <summary>The output folder, contact-sheet file and picture size, checked before anything is drawn.</summary>
    static void CheckOutputs(DirectoryInfo output, FileInfo? sheet, int size)
    {
        IO.OutputPath.CheckFolder(output.FullName, "--output");
        if (sheet is not null) IO.OutputPath.CheckFile(sheet.FullName, "--sheet");
        if (size < 8 || size > ToyWorld.MaxRenderSize) throw new DreamBoothException($"--size {size}: expected 8 to {ToyWorld.MaxRenderSize} pixels");
    }

    static Command Probe()
    {
        var inputs = new Argument<FileSystemInfo[]>("inputs") { Description = "PNG files or folders of PNG files", Arity = ArgumentArity.OneOrMore };
        var cmd = new Command("probe", "Measure toy-world pictures: figure, shirt colour, subject score (signature purple) and class diversity");
        cmd.Arguments.Add(inputs);
        cmd.SetAction(parse =>
        {
            var files = new List<string>();
            foreach (var item in parse.GetValue(inputs)!)
            {
                if (item is DirectoryInfo d && d.Exists) files.AddRange(Directory.GetFiles(d.FullName, "*.png").Order(StringComparer.Ordinal));
                else if (File.Exists(item.FullName)) files.Add(item.FullName);
                else throw new DreamBoothException($"{item.FullName}: not found (expected a PNG file or a folder of PNG files)");
            }
            if (files.Count == 0) throw new DreamBoothException("toy probe: no PNG files found in the given inputs");
            var w = parse.InvocationConfiguration.Output;
            var results = new List<ToyProbeResult>();
            foreach (var f in files)
            {
                using var img = Image.Load<Rgb24>(f);
                var r = ToyProbe.Analyze(img);
                results.Add(r);
                w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{Path.GetFileName(f),-24} figure {(r.FigureFound ? "yes" : "no "),-3} bg {r.Background,-6} shirt {r.ShirtColor ?? "-",-7} subject_score {r.SubjectScore:0.000}"));
            }
            var s = ToyProbe.Summarize(results);
            w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"images {s.Count}  figures {s.FiguresFound}  subject_score {s.MeanSubjectScore:0.000}  subject_rate {s.SubjectRate:0.000}  class_diversity {s.ClassDiversity:0.000}  shirt colours {s.DistinctShirtColors}"));
            return 0;
        });
        return cmd;
    }
}
