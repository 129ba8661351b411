using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using DreamBooth.Evaluation;
using DreamBooth.IO;
using DreamBooth.Likeness;
using DreamBooth.Pipelines;
using DreamBooth.Schedulers;

namespace DreamBooth.Cli.Commands;

/// <summary>
/// `dreambooth xyplot`: the checkpoint comparison grid. Columns are X values (default: every saved epoch of
/// a run), rows Y values (default: the prompts, by A1111 prompt S/R); every cell shares one seed unless the
/// seed is an axis. Same engine as the 04-xy-plot notebook.
/// </summary>
public sealed class XYPlotCommand : ICliCommand
{
    public Command Build()
    {
        var checkpoints = new Option<string[]>("--checkpoints") { Description = "A run's output folder (all saved epochs, {name}_{epoch:04d}.safetensors) or checkpoint files", Required = true, AllowMultipleArgumentsPerToken = true };
        var prompts = new Option<string[]>("--prompts") { Description = "The prompt; with several, the prompt axis compares them (the first is the S/R search string)", Required = true, AllowMultipleArgumentsPerToken = true };
        var negative = new Option<string>("--negative") { Description = "Negative prompt", DefaultValueFactory = _ => "" };
        var x = new Option<string>("--x") { Description = "X axis (columns): checkpoint | prompt | cfg | seed | steps | sampler", DefaultValueFactory = _ => "checkpoint" };
        var y = new Option<string?>("--y") { Description = "Y axis (rows): prompt | cfg | seed | steps | sampler | checkpoint | none (default: prompt when several prompts or --values are given, else none)" };
        var xValues = new Option<string?>("--x-values") { Description = "X values when X is not the checkpoint, A1111 syntax: \"3, 7.5, 12\", \"1-10 (+3)\", \"5-9 [3]\"" };
        var values = new Option<string?>("--values") { Description = "Y values, A1111 syntax (prompt S/R: \"sks man, a man, sks man smiling\": the first is searched for and replaced by each)" };
        var seed = new Option<long>("--seed") { Description = "Seed of every cell (-1: one random seed for the grid, printed)", DefaultValueFactory = _ => -1 };
        var cfg = new Option<double>("--cfg") { Description = "CFG scale", DefaultValueFactory = _ => 7.5 };
        var steps = new Option<int>("--steps") { Description = "Sampling steps", DefaultValueFactory = _ => 20 };
        var sampler = new Option<string>("--sampler") { Description = "Sampler (A1111 name)", DefaultValueFactory = _ => "DPM++ 2M Karras" };
        var size = new Option<string?>("--size") { Description = "Image size WIDTHxHEIGHT, multiples of 8 up to 8192 (default: the model's native size)" };
        var clipSkip = new Option<int>("--clip-skip") { Description = "CLIP skip (1 = last layer)", DefaultValueFactory = _ => 1 };
        var output = new Option<FileInfo>("--output") { Description = "The grid PNG to write (infotext describes the axes)", Required = true };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer for single-file checkpoints: a tokenizer/ folder or bpe_simple_vocab_16e6.txt.gz (default: a tokenizer/ folder beside the checkpoints, else the Hub)" };
        var modelConfig = new Option<string?>("--model-config") { Description = "Folder with text_encoder/, unet/, vae/ config.json for single files that are not SD 1.x size (default: such folders beside the checkpoints)" };
        var device = new Option<string?>("--device") { Description = "cpu, cuda or cuda:N (default: cuda when available, else cpu); float16 on CUDA, float32 on CPU" };
        var baseline = new Option<string?>("--baseline") { Description = "A base model to put first on the checkpoint axis as \"base model\" (the likeness baseline)" };
        var score = new Option<string?>("--score") { Description = "likeness: score every cell by face likeness to the --instance-dir photos; writes OUTPUT-likeness.png (scores drawn) and OUTPUT-likeness.json, prints the suggested checkpoint" };
        var instanceDir = new Option<DirectoryInfo?>("--instance-dir") { Description = "With --score likeness: the photos of the person (the training images)" };
        var instanceToken = new Option<string>("--instance-token") { Description = "With --score likeness: rows whose prompt contains it ask for the subject; the others are class rows (should not become the person)", DefaultValueFactory = _ => "ohwx" };

        var cmd = new Command("xyplot", "Render an x/y grid comparing checkpoints (epochs), prompts, CFG, seeds, steps or samplers, labelled, saved as PNG");
        foreach (var o in new Option[] { checkpoints, prompts, negative, x, y, xValues, values, seed, cfg, steps, sampler, size, clipSkip, output, tokenizer, modelConfig, device, baseline, score, instanceDir, instanceToken })
            cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            var spec = BuildSpec(new XYPlotArguments
            {
                Checkpoints = parse.GetValue(checkpoints)!, Prompts = parse.GetValue(prompts)!, Negative = parse.GetValue(negative)!,
                X = parse.GetValue(x)!, Y = parse.GetValue(y), XValues = parse.GetValue(xValues), YValues = parse.GetValue(values),
                Seed = parse.GetValue(seed), Cfg = parse.GetValue(cfg), Steps = parse.GetValue(steps), Sampler = parse.GetValue(sampler)!,
                Size = parse.GetValue(size), ClipSkip = parse.GetValue(clipSkip), Baseline = parse.GetValue(baseline),
            });
            var path = parse.GetValue(output)!.FullName;
            if (!path.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
                throw new DreamBoothException($"--output '{path}': the grid is written as PNG, give a .png path");
            IO.OutputPath.CheckFile(path, "--output");
            var scoring = ParseScore(parse.GetValue(score), parse.GetValue(instanceDir)?.FullName);
            spec = spec.Resolve();
            w.WriteLine($"x/y plot: {spec.X.Name()} ({spec.X.Count}) × {spec.Y?.Name() ?? "—"} ({spec.Y?.Count ?? 1}), seed {spec.Seed}");
            var torchInfo = CliApp.Torch();
            // the reference is read before any cell is rendered: a folder without a face fails in seconds, not after the grid
            using var describer = scoring is null ? null : FaceDescriber.Create();
            var reference = scoring is null ? null : IdentityReference.FromFolder(scoring, describer!, ct: ct);
            var first = spec.Checkpoint ?? (spec.X.Kind == XYAxisKind.Checkpoint ? spec.X : spec.Y!).Values.Cast<XYCheckpoint>().First();
            var loadOptions = Txt2ImgCellRenderer.LoadOptionsFor(first, parse.GetValue(tokenizer), parse.GetValue(modelConfig));
            var (pipelineOptions, deviceName) = PipelineFor(parse.GetValue(device), torchInfo.CudaAvailable);
            w.WriteLine($"device: {deviceName} ({(pipelineOptions.Dtype == TorchSharp.torch.ScalarType.Float16 ? "float16" : "float32")})");
            var err = parse.InvocationConfiguration.Error;
            using var renderer = new Txt2ImgCellRenderer(loadOptions, pipelineOptions) { Warnings = new SyncProgress<string>(m => err.WriteLine($"warning: {m}")) };
            var progress = new Progress(w);
            using var result = XYPlotEngine.Run(spec, renderer, progress, ct);
            result.Save(path);
            w.WriteLine($"saved {path} ({result.Grid.Width}x{result.Grid.Height}, {result.Cells.Count} cells, {result.CheckpointLoads} model load(s), {result.Elapsed.TotalSeconds:0.0} s)");
            if (reference is not null)
            {
                using var likeness = XYLikeness.Score(result, new LikenessScorer(describer!, reference), new XYLikenessOptions { InstanceToken = parse.GetValue(instanceToken) }, ct: ct);
                var stem = Path.Combine(Path.GetDirectoryName(path)!, Path.GetFileNameWithoutExtension(path));
                likeness.SaveGrid(stem + "-likeness.png");
                var json = likeness.ToJson().ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
                AtomicFile.Write(stem + "-likeness.json", s => s.Write(Encoding.UTF8.GetBytes(json + "\n")));
                foreach (var c in likeness.Checkpoints)
                    w.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"likeness {c.Label}{(c.Baseline ? " (baseline)" : "")}: distance {(c.Distance is double d ? d.ToString("0.00", CultureInfo.InvariantCulture) : "no face")} ({c.SamePerson}/{c.InstanceCells} under {FaceDistance.Threshold}), leaking context cells {(c.ContextCells == 0 ? "–" : $"{c.LeakingCells}/{c.ContextCells}")}"));
                w.WriteLine($"suggested: {likeness.Suggested?.Label ?? "none"}: {likeness.Reason}");
                w.WriteLine($"saved {stem}-likeness.png and {stem}-likeness.json");
            }
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }

    /// <summary>Prints cell completions and model loads (synchronously, in order).</summary>
    sealed class Progress(TextWriter w) : IProgress<XYPlotProgress>
    {
        public void Report(XYPlotProgress p)
        {
            if (p.Phase is XYPlotPhase.LoadingCheckpoint or XYPlotPhase.CellDone) w.WriteLine(p.ToString());
        }
    }

    /// <summary>The command's inputs as given (strings in A1111 syntax).</summary>
    public sealed record XYPlotArguments
    {
        public IReadOnlyList<string> Checkpoints { get; init; } = [];
        public IReadOnlyList<string> Prompts { get; init; } = [];
        public string Negative { get; init; } = "";
        public string X { get; init; } = "checkpoint";
        public string? Y { get; init; }
        public string? XValues { get; init; }
        public string? YValues { get; init; }
        public long Seed { get; init; } = -1;
        public double Cfg { get; init; } = 7.5;
        public int Steps { get; init; } = 20;
        public string Sampler { get; init; } = "DPM++ 2M Karras";
        public string? Size { get; init; }
        public int ClipSkip { get; init; } = 1;
        /// <summary>A base model put first on the checkpoint axis, labelled "base model".</summary>
        public string? Baseline { get; init; }
    }

    /// <summary>The instance folder when --score likeness is asked for (checked to exist), null when not scoring.</summary>
    public static string? ParseScore(string? score, string? instanceDir)
    {
        if (score is null)
        {
            if (instanceDir is not null) throw new DreamBoothException("--instance-dir is only used with --score likeness");
            return null;
        }
        if (!score.Trim().Equals("likeness", StringComparison.OrdinalIgnoreCase))
            throw new DreamBoothException($"--score '{score}': expected likeness");
        if (instanceDir is null) throw new DreamBoothException("--score likeness needs --instance-dir (the photos of the person)");
        if (!Directory.Exists(instanceDir)) throw new DreamBoothException($"--instance-dir: folder not found: {instanceDir}");
        return instanceDir;
    }

    /// <summary>Turns the command's inputs into a spec; every problem is a one-line <see cref="DreamBoothException"/> naming the option.</summary>
    public static XYPlotSpec BuildSpec(XYPlotArguments a)
    {
        if (a.Prompts.Count == 0 || string.IsNullOrWhiteSpace(a.Prompts[0])) throw new DreamBoothException("--prompts: give at least one prompt");
        var checkpoints = XYCheckpoint.Resolve(a.Checkpoints);
        if (a.Baseline is not null)
        {
            if (!File.Exists(a.Baseline) && !Directory.Exists(a.Baseline)) throw new DreamBoothException($"--baseline: model not found: {a.Baseline}");
            checkpoints = [new XYCheckpoint(Path.GetFullPath(a.Baseline), "base model", null), .. checkpoints];
        }
        var xKind = XYAxis.ParseKind(a.X);
        XYAxisKind? yKind = a.Y is null
            ? (a.Prompts.Count > 1 || a.YValues is not null ? XYAxisKind.Prompt : null)
            : a.Y.Trim().Equals("none", StringComparison.OrdinalIgnoreCase) ? null : XYAxis.ParseKind(a.Y);
        if (yKind is null && a.YValues is not null) throw new DreamBoothException("--values: there is no Y axis (--y none)");

        XYAxis Axis(XYAxisKind kind, string? text, string option)
        {
            switch (kind)
            {
                case XYAxisKind.Checkpoint:
                    if (text is not null) throw new DreamBoothException($"{option}: checkpoint values come from --checkpoints");
                    return XYAxis.Checkpoints(checkpoints);
                case XYAxisKind.Prompt when text is null:
                    if (a.Prompts.Count < 2) throw new DreamBoothException($"{option}: the prompt axis needs S/R values (\"search, replacement, …\") or several --prompts");
                    return XYAxis.PromptSR(a.Prompts.ToList());
                default:
                    if (string.IsNullOrWhiteSpace(text)) throw new DreamBoothException($"{option}: the {XYAxis.Name(kind)} axis needs values");
                    return XYAxis.Parse(kind, text, CanonicalSampler);
            }
        }

        var xAxis = Axis(xKind, a.XValues, "--x-values");
        var yAxis = yKind is XYAxisKind k ? Axis(k, a.YValues, "--values") : null;
        bool checkpointAxis = xKind == XYAxisKind.Checkpoint || yKind == XYAxisKind.Checkpoint;
        if (a.Baseline is not null && !checkpointAxis) throw new DreamBoothException("--baseline: the checkpoint is not an axis (use --x checkpoint or --y checkpoint)");
        if (!checkpointAxis && checkpoints.Count != 1)
            throw new DreamBoothException($"--checkpoints: {checkpoints.Count} checkpoints given but the checkpoint is not an axis; give one model or use --x checkpoint");
        int? width = null, height = null;
        if (a.Size is not null)
        {
            var parts = a.Size.ToLowerInvariant().Split('x');
            if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int sw) ||
                !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int sh))
                throw new DreamBoothException($"--size '{a.Size}': expected WIDTHxHEIGHT, e.g. 512x768");
            if (sw < 8 || sh < 8 || sw > 8192 || sh > 8192 || sw % 8 != 0 || sh % 8 != 0)
                throw new DreamBoothException($"--size '{a.Size}': width and height must be multiples of 8 from 8 to 8192");
            (width, height) = (sw, sh);
        }
        return new XYPlotSpec
        {
            X = xAxis, Y = yAxis, Prompt = a.Prompts[0], NegativePrompt = a.Negative, Seed = a.Seed, Cfg = a.Cfg, Steps = a.Steps,
            Sampler = CanonicalSampler(a.Sampler), Width = width, Height = height, ClipSkip = a.ClipSkip,
            Checkpoint = checkpointAxis ? null : checkpoints[0],
        };
    }

    static string CanonicalSampler(string name) => SamplerFactory.Canonical(name);

    static (PipelineOptions Options, string Device) PipelineFor(string? device, bool cudaAvailable)
    {
        string name = (device ?? (cudaAvailable ? "cuda" : "cpu")).Trim().ToLowerInvariant();
        if (name == "cpu") return (new PipelineOptions { Device = TorchSharp.torch.CPU, Dtype = TorchSharp.torch.ScalarType.Float32 }, name);
        if (!name.StartsWith("cuda", StringComparison.Ordinal)) throw new DreamBoothException($"--device '{device}': expected cpu, cuda or cuda:N");
        if (!cudaAvailable) throw new DreamBoothException($"--device {name}: CUDA is not available (run 'dreambooth doctor')");
        return (new PipelineOptions { Device = TorchSharp.torch.device(name), Dtype = TorchSharp.torch.ScalarType.Float16 }, name);
    }
}
