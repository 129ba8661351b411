using System.CommandLine;
using DreamBooth.Toy;

namespace DreamBooth.Cli.Commands;

/// <summary>`dreambooth demo`: the whole recipe end to end on the embedded toy default (the README's main command).</summary>
public sealed class DemoCommand : ICliCommand
{
    public Command Build()
    {
        var d = new ToyDemoOptions { OutputDir = "." };
        var output = new Option<DirectoryInfo>("--output") { Description = "Folder for everything the run writes", DefaultValueFactory = _ => new DirectoryInfo(Path.Combine("runs", "demo")) };
        var epochs = new Option<int>("--epochs") { Description = "Training epochs (steps per instance image)", DefaultValueFactory = _ => d.Epochs };
        var saveEvery = new Option<int>("--save-every") { Description = "Save a checkpoint every N epochs", DefaultValueFactory = _ => d.SaveEveryEpochs };
        var lr = new Option<double>("--lr") { Description = "UNet learning rate (toy-scaled; the recipe's 1e-7 is for SD1.5)", DefaultValueFactory = _ => d.LearningRate };
        var teLr = new Option<double>("--te-lr") { Description = "Text-encoder learning rate (toy-scaled)", DefaultValueFactory = _ => d.TextEncoderLearningRate };
        var optimizer = new Option<string>("--optimizer") { Description = "Optimizer (the recipe's lion; adamw or adamw8bit to compare)", DefaultValueFactory = _ => d.Optimizer };
        var instancePrompt = new Option<string>("--instance-prompt") { Description = "Instance prompt ([filewords] = the subject's .txt captions)", DefaultValueFactory = _ => d.InstancePrompt };
        var classPrompt = new Option<string>("--class-prompt") { Description = "Class prompt ([filewords] = the class images' .txt captions)", DefaultValueFactory = _ => d.ClassPrompt };
        var samples = new Option<int>("--probe-samples") { Description = "Pictures per prompt for the before/after measurement", DefaultValueFactory = _ => d.ProbeSamples };
        var model = new Option<string?>("--model") { Description = "Toy model folder (default data-samples/toy/model)" };
        var seed = new Option<long>("--seed") { Description = "Seed for data order, noise, sampling", DefaultValueFactory = _ => d.Seed };
        var threads = new Option<int>("--threads")
        {
            Description = "torch CPU threads (1: fastest for the toy's small tensors; the figures depend on the count, see docs/demo.md)",
            DefaultValueFactory = _ => d.Threads ?? 1,
        };
        var resume = new Option<bool>("--resume")
        {
            Description = "Finish the cancelled run in --output with the settings it started with: training continues from its saved state " +
                          "(bitwise as if never stopped), then the x/y grid, the after figures and metrics.json",
        };
        var cmd = new Command("demo", "Run the whole DreamBooth recipe on the embedded toy default: prepare → class images → train → x/y plot, with before/after figures");
        var settings = new Option[] { epochs, saveEvery, lr, teLr, optimizer, instancePrompt, classPrompt, samples, model, seed, threads };
        foreach (var o in settings.Prepend(output).Append(resume)) cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            string outDir = parse.GetValue(output)!.FullName;
            IO.OutputPath.CheckFolder(outDir, "--output");
            bool resuming = parse.GetValue(resume);
            if (resuming && settings.FirstOrDefault(o => parse.GetResult(o) is { Implicit: false }) is { } given)
                throw new DreamBoothException($"{given.Name}: --resume finishes the run with the settings it started with ({ToyDemo.OptionsFileName}); give only --output");
            var info = CliApp.Torch();
            w.WriteLine($"dreambooth demo on the {info.Backend.ToString().ToLowerInvariant()} backend");
            var options = new ToyDemoOptions
            {
                OutputDir = parse.GetValue(output)!.FullName,
                Epochs = parse.GetValue(epochs),
                SaveEveryEpochs = parse.GetValue(saveEvery),
                LearningRate = parse.GetValue(lr),
                TextEncoderLearningRate = parse.GetValue(teLr),
                Optimizer = parse.GetValue(optimizer)!,
                InstancePrompt = parse.GetValue(instancePrompt)!,
                ClassPrompt = parse.GetValue(classPrompt)!,
                ProbeSamples = parse.GetValue(samples),
                ModelPath = parse.GetValue(model),
                Seed = parse.GetValue(seed),
                Threads = parse.GetValue(threads) >= 1 ? parse.GetValue(threads) : throw new DreamBoothException($"--threads {parse.GetValue(threads)}: expected at least 1"),
            };
            ToyDemoResult result;
            try
            {
                result = resuming ? await ToyDemo.ResumeAsync(outDir, new LineProgress(w), ct) : await ToyDemo.RunAsync(options, new LineProgress(w), ct);
            }
            catch (OperationCanceledException e)
            {
                var err = parse.InvocationConfiguration.Error;
                err.WriteLine($"cancelled{(e.Message.StartsWith("training", StringComparison.Ordinal) ? ": " + e.Message : "")}");
                err.WriteLine($"finish it with: dreambooth demo --output {Quote(parse.GetValue(output)!.ToString())} --resume");
                return CliApp.Cancelled;
            }
            w.WriteLine();
            w.WriteLine(result.Summary());
            w.WriteLine();
            w.WriteLine($"x/y grid:    {result.GridPath}");
            w.WriteLine($"loss curve:  {result.LossCurvePath}");
            w.WriteLine($"             {ToyDemo.LossCurveNote}");
            w.WriteLine($"figures:     {result.MetricsPath}");
            w.WriteLine($"checkpoints: {string.Join(", ", result.Checkpoints.Select(Path.GetFileName))}");
            return CliApp.Ok;
        });
        return cmd;
    }

    static string Quote(string path) => path.Any(c => char.IsWhiteSpace(c) || c is '\'' or '"' or '$' or '`' or '\\') ? $"'{path.Replace("'", "'\\''")}'" : path;

    sealed class LineProgress(TextWriter w) : IProgress<string>
    {
        public void Report(string value) { lock (w) w.WriteLine(value); }
    }
}
