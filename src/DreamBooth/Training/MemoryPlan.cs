using System.Globalization;
using System.Text;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>Where a part of a run's memory lives.</summary>
public enum MemoryPlace { Device, Host }

/// <summary>
/// When a part is held: all run long (<see cref="Resident"/>), only inside a step's backward (<see cref="Backward"/>), its
/// optimizer update (<see cref="Optimizer"/>), a save (<see cref="Save"/>), a resume (<see cref="Resume"/>), the model's
/// load before training starts (<see cref="Load"/>, host only), or a margin on the device (<see cref="Margin"/>).
/// </summary>
public enum MemoryPhase { Resident, Backward, Optimizer, Save, Resume, Load, Margin }

/// <summary>One part of the memory arithmetic: what, how many bytes, where, when, and how it was counted (measured or assumed).</summary>
public sealed record MemoryPlanItem(string What, long Bytes, MemoryPlace Where, MemoryPhase Phase, string How);

/// <summary>
/// The memory arithmetic of a run (docs/memory.md), the sibling of <see cref="DiskPlan"/>: every tensor the trainer holds
/// — weights in the compute dtype, the VAE, fp32 masters, gradients, optimizer state, EMA (on the device or the CPU),
/// the latent cache — counted exactly from the model's parameter counts, plus the activations of a step, which come
/// from measurements of SD 1.5 on the CPU (<c>dreambooth bench memory</c>) scaled by latent area and samples a step,
/// plus, on a GPU, the CUDA context and an allocator margin (both assumed, not measured). The peak is the resident parts
/// plus the largest of a step's backward, its optimizer update, a save and a resume. On a CPU the prediction is of
/// the process's resident memory and is what the full-size run measured (docs/memory.md); <b>on a GPU it has not been
/// checked on a GPU yet</b>.
/// </summary>
public sealed record MemoryPlan
{
    // ---- measured on the CPU (dreambooth bench memory, SD 1.5 with random weights, bf16, batch 1; docs/memory.md) ----
    /// <summary>
    /// The UNet backward's activation memory per sample and latent pixel, without gradient checkpointing: the peak of a
    /// forward + backward above the weights and the (already allocated) gradients, 913 MiB at 64×64 (autograd keeps
    /// 891 MiB after the forward: 227 MiB at 32×32, 12 MiB at 8×8, linear in the latent area).
    /// </summary>
    public const double UNetActivationBytesPerLatentPixel = 913.0 * (1 << 20) / 4096;
    /// <summary>
    /// The same with gradient checkpointing (ours checkpoints whole down/mid/up blocks: the block inputs are kept, 28 MiB
    /// at 64×64, and one block is recomputed at a time in backward): 354 MiB at 64×64.
    /// </summary>
    public const double UNetCheckpointedBytesPerLatentPixel = 354.0 * (1 << 20) / 4096;
    /// <summary>
    /// A backward frees the activations while it makes the gradients, so its peak is the larger of the two plus this share
    /// of the smaller: from steps that start without gradients, (peak − gradients) / activations = 0.16 (32×32) and 0.28
    /// (64×64) without checkpointing, 0.24 and 0.69 with it (the recomputed first block comes back when almost every
    /// gradient exists).
    /// </summary>
    public const double BackwardOverlap = 0.3, CheckpointedBackwardOverlap = 0.7;
    /// <summary>fp32 activations over bf16 ones (mixed_precision = "no").</summary>
    public const double Fp32ActivationFactor = 2.0;
    /// <summary>The text encoder's activations for 77 tokens, per sample (bf16): 26 MiB.</summary>
    public const long TextEncoderActivationBytes = 26L << 20;
    /// <summary>This process before a model is loaded (.NET + libtorch), measured RSS: 160–193 MiB.</summary>
    public const long CpuRuntimeBytes = 200L << 20;

    // ---- assumed for a GPU, not measured (no GPU in this project yet) ----
    /// <summary>CUDA context, cuBLAS/cuDNN handles and kernels: about 0.5 GB (assumed; it varies with the driver and GPU).</summary>
    public const long CudaContextBytes = 500_000_000;
    /// <summary>Caching-allocator reserve and cuDNN workspaces, as a share of the tensors' peak (assumed).</summary>
    public const double AllocatorMargin = 0.10;

    /// <summary>GPU memory sizes (GB as sold) the plan is read against.</summary>
    public static readonly int[] GpuSizesGb = [12, 16, 20, 24, 40, 80];

    public required IReadOnlyList<MemoryPlanItem> Items { get; init; }
    /// <summary>"cuda" or "cpu": what the prediction is of (GPU memory, or the process's resident memory).</summary>
    public required string Device { get; init; }
    /// <summary>Largest training image (width × height) and samples in one forward: what the activations are counted for.</summary>
    public required int Width { get; init; }
    public required int Height { get; init; }
    public required int SamplesPerStep { get; init; }
    /// <summary>False when the activations could not be predicted (an architecture other than SD 1.5: they were measured for it only).</summary>
    public required bool ActivationsKnown { get; init; }

    long Sum(MemoryPlace where, MemoryPhase phase) => Items.Where(i => i.Where == where && i.Phase == phase).Sum(i => i.Bytes);

    /// <summary>Bytes held on the device all run long.</summary>
    public long ResidentBytes => Sum(MemoryPlace.Device, MemoryPhase.Resident);

    /// <summary>The phase that adds the most on the device, and what it adds.</summary>
    public (MemoryPhase Phase, long Bytes) PeakPhase => new[] { MemoryPhase.Backward, MemoryPhase.Optimizer, MemoryPhase.Save, MemoryPhase.Resume }
        .Select(p => (p, Sum(MemoryPlace.Device, p))).MaxBy(x => x.Item2);

    /// <summary>The predicted peak on the device: resident + the largest phase + the margin.</summary>
    public long PeakBytes => ResidentBytes + PeakPhase.Bytes + Sum(MemoryPlace.Device, MemoryPhase.Margin);

    /// <summary>Host memory at its peak during training on a GPU (load, EMA on the CPU, resume, save); on a CPU everything is <see cref="PeakBytes"/>.</summary>
    public long HostPeakBytes => Device == "cpu" ? PeakBytes
        : Math.Max(Items.Where(i => i.Where == MemoryPlace.Host && (i.Phase == MemoryPhase.Load || i.What.StartsWith("host runtime", StringComparison.Ordinal))).Sum(i => i.Bytes),
            Sum(MemoryPlace.Host, MemoryPhase.Resident) + new[] { MemoryPhase.Save, MemoryPhase.Resume }.Max(p => Sum(MemoryPlace.Host, p)));

    /// <summary>Whether the predicted peak fits a GPU of <paramref name="gb"/> GB (decimal, as sold; the whole card).</summary>
    public bool Fits(double gb) => PeakBytes <= gb * 1e9;

    /// <summary>
    /// The arithmetic for <paramref name="config"/> on a model of <paramref name="model"/>'s size with <paramref name="images"/>
    /// training images at <paramref name="width"/>×<paramref name="height"/> (instance + class images the latent cache holds),
    /// on a CUDA device (<paramref name="cuda"/>) or the CPU. <paramref name="textEncoderTraining"/> overrides whether the
    /// text encoder trains (false: the steps after text_encoder_step_ratio, when its optimizer state, gradients and
    /// activations are gone; null: whether it trains at all).
    /// </summary>
    public static MemoryPlan For(TrainingConfig config, ModelFootprint model, int width, int height, long images, bool cuda, int? samplesPerStep = null, bool? textEncoderTraining = null)
    {
        bool prior = config.Concepts.Any(c => c.HasPrior);
        int samples = samplesPerStep ?? config.BatchSize * (prior && config.PriorStepping == "joint" ? 2 : 1);
        var plan = StepPlan.For(config, [Math.Max(1, (int)Math.Min(int.MaxValue, images))], prior);
        bool trainTe = textEncoderTraining ?? plan.TextEncoderSteps > 0;
        var compute = MasterWeights.DtypeOf(config.MixedPrecision);
        int c = compute == ScalarType.Float32 ? 4 : 2;
        bool shared = c == 4;
        long nU = model.UNetParameters.Sum(), nT = model.TextEncoderParameters.Sum(), nV = model.VaeFloats;
        long trainedU = config.TrainUnet ? nU : 0, trainedT = trainTe ? nT : 0, trained = trainedU + trainedT;
        var trainedSizes = (config.TrainUnet ? model.UNetParameters : []).Concat(trainTe ? model.TextEncoderParameters : []).ToList();
        const MemoryPlace d = MemoryPlace.Device;   // the training device (the CPU on a CPU run)
        var items = new List<MemoryPlanItem>();
        void Add(string what, long bytes, MemoryPlace where, MemoryPhase phase, string how) { if (bytes > 0) items.Add(new(what, bytes, where, phase, how)); }
        string dt = config.MixedPrecision == "no" ? "fp32" : config.MixedPrecision;

        // resident, all counted from the parameter counts
        Add(cuda ? "CUDA context" : "runtime (.NET + libtorch)", cuda ? CudaContextBytes : CpuRuntimeBytes, d, MemoryPhase.Resident,
            cuda ? "assumed ≈0.5 GB (driver, cuBLAS/cuDNN handles, kernels); not measured" : "measured: RSS before the model loads");
        Add("VAE weights", 4 * nV, d, MemoryPhase.Resident, "fp32 (loaded dtype), on the device for the latent cache");
        Add("UNet weights", c * nU, d, MemoryPhase.Resident, shared ? "fp32: the weights are the masters" : $"{dt} compute copy");
        Add("text encoder weights", c * nT, d, MemoryPhase.Resident, shared ? "fp32: the weights are the masters" : $"{dt} compute copy");
        if (!shared) Add("fp32 masters", 4 * (nU + nT), d, MemoryPhase.Resident, "fp32 copy of every UNet and text-encoder weight (saves and the optimizer read these)");
        Add($"{config.Optimizer} state", Optimizers.TrainingOptimizer.StateBytesFor(config.Optimizer, trainedSizes), d, MemoryPhase.Resident,
            config.Optimizer switch { "lion" => "one fp32 momentum per trained weight", "adamw" => "two fp32 moments per trained weight", _ => "two 8-bit moments + fp32 absmax per 2048 (fp32 below 4096 values)" }
            + (trainTe ? "; the text encoder's is dropped when it stops training" : ""));
        if (config.UseEma)
            Add("EMA", 4 * nU, cuda && config.EmaDevice == "cpu" ? MemoryPlace.Host : d, MemoryPhase.Resident,
                config.EmaDevice == "cpu" ? "fp32 UNet copy on the CPU (ema_device = cpu)" : "fp32 UNet copy on the training device (ema_device = device)");
        long latent = model.LatentTensorBytes(width, height);
        if (config.CacheLatents)
            Add("latent cache", images * (config.Hflip ? 2 : 1) * latent, d, MemoryPhase.Resident, $"{images} image(s){(config.Hflip ? " × 2 flips" : "")} × mean + std fp32 at 1/{model.VaeDownsampleFactor} size, all held on the device");

        // a step's backward: activations (measured for SD 1.5) and the gradients made while they are freed
        bool sd15 = model.UNetFloats == ModelFootprint.StableDiffusion15.UNetFloats && model.TextEncoderFloats == ModelFootprint.StableDiffusion15.TextEncoderFloats;
        long latentPixels = (long)(width / model.VaeDownsampleFactor) * (height / model.VaeDownsampleFactor);
        double perPixel = config.GradientCheckpointing ? UNetCheckpointedBytesPerLatentPixel : UNetActivationBytesPerLatentPixel;
        double dtypeFactor = c == 4 ? Fp32ActivationFactor : 1.0;
        long activations = !sd15 || !config.TrainUnet && !trainTe ? 0
            : (long)(samples * (perPixel * latentPixels * dtypeFactor + (trainTe ? TextEncoderActivationBytes * dtypeFactor : 0)));
        long computeGrads = c * trained;
        double overlap = config.GradientCheckpointing ? CheckpointedBackwardOverlap : BackwardOverlap;
        long backward = Math.Max(activations, computeGrads) + (long)(overlap * Math.Min(activations, computeGrads));
        Add($"activations + {dt} gradients", backward, d, MemoryPhase.Backward,
            sd15 ? $"{samples} sample(s) at {width}x{height} ({latentPixels} latent pixels), gradient checkpointing {(config.GradientCheckpointing ? "on" : "off")}: " +
                   $"activations {Gb(activations)} (measured on the CPU, bench memory) and gradients {Gb(computeGrads)}, the larger + {overlap:0.0} × the smaller"
                 : $"gradients {Gb(computeGrads)}; activations not predicted (measured for SD 1.5 only)");

        // the optimizer update: fp32 gradients on the masters, one compute gradient still held, the optimizer's temporaries
        long largest = Math.Max(config.TrainUnet ? Largest(model.LargestUNetParameter, model.UNetParameters) : 0,
                                trainTe ? Largest(model.LargestTextEncoderParameter, model.TextEncoderParameters) : 0);
        Add("fp32 gradients + update temporaries", (shared ? 4 * trained : 4 * trained + c * largest) + 3 * 4 * largest, d, MemoryPhase.Optimizer,
            shared ? "fp32 gradients of the trained weights + 3 fp32 temporaries of the largest tensor"
                   : "gradients moved onto the fp32 masters (the compute ones released as they go) + 3 fp32 temporaries of the largest tensor");

        // a save: the compute copies turned back to fp32, the checkpoint's tensors in save_dtype before they reach the host
        int s = ModelFootprint.BytesOf(DreamBoothTrainer.SaveDtypeOf(config));
        Add("save: fp32 weights + checkpoint tensors", (shared ? 0 : (4 - c) * (nU + nT)) + (cuda ? s * (nU + nT + nV) : 0), d, MemoryPhase.Save,
            "the modules hold the fp32 masters while the checkpoint is written" + (cuda ? $"; every tensor in {config.SaveDtype} on the device before it is copied to the host" : ""));
        if (cuda) Add("save: checkpoint tensors on the host", s * (nU + nT + nV), MemoryPlace.Host, MemoryPhase.Save, $"{config.SaveDtype} copies gathered for the file");
        else Add("save: checkpoint tensors", s * (nU + nT + nV), d, MemoryPhase.Save, $"{config.SaveDtype} copies gathered for the file");

        // a resume: masters and EMA are read in place, and so is the flat Lion's momentum; the per-tensor optimizers'
        // state is read to the host, then copied into place
        bool inPlace = Optimizers.TrainingOptimizer.ReadsStateInPlace(config.Optimizer);
        long optimizerState = inPlace ? 0 : Optimizers.TrainingOptimizer.StateBytesFor(config.Optimizer, trainedSizes);
        Add("resume: optimizer state read", optimizerState, cuda ? MemoryPlace.Host : d, MemoryPhase.Resume,
            inPlace ? "none: the momentum is read straight into the flat buffer" : "the state file's optimizer tensors, before they are copied into place");
        if (cuda)
        {
            Add("host runtime (.NET + libtorch + CUDA)", 1_000_000_000, MemoryPlace.Host, MemoryPhase.Resident, "assumed ≈1 GB");
            Add("load: the model on the host", 4 * (nU + nT + nV), MemoryPlace.Host, MemoryPhase.Load, "the checkpoint is loaded on the CPU (fp32) before it moves to the GPU");
            long tensors = items.Where(i => i.Where == MemoryPlace.Device && i.Phase != MemoryPhase.Resident).GroupBy(i => i.Phase).Select(g => g.Sum(i => i.Bytes)).DefaultIfEmpty(0).Max()
                           + items.Where(i => i.Where == MemoryPlace.Device && i.Phase == MemoryPhase.Resident).Sum(i => i.Bytes) - CudaContextBytes;
            Add("allocator reserve + workspaces", (long)(AllocatorMargin * tensors), d, MemoryPhase.Margin,
                $"assumed {AllocatorMargin:P0} of the tensors' peak (caching-allocator fragmentation, cuDNN workspaces); not measured");
        }
        return new MemoryPlan { Items = items, Device = cuda ? "cuda" : "cpu", Width = width, Height = height, SamplesPerStep = samples, ActivationsKnown = sd15 };
    }

    /// <summary>
    /// The look-up table of docs/memory.md: the recipe (TrainingConfig's defaults; <paramref name="photos"/> photos and
    /// 100 class images each in the latent cache) on a model of <paramref name="model"/>'s size, predicted GPU memory at
    /// 512×512 and 768×1024, for alternate (1 sample a step) and joint (2) prior stepping, gradient checkpointing on and
    /// off, EMA on the GPU and on the CPU, the text encoder training (the first 75% of steps) and frozen (the rest); then
    /// whether it fits each of <see cref="GpuSizesGb"/>.
    /// </summary>
    public static string Table(ModelFootprint model, int photos = 15)
    {
        var sb = new StringBuilder("| image | prior stepping (samples a step) | gradient checkpointing | EMA on | text encoder | resident | + peak phase | predicted peak | host RAM |");
        foreach (var g in GpuSizesGb) sb.Append(CultureInfo.InvariantCulture, $" {g} GB |");
        sb.Append("\n|---|---|---|---|---|---|---|---|---|").Append(string.Concat(GpuSizesGb.Select(_ => "---|"))).Append('\n');
        var recipe = new TrainingConfig { Concepts = [new ConceptConfig { InstanceDir = "photos", ClassDir = "class" }] };
        foreach (var (w, h) in new[] { (512, 512), (768, 1024) })
            foreach (var stepping in new[] { "alternate", "joint" })
                foreach (var gc in new[] { true, false })
                    foreach (var ema in new[] { "device", "cpu" })
                        foreach (var te in new[] { true, false })
                        {
                            var c = recipe with { PriorStepping = stepping, GradientCheckpointing = gc, EmaDevice = ema };
                            var p = For(c, model, w, h, images: photos + photos * c.Concepts[0].ClassImagesPerInstance, cuda: true, textEncoderTraining: te);
                            sb.Append(CultureInfo.InvariantCulture,
                                $"| {w}x{h} | {stepping} ({p.SamplesPerStep}) | {(gc ? "on" : "off")} | {(ema == "cpu" ? "CPU" : "GPU")} | {(te ? "trained" : "frozen")} | {Gb(p.ResidentBytes)} | {p.PeakPhase.Phase.ToString().ToLowerInvariant()} {Gb(p.PeakPhase.Bytes)} | **{Gb(p.PeakBytes)}** | {Gb(p.HostPeakBytes)} |");
                            foreach (var g in GpuSizesGb) sb.Append(p.Fits(g) ? " yes |" : " no |");
                            sb.Append('\n');
                        }
        return sb.ToString();
    }

    static long Largest(long known, IReadOnlyList<long> sizes) => known > 0 ? known : sizes.DefaultIfEmpty(0).Max();

    /// <summary>A size in decimal GB with two decimals.</summary>
    public static string Gb(long bytes) => (bytes / 1e9).ToString("0.00", CultureInfo.InvariantCulture) + " GB";

    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"memory: {(Device == "cuda" ? "predicted GPU memory (not yet checked on a GPU)" : "predicted process memory on the CPU")}, {Width}x{Height}, {SamplesPerStep} sample(s) a step\n");
        foreach (var phase in new[] { MemoryPhase.Resident, MemoryPhase.Backward, MemoryPhase.Optimizer, MemoryPhase.Save, MemoryPhase.Resume, MemoryPhase.Margin })
            foreach (var i in Items.Where(i => i.Phase == phase && i.Where == MemoryPlace.Device))
                sb.Append(CultureInfo.InvariantCulture, $"  {(phase == MemoryPhase.Resident ? "" : phase.ToString().ToLowerInvariant() + ": "),-11}{i.What,-38} {Gb(i.Bytes),9}   {i.How}\n");
        var (peakPhase, _) = PeakPhase;
        sb.Append(CultureInfo.InvariantCulture, $"  peak {Gb(PeakBytes)} (resident {Gb(ResidentBytes)} + {peakPhase.ToString().ToLowerInvariant()})");
        if (Device == "cuda")
        {
            sb.Append(CultureInfo.InvariantCulture, $"; host RAM {Gb(HostPeakBytes)}\n  fits: ");
            sb.Append(string.Join(", ", GpuSizesGb.Select(g => $"{g} GB {(Fits(g) ? "yes" : "no")}")));
        }
        if (!ActivationsKnown) sb.Append("\n  (activations measured for SD 1.5 only: not counted for this architecture)");
        return sb.ToString();
    }
}
