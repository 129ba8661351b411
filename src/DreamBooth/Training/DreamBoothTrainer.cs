using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using DreamBooth.Checkpoints;
using DreamBooth.IO;
using DreamBooth.Models.Clip;
using DreamBooth.Schedulers;
using DreamBooth.Text;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>What a run ended with.</summary>
public sealed record TrainingResult(int Steps, int Epochs, bool Cancelled, IReadOnlyList<string> Saves, double LastLoss);

/// <summary>Renders preview images of the model being trained (implemented by the sampling pipeline).</summary>
public interface IPreviewRenderer
{
    /// <summary>Renders <paramref name="prompts"/> with fixed seeds into <paramref name="outputDir"/>; returns the files written.</summary>
    IReadOnlyList<string> Render(StableDiffusionModel model, IReadOnlyList<string> prompts, long seed, string outputDir, int epoch);
}

/// <summary>
/// The DreamBooth loop: data, latent cache, step/epoch arithmetic, logging, previews, saves, training state and
/// resume, around a <see cref="DreamBoothStep"/> (precision setup, optimizer groups, LR schedule, EMA). The step itself is <see cref="DreamBoothStep.TrainStep"/> and the update after it
/// <see cref="DreamBoothStep.OptimizerStep"/>; data, logging, saving and resume live around them here.
/// </summary>
public sealed class DreamBoothTrainer : IDisposable
{
    public const string StateFileName = "training_state.json";

    readonly TrainingConfig _c;
    readonly StableDiffusionModel _sd;
    readonly IPreviewRenderer? _previews;
    readonly IPreviewScorer? _previewScorer;
    readonly Device _device;
    readonly ScalarType _computeDtype;
    readonly NoiseSchedule _schedule;
    readonly TrainingData _data;
    readonly DreamBoothStep _train;
    readonly LatentCache? _latentCache;
    readonly List<string> _saves = new();
    readonly PromptOptions _promptOptions;

    int _step;            // optimizer steps done
    int _epoch;           // current epoch (0-based)
    int _batchInEpoch;    // batches of the current epoch already trained

    public TrainingConfig Config => _c;
    /// <summary>The step/epoch arithmetic of this run (prior stepping, accumulation, TE cut, save epochs).</summary>
    public StepPlan Plan { get; }
    /// <summary>The disk arithmetic checked before anything was written (checkpoints, states, latent cache, class images).</summary>
    public DiskPlan DiskPlan { get; }
    public int TotalSteps { get; }
    public int TextEncoderSteps { get; }
    /// <summary>One line per training prompt longer than max_token_length (its tail is dropped), reported as Message events when the run starts.</summary>
    public IReadOnlyList<string> PromptWarnings { get; }
    public int StepsPerEpoch { get; }
    public int Step => _step;
    public Device Device => _device;
    public TrainingData Data => _data;
    public LatentCache? LatentCache => _latentCache;
    public EmaModel? Ema => _train.Ema;
    public TrainingOptimizer Optimizer => _train.Optimizer;
    public bool TextEncoderFrozen => _train.TextEncoderFrozen;
    /// <summary>The step and the update around it (masters, optimizer, EMA, loss scaler).</summary>
    public DreamBoothStep Training => _train;

    /// <summary>Test hook: called with the step number before each forward/backward (to inject failures such as an OOM).</summary>
    internal Action<int>? BeforeTrainStep { get; set; }

    /// <summary>Class images generated (or found sufficient) before training, one report per concept that generates.</summary>
    public IReadOnlyList<DreamBooth.Pipelines.ClassImageReport> ClassImageReports { get; }

    /// <summary>
    /// Sets up a run: moves the models to the device, generates missing class images (concepts with
    /// generate_class_images), scans the data, builds the fp32 masters, optimizer, EMA and latent cache.
    /// <paramref name="previews"/> defaults to <see cref="Txt2ImgPreviewRenderer.For"/> when preview_every_epochs &gt; 0.
    /// </summary>
    public DreamBoothTrainer(TrainingConfig config, StableDiffusionModel model, IPreviewRenderer? previews = null,
        IProgress<TrainingEvent>? setupProgress = null, CancellationToken setupCancellation = default, IPreviewScorer? previewScorer = null)
        : this(config, model, previews, setupProgress, setupCancellation, previewScorer, optimizer: null) { }

    /// <param name="optimizer">tests: another optimizer over the step's groups (the per-tensor Lion beside the flattened one).</param>
    internal DreamBoothTrainer(TrainingConfig config, StableDiffusionModel model, IPreviewRenderer? previews,
        IProgress<TrainingEvent>? setupProgress, CancellationToken setupCancellation, IPreviewScorer? previewScorer,
        Func<IReadOnlyList<ParamGroup>, TrainingOptimizer>? optimizer)
    {
        config.ThrowIfInvalid(checkFolders: true);
        _c = config;
        _sd = model;
        _previewScorer = previewScorer ?? (config.PreviewLikeness ? LikenessPreviewScorer.For(config) : null);
        _device = ResolveDevice(config.Device);
        _computeDtype = MasterWeights.DtypeOf(config.MixedPrecision);
        if (_computeDtype == ScalarType.Float16 && _device.type == DeviceType.CPU)
            throw new DreamBoothException("mixed_precision = \"fp16\" needs a CUDA device (use bf16 or no on the CPU)");

        // before anything is written: will the run's files fit on the output volume?
        DiskPlan = DiskPlan.For(config, model, fromEpoch: ResumeEpoch(config));
        setupProgress?.Report(new TrainingEvent { Kind = TrainingEventKind.Message, Message = DiskPlan.ToString() });
        DiskPlan.ThrowIfItDoesNotFit();

        model.Vae.to(_device);
        model.UNet.to(_device);
        model.TextEncoder.to(_device);
        ClassImageReports = ClassImagePreparation.Run(config, model, setupProgress, setupCancellation);
        _schedule = NoiseSchedule.FromConfigJson(model.SchedulerConfigJson);
        _data = new TrainingData(config);
        _previews = previews ?? (config.PreviewEveryEpochs > 0 ? Txt2ImgPreviewRenderer.For(config, _data) : null);
        _promptOptions = new PromptOptions { PadTokens = config.PadTokens, StrictTokens = config.StrictTokens, ShuffleTags = config.ShuffleTags, MaxTokenLength = config.MaxTokenLength };
        PromptWarnings = LongPrompts(_data, model.Tokenizer, _promptOptions);

        Plan = _data.Plan;
        StepsPerEpoch = Plan.StepsPerEpoch;
        TotalSteps = Plan.TotalSteps;
        TextEncoderSteps = Plan.TextEncoderSteps;

        // what trains, fp32 masters and compute copies, optimizer, LR schedule, loss scaler, EMA: the step's own setup
        model.Vae.to(_device);
        model.Vae.eval();
        foreach (var p in model.Vae.parameters()) p.requires_grad_(false);
        model.UNet.to(_device);
        model.TextEncoder.to(_device);
        _train = new DreamBoothStep(config, model.UNet, model.TextEncoder, _schedule, _device, TotalSteps, TextEncoderSteps, optimizer);
        if (config.CacheLatents)
            _latentCache = new LatentCache(Path.Combine(config.OutputDir, "latent_cache"), model.Vae, _device);
    }

    /// <summary>Where the EMA copy lives: the training device, or the CPU (ema_device = "cpu": saves its 3.4 GB of GPU memory at full size).</summary>
    public static Device EmaDeviceFor(TrainingConfig config, Device trainingDevice) => config.EmaDevice == "cpu" ? torch.CPU : trainingDevice;

    public static Device ResolveDevice(string device) => device switch
    {
        "auto" => torch.cuda.is_available() ? torch.CUDA : torch.CPU,
        "cpu" => torch.CPU,
        _ when device.StartsWith("cuda", StringComparison.Ordinal) => torch.cuda.is_available()
            ? torch.device(device) : throw new DreamBoothException($"device = \"{device}\" but CUDA is not available"),
        _ => throw new DreamBoothException($"device = \"{device}\" is not one of: auto, cpu, cuda, cuda:N"),
    };

    // ------------------------------------------------------------------ the loop

    /// <summary>
    /// Trains from the current position (0, or what <see cref="LoadState"/> restored) to the last epoch.
    /// Cancellation saves a checkpoint and the training state, then returns with Cancelled = true.
    /// A NaN/inf loss stops the run with an error naming the step; earlier saves stay.
    /// </summary>
    public TrainingResult Run(IProgress<TrainingEvent>? progress = null, CancellationToken cancellationToken = default)
    {
        Directory.CreateDirectory(_c.OutputDir);
        AtomicFile.WriteAllText(Path.Combine(_c.OutputDir, "config.json"), _c.ToJson() + "\n");
        // single files carry no configs: for an architecture other than SD 1.5 (e.g. the toy model) the saves get
        // config/ + tokenizer/ beside them, so `sample`, `xyplot` and notebooks load them by path alone
        if (!_sd.IsStableDiffusion15Architecture) _sd.WriteSidecar(_c.OutputDir);
        string csv = Path.Combine(_c.OutputDir, "log.csv");
        if (_step == 0 || !File.Exists(csv)) File.WriteAllText(csv, TrainingEvent.CsvHeader + "\n");
        var tensorboard = new TensorBoardLog(Path.Combine(_c.OutputDir, "tensorboard"));
        progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Started, Step = _step, TotalSteps = TotalSteps, Epoch = _epoch,
            Message = $"{_data.Instances.Count} instance / {_data.ClassImages.Count} class images, {StepsPerEpoch} steps per epoch ({Plan.SamplesPerStep} a step), {TotalSteps} steps, TE for {TextEncoderSteps}, device {_device.type}, {_c.MixedPrecision}" });

        foreach (var warning in PromptWarnings)
            progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Message, Step = _step, TotalSteps = TotalSteps, Epoch = _epoch, Message = "warning: " + warning });

        double lastLoss = double.NaN;
        var sw = new Stopwatch();
        while (_epoch < _c.Epochs)
        {
            var batches = _data.Epoch(_epoch);
            double priorWeight = PriorLossSchedule.Weight(_c, _epoch);
            while (_batchInEpoch < batches.Count)
            {
                if (cancellationToken.IsCancellationRequested)
                {
                    string path = Save(progress, cancelled: true);
                    progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Cancelled, Step = _step, Epoch = _epoch, Path = path, Message = "cancelled: checkpoint and training state saved" });
                    return new TrainingResult(_step, _epoch, true, _saves, lastLoss);
                }
                if (!_train.TextEncoderFrozen && _step >= TextEncoderSteps)
                {
                    _train.FreezeTextEncoder();
                    progress?.Report(new TrainingEvent { Kind = TrainingEventKind.TextEncoderFrozen, Step = _step, Epoch = _epoch, Message = $"text encoder frozen after {_step} steps" });
                }
                sw.Restart();
                int take = Math.Min(_c.GradientAccumulationSteps, batches.Count - _batchInEpoch);
                var gen = NewGenerator(_step);
                var rng = new Random(unchecked((int)TrainingData.Mix(_c.Seed, _step, 0x7a9)));
                using var stepScope = torch.NewDisposeScope();
                var batchLosses = new List<Tensor>();   // on the device until the step's one read
                int images = 0;
                for (int a = 0; a < take; a++)
                {
                    var batch = batches[_batchInEpoch + a];
                    images += batch.Images.Count;
                    using var scope = torch.NewDisposeScope();
                    var inputs = Prepare(batch, gen, rng);
                    try
                    {
                        BeforeTrainStep?.Invoke(_step + 1);
                        batchLosses.Add(_train.TrainStep(inputs, priorWeight, gen).MoveToOuterDisposeScope());
                    }
                    catch (Exception e) when (OomBackoff.IsOutOfMemory(e))
                    {
                        var action = OomBackoff.Next(_sd.UNet.GradientCheckpointing, _c.BatchSize);
                        string message = OomBackoff.Describe(action, _step + 1, _c.BatchSize);
                        if (action != OomAction.EnableGradientCheckpointing) throw new DreamBoothException(message);
                        _sd.UNet.GradientCheckpointing = true;
                        _train.ClearComputeGradients();
                        progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Message, Step = _step, Epoch = _epoch, Message = message });
                        gen = NewGenerator(_step);   // the same step again, with the same noise
                        rng = new Random(unchecked((int)TrainingData.Mix(_c.Seed, _step, 0x7a9)));
                        batchLosses.Clear();
                        images = 0;
                        a = -1;
                        continue;
                    }
                }
                var outcome = _train.OptimizerStep(_step, batchLosses);   // queues the update, then the step's one read
                double loss = 0, inst = 0, prior = 0; int instCount = 0, priorCount = 0;
                foreach (var r in outcome.Batches)
                {
                    loss += r.Loss / take;
                    if (!double.IsNaN(r.Instance)) { inst += r.Instance; instCount++; }
                    if (!double.IsNaN(r.Prior)) { prior += r.Prior; priorCount++; }
                }
                // a non-finite loss was not applied (the update is conditional on the device): nothing of this step changed the weights
                if (!double.IsFinite(loss))
                    throw new DreamBoothException($"loss is {(double.IsNaN(loss) ? "NaN" : "infinite")} at step {_step + 1} (epoch {_epoch + 1}); stopped. " +
                        (_saves.Count > 0 ? $"Last good checkpoint: {_saves[^1]}" : "No checkpoint was saved yet") + ". Lower the learning rate or use bf16/fp32.");
                _batchInEpoch += take;
                if (outcome.Applied) _step++;
                lastLoss = loss;
                sw.Stop();
                var groups = _train.Optimizer.Groups;
                var ev = new TrainingEvent
                {
                    Kind = TrainingEventKind.Step, Step = _step, TotalSteps = TotalSteps, Epoch = _epoch,
                    Loss = loss, InstanceLoss = instCount > 0 ? inst / instCount : double.NaN, PriorLoss = priorCount > 0 ? prior / priorCount : double.NaN, PriorLossWeight = priorWeight,
                    LrUnet = groups[0].Enabled ? groups[0].LearningRate : 0,
                    LrTextEncoder = groups[1].Enabled ? groups[1].LearningRate : 0,
                    GradNorm = outcome.GradNorm, TextEncoderGradNorm = outcome.TextEncoderGradNorm,
                    StepSeconds = sw.Elapsed.TotalSeconds, ImagesPerSecond = images / Math.Max(1e-9, sw.Elapsed.TotalSeconds),
                    MemoryBytes = MemoryInUse(),
                };
                File.AppendAllText(csv, ev.ToCsv() + "\n");
                tensorboard.Write(ev);
                progress?.Report(ev);
            }
            _epoch++;
            _batchInEpoch = 0;
            progress?.Report(new TrainingEvent { Kind = TrainingEventKind.EpochEnd, Step = _step, TotalSteps = TotalSteps, Epoch = _epoch, Loss = lastLoss });
            bool last = _epoch == _c.Epochs;
            if ((_c.SaveEveryEpochs > 0 && _epoch % _c.SaveEveryEpochs == 0) || last) Save(progress, cancelled: false);
            if (_c.PreviewEveryEpochs > 0 && _previews is not null && (_epoch % _c.PreviewEveryEpochs == 0 || last))
            {
                var files = WithFp32Weights(ema: _c.PreviewEma && _train.Ema is not null, () => _previews.Render(_sd, _c.PreviewPrompts, _c.PreviewSeed, Path.Combine(_c.OutputDir, "previews"), _epoch));
                var scores = _previewScorer?.Score(files, _c.PreviewPrompts, _epoch, _step);
                progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Preview, Step = _step, Epoch = _epoch, Path = files.FirstOrDefault(), Message = scores?.Summary ?? $"{files.Count} preview(s)", Likeness = scores?.Mean });
            }
        }
        if (_c.SaveDiffusersAtEnd)
        {
            string dir = Path.Combine(_c.OutputDir, $"{_c.Name}_diffusers");
            WithFp32Weights(ema: false, () => { _sd.SaveDiffusers(dir); return 0; });
            progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Saved, Step = _step, Epoch = _epoch, Path = dir, Message = "diffusers folder" });
        }
        progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Completed, Step = _step, TotalSteps = TotalSteps, Epoch = _epoch, Loss = lastLoss });
        return new TrainingResult(_step, _epoch, false, _saves, lastLoss);
    }

    /// <summary>Each distinct training prompt that <paramref name="options"/> cuts, at most five lines plus a count of the rest.</summary>
    static IReadOnlyList<string> LongPrompts(TrainingData data, ClipTokenizer tokenizer, PromptOptions options)
    {
        var lines = new List<string>();
        int cut = 0;
        foreach (var g in data.Instances.Concat(data.ClassImages).GroupBy(i => i.Prompt, StringComparer.Ordinal))
        {
            var first = g.First();
            string what = $"{(first.IsClass ? "class" : "instance")} prompt of {Path.GetFileName(first.Path)}" + (g.Count() > 1 ? $" (and {g.Count() - 1} more image(s))" : "");
            if (tokenizer.TruncationWarning(what, g.Key, options) is not { } line) continue;
            if (++cut <= 5) lines.Add(line);
        }
        if (cut > 5) lines.Add($"{cut - 5} more prompt(s) longer than max_token_length = {options.MaxTokenLength}");
        return lines;
    }

    Generator NewGenerator(int step)
    {
        ulong seed = (ulong)TrainingData.Mix(_c.Seed, step, 0x401_5e);
        return _device.type == DeviceType.CPU ? new Generator(seed) : new Generator(seed, _device);
    }

    /// <summary>Latents (cached distribution → sample, or VAE encode) and token ids of a batch; its instance images come first, then its class images.</summary>
    StepInputs Prepare(TrainingBatch batch, Generator gen, Random rng)
    {
        double sf = _sd.Vae.Config.ScalingFactor;
        var lat = new List<Tensor>();
        var prompts = new List<string>();
        foreach (var img in batch.Images)
        {
            bool flip = _c.Hflip && rng.Next(2) == 1;
            Tensor mean, std;
            if (_latentCache is not null) (mean, std) = _latentCache.Get(img, batch.Width, batch.Height, flip, _c.DynamicImageNormalization);
            else (mean, std) = LatentCache.Encode(_sd.Vae, img.Path, batch.Width, batch.Height, flip, _c.DynamicImageNormalization, _device);
            var eps = torch.randn(mean.shape, generator: gen, device: mean.device);
            lat.Add((mean + std * eps) * sf);
            if (_latentCache is null) { mean.Dispose(); std.Dispose(); }
            prompts.Add(img.Prompt);
        }
        var idsHost = _sd.Tokenizer.Tokenize(prompts, _promptOptions, rng).cpu();
        int instances = batch.InstanceCount;
        if (batch.Images.Take(instances).Any(i => i.IsClass))
            throw new InvalidOperationException("a batch must hold its instance images first, then its class images");
        // non_blocking: an upload that does not wait for the device's queue (a plain copy to CUDA synchronises)
        return new StepInputs(torch.stack(lat), idsHost.to(_device, non_blocking: true), idsHost, instances, batch.ClassCount);
    }

    long MemoryInUse()
    {
        if (_device.type == DeviceType.CUDA && DreamBooth.Runtime.Nvml.Available)
            return DreamBooth.Runtime.Nvml.UsedBytes(_device.index < 0 ? 0 : _device.index);
        return Environment.WorkingSet;
    }

    // ------------------------------------------------------------------ saving and resume

    /// <summary>
    /// Puts the fp32 masters (or the EMA weights into the UNet) into fp32 modules, runs <paramref name="action"/>,
    /// then restores the compute copies.
    /// </summary>
    T WithFp32Weights<T>(bool ema, Func<T> action)
    {
        var unet = _sd.UNet;
        var te = _sd.TextEncoder;
        bool convert = _computeDtype != ScalarType.Float32;
        Dictionary<string, Tensor>? backup = null;
        try
        {
            using (torch.no_grad())
            {
                if (convert) { unet.to(ScalarType.Float32); te.to(ScalarType.Float32); }
                CopyInto(unet, _train.UNetMasters.Names.Zip(_train.UNetMasters.Masters));
                CopyInto(te, _train.TextEncoderMasters.Names.Zip(_train.TextEncoderMasters.Masters));
                if (ema && _train.Ema is { } emaModel)
                {
                    if (!convert) backup = unet.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach().clone());
                    CopyInto(unet, emaModel.Shadow.Select(kv => (kv.Key, kv.Value)));
                }
            }
            return action();
        }
        finally
        {
            using (torch.no_grad())
            {
                if (backup is not null) { CopyInto(unet, backup.Select(kv => (kv.Key, kv.Value))); foreach (var t in backup.Values) t.Dispose(); }
                if (convert)
                {
                    unet.to(_computeDtype); te.to(_computeDtype);
                    _train.UNetMasters.CopyMastersToModel(); _train.TextEncoderMasters.CopyMastersToModel();
                }
            }
        }
    }

    static void CopyInto(nn.Module module, IEnumerable<(string Name, Tensor Value)> weights)
    {
        var ps = module.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        foreach (var (name, v) in weights) ps[name].copy_(v);
    }

    /// <summary>The float dtype of saved checkpoints (save_dtype: fp16, bf16 or fp32).</summary>
    public static ScalarType SaveDtypeOf(TrainingConfig config) => config.SaveDtype switch
    {
        "fp16" => ScalarType.Float16,
        "bf16" => ScalarType.BFloat16,
        "fp32" => ScalarType.Float32,
        _ => throw new DreamBoothException($"save_dtype = \"{config.SaveDtype}\" is not one of: {string.Join(", ", TrainingConfig.SaveDtypes)}"),
    };

    ScalarType SaveDtype => SaveDtypeOf(_c);

    /// <summary>
    /// Writes <c>{name}_{epoch:0000}.safetensors</c> (+ _ema), then the training state: the new <c>.state</c> is written
    /// completely and flushed to disk, the pointer <c>training_state.json</c> is switched to it atomically (and the folder
    /// synced), and only then are states beyond keep_training_states deleted, so a crash at any moment leaves a complete
    /// state that the pointer names.
    /// </summary>
    string Save(IProgress<TrainingEvent>? progress, bool cancelled)
    {
        Directory.CreateDirectory(_c.OutputDir);
        // mid-epoch (cancel) saves carry the step so they never overwrite an epoch save
        string stem = _batchInEpoch == 0 ? $"{_c.Name}_{_epoch:0000}" : $"{_c.Name}_{_epoch:0000}_s{_step:000000}";
        string path = Path.Combine(_c.OutputDir, stem + ".safetensors");
        var meta = new Dictionary<string, string>
        {
            ["dreambooth_epoch"] = _epoch.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["dreambooth_step"] = _step.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["dreambooth_base_model"] = _sd.Name,
            ["dreambooth_base_model_hash"] = _sd.ShortHash ?? "",
            ["dreambooth_config"] = _c.ToJson(),
            ["dreambooth_cancelled"] = cancelled ? "true" : "false",
        };
        WithFp32Weights(ema: false, () => { _sd.SaveSingleFile(path, SaveDtype, meta); return 0; });
        if (_c.SaveEmaWeights && _train.Ema is not null)
            WithFp32Weights(ema: true, () => { _sd.SaveSingleFile(Path.Combine(_c.OutputDir, stem + "_ema.safetensors"), SaveDtype, meta); return 0; });
        string statePath = Path.Combine(_c.OutputDir, stem + ".state");
        SaveState(statePath);
        var pointer = new JsonObject
        {
            ["state"] = Path.GetFileName(statePath),
            ["checkpoint"] = Path.GetFileName(path),
            ["epoch"] = _epoch,
            ["batch_in_epoch"] = _batchInEpoch,
            ["step"] = _step,
            // CPU sums split across threads add up in an order that depends on the thread count: resume is bitwise equal
            // to an uninterrupted run with the same count (docs/training.md), so the run records it
            ["torch_threads"] = torch.get_num_threads(),
            ["config"] = JsonNode.Parse(_c.ToJson()),
        };
        AtomicFile.WriteAllText(Path.Combine(_c.OutputDir, StateFileName), pointer.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
        DirectorySync.Flush(_c.OutputDir);
        _saves.Remove(path);
        _saves.Add(path);
        progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Saved, Step = _step, Epoch = _epoch, Path = path });
        PruneStates(Path.GetFileName(statePath));
        PruneSaves();
        return path;
    }

    /// <summary>
    /// Deletes training states beyond the newest keep_training_states (0 = keep all). The state the pointer names is
    /// always kept; states from later than the current position (left by a run that crashed after writing a state and
    /// before switching the pointer) go first.
    /// </summary>
    void PruneStates(string current)
    {
        if (_c.KeepTrainingStates <= 0) return;
        var here = (_epoch, _batchInEpoch == 0 ? -1 : _step);
        var states = Directory.EnumerateFiles(_c.OutputDir, "*.state")
            .Select(f => (File: f, Key: StateKey(Path.GetFileName(f))))
            .Where(x => x.Key is not null)
            .ToList();
        var keep = states.Where(x => Path.GetFileName(x.File) == current)
            .Concat(states.Where(x => Path.GetFileName(x.File) != current && x.Key!.Value.CompareTo(here) <= 0).OrderByDescending(x => x.Key!.Value))
            .Take(_c.KeepTrainingStates)
            .Select(x => x.File)
            .ToHashSet();
        foreach (var (file, _) in states)
            if (!keep.Contains(file)) File.Delete(file);
    }

    /// <summary>(epoch, step) of <c>{name}_{epoch:0000}.state</c> (step −1: an epoch-end save) or <c>{name}_{epoch:0000}_s{step}.state</c>; null for other files.</summary>
    (int Epoch, int Step)? StateKey(string fileName)
    {
        var m = System.Text.RegularExpressions.Regex.Match(fileName, "^" + System.Text.RegularExpressions.Regex.Escape(_c.Name) + @"_(\d{4,9})(?:_s(\d{6,9}))?\.state$");
        if (!m.Success) return null;
        return (int.Parse(m.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture),
                m.Groups[2].Success ? int.Parse(m.Groups[2].Value, System.Globalization.CultureInfo.InvariantCulture) : -1);
    }

    /// <summary>The epoch a run of <paramref name="config"/> resumes from: that of the output folder's pointer when it holds this same config, else 0.</summary>
    static int ResumeEpoch(TrainingConfig config)
    {
        string file = Path.Combine(config.OutputDir, StateFileName);
        if (!File.Exists(file)) return 0;
        try
        {
            var node = JsonNode.Parse(File.ReadAllText(file));
            if (node?["config"] is not { } cfg || node["epoch"] is not { } epoch) return 0;
            return TrainingConfig.FromJson(cfg.ToJsonString(), file).ToJson() == config.ToJson() ? epoch.GetValue<int>() : 0;
        }
        catch (Exception e) when (e is JsonException or DreamBoothException or InvalidOperationException or FormatException)
        {
            return 0;
        }
    }

    void PruneSaves()
    {
        if (_c.KeepLastSaves <= 0) return;
        var all = Directory.EnumerateFiles(_c.OutputDir, $"{_c.Name}_????.safetensors").Order(StringComparer.Ordinal).ToList();
        foreach (var old in all.Take(Math.Max(0, all.Count - _c.KeepLastSaves)))
        {
            string stem = Path.Combine(_c.OutputDir, Path.GetFileNameWithoutExtension(old));
            foreach (var f in new[] { old, stem + "_ema.safetensors", stem + ".state" })
                if (File.Exists(f)) File.Delete(f);
            _saves.Remove(old);
        }
    }

    /// <summary>
    /// Writes the training state from the live tensors (handles, not copies: writing an 11 GB state at full size adds no
    /// second copy of the optimizer state and EMA to memory; a device tensor passes through the host one at a time).
    /// </summary>
    void SaveState(string path)
    {
        var d = new Dictionary<string, Tensor>();
        try
        {
            foreach (var (n, t) in _train.UNetMasters.Names.Zip(_train.UNetMasters.Masters)) d["unet/" + n] = t.detach();
            foreach (var (n, t) in _train.TextEncoderMasters.Names.Zip(_train.TextEncoderMasters.Masters)) d["text_encoder/" + n] = t.detach();
            foreach (var (k, t) in _train.Optimizer.StateDict(copy: false)) d["optimizer/" + k] = t;
            if (_train.Ema is not null) foreach (var (k, t) in _train.Ema.StateDict(copy: false)) d[k] = t;
            d["meta/step"] = TensorStateFile.Scalar(_step);
            d["meta/epoch"] = TensorStateFile.Scalar(_epoch);
            d["meta/batch_in_epoch"] = TensorStateFile.Scalar(_batchInEpoch);
            d["meta/te_frozen"] = TensorStateFile.Scalar(_train.TextEncoderFrozen ? 1L : 0L);
            d["meta/loss_scale"] = TensorStateFile.Scalar(_train.Scaler.Scale);
            d["meta/loss_scale_clean_steps"] = TensorStateFile.Scalar(_train.Scaler.CleanSteps);
            TensorStateFile.Save(path, d);
        }
        finally
        {
            foreach (var t in d.Values) t.Dispose();   // handles and the counters' scalars; the state itself lives on
        }
    }

    /// <summary>Reads the run's config from <c>{outputDir}/training_state.json</c> (for <c>--resume</c>).</summary>
    public static TrainingConfig ReadResumeConfig(string outputDir)
    {
        string file = Path.Combine(outputDir, StateFileName);
        if (!File.Exists(file)) throw new DreamBoothException($"{outputDir}: no {StateFileName} (nothing to resume)");
        var node = JsonNode.Parse(File.ReadAllText(file)) as JsonObject ?? throw new DreamBoothException($"{file}: expected a JSON object");
        var cfg = node["config"] ?? throw new DreamBoothException($"{file}: 'config' is missing");
        return TrainingConfig.FromJson(cfg.ToJsonString(), file);
    }

    /// <summary>The torch CPU thread count the run in <paramref name="outputDir"/> trained with (null for states saved before it was recorded).</summary>
    public static int? ReadResumeThreads(string outputDir)
    {
        string file = Path.Combine(outputDir, StateFileName);
        if (!File.Exists(file)) return null;
        return JsonNode.Parse(File.ReadAllText(file)) is JsonObject node && node["torch_threads"] is JsonValue v && v.TryGetValue(out int n) && n > 0 ? n : null;
    }

    /// <summary>Restores masters, compute copies, optimizer, EMA and position from the newest state in <paramref name="outputDir"/>.</summary>
    public void LoadState(string outputDir)
    {
        string file = Path.Combine(outputDir, StateFileName);
        if (!File.Exists(file)) throw new DreamBoothException($"{outputDir}: no {StateFileName} (nothing to resume)");
        var node = JsonNode.Parse(File.ReadAllText(file))!;
        string statePath = Path.Combine(outputDir, node["state"]!.GetValue<string>());
        // the fp32 masters and the EMA are read straight into place (no second copy of them in memory); the optimizer
        // state and the counters come back as tensors
        var targets = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (n, t) in _train.UNetMasters.Names.Zip(_train.UNetMasters.Masters)) targets["unet/" + n] = t;
        foreach (var (n, t) in _train.TextEncoderMasters.Names.Zip(_train.TextEncoderMasters.Masters)) targets["text_encoder/" + n] = t;
        if (_train.Ema is not null) foreach (var (k, t) in _train.Ema.StateTargets) targets[k] = t;
        // so is the optimizer's state where it has one buffer to read into (the flat Lion's momentum)
        var optimizerTargets = _train.Optimizer.StateTargets();
        foreach (var (k, t) in optimizerTargets) targets["optimizer/" + k] = t;
        var read = new HashSet<string>(StringComparer.Ordinal);
        Dictionary<string, Tensor> d;
        try { d = TensorStateFile.Load(statePath, name => targets.TryGetValue(name, out var t) && read.Add(name) ? t : null); }
        catch
        {
            foreach (var t in optimizerTargets.Values) t.Dispose();
            throw;
        }
        try
        {
            CheckRead(read, "unet/", _train.UNetMasters, statePath);
            CheckRead(read, "text_encoder/", _train.TextEncoderMasters, statePath);
            _step = (int)d["meta/step"].item<long>();
            _epoch = (int)d["meta/epoch"].item<long>();
            _batchInEpoch = (int)d["meta/batch_in_epoch"].item<long>();
            _train.Scaler.Restore(d["meta/loss_scale"].item<double>(), (int)d["meta/loss_scale_clean_steps"].item<long>());
            if (d["meta/te_frozen"].item<long>() == 1 && !_train.TextEncoderFrozen) _train.FreezeTextEncoder();
            _train.Optimizer.LoadStateDict(
                d.Where(kv => kv.Key.StartsWith("optimizer/", StringComparison.Ordinal)).ToDictionary(kv => kv.Key["optimizer/".Length..], kv => kv.Value),
                read.Where(k => k.StartsWith("optimizer/", StringComparison.Ordinal)).Select(k => k["optimizer/".Length..]).ToHashSet(StringComparer.Ordinal));
            _train.Ema?.LoadStateDict(d, alreadyRead: read);
            _train.UNetMasters.CopyMastersToModel();
            _train.TextEncoderMasters.CopyMastersToModel();
            string checkpoint = Path.Combine(outputDir, node["checkpoint"]!.GetValue<string>());
            if (File.Exists(checkpoint)) _saves.Add(checkpoint);
        }
        finally
        {
            foreach (var t in d.Values) t.Dispose();
            foreach (var t in optimizerTargets.Values) t.Dispose();
        }
    }

    /// <summary>Every master of <paramref name="m"/> was read from the state file (its dtype and shape were checked as it was read).</summary>
    static void CheckRead(HashSet<string> read, string prefix, MasterWeights m, string source)
    {
        foreach (var name in m.Names)
            if (!read.Contains(prefix + name)) throw new DreamBoothException($"{source}: '{prefix}{name}' is missing");
    }

    public void Dispose()
    {
        _train.Dispose();
        _latentCache?.Dispose();
    }
}
