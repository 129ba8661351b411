using DreamBooth.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Likeness;

/// <summary>One photo of the reference set: its faces, the descriptor of its main face (null: none found), its context and whole-image hashes (plain, mirrored).</summary>
public sealed record ReferencePhoto(string Name, int Faces, float[]? Descriptor, ContextSignature Context, ulong Hash = 0, ulong MirrorHash = 0, int SmallFaces = 0);

/// <summary>How close a face is to the reference identity.</summary>
/// <param name="Distance">Mean Euclidean distance to the descriptors of the reference photos (the score; same scale as the 0.6 threshold).</param>
/// <param name="MinDistance">Distance to the closest reference photo.</param>
/// <param name="Nearest">That photo's name.</param>
public sealed record IdentityMatch(double Distance, double MinDistance, string Nearest)
{
    public bool SamePerson => Distance < FaceDistance.Threshold;
}

/// <summary>
/// The identity of a set of photos of one person (the instance photos): every photo's main-face descriptor. A face
/// is scored by its <b>mean distance to the reference photos</b> (face-api's <c>FaceMatcher</c> rule): it stays on
/// the scale of a pairwise distance, where 0.6 is the same-person threshold, and averages over pose and light instead
/// of rewarding a copy of one photo (the minimum would; it is reported beside, with the photo it points to). A
/// distance to the mean descriptor would be smaller than any pairwise one and so not comparable with 0.6.
/// </summary>
public sealed class IdentityReference
{
    public IReadOnlyList<ReferencePhoto> Photos { get; }
    public IReadOnlyList<SkippedFile> Skipped { get; }
    public IReadOnlyList<ReferencePhoto> WithFace => Photos.Where(p => p.Descriptor is not null).ToList();

    /// <param name="requireFace">
    /// Refuse a reference without any face (the CLI's behaviour). Notebooks pass false so that a faceless subject — the
    /// toy world's figures — still gets its context scores, with the likeness reported as unavailable.
    /// </param>
    public IdentityReference(IReadOnlyList<ReferencePhoto> photos, IReadOnlyList<SkippedFile>? skipped = null, bool requireFace = true)
    {
        if (photos.Count == 0) throw new DreamBoothException("likeness reference: no readable images");
        if (requireFace && !photos.Any(p => p.Descriptor is not null))
            throw new DreamBoothException(photos.Count == 0
                ? "likeness reference: no readable images"
                : $"likeness reference: no face found in any of the {photos.Count} reference image(s) ({string.Join(", ", photos.Take(5).Select(p => p.Name))}{(photos.Count > 5 ? ", …" : "")})");
        Photos = photos;
        Skipped = skipped ?? [];
    }

    /// <summary>The reference from every image under <paramref name="folder"/> (recursively; unreadable files are listed in <see cref="Skipped"/>).</summary>
    public static IdentityReference FromFolder(string folder, FaceDescriber describer, IProgress<string>? progress = null, CancellationToken ct = default, bool requireFace = true)
    {
        if (!Directory.Exists(folder)) throw new DreamBoothException($"likeness reference folder not found: {folder}");
        var files = ImageIngest.ListFiles(folder);
        if (files.Count == 0) throw new DreamBoothException($"likeness reference folder {folder} holds no files");
        return FromFiles(files.Select(f => (Path.GetRelativePath(folder, f).Replace(Path.DirectorySeparatorChar, '/'), f)).ToList(), describer, progress, ct, requireFace);
    }

    public static IdentityReference FromFiles(IReadOnlyList<(string Name, string Path)> files, FaceDescriber describer, IProgress<string>? progress = null, CancellationToken ct = default, bool requireFace = true)
    {
        var photos = new List<ReferencePhoto>();
        var skipped = new List<SkippedFile>();
        foreach (var (name, path) in files)
        {
            ct.ThrowIfCancellationRequested();
            var (loaded, skip) = ImageIngest.Load(path);
            if (skip is not null) { skipped.Add(skip); continue; }
            using (loaded)
            {
                photos.Add(Describe(name, loaded!.Image, describer, ct));
                progress?.Report(name);
            }
        }
        if (photos.Count == 0)
            throw new DreamBoothException($"likeness reference: none of the {files.Count} file(s) is a readable image ({string.Join("; ", skipped.Take(3).Select(s => $"{Path.GetFileName(s.Source)}: {s.Code}"))})");
        return new IdentityReference(photos, skipped, requireFace);
    }

    /// <summary>The reference from images in memory (name, image).</summary>
    public static IdentityReference FromImages(IEnumerable<(string Name, Image<Rgb24> Image)> images, FaceDescriber describer, CancellationToken ct = default, bool requireFace = true) =>
        new(images.Select(i => Describe(i.Name, i.Image, describer, ct)).ToList(), null, requireFace);

    internal static ReferencePhoto Describe(string name, Image<Rgb24> image, FaceDescriber describer, CancellationToken ct)
    {
        var faces = describer.Describe(image, ct);
        return new ReferencePhoto(name, faces.Faces.Count, faces.Main?.Descriptor, ContextSignature.From(image, faces.Faces.Select(f => f.Box).ToList()),
            DatasetIdentityCheck.DifferenceHash(image, false), DatasetIdentityCheck.DifferenceHash(image, true), faces.TooSmall);
    }

    /// <summary>The dataset identity check of the reference photos (someone else, near-duplicates, no/several faces).</summary>
    public IdentityCheckReport Check(IdentityCheckOptions? options = null) => DatasetIdentityCheck.Of(Photos, Skipped, options);

    /// <summary>Mean and minimum distance of <paramref name="descriptor"/> to the reference photos with a face.</summary>
    public IdentityMatch Match(float[] descriptor)
    {
        if (WithFace.Count == 0) throw new InvalidOperationException("the likeness reference has no face to compare with");
        var distances = WithFace.Select(p => (p.Name, D: FaceDistance.Euclidean(descriptor, p.Descriptor!))).ToList();
        var nearest = distances.MinBy(d => d.D);
        return new IdentityMatch(distances.Average(d => d.D), nearest.D, nearest.Name);
    }

    /// <summary>The closest reference photo by context (face region excluded), or null when none is comparable.</summary>
    public (double Distance, string Photo)? NearestContext(ContextSignature context)
    {
        (double, string)? best = null;
        foreach (var p in Photos)
            if (context.Distance(p.Context) is double d && (best is null || d < best.Value.Item1)) best = (d, p.Name);
        return best;
    }
}
