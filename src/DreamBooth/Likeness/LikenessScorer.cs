using System.Globalization;
using DreamBooth.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Likeness;

/// <summary>
/// The likeness of one image to the reference person, and how close its context is to the reference photos.
/// </summary>
public sealed record LikenessScore
{
    /// <summary>Faces found and described (BlazeFace, human faces only, at least <see cref="FaceDescriber.MinFaceSize"/> px wide).</summary>
    public int Faces { get; init; }
    /// <summary>Faces found but too small to describe.</summary>
    public int SmallFaces { get; init; }
    /// <summary>Mean descriptor distance of the main face to the reference photos (lower = more alike; &lt; 0.6 = same person); null without a face.</summary>
    public double? Distance { get; init; }
    /// <summary>Distance to the closest reference photo, and which.</summary>
    public double? MinDistance { get; init; }
    public string? NearestPhoto { get; init; }
    /// <summary>Context distance (mean ΔE of the face-masked 16×16 Lab thumbnails) to the closest reference photo: low = the training photo's background/clothes/framing came back.</summary>
    public double? ContextDistance { get; init; }
    public string? NearestContextPhoto { get; init; }
    /// <summary>The main face's box (image pixels).</summary>
    public FaceBox? Face { get; init; }
    /// <summary>The image's own context signature (faces masked), to compare with other images (the x/y plot compares each cell with the base model's).</summary>
    public ContextSignature? Context { get; init; }

    public bool FaceFound => Faces > 0;
    public bool SamePerson => Distance < FaceDistance.Threshold;

    /// <summary>"0.42 ✓" / "0.71" / "no face", for grid captions.</summary>
    public string ShortText => Distance is double d ? d.ToString("0.00", CultureInfo.InvariantCulture) + (SamePerson ? " ✓" : "") : SmallFaces > 0 ? "small face" : "no face";
}

/// <summary>
/// Scores images against an <see cref="IdentityReference"/>: detect → align → describe the main face, its mean
/// distance to the reference photos, and the context distance to the nearest reference photo.
/// </summary>
public sealed class LikenessScorer(FaceDescriber describer, IdentityReference reference)
{
    public FaceDescriber Describer { get; } = describer;
    public IdentityReference Reference { get; } = reference;

    public LikenessScore Score(Image<Rgb24> image, CancellationToken ct = default)
    {
        var faces = Describer.Describe(image, ct);
        var signature = ContextSignature.From(image, faces.Faces.Select(f => f.Box).ToList());
        var context = Reference.NearestContext(signature);
        var score = new LikenessScore
        {
            Context = signature,
            Faces = faces.Faces.Count,
            SmallFaces = faces.TooSmall,
            ContextDistance = context?.Distance,
            NearestContextPhoto = context?.Photo,
        };
        if (faces.Main is not { } main) return score;
        if (Reference.WithFace.Count == 0) return score with { Face = main.Box };
        var match = Reference.Match(main.Descriptor);
        return score with { Distance = match.Distance, MinDistance = match.MinDistance, NearestPhoto = match.Nearest, Face = main.Box };
    }
}
