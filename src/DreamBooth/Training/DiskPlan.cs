using System.Globalization;
using System.Text;
using DreamBooth.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>The tensor counts of a model that the disk arithmetic needs (read from the modules' shapes; no weights are copied).</summary>
public sealed record ModelFootprint
{
    /// <summary>Floating-point elements of the UNet / text encoder / VAE state dicts.</summary>
    public required long UNetFloats { get; init; }
    public required long TextEncoderFloats { get; init; }
    public required long VaeFloats { get; init; }
    /// <summary>Bytes of non-float tensors a single file carries (position_ids, integer buffers).</summary>
    public required long OtherBytes { get; init; }
    /// <summary>Tensors in a single-file save, and the bytes of their names (for the header).</summary>
    public required int Tensors { get; init; }
    public required long NameBytes { get; init; }
    /// <summary>Element counts of every UNet / text-encoder parameter (masters, optimizer state, EMA).</summary>
    public required IReadOnlyList<long> UNetParameters { get; init; }
    public required IReadOnlyList<long> TextEncoderParameters { get; init; }
    public required int LatentChannels { get; init; }
    public required int VaeDownsampleFactor { get; init; }

    public static ModelFootprint Of(StableDiffusionModel model) => Of(model.TextEncoder, model.UNet, model.Vae);

    /// <summary>
    /// The SD1.5 architecture's counts (UNet 859,520,964 parameters, text encoder 123,060,480, VAE 83,653,863), for the
    /// arithmetic before a model is loaded (notebook 02). The per-parameter lists hold one total per component (exact for
    /// Lion and AdamW; AdamW 8-bit's few small fp32 tensors are not separated). DiskAndSaveTests checks every figure
    /// against the architecture built on the meta device.
    /// </summary>
    public static ModelFootprint StableDiffusion15 { get; } = new()
    {
        UNetFloats = 859_520_964,
        TextEncoderFloats = 123_060_480,
        VaeFloats = 83_653_863,
        OtherBytes = 8 * 77,
        Tensors = 1131,
        NameBytes = 88_543,
        UNetParameters = [859_520_964],
        TextEncoderParameters = [123_060_480],
        LatentChannels = 4,
        VaeDownsampleFactor = 8,
    };

    /// <summary>The counts of three modules (which may live on the meta device: only shapes are read).</summary>
    public static ModelFootprint Of(Models.Clip.CLIPTextModel textEncoder, Models.UNet.UNet2DConditionModel unet, Models.Vae.AutoencoderKL vae)
    {
        static long Floats(nn.Module m) => m.state_dict().Values.Where(t => t.is_floating_point()).Sum(t => t.NumberOfElements);
        var all = new[] { (nn.Module)unet, textEncoder, vae }.SelectMany(m => m.state_dict()).ToList();
        long other = all.Where(kv => !kv.Value.is_floating_point()).Sum(kv => kv.Value.NumberOfElements * kv.Value.ElementSize)
                     + 8L * textEncoder.Config.MaxPositionEmbeddings;   // position_ids, added to A1111-style files
        return new ModelFootprint
        {
            UNetFloats = Floats(unet),
            TextEncoderFloats = Floats(textEncoder),
            VaeFloats = Floats(vae),
            OtherBytes = other,
            Tensors = all.Count + 1,
            NameBytes = all.Sum(kv => (long)kv.Key.Length + 32),
            UNetParameters = unet.parameters().Select(p => p.NumberOfElements).ToList(),
            TextEncoderParameters = textEncoder.parameters().Select(p => p.NumberOfElements).ToList(),
            LatentChannels = vae.Config.LatentChannels,
            VaeDownsampleFactor = vae.DownsampleFactor,
        };
    }

    public static int BytesOf(ScalarType dtype) => dtype switch
    {
        ScalarType.Float16 or ScalarType.BFloat16 => 2,
        ScalarType.Float32 => 4,
        _ => throw new ArgumentException($"not a save dtype: {dtype}"),
    };

    /// <summary>Bytes of a single-file .safetensors save with floats in <paramref name="dtype"/>: data + JSON header (≈80 bytes a tensor) + 8 KiB of metadata.</summary>
    public long CheckpointBytes(ScalarType dtype) =>
        (UNetFloats + TextEncoderFloats + VaeFloats) * BytesOf(dtype) + OtherBytes + NameBytes + 80L * Tensors + 8192;

    /// <summary>
    /// Bytes of one training state (<see cref="TensorStateFile"/>): fp32 masters of every UNet and text-encoder weight, the
    /// optimizer's state for the trained ones, the fp32 EMA of the UNet, ≈100 bytes of header a tensor.
    /// </summary>
    public long StateBytes(string optimizer, bool trainUnet, bool trainTextEncoder, bool ema)
    {
        long masters = 4 * (UNetParameters.Sum() + TextEncoderParameters.Sum());
        var trained = (trainUnet ? UNetParameters : []).Concat(trainTextEncoder ? TextEncoderParameters : []).ToList();
        long opt = Optimizers.TrainingOptimizer.StateBytesFor(optimizer, trained) + 8L * trained.Count;
        long emaBytes = ema ? 4 * UNetParameters.Sum() : 0;
        long tensors = UNetParameters.Count + TextEncoderParameters.Count + 3L * trained.Count + (ema ? UNetParameters.Count : 0) + 8;
        return masters + opt + emaBytes + 128 * tensors + 64;
    }

    /// <summary>Bytes of one cached latent distribution (mean and std, fp32) of a <paramref name="width"/>×<paramref name="height"/> image.</summary>
    public long LatentBytes(int width, int height) =>
        2L * 4 * LatentChannels * (height / VaeDownsampleFactor) * (width / VaeDownsampleFactor) + 2 * 64 + 16;
}

/// <summary>One line of the disk arithmetic: what is written, how many, how big each, on which folder's volume.</summary>
public sealed record DiskPlanItem(string What, long Count, long BytesEach, string Folder, string How)
{
    public long Bytes => Count * BytesEach;
}

/// <summary>Free space of the volume holding a folder.</summary>
public sealed record VolumeSpace(string MountPoint, long FreeBytes);

/// <summary>
/// The disk arithmetic of a run, checked before step 1 (and before any class image is generated): every checkpoint
/// the run will save (kept, for the x/y plot), the training states on disk at once (keep_training_states + the one being
/// written), the latent cache, the class images to generate, previews and logs, against the free space of each
/// volume they land on. <see cref="ThrowIfItDoesNotFit"/> refuses a run that cannot fit (the CLI exits with 2).
/// </summary>
public sealed record DiskPlan(IReadOnlyList<DiskPlanItem> Items, IReadOnlyDictionary<string, VolumeSpace?> Volumes, int FromEpoch)
{
    /// <summary>Bytes the run still has to write, in all.</summary>
    public long NeededBytes => Items.Sum(i => i.Bytes);

    /// <summary>(volume, needed, free) for every volume the run writes to; free is null when it could not be read.</summary>
    public IReadOnlyList<(string Volume, long Needed, long? Free)> PerVolume =>
        Items.GroupBy(i => Volumes.GetValueOrDefault(i.Folder)?.MountPoint ?? i.Folder)
             .Select(g => (g.Key, g.Sum(i => i.Bytes), Volumes.Values.FirstOrDefault(v => v?.MountPoint == g.Key)?.FreeBytes))
             .ToList();

    public bool Fits => PerVolume.All(v => v.Free is null || v.Needed <= v.Free);

    /// <summary>A size as people read it: "2.13 GB", "596.5 MB", "48 KB", "512 B" (decimal units, as disks are sold).</summary>
    public static string Gb(long bytes) => bytes switch
    {
        >= 1_000_000_000 => (bytes / 1e9).ToString("0.00", CultureInfo.InvariantCulture) + " GB",
        >= 1_000_000 => (bytes / 1e6).ToString("0.0", CultureInfo.InvariantCulture) + " MB",
        >= 1_000 => (bytes / 1e3).ToString("0", CultureInfo.InvariantCulture) + " KB",
        _ => bytes.ToString(CultureInfo.InvariantCulture) + " B",
    };

    /// <summary>Throws a one-line <see cref="DreamBoothException"/> naming the volume, the need and the free space when the run cannot fit.</summary>
    public void ThrowIfItDoesNotFit()
    {
        foreach (var (volume, needed, free) in PerVolume)
            if (free is { } f && needed > f)
                throw new DreamBoothException(
                    $"output_dir: the run needs {Gb(needed)} on {volume} but only {Gb(f)} is free (" +
                    string.Join(" + ", Items.Where(i => (Volumes.GetValueOrDefault(i.Folder)?.MountPoint ?? i.Folder) == volume && i.Bytes > 0).Select(i => $"{i.What} {Gb(i.Bytes)}")) +
                    "); free space, or lower what is saved (save_every_epochs, keep_last_saves, keep_training_states, save_dtype)");
    }

    public override string ToString()
    {
        var sb = new StringBuilder(FromEpoch > 0 ? $"disk: what the run writes from epoch {FromEpoch} on\n" : "disk: what the run writes\n");
        foreach (var i in Items)
            sb.Append(CultureInfo.InvariantCulture, $"  {i.What,-22} {i.Count,6} × {Gb(i.BytesEach),10} = {Gb(i.Bytes),10}   {i.How}\n");
        foreach (var (volume, needed, free) in PerVolume)
        {
            string verdict = free is { } g ? needed <= g ? ": fits" : ": does NOT fit" : "";
            sb.Append(CultureInfo.InvariantCulture, $"  on {volume}: {Gb(needed)} needed, {(free is { } f ? Gb(f) + " free" : "free space unknown")}{verdict}\n");
        }
        return sb.ToString().TrimEnd('\n');
    }

    /// <summary>
    /// The free space of the volume holding <paramref name="folder"/> (the nearest existing folder above it): the mount
    /// point with the longest matching prefix, its available bytes; null when the OS does not say.
    /// </summary>
    public static VolumeSpace? ProbeFreeSpace(string folder)
    {
        try
        {
            string? dir = Path.GetFullPath(folder);
            while (dir is not null && !Directory.Exists(dir)) dir = Path.GetDirectoryName(dir);
            if (dir is null) return null;
            var drive = DriveInfo.GetDrives()
                .Where(d => d.IsReady && IsUnder(dir, d.RootDirectory.FullName))
                .MaxBy(d => d.RootDirectory.FullName.Length);
            return drive is null ? null : new VolumeSpace(drive.RootDirectory.FullName, drive.AvailableFreeSpace);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    static bool IsUnder(string path, string root)
    {
        root = root.TrimEnd(Path.DirectorySeparatorChar);
        return root.Length == 0 || path == root || path.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal);
    }

    /// <summary>The arithmetic of <paramref name="config"/> on <paramref name="model"/> with the data in its folders.</summary>
    public static DiskPlan For(TrainingConfig config, StableDiffusionModel model, int fromEpoch = 0, Func<string, VolumeSpace?>? freeSpace = null) =>
        For(config, ModelFootprint.Of(model), Enumerable.Range(0, config.Concepts.Count).Select(i => ClassImagePreparation.Plan(config, i)).ToList(), fromEpoch, freeSpace);

    /// <summary>
    /// The arithmetic for a planned run before its data exists (notebook 02): <paramref name="instanceImages"/> photos in
    /// one <paramref name="width"/>×<paramref name="height"/> bucket, <paramref name="classImagesFound"/> class images
    /// already there (the rest of class_images_per_instance × photos generated at that size), on the output volume.
    /// </summary>
    public static DiskPlan For(TrainingConfig config, ModelFootprint model, int instanceImages, int width, int height, int classImagesFound = 0,
        Func<string, VolumeSpace?>? freeSpace = null)
    {
        var concepts = config.Concepts.Count == 0 ? [new ConceptConfig()] : config.Concepts;
        var needs = concepts.Select((c, i) =>
        {
            int per = c.HasPrior ? c.ClassImagesPerInstance : 0;
            int shortfall = Math.Max(0, per * instanceImages - classImagesFound);
            return new ClassImageNeed(i, c.ClassDir, instanceImages, per, classImagesFound, 0, c.HasPrior && c.GenerateClassImages,
                [new ClassImageBucket(width, height, instanceImages, c.GenerateClassImages ? shortfall : 0)]);
        }).ToList();
        return For(config, model, needs, 0, freeSpace);
    }

    /// <summary>
    /// The arithmetic from counts: the model's footprint and each concept's class-image need (its instance buckets and
    /// the class images found / to generate). <paramref name="fromEpoch"/> &gt; 0 for a resume (only later saves count).
    /// </summary>
    public static DiskPlan For(TrainingConfig config, ModelFootprint model, IReadOnlyList<ClassImageNeed> concepts, int fromEpoch = 0,
        Func<string, VolumeSpace?>? freeSpace = null)
    {
        freeSpace ??= ProbeFreeSpace;
        var buckets = concepts.SelectMany(c => c.Buckets).GroupBy(b => (b.Width, b.Height)).Select(g => (g.Key.Width, g.Key.Height, Count: g.Sum(b => b.InstanceImages))).ToList();
        bool prior = concepts.Any(c => c.PerInstance > 0 && c.Found + c.ToGenerate > 0);
        var steps = StepPlan.For(config, buckets.Count == 0 ? [1] : buckets.Select(b => b.Count).ToList(), prior);
        var largest = buckets.Count == 0 ? (Width: config.MaxResolution, Height: config.MaxResolution, Count: 0) : buckets.MaxBy(b => (long)b.Width * b.Height);
        var common = buckets.Count == 0 ? largest : buckets.MaxBy(b => b.Count);
        var (largestW, largestH, commonW, commonH) = (largest.Width, largest.Height, common.Width, common.Height);
        string output = config.OutputDir;
        var items = new List<DiskPlanItem>();

        // checkpoints: every save epoch still ahead, each kept (keep_last_saves 0); an _ema file beside each when asked
        var saveDtype = config.SaveDtype switch { "fp32" => ScalarType.Float32, "bf16" => ScalarType.BFloat16, _ => ScalarType.Float16 };
        int saves = steps.SaveEpochs.Count(e => e > fromEpoch);
        int keptSaves = config.KeepLastSaves > 0 ? Math.Min(saves, config.KeepLastSaves + 1) : saves;
        items.Add(new DiskPlanItem("checkpoints", keptSaves * (config.SaveEmaWeights ? 2 : 1), model.CheckpointBytes(saveDtype), output,
            $"{config.SaveDtype} single files, {saves} save(s) ahead{(config.SaveEmaWeights ? " + _ema copies" : "")}{(config.KeepLastSaves > 0 ? $", newest {config.KeepLastSaves} kept" : ", all kept")}"));

        // training states: keep_training_states on disk plus the new one before the oldest is deleted
        int existingStates = Directory.Exists(output) ? Directory.EnumerateFiles(output, "*.state").Count() : 0;
        int statesAtOnce = config.KeepTrainingStates == 0 ? saves : Math.Min(saves, config.KeepTrainingStates + 1);
        int newStates = saves == 0 ? 0 : Math.Max(1, statesAtOnce - existingStates);
        items.Add(new DiskPlanItem("training states", newStates,
            model.StateBytes(config.Optimizer, config.TrainUnet, steps.TextEncoderSteps > 0, config.UseEma), output,
            $"fp32 masters + {config.Optimizer} state{(config.UseEma ? " + EMA" : "")}; " +
            (config.KeepTrainingStates == 0 ? "every one kept" : $"newest {config.KeepTrainingStates} kept, +1 while the next is written")));

        // latent cache: every instance image and every class image a run pairs, per flip, at its bucket
        if (config.CacheLatents)
        {
            int variants = config.Hflip ? 2 : 1;
            long instanceLatents = buckets.Sum(b => (long)b.Count * variants * model.LatentBytes(b.Width, b.Height));
            long classUsed = concepts.Sum(c => c.PerInstance == 0 ? 0 : Math.Min((long)c.Found + c.ToGenerate, (long)config.Epochs * c.InstanceImages));
            long classLatents = classUsed * variants * model.LatentBytes(largestW, largestH);
            long cached = Directory.Exists(Path.Combine(output, "latent_cache"))
                ? Directory.EnumerateFiles(Path.Combine(output, "latent_cache"), "*.latent").Sum(f => new FileInfo(f).Length) : 0;
            long images = buckets.Sum(b => (long)b.Count) + classUsed;
            items.Add(new DiskPlanItem("latent cache", 1, Math.Max(0, instanceLatents + classLatents - cached), Path.Combine(output, "latent_cache"),
                $"{images} image(s) × {variants} flip(s), mean + std fp32 at 1/{model.VaeDownsampleFactor} size{(cached > 0 ? $", {Gb(cached)} already cached" : "")}"));
        }

        // class images to generate, at their instance bucket's size (PNG bound: raw RGB + a filter byte a row + infotext)
        foreach (var c in concepts.Where(c => c.ToGenerate > 0))
            foreach (var b in c.Buckets.Where(b => b.ToGenerate > 0))
                items.Add(new DiskPlanItem($"class images {b.Size}", b.ToGenerate, 3L * b.Width * b.Height + b.Height + 4096 + 256, c.ClassDirectory,
                    $"PNG at most raw RGB size; concepts[{c.Concept}]"));

        // previews, logs, a diffusers folder at the end
        if (config.PreviewEveryEpochs > 0 && config.PreviewPrompts.Count > 0)
        {
            int previews = Enumerable.Range(fromEpoch + 1, Math.Max(0, config.Epochs - fromEpoch)).Count(e => e % config.PreviewEveryEpochs == 0 || e == config.Epochs);
            items.Add(new DiskPlanItem("previews", (long)previews * config.PreviewPrompts.Count, 3L * commonW * commonH + commonH + 4096, Path.Combine(output, "previews"),
                $"{commonW}x{commonH} PNG, {config.PreviewPrompts.Count} prompt(s) × {previews} preview epoch(s)"));
        }
        long stepsAhead = (long)steps.StepsPerEpoch * Math.Max(0, config.Epochs - fromEpoch);
        items.Add(new DiskPlanItem("logs", stepsAhead, 512, output, "log.csv + TensorBoard events, ≈512 bytes a step"));
        if (config.SaveDiffusersAtEnd)
            items.Add(new DiskPlanItem("diffusers folder", 1, 4 * (model.UNetFloats + model.TextEncoderFloats + model.VaeFloats) + model.OtherBytes + 1_000_000, output, "fp32 at the end"));

        var volumes = items.Select(i => i.Folder).Distinct().ToDictionary(f => f, f => freeSpace(f));
        return new DiskPlan(items, volumes, fromEpoch);
    }
}
