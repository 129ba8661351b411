using System.Security.Cryptography;
using DreamBooth.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>One training image: its file, caption-applied prompt template, bucket and whether it is a class image.</summary>
public sealed record TrainingImage(string Path, string Prompt, int Width, int Height, bool IsClass, int Concept)
{
    /// <summary>SHA-256 of the file bytes (first 16 hex), part of the latent cache key.</summary>
    public string ContentHash { get; } = Hash(Path);

    static string Hash(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(s))[..16];
    }
}

/// <summary>
/// One forward pass worth of samples: instance images, their paired class images, or (joint prior stepping)
/// instance images first, then their class images.
/// </summary>
public sealed record TrainingBatch(IReadOnlyList<TrainingImage> Images, int Width, int Height)
{
    public int InstanceCount => Images.Count(i => !i.IsClass);
    public int ClassCount => Images.Count(i => i.IsClass);
}

/// <summary>
/// The training set: instance images (with <c>[filewords]</c> captions from .txt files) and class images,
/// each assigned to an aspect bucket (multiples of 64, area ≤ max_resolution²). An epoch is every
/// instance image once, shuffled per bucket with a seed derived from (seed, epoch); each instance image
/// is paired with a class image of its concept (cycled in a seeded order) when prior preservation is on.
/// With prior_stepping "alternate" the paired class images form their own batch right after the instance
/// batch (the A1111 extension's order: instance, class, instance, class, …); with "joint" they are
/// appended to the instance batch. <see cref="StepPlan"/> counts the result.
/// </summary>
public sealed class TrainingData
{
    public IReadOnlyList<TrainingImage> Instances { get; }
    public IReadOnlyList<TrainingImage> ClassImages { get; }
    readonly TrainingConfig _config;

    public TrainingData(TrainingConfig config)
    {
        _config = config;
        var inst = new List<TrainingImage>();
        var cls = new List<TrainingImage>();
        for (int ci = 0; ci < config.Concepts.Count; ci++)
        {
            var c = config.Concepts[ci];
            foreach (var f in TrainingConfig.ImageFiles(c.InstanceDir))
                inst.Add(Make(f, c.InstancePrompt, false, ci));
            if (c.HasPrior)
                foreach (var f in TrainingConfig.ImageFiles(c.ClassDir))
                    cls.Add(Make(f, c.ClassPrompt, true, ci));
        }
        if (inst.Count == 0) throw new DreamBoothException("concepts: no instance images found");
        for (int ci = 0; ci < config.Concepts.Count; ci++)
            if (config.Concepts[ci].HasPrior && !cls.Any(x => x.Concept == ci))
                throw new DreamBoothException($"concepts[{ci}].class_dir '{config.Concepts[ci].ClassDir}' has no class images (generate them with `dreambooth class-images`, or clear class_dir)");
        Instances = inst;
        ClassImages = cls;
    }

    TrainingImage Make(string file, string template, bool isClass, int concept)
    {
        string caption = Path.ChangeExtension(file, ".txt");
        string? words = File.Exists(caption) ? File.ReadAllText(caption).Trim() : null;
        string prompt = PromptTemplate.Apply(template, words);
        var info = Image.Identify(file) ?? throw new DreamBoothException($"{file}: not a readable image");
        var (w, h) = Bucket(info.Width, info.Height, _config.MaxResolution, _config.ResolutionStep);
        return new TrainingImage(file, prompt, w, h, isClass, concept);
    }

    /// <summary>
    /// The bucket of an image: its size scaled down to area ≤ maxRes², each side floored to a multiple of
    /// <paramref name="step"/> (64 for SD1.x: VAE ×8 and three UNet downsamplings; smaller for tiny models).
    /// </summary>
    public static (int Width, int Height) Bucket(int width, int height, int maxResolution, int step = 64)
    {
        double scale = Math.Min(1.0, Math.Sqrt((double)maxResolution * maxResolution / ((double)width * height)));
        int w = Math.Max(step, (int)Math.Floor(width * scale / step) * step);
        int h = Math.Max(step, (int)Math.Floor(height * scale / step) * step);
        return (w, h);
    }

    public bool PriorPreservation => ClassImages.Count > 0;

    /// <summary>The batches of epoch <paramref name="epoch"/> (deterministic in seed and epoch).</summary>
    public IReadOnlyList<TrainingBatch> Epoch(int epoch)
    {
        var rng = new Random(unchecked((int)Mix(_config.Seed, epoch, 0x5eed)));
        var batches = new List<TrainingBatch>();
        foreach (var bucket in Instances.GroupBy(i => (i.Width, i.Height)).OrderBy(g => g.Key.Width).ThenBy(g => g.Key.Height))
        {
            var items = bucket.ToArray();
            rng.Shuffle(items);
            for (int s = 0; s < items.Length; s += _config.BatchSize)
                batches.Add(new TrainingBatch(items.Skip(s).Take(_config.BatchSize).ToList(), bucket.Key.Width, bucket.Key.Height));
        }
        rng.Shuffle(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(batches));
        if (!PriorPreservation) return batches;
        // pair each instance image with the next class image of its concept (seeded order, cycled across epochs)
        var perConcept = ClassImages.GroupBy(c => c.Concept).ToDictionary(g => g.Key, g =>
        {
            var arr = g.ToArray();
            new Random(unchecked((int)Mix(_config.Seed, g.Key, 0xc1a55))).Shuffle(arr);
            return arr;
        });
        var cursor = perConcept.Keys.ToDictionary(k => k, _ => (long)epoch * Instances.Count);
        bool alternate = _config.PriorStepping == "alternate";
        var paired = new List<TrainingBatch>(batches.Count * (alternate ? 2 : 1));
        foreach (var b in batches)
        {
            var classImages = new List<TrainingImage>();
            foreach (var inst in b.Images)
                if (perConcept.TryGetValue(inst.Concept, out var pool))
                {
                    var c = pool[(int)(cursor[inst.Concept]++ % pool.Length)];
                    classImages.Add(c with { Width = b.Width, Height = b.Height });
                }
            if (!alternate) paired.Add(b with { Images = [.. b.Images, .. classImages] });
            else
            {
                paired.Add(b);
                if (classImages.Count > 0) paired.Add(b with { Images = classImages });
            }
        }
        return paired;
    }

    /// <summary>Instance images per bucket, in bucket order (the input of <see cref="StepPlan"/>).</summary>
    public IReadOnlyList<int> InstancesPerBucket =>
        Instances.GroupBy(i => (i.Width, i.Height)).OrderBy(g => g.Key.Width).ThenBy(g => g.Key.Height).Select(g => g.Count()).ToList();

    /// <summary>The step arithmetic of this data under <paramref name="config"/>.</summary>
    public StepPlan Plan => StepPlan.For(_config, InstancesPerBucket, PriorPreservation);

    public int BatchesPerEpoch => Plan.BatchesPerEpoch;

    /// <summary>Loads an image as [3,H,W] float32: resized to cover the bucket, center-cropped, optionally flipped,
    /// normalized to [-1,1] (or by its own per-channel mean/std with dynamic normalization).</summary>
    public static Tensor LoadPixels(string path, int width, int height, bool flip, bool dynamicNormalization)
    {
        using var img = Image.Load<Rgb24>(path);
        img.Mutate(x =>
        {
            x.Resize(new ResizeOptions { Size = new SixLabors.ImageSharp.Size(width, height), Mode = ResizeMode.Crop, Position = AnchorPositionMode.Center, Sampler = KnownResamplers.Lanczos3 });
            if (flip) x.Flip(FlipMode.Horizontal);
        });
        var data = new float[3 * width * height];
        int plane = width * height;
        img.ProcessPixelRows(acc =>
        {
            for (int y = 0; y < acc.Height; y++)
            {
                var row = acc.GetRowSpan(y);
                for (int x = 0; x < row.Length; x++)
                {
                    int o = y * width + x;
                    data[o] = row[x].R / 255f;
                    data[plane + o] = row[x].G / 255f;
                    data[2 * plane + o] = row[x].B / 255f;
                }
            }
        });
        using var scope = torch.NewDisposeScope();
        var t = torch.tensor(data).view(3, height, width);
        if (dynamicNormalization)
        {
            var mean = t.mean([1L, 2L], keepdim: true);
            var std = t.std([1L, 2L], keepdim: true).clamp_min(1e-6);
            t = (t - mean) / std;
        }
        else t = (t - 0.5) / 0.5;
        return t.MoveToOuterDisposeScope();
    }

    internal static long Mix(long a, long b, long c)
    {
        ulong h = 1469598103934665603UL;
        foreach (long v in new[] { a, b, c }) { h ^= (ulong)v; h *= 1099511628211UL; h ^= h >> 29; }
        return (long)(h & 0x7fffffffffffffffUL);
    }
}
