using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Data;
using DreamBooth.Evaluation;
using DreamBooth.IO;
using DreamBooth.Pipelines;
using DreamBooth.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Toy;

/// <summary>
/// The recipe, scaled to the toy world. What differs from the full recipe, and why (everything else — Lion,
/// constant_with_warmup with warmup 0, weight decay 0.1 (TE 0.1), TE clip 0, EMA on and not saved, cached
/// latents, TE trained for the first 75 % of steps, instance prompt "ohwx man", class prompt "man", prior loss
/// 0.75, pad tokens, shuffle tags, clip skip 1, batch 1 — is the recipe's value):
/// <list type="bullet">
/// <item>learning rate 1e-4 for the UNet and the text encoder (recipe 1e-7): the toy trains 840 steps, not
///   200 epochs × 20 photos of an 860 M-parameter UNet; Lion moves each weight by at most lr per step, so 1e-7
///   would move the toy's weights by less than 0.0001 in total. The text encoder needs the same rate: with 1e-5
///   "ohwx" (two tokens the toy's text encoder never saw in pretraining) did not move and the subject was not
///   learned; at 1e-3 (UNet) the model forgets every prompt within 70 steps;</item>
/// <item>120 epochs, a save every 20 (recipe 200 / 10): the subject appears between epochs 40 and 80;</item>
/// <item>10 class images per instance image (recipe 100): see <see cref="ToyWorld.ClassImagesPerInstanceImage"/>;</item>
/// <item>fp32 (recipe bf16) and 1 torch thread: CPU speed, see <see cref="MixedPrecision"/> and <see cref="Threads"/>;</item>
/// <item>32×32 pixels and buckets in steps of 32 (recipe 768×1024, steps of 64): the toy model's native size;</item>
/// <item>prior_stepping "joint" (recipe "alternate"): the toy's LR and epochs were tuned with one step holding the
///   instance image and its class image; see <see cref="PriorStepping"/>;</item>
/// <item>no gradient checkpointing (recipe on): it saves GPU memory at 768×1024; on the toy it would only recompute.</item>
/// </list>
/// </summary>
public sealed record ToyDemoOptions
{
    public required string OutputDir { get; init; }
    /// <summary>The pretrained toy model folder (toy-sd.safetensors + config/ + tokenizer/); default data-samples/toy/model.</summary>
    public string? ModelPath { get; init; }
    public int Epochs { get; init; } = 120;
    public int SaveEveryEpochs { get; init; } = 20;
    public double LearningRate { get; init; } = 1e-4;
    public double TextEncoderLearningRate { get; init; } = 1e-4;
    public int ClassImagesPerInstance { get; init; } = ToyWorld.ClassImagesPerInstanceImage;
    /// <summary>
    /// Compute precision: "no" (fp32). The recipe's bf16 is a GPU setting: most CPUs emulate bf16, and a toy step
    /// took 0.27 s in bf16 vs 0.10 s in fp32 on this 2-core machine (1 thread, EMA on).
    /// </summary>
    public string MixedPrecision { get; init; } = "no";
    /// <summary>torch CPU threads while the demo runs (restored afterwards): the toy's tensors are so small that a
    /// second OpenMP thread costs more in wake-ups than it computes (0.23 s/step with 2 threads vs 0.08 s with 1).</summary>
    public int? Threads { get; init; } = 1;
    public string InstancePrompt { get; init; } = ToyWorld.InstancePrompt;
    public string ClassPrompt { get; init; } = ToyWorld.ClassWord;
    /// <summary>The recipe's optimizer, Lion ("adamw" / "adamw8bit" to compare).</summary>
    public string Optimizer { get; init; } = "lion";
    /// <summary>Pictures generated per prompt for the before/after measurement.</summary>
    public int ProbeSamples { get; init; } = 16;
    public int SamplingSteps { get; init; } = 20;
    public double Cfg { get; init; } = 7.5;
    public string Sampler { get; init; } = "DPM++ 2M Karras";
    public long Seed { get; init; } = 1234;
    /// <summary>Training and sampling size (square), the toy model's native size.</summary>
    public int Size { get; init; } = ToyModelConfig.Default.ImageSize;
    /// <summary>
    /// "joint" (one step with the instance image and its class image, N steps an epoch), not the recipe's "alternate"
    /// (the A1111 extension's instance step then class step, 2N): the toy's learning rate and 120 epochs were tuned with
    /// joint steps (docs/demo.md), and its figures are what ToyDemoTests asserts.
    /// </summary>
    public string PriorStepping { get; init; } = "joint";
    /// <summary>Off (recipe on): the toy's activations are kilobytes, so recomputing them in backward only costs time.</summary>
    public bool GradientCheckpointing { get; init; } = false;

    /// <summary>The training config this demo runs: the recipe's defaults with the toy changes above.</summary>
    public TrainingConfig TrainingConfig(string modelPath, string instanceDir, string classDir) => new()
    {
        PretrainedModel = modelPath,
        OutputDir = Path.Combine(OutputDir, "train"),
        Name = "ohwx-toy",
        Concepts =
        [
            new ConceptConfig
            {
                InstanceDir = instanceDir,
                InstancePrompt = InstancePrompt,
                ClassDir = classDir,
                ClassPrompt = ClassPrompt,
                ClassImagesPerInstance = ClassImagesPerInstance,
                GenerateClassImages = false,
            },
        ],
        Epochs = Epochs,
        SaveEveryEpochs = SaveEveryEpochs,
        Optimizer = Optimizer,
        MixedPrecision = MixedPrecision,
        LearningRate = LearningRate,
        TextEncoderLearningRate = TextEncoderLearningRate,
        MaxResolution = Size,
        ResolutionStep = Size,
        PriorStepping = PriorStepping,
        GradientCheckpointing = GradientCheckpointing,
        Seed = Seed,
    };
}

/// <summary>Before/after figures of the demo, measured with <see cref="ToyProbe"/>.</summary>
public sealed record ToyDemoResult(
    ToyProbeSummary InstanceBefore, ToyProbeSummary ClassBefore,
    ToyProbeSummary InstanceAfter, ToyProbeSummary ClassAfter,
    IReadOnlyList<string> Checkpoints, string GridPath, string LossCurvePath, string MetricsPath,
    int TrainingSteps, TimeSpan Elapsed, IReadOnlyDictionary<string, double> Seconds, string CpuKernels = "", int TorchThreads = 0)
{
    /// <summary>The figures as the CLI prints them.</summary>
    public string Summary()
    {
        static string Row(string name, ToyProbeSummary s) => string.Create(CultureInfo.InvariantCulture,
            $"  {name,-28} subject rate {s.SubjectRate,5:P0}   mean subject score {s.MeanSubjectScore,5:0.00}   shirt colours {s.DistinctShirtColors} (diversity {s.ClassDiversity:0.00})");
        return string.Join(Environment.NewLine,
            "DreamBooth on the toy world: does \"ohwx man\" now draw the subject, and does \"man\" still draw varied men?",
            Row("\"ohwx man\" before", InstanceBefore),
            Row("\"ohwx man\" after", InstanceAfter),
            Row("\"man\" before", ClassBefore),
            Row("\"man\" after", ClassAfter),
            string.Create(CultureInfo.InvariantCulture, $"  training steps {TrainingSteps}; total {Elapsed.TotalSeconds:0} s"),
            $"  on {CpuKernels} CPU kernels with {TorchThreads} torch thread(s): the figures are reproducible bitwise for the same two (docs/demo.md)");
    }
}

/// <summary>
/// The README's main job on the embedded default: prepare the subject's photos → real class images →
/// measure the base model → train with the (toy-scaled) recipe → x/y plot of the saved checkpoints →
/// measure again. Everything lands in <see cref="ToyDemoOptions.OutputDir"/>.
/// </summary>
public static class ToyDemo
{
    /// <summary>
    /// Rows of the x/y grid (Prompt S/R over the first): the subject alone and in two places, then the class word
    /// alone and in a place — each column is one checkpoint, every cell the same seed.
    /// </summary>
    public static readonly string[] GridPrompts = ["ohwx man", "ohwx man on a beach", "ohwx man in the snow", "man", "a man on a beach"];

    /// <summary>The demo's settings, written into the output folder at the start so that <see cref="ResumeAsync"/> can finish the run.</summary>
    public const string OptionsFileName = "demo-options.json";

    /// <summary>
    /// One line under the loss curve (and in the CLI's output): why DreamBooth's loss barely falls. The loss of a step
    /// is the noise-prediction error at one random timestep; how hard that is depends far more on the timestep drawn
    /// (nearly clean latents are hard to denoise from, nearly pure noise easy) than on what the model has learned.
    /// </summary>
    public const string LossCurveNote =
        "A flat, noisy loss is expected: each step's loss is the noise-prediction error at a random timestep, dominated by that " +
        "timestep's noise level rather than by what the model learned. Learning shows in the samples (xy-grid.png), not in this curve.";

    static readonly JsonSerializerOptions OptionsJson = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    public static Task<ToyDemoResult> RunAsync(ToyDemoOptions options, IProgress<string>? log = null, CancellationToken ct = default) =>
        RunCoreAsync(options, resume: false, log, ct);

    /// <summary>
    /// Finishes a demo run that was cancelled (or killed) in <paramref name="outputDir"/>, with the settings it started with:
    /// training continues from its last saved state (bitwise as if never interrupted, see docs/training.md), then the
    /// x/y grid, the after measurement and metrics.json. Stages that were done are redone only where they are cheap and
    /// deterministic (prepare reuses its manifest, class images exist, the "before" samples are regenerated).
    /// </summary>
    public static async Task<ToyDemoResult> ResumeAsync(string outputDir, IProgress<string>? log = null, CancellationToken ct = default)
    {
        string file = Path.Combine(Path.GetFullPath(outputDir), OptionsFileName);
        if (!File.Exists(file))
            throw new DreamBoothException($"--output '{outputDir}': no {OptionsFileName} (nothing to resume: run the demo without --resume)");
        ToyDemoOptions options;
        try { options = JsonSerializer.Deserialize<ToyDemoOptions>(File.ReadAllText(file), OptionsJson) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new DreamBoothException($"{file}: not a demo options file ({e.Message})"); }
        options = options with { OutputDir = Path.GetFullPath(outputDir) };
        return await RunCoreAsync(options, resume: true, log, ct);
    }

    /// <summary>Every problem with the settings, before anything runs.</summary>
    static void Validate(ToyDemoOptions options, TrainingConfig config)
    {
        IO.OutputPath.CheckFolder(options.OutputDir, "--output");
        var problems = config.Validate(checkFolders: false).ToList();
        if (options.ProbeSamples < 1) problems.Add($"probe samples = {options.ProbeSamples} (expected at least 1)");
        if (options.ClassImagesPerInstance < 1) problems.Add($"class images per instance = {options.ClassImagesPerInstance} (expected at least 1)");
        if (problems.Count > 0) throw new DreamBoothException("demo settings: " + string.Join("; ", problems));
        new GenerationRequest { Steps = options.SamplingSteps, CfgScale = options.Cfg, Sampler = options.Sampler, Seed = options.Seed,
            Width = options.Size, Height = options.Size, Count = options.ProbeSamples, BatchSize = options.ProbeSamples }.Validate();
    }

    static async Task<ToyDemoResult> RunCoreAsync(ToyDemoOptions options, bool resume, IProgress<string>? log, CancellationToken ct)
    {
        var total = Stopwatch.StartNew();
        var seconds = new Dictionary<string, double>();
        var phase = Stopwatch.StartNew();
        void Done(string name) { seconds[name] = Math.Round(phase.Elapsed.TotalSeconds, 1); log?.Report($"{name}: {phase.Elapsed.TotalSeconds:0.0} s"); phase.Restart(); }

        string output = Path.GetFullPath(options.OutputDir);
        string modelDir = Path.GetFullPath(options.ModelPath ?? ToyAssets.ModelDirectory);
        string modelPath = Path.Combine(modelDir, ToyAssets.CheckpointFileName);
        if (!File.Exists(modelPath))
            throw new DreamBoothException($"toy model '{modelPath}' not found (expected the pretrained toy model in data-samples/toy/model; see its MODEL_CARD.md)");
        string instanceDir = Path.Combine(output, "instance");
        string classDir = Path.Combine(output, "class");
        var config = options.TrainingConfig(modelPath, instanceDir, classDir);
        Validate(options, config);
        string stateFile = Path.Combine(config.OutputDir, DreamBoothTrainer.StateFileName);
        string metricsPath = Path.Combine(output, "metrics.json");
        if (!resume && File.Exists(stateFile))
        {
            // metrics.json is written last: without it the run in this folder did not finish
            if (!File.Exists(metricsPath))
                throw new DreamBoothException($"--output '{options.OutputDir}' holds an unfinished demo run: finish it with --resume, or choose another folder");
            File.Delete(metricsPath);   // a finished earlier run: this one starts over and replaces its results
            File.Delete(stateFile);
        }
        Directory.CreateDirectory(output);
        if (!resume) AtomicFile.WriteAllText(Path.Combine(output, OptionsFileName), JsonSerializer.Serialize(options with { OutputDir = output }, OptionsJson) + "\n");
        var loadOptions = ToyAssets.LoadOptions(modelDir);
        int size = options.Size;

        // 1. Prepare the subject's photos exactly as real photos are prepared (ingest, face-aware focal crop, manifest).
        log?.Report($"prepare: {ToyAssets.SubjectDirectory} → {instanceDir}");
        var report = await DatasetPreparer.RunAsync(ToyAssets.SubjectDirectory, instanceDir, new PrepareOptions
        {
            Size = new Bucket(size, size),
            BucketMaxResolution = size,
            BucketMinSide = size,
            BucketStep = size,
        }, ct: ct);
        if (report.Prepared < TrainingConfigMinimum) throw new DreamBoothException($"{ToyAssets.SubjectDirectory}: only {report.Prepared} usable instance images");
        Done("prepare");

        // From here on every torch op runs on this thread (no await follows): the thread count is set here because
        // libtorch keeps it per OS thread (see TorchThreads), and the figures depend on it.
        using var threads = Runtime.TorchThreads.Use(options.Threads);

        // 2. Real class images: the toy world's renderer plays the role of the recipe's real photos of men.
        int needed = report.Prepared * options.ClassImagesPerInstance;
        int existing = Directory.Exists(classDir) ? Directory.GetFiles(classDir, "*.png").Length : 0;
        if (existing < needed) ToyWorld.WriteClassImages(classDir, needed, (int)options.Seed, size);
        log?.Report($"class images: {needed} real \"man\" renders in {classDir}");
        Done("class_images");

        // 3. The base model, measured before training.
        ToyProbeSummary instanceBefore, classBefore;
        using (var baseModel = StableDiffusionModel.Load(modelPath, loadOptions))
        using (var pipeline = new Txt2ImgPipeline(baseModel))
        {
            instanceBefore = Probe(pipeline, ToyWorld.InstancePrompt, options, Path.Combine(output, "samples-before-ohwx-man.png"), ct, "before training (base model)");
            classBefore = Probe(pipeline, ToyWorld.ClassWord, options, Path.Combine(output, "samples-before-man.png"), ct, "before training (base model)");
        }
        Done("measure_before");

        // 4. Train with the recipe (or finish the saved run).
        config.ThrowIfInvalid(source: "toy training config");
        config.Save(Path.Combine(output, "config.json"));
        TrainingResult trained;
        int totalSteps;
        using (var model = StableDiffusionModel.Load(modelPath, loadOptions))
        using (var trainer = new DreamBoothTrainer(config, model))
        {
            totalSteps = trainer.TotalSteps;
            if (resume && File.Exists(stateFile))
            {
                trainer.LoadState(config.OutputDir);
                log?.Report($"train: resuming at step {trainer.Step}/{trainer.TotalSteps} from {config.OutputDir}");
            }
            else log?.Report($"train: {trainer.TotalSteps} steps ({config.Epochs} epochs × {trainer.StepsPerEpoch} steps), TE for the first {trainer.TextEncoderSteps}");
            foreach (var warning in trainer.PromptWarnings) log?.Report($"  warning: {warning}");
            int lastReported = -1;
            var progress = new SyncProgress<TrainingEvent>(e =>
            {
                if (e.Kind == TrainingEventKind.Saved) log?.Report($"  saved {Path.GetFileName(e.Path)}");
                else if (e.Kind == TrainingEventKind.EpochEnd && e.Epoch / 10 != lastReported)
                {
                    lastReported = e.Epoch / 10;
                    log?.Report(string.Create(CultureInfo.InvariantCulture, $"  epoch {e.Epoch}/{config.Epochs}  step {e.Step}/{e.TotalSteps}  loss {e.Loss:0.0000}"));
                }
            });
            trained = trainer.Run(progress, ct);
        }
        if (trained.Cancelled)
            throw new OperationCanceledException($"training cancelled at step {trained.Steps} of {totalSteps}; its state is saved in {config.OutputDir}", ct);
        Done("train");

        // 5. Loss curve and the x/y plot of every saved checkpoint.
        string lossPath = Path.Combine(output, "loss-curve.png");
        using (var curve = LossCurvePlot.FromTrainingLog(Path.Combine(config.OutputDir, "log.csv"), "toy DreamBooth: instance vs prior loss", note: LossCurveNote))
            AtomicFile.Write(lossPath, s => curve.SaveAsPng(s));
        // the scheduled saves only: a run cancelled right at an epoch's end also left a save named like an epoch's
        var checkpoints = XYCheckpoint.FindEpochs(config.OutputDir)
            .Where(c => c.Epoch is int e && (e % Math.Max(1, config.SaveEveryEpochs) == 0 || e == config.Epochs)).ToList();
        if (checkpoints.Count == 0) throw new DreamBoothException($"{config.OutputDir}: training saved no checkpoint");
        string gridPath = Path.Combine(output, "xy-grid.png");
        var spec = new XYPlotSpec
        {
            // the base model first ("before"), then every save in epoch order
            X = XYAxis.Checkpoints([new XYCheckpoint(modelPath, "base model", null), .. checkpoints]),
            Y = XYAxis.PromptSR(GridPrompts),
            Prompt = GridPrompts[0],
            Cfg = options.Cfg,
            Seed = options.Seed,
            Steps = options.SamplingSteps,
            Sampler = options.Sampler,
            Width = size,
            Height = size,
        }.Resolve();
        using (var renderer = new Txt2ImgCellRenderer(loadOptions, PipelineOptions.Default))
        using (var grid = XYPlotEngine.Run(spec, renderer, null, ct))
            grid.Save(gridPath);
        Done("xy_plot");

        // 6. The last checkpoint, measured after training.
        ToyProbeSummary instanceAfter, classAfter;
        using (var finalModel = StableDiffusionModel.Load(checkpoints[^1].Path, loadOptions))
        using (var pipeline = new Txt2ImgPipeline(finalModel))
        {
            string after = $"after training ({Path.GetFileNameWithoutExtension(checkpoints[^1].Path)}, the last save)";
            instanceAfter = Probe(pipeline, ToyWorld.InstancePrompt, options, Path.Combine(output, "samples-after-ohwx-man.png"), ct, after);
            classAfter = Probe(pipeline, ToyWorld.ClassWord, options, Path.Combine(output, "samples-after-man.png"), ct, after);
        }
        Done("measure_after");

        var result = new ToyDemoResult(instanceBefore, classBefore, instanceAfter, classAfter,
            checkpoints.Select(c => c.Path).ToList(), gridPath, lossPath, metricsPath, trained.Steps, total.Elapsed, seconds,
            Runtime.CpuKernels.Name, TorchSharp.torch.get_num_threads());
        AtomicFile.WriteAllText(metricsPath, JsonSerializer.Serialize(new
        {
            instance_before = instanceBefore, class_before = classBefore, instance_after = instanceAfter, class_after = classAfter,
            training_steps = trained.Steps, cpu_kernels = result.CpuKernels, torch_threads = result.TorchThreads,
            seconds, total_seconds = Math.Round(total.Elapsed.TotalSeconds, 1),
            checkpoints = result.Checkpoints, grid = gridPath, loss_curve = lossPath,
        }, new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }) + "\n");
        return result;
    }

    const int TrainingConfigMinimum = Training.TrainingConfig.MinInstanceImages;

    /// <summary>
    /// Generates <see cref="ToyDemoOptions.ProbeSamples"/> pictures of a prompt (seeds seed, seed+1, ...), measures them, and
    /// saves a contact sheet captioned with the prompt, <paramref name="when"/> (before/after training), the sampling settings
    /// and the measured subject rate.
    /// </summary>
    public static ToyProbeSummary Probe(Txt2ImgPipeline pipeline, string prompt, ToyDemoOptions options, string? sheetPath, CancellationToken ct, string when = "")
    {
        using var result = pipeline.Generate(new GenerationRequest
        {
            Prompt = prompt,
            Steps = options.SamplingSteps,
            CfgScale = options.Cfg,
            Sampler = options.Sampler,
            Seed = options.Seed,
            Width = options.Size,
            Height = options.Size,
            Count = options.ProbeSamples,
            BatchSize = options.ProbeSamples,
        }, null, ct);
        var images = result.Images.Select(i => i.Image).ToList();
        var summary = ToyProbe.Measure(images);
        if (sheetPath is not null)
        {
            using var sheet = ToyWorld.ContactSheet(images, columns: 8, zoom: 2);
            string title = $"\"{prompt}\" {when}".Trim();
            string details = string.Create(CultureInfo.InvariantCulture,
                $"{images.Count} samples, seeds {options.Seed}–{options.Seed + images.Count - 1}, {options.Sampler}, {options.SamplingSteps} steps, CFG {options.Cfg}. " +
                $"Subject (purple shirt) in {(int)Math.Round(summary.SubjectRate * summary.Count)} of {summary.Count}; {summary.DistinctShirtColors} shirt colours.");
            using var captioned = GridDrawer.Caption(sheet, title, details);
            AtomicFile.Write(sheetPath, s => captioned.SaveAsPng(s));
        }
        return summary;
    }

}
