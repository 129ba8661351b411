using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using DreamBooth.IO;
using DreamBooth.Schedulers;
using SixLabors.ImageSharp;

namespace DreamBooth.Pipelines;

/// <summary>What class (regularization) images are needed and how to generate the missing ones.</summary>
public sealed record ClassImageRequest
{
    /// <summary>Folder of class images: every readable image in it counts, whatever its size; generated ones are added here.</summary>
    public string ClassDirectory { get; init; } = "";
    /// <summary>How many class images the run needs in all (class images per instance image × instance images).</summary>
    public int Needed { get; init; }
    public string ClassPrompt { get; init; } = "";
    public string NegativePrompt { get; init; } = "";
    public int Steps { get; init; } = 40;
    public double CfgScale { get; init; } = 7.5;
    public string Sampler { get; init; } = SamplerFactory.Default;
    /// <summary>Images denoised together (the extension's "Class Batch Size").</summary>
    public int BatchSize { get; init; } = 1;
    public int Width { get; init; } = 512;
    public int Height { get; init; } = 512;
    public int ClipSkip { get; init; } = 1;
    /// <summary>Image with index i gets seed Seed + i. −1: a random base, kept from earlier generated files when resuming.</summary>
    public long Seed { get; init; } = -1;

    /// <summary>needed = class images per instance image × number of instance images.</summary>
    public static int NeededFor(int instanceImages, int classImagesPerInstance)
    {
        if (instanceImages < 0) throw new DreamBoothException($"instance images: expected >= 0, got {instanceImages}");
        if (classImagesPerInstance < 0) throw new DreamBoothException($"class images per instance image: expected >= 0, got {classImagesPerInstance}");
        return checked(instanceImages * classImagesPerInstance);
    }
}

/// <summary>Progress of a class-image run: images generated so far of those to generate, and the current denoising step.</summary>
public sealed record ClassImageProgress(int Generated, int ToGenerate, SamplingProgress? Sampling, string? LastFile);

/// <summary>What a class-image run found and did.</summary>
public sealed record ClassImageReport(
    string ClassDirectory,
    int Needed,
    int Found,
    int Generated,
    int SkippedUnreadable,
    TimeSpan Elapsed,
    IReadOnlyList<string> GeneratedFiles,
    IReadOnlyList<string> UnreadableFiles)
{
    /// <summary>Readable class images now in the folder.</summary>
    public int Available => Found + Generated;

    public override string ToString() =>
        $"class images in {ClassDirectory}: needed {Needed}, found {Found}, generated {Generated}, skipped (unreadable) {SkippedUnreadable}, " +
        $"time {Elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture)} s";
}

/// <summary>
/// Tops a class folder up to the number of class images the recipe needs: existing images (real photos or
/// earlier generations) count, only the shortfall is generated, each saved as a PNG with its A1111 infotext
/// plus a <c>.txt</c> caption. File names carry the index and seed (<c>class-00012-1234.png</c>); an
/// interrupted run resumes with the next free indices and the same seeds, so nothing is duplicated or lost.
/// </summary>
public sealed class ClassImageGenerator
{
    public const string FilePrefix = "class-";
    static readonly Regex GeneratedName = new(@"^class-(\d{5,})-(\d+)\.png$", RegexOptions.Compiled | RegexOptions.CultureInvariant);
    static readonly HashSet<string> ImageExtensions = new(StringComparer.OrdinalIgnoreCase) { ".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff" };

    readonly Txt2ImgPipeline _pipeline;

    public ClassImageGenerator(Txt2ImgPipeline pipeline) => _pipeline = pipeline ?? throw new ArgumentNullException(nameof(pipeline));

    /// <summary>The images of a folder that count (readable) and those that do not, by file name order.</summary>
    public static (IReadOnlyList<string> readable, IReadOnlyList<string> unreadable) Scan(string directory)
    {
        var readable = new List<string>();
        var unreadable = new List<string>();
        if (!Directory.Exists(directory)) return (readable, unreadable);
        foreach (var path in Directory.EnumerateFiles(directory).Order(StringComparer.Ordinal))
        {
            var name = Path.GetFileName(path);
            if (name.StartsWith('.') || !ImageExtensions.Contains(Path.GetExtension(path))) continue;
            bool ok;
            try
            {
                var info = Image.Identify(path);
                ok = info is not null && info.Width > 0 && info.Height > 0;
            }
            catch (Exception e) when (e is UnknownImageFormatException or InvalidImageContentException or NotSupportedException or IOException or ImageFormatException)
            {
                ok = false;
            }
            (ok ? readable : unreadable).Add(path);
        }
        return (readable, unreadable);
    }

    /// <summary>Counts, generates the shortfall batch by batch (each image saved as soon as its batch is done), reports.</summary>
    public ClassImageReport Run(ClassImageRequest request, IProgress<ClassImageProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (string.IsNullOrWhiteSpace(request.ClassDirectory)) throw new DreamBoothException("class directory: not set");
        if (request.Needed < 0) throw new DreamBoothException($"class images needed: expected >= 0, got {request.Needed}");
        if (request.BatchSize < 1) throw new DreamBoothException($"class batch size: expected at least 1, got {request.BatchSize}");
        if (request.Seed < -1) throw new DreamBoothException($"seed: expected −1 (random) or a seed >= 0, got {request.Seed}");
        var clock = Stopwatch.StartNew();
        var (readable, unreadable) = Scan(request.ClassDirectory);
        int found = readable.Count;
        int shortfall = Math.Max(0, request.Needed - found);
        var generatedFiles = new List<string>();
        if (shortfall == 0)
            return new ClassImageReport(request.ClassDirectory, request.Needed, found, 0, unreadable.Count, clock.Elapsed, generatedFiles, unreadable);

        if (string.IsNullOrWhiteSpace(request.ClassPrompt))
            throw new DreamBoothException($"class prompt: required to generate {shortfall} missing class image(s) in {request.ClassDirectory}");
        Directory.CreateDirectory(request.ClassDirectory);

        // indices and seeds already used by earlier generations in this folder
        var used = new Dictionary<int, long>();
        foreach (var path in readable)
        {
            var m = GeneratedName.Match(Path.GetFileName(path));
            if (m.Success && int.TryParse(m.Groups[1].Value, NumberStyles.None, CultureInfo.InvariantCulture, out var idx)
                && long.TryParse(m.Groups[2].Value, NumberStyles.None, CultureInfo.InvariantCulture, out var seed))
                used[idx] = seed;
        }
        long baseSeed;
        if (request.Seed >= 0) baseSeed = request.Seed;
        else if (used.Count > 0)
        {
            var first = used.MinBy(kv => kv.Key);
            baseSeed = Math.Max(0, first.Value - first.Key); // resume with the base the earlier run picked
        }
        else baseSeed = Random.Shared.NextInt64(0, GenerationRequest.MaxRandomSeed + 1);

        var indices = new List<int>(shortfall);
        for (int i = 0; indices.Count < shortfall; i++)
            if (!used.ContainsKey(i)) indices.Add(i);

        var generation = new GenerationRequest
        {
            Prompt = request.ClassPrompt,
            NegativePrompt = request.NegativePrompt,
            Steps = request.Steps,
            CfgScale = request.CfgScale,
            Sampler = request.Sampler,
            Width = request.Width,
            Height = request.Height,
            ClipSkip = request.ClipSkip,
            Seed = baseSeed,
            BatchSize = request.BatchSize,
            Count = shortfall,
        };
        generation.Validate(_pipeline.PixelMultiple);

        progress?.Report(new ClassImageProgress(0, shortfall, null, null));
        for (int start = 0; start < indices.Count; start += request.BatchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var batchIndices = indices.Skip(start).Take(request.BatchSize).ToList();
            var seeds = batchIndices.Select(i => baseSeed + i).ToList();
            int doneBefore = generatedFiles.Count;
            var stepProgress = progress is null ? null : new InlineProgress<SamplingProgress>(p =>
                progress.Report(new ClassImageProgress(doneBefore, shortfall, p, null)));
            var images = _pipeline.GenerateBatch(generation, seeds, stepProgress, cancellationToken);
            try
            {
                for (int k = 0; k < images.Count; k++)
                {
                    string baseName = $"{FilePrefix}{batchIndices[k]:D5}-{seeds[k].ToString(CultureInfo.InvariantCulture)}";
                    string png = Path.Combine(request.ClassDirectory, baseName + ".png");
                    // caption first: a .png only ever exists with its caption beside it
                    AtomicFile.WriteAllText(Path.Combine(request.ClassDirectory, baseName + ".txt"), request.ClassPrompt);
                    images[k].SavePng(png);
                    generatedFiles.Add(png);
                    progress?.Report(new ClassImageProgress(generatedFiles.Count, shortfall, null, png));
                }
            }
            finally
            {
                foreach (var image in images) image.Dispose();
            }
        }
        return new ClassImageReport(request.ClassDirectory, request.Needed, found, generatedFiles.Count, unreadable.Count, clock.Elapsed, generatedFiles, unreadable);
    }

    sealed class InlineProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
