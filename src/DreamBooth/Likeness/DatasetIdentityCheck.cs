using System.Globalization;
using DreamBooth.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Likeness;

/// <summary>What the identity check found about one photo.</summary>
/// <param name="MedianDistance">Median descriptor distance to the other photos with a face (null: no face, or no other face).</param>
public sealed record IdentityCheckPhoto(string Name, int Faces, double? MedianDistance, string? NearestPhoto, double? NearestDistance);

/// <summary>One finding: its kind (<see cref="DatasetIdentityCheck"/>'s constants), the photos involved and a sentence for people.</summary>
public sealed record IdentityCheckIssue(string Kind, IReadOnlyList<string> Photos, string Detail);

/// <summary>Options of the dataset identity check.</summary>
public sealed record IdentityCheckOptions
{
    /// <summary>A photo whose median distance to the others reaches this is probably someone else (face-api's 0.6).</summary>
    public double SomeoneElse { get; init; } = FaceDistance.Threshold;
    /// <summary>
    /// Two faces closer than this are the same shot (a copy, crop, rescale, re-encode or burst): measured 0.07–0.16 for
    /// crops, scales, JPEG q40 and a mirror of astronaut.png, while different photos of one person are usually 0.3–0.5.
    /// </summary>
    public double NearDuplicate { get; init; } = 0.2;
    /// <summary>Whole-image difference hashes (64 bits, mirror included) at most this many bits apart are near-duplicates too (faceless photos).</summary>
    public int HashBits { get; init; } = 6;

    public static IdentityCheckOptions Default { get; } = new();
}

/// <summary>The identity check of a set of instance photos: distances between every pair, and the findings.</summary>
public sealed class IdentityCheckReport
{
    public required IReadOnlyList<IdentityCheckPhoto> Photos { get; init; }
    /// <summary>Pairwise descriptor distances, [i][j] in <see cref="Photos"/> order (null where either has no face).</summary>
    public required double?[][] Distances { get; init; }
    public required IReadOnlyList<IdentityCheckIssue> Issues { get; init; }
    public IReadOnlyList<SkippedFile> Skipped { get; init; } = [];
    public IdentityCheckOptions Options { get; init; } = IdentityCheckOptions.Default;

    public IEnumerable<IdentityCheckIssue> Of(string kind) => Issues.Where(i => i.Kind == kind);

    /// <summary>Median of all pairwise distances between photos with a face (the set's spread), or null.</summary>
    public double? MedianPairDistance
    {
        get
        {
            var all = new List<double>();
            for (int i = 0; i < Distances.Length; i++)
                for (int j = i + 1; j < Distances.Length; j++)
                    if (Distances[i][j] is double d) all.Add(d);
            return all.Count == 0 ? null : DatasetIdentityCheck.Median(all);
        }
    }

    public string Summary
    {
        get
        {
            int faces = Photos.Count(p => p.Faces > 0);
            var parts = new List<string> { $"identity check: {Photos.Count} photo(s), {faces} with a face" };
            if (MedianPairDistance is double m) parts.Add($"median distance between photos {m.ToString("0.00", CultureInfo.InvariantCulture)} (same person < {Options.SomeoneElse.ToString("0.0#", CultureInfo.InvariantCulture)})");
            parts.Add(Issues.Count == 0 ? "no issues" : string.Join(", ", Issues.GroupBy(i => i.Kind).Select(g => $"{g.Count()} {g.Key}")));
            return string.Join("; ", parts);
        }
    }

    public override string ToString() => Summary;
}

/// <summary>
/// Checks that instance photos show one person, usefully: describes every photo's faces and flags
/// <see cref="SomeoneElse"/> (a photo far from the others while the others agree), <see cref="NearDuplicate"/>
/// (the same shot twice: faces closer than 0.2, or the same whole-image hash, mirrored included),
/// <see cref="MixedIdentities"/> (no identity shared by most photos: the median distance between them is over 0.6),
/// <see cref="NoFace"/> and <see cref="SeveralFaces"/>.
/// </summary>
public static class DatasetIdentityCheck
{
    public const string SomeoneElse = "someone-else";
    public const string NearDuplicate = "near-duplicate";
    public const string NoFace = "no-face";
    public const string SeveralFaces = "several-faces";
    public const string MixedIdentities = "mixed-identities";

    /// <summary>The file `dreambooth prepare` writes the check to, beside manifest.json in its output folder.</summary>
    public const string FileName = "identity-check.json";

    /// <summary>Checks the images a preparation run produced (the training images, in manifest order).</summary>
    public static IdentityCheckReport Run(DatasetReport prepared, FaceDescriber describer, IdentityCheckOptions? options = null, IProgress<string>? progress = null, CancellationToken ct = default) =>
        Run(prepared.Manifest.Items.Select(i => (i.Source, Path.Combine(prepared.OutputFolder, i.Output))).ToList(), describer, options, progress, ct);

    /// <summary>Checks every image under <paramref name="folder"/>.</summary>
    public static IdentityCheckReport Run(string folder, FaceDescriber describer, IdentityCheckOptions? options = null, IProgress<string>? progress = null, CancellationToken ct = default)
    {
        if (!Directory.Exists(folder)) throw new DreamBoothException($"identity check: folder not found: {folder}");
        return Run(ImageIngest.ListFiles(folder).Select(f => (Path.GetRelativePath(folder, f).Replace(Path.DirectorySeparatorChar, '/'), f)).ToList(), describer, options, progress, ct);
    }

    public static IdentityCheckReport Run(IReadOnlyList<(string Name, string Path)> files, FaceDescriber describer, IdentityCheckOptions? options = null, IProgress<string>? progress = null, CancellationToken ct = default)
    {
        var described = new List<ReferencePhoto>();
        var skipped = new List<SkippedFile>();
        foreach (var (name, path) in files)
        {
            ct.ThrowIfCancellationRequested();
            var (loaded, skip) = ImageIngest.Load(path);
            if (skip is not null) { skipped.Add(skip); continue; }
            using (loaded) described.Add(IdentityReference.Describe(name, loaded!.Image, describer, ct));
            progress?.Report(name);
        }
        return Analyse(described, skipped, options ?? IdentityCheckOptions.Default);
    }

    /// <summary>The check of photos already described (an <see cref="IdentityReference"/>'s, or images in memory).</summary>
    public static IdentityCheckReport Of(IReadOnlyList<ReferencePhoto> photos, IReadOnlyList<SkippedFile>? skipped = null, IdentityCheckOptions? options = null) =>
        Analyse(photos, skipped ?? [], options ?? IdentityCheckOptions.Default);

    /// <summary>The check of images in memory (name, image).</summary>
    public static IdentityCheckReport Run(IEnumerable<(string Name, Image<Rgb24> Image)> images, FaceDescriber describer, IdentityCheckOptions? options = null, CancellationToken ct = default) =>
        Of(images.Select(i => IdentityReference.Describe(i.Name, i.Image, describer, ct)).ToList(), null, options);

    internal static IdentityCheckReport Analyse(IReadOnlyList<ReferencePhoto> photos, IReadOnlyList<SkippedFile> skipped, IdentityCheckOptions options)
    {
        int n = photos.Count;
        var dist = new double?[n][];
        for (int i = 0; i < n; i++)
        {
            dist[i] = new double?[n];
            for (int j = 0; j < n; j++)
                if (photos[i].Descriptor is { } a && photos[j].Descriptor is { } b) dist[i][j] = i == j ? 0 : FaceDistance.Euclidean(a, b);
        }
        var rows = new List<IdentityCheckPhoto>();
        var medians = new double?[n];
        for (int i = 0; i < n; i++)
        {
            var others = Enumerable.Range(0, n).Where(j => j != i && dist[i][j] is not null).ToList();
            medians[i] = others.Count == 0 ? null : Median(others.Select(j => dist[i][j]!.Value).ToList());
            int? nearest = others.Count == 0 ? null : others.MinBy(j => dist[i][j]!.Value);
            rows.Add(new IdentityCheckPhoto(photos[i].Name, photos[i].Faces, medians[i], nearest is int k ? photos[k].Name : null, nearest is int k2 ? dist[i][k2] : null));
        }

        var issues = new List<IdentityCheckIssue>();
        string F(double v) => v.ToString("0.00", CultureInfo.InvariantCulture);
        for (int i = 0; i < n; i++)
            if (photos[i].Faces == 0)
                issues.Add(new IdentityCheckIssue(NoFace, [photos[i].Name], photos[i].SmallFaces > 0
                    ? $"{photos[i].Name}: the face is under {FaceDescriber.MinFaceSize:0} px, too small to describe (a larger output size or a closer crop helps)"
                    : $"{photos[i].Name}: no face found (the likeness score cannot use it; is the face small, turned away or covered?)"));
        foreach (var p in rows.Where(p => p.Faces > 1))
            issues.Add(new IdentityCheckIssue(SeveralFaces, [p.Name], $"{p.Name}: {p.Faces} faces; the most confident large one is taken as the subject, the others will be learned too"));

        // someone else: far from the others (median ≥ threshold) while the others agree among themselves
        var withFace = Enumerable.Range(0, n).Where(i => photos[i].Descriptor is not null).ToList();
        if (withFace.Count == 2 && dist[withFace[0]][withFace[1]] is double d2 && d2 >= options.SomeoneElse)
            issues.Add(new IdentityCheckIssue(SomeoneElse, [photos[withFace[0]].Name, photos[withFace[1]].Name],
                $"{photos[withFace[0]].Name} and {photos[withFace[1]].Name} are {F(d2)} apart: probably two different people (same person < {F(options.SomeoneElse)})"));
        else if (withFace.Count >= 3)
            foreach (int i in withFace)
            {
                if (medians[i] is not double m || m < options.SomeoneElse) continue;
                var rest = withFace.Where(j => j != i).ToList();
                var restMedian = Median(rest.SelectMany(a => rest.Where(b => b > a).Select(b => dist[a][b]!.Value)).DefaultIfEmpty(0).ToList());
                if (restMedian < options.SomeoneElse)
                    issues.Add(new IdentityCheckIssue(SomeoneElse, [photos[i].Name],
                        $"{photos[i].Name}: median distance {F(m)} to the other photos, which are {F(restMedian)} apart among themselves: probably someone else"));
            }

        // no majority: most pairs are different people, so no single photo stands out as "someone else"
        if (withFace.Count >= 3 && !issues.Any(i => i.Kind == SomeoneElse))
        {
            var pairs = withFace.SelectMany(a => withFace.Where(b => b > a).Select(b => dist[a][b]!.Value)).ToList();
            double median = Median(pairs);
            if (median >= options.SomeoneElse)
                issues.Add(new IdentityCheckIssue(MixedIdentities, withFace.Select(i => photos[i].Name).ToList(),
                    $"no identity is shared by most photos: the median distance between the {withFace.Count} faces is {F(median)} (same person < {F(options.SomeoneElse)}); these look like different people"));
        }

        // near-duplicates: the same shot twice (face distance or whole-image hash, mirror included)
        for (int i = 0; i < n; i++)
            for (int j = i + 1; j < n; j++)
            {
                int bits = Math.Min(Bits(photos[i].Hash ^ photos[j].Hash), Bits(photos[i].Hash ^ photos[j].MirrorHash));
                bool byFace = dist[i][j] is double d && d < options.NearDuplicate;
                if (byFace || bits <= options.HashBits)
                    issues.Add(new IdentityCheckIssue(NearDuplicate, [photos[i].Name, photos[j].Name],
                        $"{photos[i].Name} and {photos[j].Name} look like the same shot (" +
                        (byFace ? $"faces {F(dist[i][j]!.Value)} apart" : $"images {bits} bits apart") + "): keep the better one, or it counts twice"));
            }
        return new IdentityCheckReport { Photos = rows, Distances = dist, Issues = issues, Skipped = skipped, Options = options };
    }

    /// <summary>64-bit difference hash of the whole image (9×8 grey, each bit: left pixel brighter than its right neighbour).</summary>
    internal static ulong DifferenceHash(Image<Rgb24> image, bool mirror)
    {
        using var small = image.Clone(c =>
        {
            if (mirror) c.Flip(FlipMode.Horizontal);
            c.Resize(new ResizeOptions { Size = new Size(9, 8), Mode = ResizeMode.Stretch, Sampler = KnownResamplers.Box });
        });
        ulong hash = 0;
        int bit = 0;
        small.ProcessPixelRows(acc =>
        {
            for (int y = 0; y < 8; y++)
            {
                var row = acc.GetRowSpan(y);
                for (int x = 0; x < 8; x++, bit++)
                    if (Grey(row[x]) > Grey(row[x + 1])) hash |= 1UL << bit;
            }
        });
        return hash;
    }

    static double Grey(Rgb24 c) => 0.299 * c.R + 0.587 * c.G + 0.114 * c.B;

    static int Bits(ulong v) => System.Numerics.BitOperations.PopCount(v);

    internal static double Median(IReadOnlyList<double> values)
    {
        var s = values.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }
}
