using DreamBooth.Checkpoints;
using DreamBooth.Pipelines;
using SixLabors.ImageSharp;

namespace DreamBooth.Training;

/// <summary>One instance bucket of a concept: its size, its instance images, and the class images to generate at that size.</summary>
public sealed record ClassImageBucket(int Width, int Height, int InstanceImages, int ToGenerate)
{
    public string Size => $"{Width}x{Height}";
}

/// <summary>
/// What prior preservation needs for one concept: class_images_per_instance × instance images, the readable images
/// the class folder already holds (any size counts, as <see cref="ClassImageGenerator.Scan"/> counts them), and the
/// shortfall, split over the instance buckets in proportion to their instance images and generated at each bucket's
/// size (768x1024 for the recipe's photos, not max_resolution square: an SD1.5 model draws duplicated, malformed
/// people at 1024x1024).
/// </summary>
public sealed record ClassImageNeed(int Concept, string ClassDirectory, int InstanceImages, int PerInstance, int Found, int Unreadable,
    bool GenerateMissing, IReadOnlyList<ClassImageBucket> Buckets)
{
    public int Needed => ClassImageRequest.NeededFor(InstanceImages, PerInstance);
    public int Shortfall => Math.Max(0, Needed - Found);
    /// <summary>Images that will be generated (0 when generate_class_images is off).</summary>
    public int ToGenerate => GenerateMissing ? Shortfall : 0;

    /// <summary>"1500 at 768x1024" (or several sizes), what the generation would draw.</summary>
    public string Sizes => string.Join(", ", Buckets.Where(b => b.ToGenerate > 0).Select(b => $"{b.ToGenerate} at {b.Size}"));

    public override string ToString() =>
        $"class images for concepts[{Concept}] in {ClassDirectory}: {Needed} needed ({PerInstance} × {InstanceImages} instance images), {Found} found" +
        (Shortfall == 0 ? ": nothing to generate"
            : GenerateMissing ? $", {Shortfall} to generate at the instance bucket size ({Sizes})"
            : $", {Shortfall} missing and generate_class_images is off");
}

/// <summary>
/// Before training: tops up each concept's class folder to class_images_per_instance × instance images with
/// <see cref="ClassImageGenerator"/> (the concept's class prompt, negative prompt, CFG and steps; class_batch_size
/// images per batch; seeds from the run's seed), unless the concept's generate_class_images is false. Images already
/// there count; only the shortfall is generated, at the resolutions of the concept's instance buckets as the A1111
/// extension does (its ClassDataset generates each bucket's class images at that bucket's resolution).
/// </summary>
public static class ClassImagePreparation
{
    /// <summary>Instance images of <paramref name="instanceDir"/> per bucket (bucket order: width, then height).</summary>
    public static IReadOnlyList<(int Width, int Height, int Count)> InstanceBuckets(string instanceDir, int maxResolution, int resolutionStep)
    {
        var counts = new SortedDictionary<(int W, int H), int>();
        foreach (var f in TrainingConfig.ImageFiles(instanceDir))
        {
            (int W, int H)? size;
            try { size = Image.Identify(f) is { } info ? (info.Width, info.Height) : null; }
            catch (Exception e) when (e is UnknownImageFormatException or InvalidImageContentException or IOException) { continue; }
            if (size is not { } s) continue;
            var b = TrainingData.Bucket(s.W, s.H, maxResolution, resolutionStep);
            counts[b] = counts.GetValueOrDefault(b) + 1;
        }
        return counts.Select(kv => (kv.Key.W, kv.Key.H, kv.Value)).ToList();
    }

    /// <summary>The class images concept <paramref name="index"/> needs and what would be generated at which size.</summary>
    public static ClassImageNeed Plan(TrainingConfig config, int index)
    {
        var c = config.Concepts[index];
        var buckets = c.InstanceDir.Length > 0 ? InstanceBuckets(c.InstanceDir, config.MaxResolution, config.ResolutionStep) : [];
        int instances = buckets.Sum(b => b.Count);
        var (readable, unreadable) = c.HasPrior ? ClassImageGenerator.Scan(c.ClassDir) : ([], []);
        int needed = c.HasPrior ? ClassImageRequest.NeededFor(instances, c.ClassImagesPerInstance) : 0;
        var shares = Split(Math.Max(0, needed - readable.Count), buckets.Select(b => b.Count).ToList());
        return new ClassImageNeed(index, c.ClassDir, instances, c.HasPrior ? c.ClassImagesPerInstance : 0, readable.Count, unreadable.Count,
            c.HasPrior && c.GenerateClassImages, buckets.Select((b, i) => new ClassImageBucket(b.Width, b.Height, b.Count, shares[i])).ToList());
    }

    /// <summary><paramref name="total"/> split in proportion to <paramref name="weights"/> (largest remainder, earlier buckets first on ties).</summary>
    public static int[] Split(int total, IReadOnlyList<int> weights)
    {
        var result = new int[weights.Count];
        long sum = weights.Sum(w => (long)w);
        if (total == 0 || sum == 0) return result;
        var remainders = new List<(long Remainder, int Index)>();
        int given = 0;
        for (int i = 0; i < weights.Count; i++)
        {
            long exact = (long)total * weights[i];
            result[i] = (int)(exact / sum);
            given += result[i];
            remainders.Add((exact % sum, i));
        }
        foreach (var (_, i) in remainders.OrderByDescending(r => r.Remainder).ThenBy(r => r.Index).Take(total - given)) result[i]++;
        return result;
    }

    /// <summary>
    /// The generation requests of concept <paramref name="index"/>, one per instance bucket with a share of the shortfall
    /// (empty when it needs none, has no prior, or generation is off). Each request's <see cref="ClassImageRequest.Needed"/>
    /// is the folder's count after the earlier buckets' images plus this bucket's share, so running them in order tops
    /// the folder up to the concept's need.
    /// </summary>
    public static IReadOnlyList<ClassImageRequest> Requests(TrainingConfig config, int index)
    {
        var c = config.Concepts[index];
        var need = Plan(config, index);
        if (need.ToGenerate == 0) return [];
        var requests = new List<ClassImageRequest>();
        int target = need.Found;
        foreach (var b in need.Buckets.Where(b => b.ToGenerate > 0))
        {
            target += b.ToGenerate;
            requests.Add(new ClassImageRequest
            {
                ClassDirectory = c.ClassDir,
                Needed = target,
                ClassPrompt = c.ClassPrompt,
                NegativePrompt = c.ClassNegativePrompt,
                Steps = c.ClassSteps,
                CfgScale = c.ClassGuidanceScale,
                BatchSize = config.ClassBatchSize,
                Width = b.Width,
                Height = b.Height,
                ClipSkip = config.ClipSkip,
                Seed = Math.Abs(config.Seed + 1_000_003L * index) % (GenerationRequest.MaxRandomSeed + 1),
            });
        }
        return requests;
    }

    /// <summary>
    /// Generates the missing class images of every concept with <paramref name="model"/>; reports each concept's plan
    /// (a Message event) and returns one report per bucket generated.
    /// </summary>
    public static IReadOnlyList<ClassImageReport> Run(TrainingConfig config, StableDiffusionModel model,
        IProgress<TrainingEvent>? progress = null, CancellationToken cancellationToken = default)
    {
        var reports = new List<ClassImageReport>();
        Txt2ImgPipeline? pipeline = null;
        try
        {
            for (int i = 0; i < config.Concepts.Count; i++)
            {
                if (!config.Concepts[i].HasPrior) continue;
                var need = Plan(config, i);
                progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Message, Message = need.ToString() });
                foreach (var request in Requests(config, i))
                {
                    if (ClassImageGenerator.Scan(request.ClassDirectory).readable.Count >= request.Needed) continue;
                    pipeline ??= new Txt2ImgPipeline(model);
                    var report = new ClassImageGenerator(pipeline).Run(request, progress is null ? null : new Relay(p =>
                    {
                        if (p.LastFile is not null)
                            progress.Report(new TrainingEvent { Kind = TrainingEventKind.Message, Path = p.LastFile, Message = $"class image {p.Generated}/{p.ToGenerate} ({request.Width}x{request.Height}): {p.LastFile}" });
                    }), cancellationToken);
                    reports.Add(report);
                    progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Message, Message = $"{report} at {request.Width}x{request.Height}" });
                }
            }
        }
        finally
        {
            pipeline?.Dispose();
        }
        return reports;
    }

    sealed class Relay(Action<ClassImageProgress> a) : IProgress<ClassImageProgress>
    {
        public void Report(ClassImageProgress value) => a(value);
    }
}
