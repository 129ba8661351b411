using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using DreamBooth.IO;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Data;

public enum PrepareMode
{
    /// <summary>Focal-point crop of the whole photo to exactly the target size.</summary>
    Focal,
    /// <summary>Crop the person to a preset ratio first, then focal-crop to the nearest aspect bucket.</summary>
    Subject,
}

/// <summary>Everything <see cref="DatasetPreparer"/> needs to know.</summary>
public sealed record PrepareOptions
{
    /// <summary>Target size (focal mode) and maximum bucket area (subject mode).</summary>
    public Bucket Size { get; init; } = new(768, 1024);
    public PrepareMode Mode { get; init; } = PrepareMode.Focal;
    public FocalCropOptions Focal { get; init; } = FocalCropOptions.Recipe;
    public SubjectCropOptions Subject { get; init; } = SubjectCropOptions.Default;
    public IngestOptions Ingest { get; init; } = IngestOptions.Default;
    public BlazeFaceOptions Detector { get; init; } = BlazeFaceOptions.Default;
    public int BucketMaxResolution { get; init; } = 1024;
    public int BucketStep { get; init; } = 64;
    public int BucketMinSide { get; init; } = 256;
    /// <summary>Write an overlay per image into debug/.</summary>
    public bool Debug { get; init; }
    /// <summary>Redo images even when the manifest says they are done.</summary>
    public bool Force { get; init; }
    public int MaxParallelism { get; init; } = Environment.ProcessorCount;
    /// <summary>Decoded pixels allowed in flight at once across workers; 0 = half the memory available to the process (at most 4 GiB).</summary>
    public long MemoryBudgetBytes { get; init; }

    /// <summary>Hash of the settings that change outputs (not Force/Debug/parallelism).</summary>
    public string Fingerprint()
    {
        var s = JsonSerializer.Serialize(new
        {
            size = Size.ToString(), mode = Mode.ToString(), Focal.FaceWeight, Focal.EdgesWeight, Focal.EntropyWeight, entropy = Focal.EntropyMode.ToString(),
            Focal.AllowUpscale, ratios = Subject.AspectRatios.Select(r => r.ToString()).ToArray(), framing = Subject.Framing.ToString(), Subject.AllFaces,
            hs = Subject.HeadAndShoulders.ToString(), ub = Subject.UpperBody.ToString(), fb = Subject.FullBody.ToString(),
            bg = Ingest.Background.ToString(), Detector.ShortRangeThreshold, Detector.BackThreshold, Detector.ConfirmThreshold,
            Detector.RequireShortRangeConfirmation, Detector.Tiles, confirmScales = Detector.ConfirmScales.ToArray(), Detector.MinFaceSize, Detector.MaxSide,
            BucketMaxResolution, BucketStep, BucketMinSide, version = 2,
        });
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(s)))[..16];
    }
}

/// <summary>Progress of a preparation run: one event per finished file.</summary>
public sealed record PrepareProgress(int Done, int Total, string Source, string Status);

/// <summary>
/// Raw photos → prepared training images + manifest.json: ingest, duplicates, face detection, subject/focal crop,
/// Lanczos3 resize, atomic PNG output, optional debug overlays. Parallel over images with a memory budget; never
/// modifies a source; re-running skips what the manifest says is done (same content, same settings) unless Force.
/// </summary>
public static class DatasetPreparer
{
    public static async Task<DatasetReport> RunAsync(string input, string output, PrepareOptions? options = null,
        IProgress<PrepareProgress>? progress = null, CancellationToken ct = default, BlazeFaceDetector? detector = null)
    {
        options ??= new PrepareOptions();
        var inFull = Path.TrimEndingDirectorySeparator(Path.GetFullPath(input));
        var outFull = Path.TrimEndingDirectorySeparator(Path.GetFullPath(output));
        if (!Directory.Exists(inFull)) throw new DreamBoothException($"--input: folder not found: {input}");
        if (string.Equals(inFull, outFull, StringComparison.Ordinal)) throw new DreamBoothException("--output must differ from --input (sources are never overwritten)");
        if (inFull.StartsWith(outFull + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new DreamBoothException("--input must not be inside --output");
        if (options.Size.Width is < 1 or > Bucket.MaxParsedSide || options.Size.Height is < 1 or > Bucket.MaxParsedSide)
            throw new DreamBoothException($"--size {options.Size}: width and height must be 1 to {Bucket.MaxParsedSide} pixels");
        var folder = PreparedFolder.Claim(output, "--output");
        var started = DateTime.UtcNow;
        var fingerprint = options.Fingerprint();
        var previous = options.Force ? null : DatasetManifest.TryLoad(outFull);
        var done = previous is not null && previous.Fingerprint == fingerprint
            ? previous.Items.GroupBy(i => i.Source).ToDictionary(g => g.Key, g => g.First())
            : [];
        var files = ImageIngest.ListFiles(inFull, outFull, out var notFollowed);
        var buckets = options.Mode == PrepareMode.Subject
            ? AspectBuckets.Generate(options.Size, options.BucketMaxResolution, options.BucketStep, options.BucketMinSide)
            : new AspectBuckets([options.Size], options.Size.Width * options.Size.Height);

        string Rel(string f) => Path.GetRelativePath(inFull, f).Replace(Path.DirectorySeparatorChar, '/');

        // 1. content hashes (duplicates, idempotence)
        var hashes = new string?[files.Count];
        var skipped = new List<SkippedFile>(notFollowed);
        await Parallel.ForAsync(0, files.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.MaxParallelism), CancellationToken = ct }, (i, _) =>
        {
            try { hashes[i] = ImageIngest.Sha256(files[i]); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                lock (skipped) skipped.Add(new SkippedFile(files[i], ImageIngest.CodeUnreadable, e.Message.ReplaceLineEndings(" ")));
            }
            return ValueTask.CompletedTask;
        });
        var firstByHash = new Dictionary<string, string>();
        var work = new List<(string File, string Sha)>();
        for (int i = 0; i < files.Count; i++)
        {
            if (hashes[i] is not { } h) continue;
            // files without content are not duplicates of each other: each is reported as empty by the probe
            if (h != ImageIngest.EmptySha256 && firstByHash.TryGetValue(h, out var first))
                skipped.Add(new SkippedFile(files[i], ImageIngest.CodeDuplicate, $"same content as {Rel(first)}"));
            else
            {
                firstByHash[h] = files[i];
                work.Add((files[i], h));
            }
        }

        // 2. output names: relative path flattened; collisions get the content hash
        var names = new Dictionary<string, string>();
        var used = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var (f, sha) in work)
        {
            var stem = SafeStem(Path.ChangeExtension(Rel(f), null)!.Replace('/', '_'));
            var name = stem + ".png";
            if (!used.Add(name)) { name = $"{stem}-{sha[..8]}.png"; used.Add(name); }
            names[f] = name;
        }
        // nothing is replaced that prepare did not write: checked for every name before the first image is processed
        folder.CheckCanWrite(names.Values.Concat(options.Debug ? names.Values.Select(n => "debug/" + n) : []).Append(DatasetManifest.FileName)
            .Append(DreamBooth.Likeness.DatasetIdentityCheck.FileName));

        var ownDetector = detector is null;
        detector ??= BlazeFaceDetector.Create(options.Detector);
        try
        {
            var items = new ManifestItem?[work.Count];
            var reused = new bool[work.Count];
            int finished = 0;
            long budget = options.MemoryBudgetBytes > 0 ? options.MemoryBudgetBytes
                : Math.Min(4L << 30, GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / 2);
            var gate = new MemoryGate(budget);
            await Parallel.ForAsync(0, work.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(1, options.MaxParallelism), CancellationToken = ct }, async (i, token) =>
            {
                var (file, sha) = work[i];
                var rel = Rel(file);
                string status;
                if (done.TryGetValue(rel, out var prev) && prev.Sha256 == sha && File.Exists(Path.Combine(outFull, prev.Output))
                    && (!options.Debug || (prev.Debug is not null && File.Exists(Path.Combine(outFull, prev.Debug)))))
                {
                    items[i] = prev;
                    reused[i] = true;
                    status = "unchanged";
                }
                else
                {
                    var (item, skip) = await ProcessAsync(file, rel, sha, names[file], folder, options, buckets, detector, gate, token);
                    items[i] = item;
                    if (skip is not null) lock (skipped) skipped.Add(skip);
                    status = skip is null ? "prepared" : $"skipped: {skip.Code}";
                }
                progress?.Report(new PrepareProgress(Interlocked.Increment(ref finished), work.Count, rel, status));
            });

            var kept = items.Where(i => i is not null).Select(i => i!).ToList();
            var skips = skipped.OrderBy(s => s.Source, StringComparer.Ordinal)
                .Select(s => new ManifestSkip(Rel(s.Source), s.Code, s.Detail)).ToList();
            var manifest = new DatasetManifest
            {
                Input = inFull, Fingerprint = fingerprint, Mode = options.Mode.ToString().ToLowerInvariant(), Size = options.Size.ToString(),
                Items = kept, Skipped = skips,
            };
            folder.Record(DatasetManifest.FileName);
            manifest.Save(outFull);
            return new DatasetReport(outFull, manifest, files.Count, reused.Count(r => r), DateTime.UtcNow - started, buckets.Buckets);
        }
        finally
        {
            if (ownDetector) detector.Dispose();
        }
    }

    static async Task<(ManifestItem? Item, SkippedFile? Skip)> ProcessAsync(string file, string rel, string sha, string outName, PreparedFolder folder,
        PrepareOptions options, AspectBuckets buckets, BlazeFaceDetector detector, MemoryGate gate, CancellationToken ct)
    {
        var (info, format, probeSkip) = ImageIngest.Probe(file, options.Ingest);
        if (probeSkip is not null) return (null, probeSkip);
        // Focal mode knows before decoding how many pixels it needs: the cover scale of the target and the detector's
        // working size. Large JPEGs are then decoded at a reduced DCT scale. (Subject mode may zoom into a small part.)
        Func<int, int, double>? need = options.Mode == PrepareMode.Focal
            ? (w, h) => Math.Max(Math.Max((double)options.Size.Width / w, (double)options.Size.Height / h), detector.Options.WorkingScale(w, h))
            : null;
        // decoded RGBA + RGB copy + crop/resize copies, plus the encoded bytes
        long pixels = (long)info!.Width * info.Height;
        bool scaled = need is not null && format is SixLabors.ImageSharp.Formats.Jpeg.JpegFormat && need(info.Width, info.Height) <= 0.5;
        long estimate = (scaled ? pixels * 10 / 4 : pixels * 10) + new FileInfo(file).Length;
        using var lease = await gate.AcquireAsync(estimate, ct);
        var (loaded, skip) = ImageIngest.Load(file, options.Ingest, sha, need);
        if (skip is not null) return (null, skip);
        using (loaded)
        {
            var image = loaded!.Image;
            ct.ThrowIfCancellationRequested();
            var detection = detector.Detect(image, ct);
            var warnings = new List<string>(loaded.Warnings);
            SubjectCrop? subject = null;
            Bucket target = options.Size;
            Rectangle? within = null;
            if (options.Mode == PrepareMode.Subject)
            {
                subject = SubjectCropper.Choose(image.Width, image.Height, detection.Faces, options.Subject);
                within = subject.Rect;
                target = buckets.Nearest(subject.Rect.Width, subject.Rect.Height);
            }
            var plan = FocalCrop.Plan(image, detection.Faces, target.Width, target.Height, options.Focal, within);
            if (plan.Scale > options.Focal.UpscaleWarning)
            {
                if (!options.Focal.AllowUpscale)
                    return (null, new SkippedFile(file, ImageIngest.CodeTooSmall, $"crop {plan.SourceRect.Width}x{plan.SourceRect.Height} would be upscaled ×{plan.Scale:F2} to {target} (upscaling disabled)"));
                warnings.Add($"upscaled ×{plan.Scale:F2}: crop {plan.SourceRect.Width}x{plan.SourceRect.Height} → {target}");
            }
            if (detection.Faces.Count == 0 && options.Focal.FaceWeight > 0) warnings.Add("no face found: focal point from the other detectors or the centre");
            if (detection.Faces.Count > 1) warnings.Add($"{detection.Faces.Count} faces");
            folder.Record(outName);
            using (var outImage = FocalCrop.Apply(image, plan))
                AtomicFile.Write(Path.Combine(folder.Path, outName), s => outImage.Save(s, new PngEncoder { CompressionLevel = PngCompressionLevel.BestSpeed }));
            string? debugName = null;
            if (options.Debug)
            {
                debugName = "debug/" + outName;
                folder.Record(debugName);
                using var overlay = DebugOverlay.Draw(image, detection, plan, subject);
                AtomicFile.Write(Path.Combine(folder.Path, debugName), s => overlay.Save(s, new PngEncoder { CompressionLevel = PngCompressionLevel.BestSpeed }));
            }
            // the manifest is in source pixels; the working image may be a DCT-scaled decode
            double inv = 1 / loaded.Scale;
            ManifestFace F(FaceBox f) => new((float)(f.X * inv), (float)(f.Y * inv), (float)(f.Width * inv), (float)(f.Height * inv), f.Score, f.Model);
            ManifestRect R(Rectangle r)
            {
                int x = (int)Math.Round(r.X * inv), y = (int)Math.Round(r.Y * inv);
                return new(x, y, Math.Min(loaded.Width - x, (int)Math.Round(r.Width * inv)), Math.Min(loaded.Height - y, (int)Math.Round(r.Height * inv)));
            }
            return (new ManifestItem
            {
                Source = rel, Sha256 = sha, OriginalWidth = loaded.Width, OriginalHeight = loaded.Height, DecodeScale = loaded.Scale,
                Faces = detection.Faces.Select(F).ToList(), RejectedFaces = detection.Rejected.Select(F).ToList(),
                FocalX = (float)(plan.Analysis.FocalPoint.X * inv), FocalY = (float)(plan.Analysis.FocalPoint.Y * inv), FocalFallback = plan.Analysis.Fallback,
                Crop = R(plan.SourceRect), SubjectCrop = subject is null ? null : R(subject.Rect), AspectRatio = subject?.Ratio.ToString(),
                Output = outName, OutputWidth = target.Width, OutputHeight = target.Height, Bucket = target.ToString(),
                Warnings = warnings, Debug = debugName,
            }, null);
        }
    }

    /// <summary>Bounds the bytes of decoded images in flight; one request larger than the budget runs alone.</summary>
    /// <summary>
    /// An output file stem from a source's relative path: control characters and characters Windows refuses become
    /// '_', a leading '.'/'-' and Windows device names get a '_' prefix, so every output stays a plain visible file
    /// inside the output folder on every OS.
    /// </summary>
    internal static string SafeStem(string stem)
    {
        var chars = stem.Select(c => char.IsControl(c) || c is '\\' or ':' or '*' or '?' or '"' or '<' or '>' or '|' ? '_' : c).ToArray();
        var s = new string(chars).TrimEnd('.', ' ');
        if (s.Length == 0) s = "_";
        string device = s.Split('.')[0].Trim().ToUpperInvariant();
        if (s[0] is '.' or '-' || device is "CON" or "PRN" or "AUX" or "NUL" || device.Length == 4 && (device.StartsWith("COM") || device.StartsWith("LPT")) && char.IsDigit(device[3]))
            s = "_" + s;
        return s;
    }

    internal sealed class MemoryGate(long budget)
    {
        long _used;
        readonly SemaphoreSlim _signal = new(0);
        readonly object _lock = new();
        int _waiters;

        public async Task<IDisposable> AcquireAsync(long bytes, CancellationToken ct)
        {
            while (true)
            {
                lock (_lock)
                {
                    if (_used == 0 || _used + bytes <= budget)
                    {
                        _used += bytes;
                        return new Lease(this, bytes);
                    }
                    _waiters++;
                }
                try { await _signal.WaitAsync(ct); }
                finally { lock (_lock) _waiters--; }
            }
        }

        void Release(long bytes)
        {
            int wake;
            lock (_lock)
            {
                _used -= bytes;
                wake = _waiters;
            }
            if (wake > 0) _signal.Release(wake);
        }

        sealed class Lease(MemoryGate gate, long bytes) : IDisposable
        {
            int _disposed;
            public void Dispose() { if (Interlocked.Exchange(ref _disposed, 1) == 0) gate.Release(bytes); }
        }
    }
}
