using SixLabors.ImageSharp;

namespace DreamBooth.Data;

/// <summary>How much of the person around the face the subject crop keeps.</summary>
public enum SubjectFraming { HeadAndShoulders, UpperBody, FullBody }

/// <summary>An aspect ratio such as 3:4 (width:height).</summary>
public readonly record struct AspectRatio(int Width, int Height)
{
    public double Value => (double)Width / Height;
    public override string ToString() => $"{Width}:{Height}";

    public static AspectRatio Parse(string s)
    {
        var parts = s.Trim().Split(':', 'x', '/');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int w) || !int.TryParse(parts[1], out int h) || w <= 0 || h <= 0)
            throw new DreamBoothException($"aspect ratio '{s}': expected W:H with positive integers, e.g. 3:4");
        return new AspectRatio(w, h);
    }
}

/// <summary>
/// Subject-crop settings: preset ratios (the recipe's cropper.py list), framing, and the expansion factors around the
/// face box (in face widths/heights: left/right each, above, below).
/// </summary>
public sealed record SubjectCropOptions
{
    public IReadOnlyList<AspectRatio> AspectRatios { get; init; } =
        [new(1, 1), new(3, 4), new(4, 3), new(2, 3), new(3, 2), new(9, 16), new(16, 9)];
    public SubjectFraming Framing { get; init; } = SubjectFraming.HeadAndShoulders;
    /// <summary>Use the union of all faces instead of only the largest one.</summary>
    public bool AllFaces { get; init; }

    /// <summary>(sides, above, below) in multiples of the face box, per framing.</summary>
    public (double Sides, double Above, double Below) Expansion(SubjectFraming framing) => framing switch
    {
        SubjectFraming.HeadAndShoulders => (HeadAndShoulders.Sides, HeadAndShoulders.Above, HeadAndShoulders.Below),
        SubjectFraming.UpperBody => (UpperBody.Sides, UpperBody.Above, UpperBody.Below),
        _ => (FullBody.Sides, FullBody.Above, FullBody.Below),
    };
    public (double Sides, double Above, double Below) HeadAndShoulders { get; init; } = (1.0, 0.6, 1.6);
    public (double Sides, double Above, double Below) UpperBody { get; init; } = (1.6, 0.7, 3.5);
    public (double Sides, double Above, double Below) FullBody { get; init; } = (2.0, 0.8, 7.5);
    public static SubjectCropOptions Default { get; } = new();
}

/// <summary>The subject crop: source rectangle, chosen ratio, and the subject box it was built around.</summary>
public sealed record SubjectCrop(Rectangle Rect, AspectRatio Ratio, RectangleF? Subject);

/// <summary>The recipe's cropper: frame the person, then pick the preset ratio that fits the subject best at the most resolution.</summary>
public static class SubjectCropper
{
    /// <summary>The subject box: the largest face (or all faces' union) expanded by the framing factors, clipped to the image.</summary>
    public static RectangleF? SubjectBox(int width, int height, IReadOnlyList<FaceBox> faces, SubjectCropOptions options)
    {
        if (faces.Count == 0) return null;
        var chosen = options.AllFaces ? faces : [faces.MaxBy(f => f.Area)!];
        var (sides, above, below) = options.Expansion(options.Framing);
        RectangleF? union = null;
        foreach (var f in chosen)
        {
            var r = RectangleF.FromLTRB(f.X - (float)(sides * f.Width), f.Y - (float)(above * f.Height),
                f.X + f.Width + (float)(sides * f.Width), f.Y + f.Height + (float)(below * f.Height));
            union = union is { } u ? RectangleF.Union(u, r) : r;
        }
        var box = RectangleF.Intersect(union!.Value, new RectangleF(0, 0, width, height));
        return box.Width > 0 && box.Height > 0 ? box : null;
    }

    /// <summary>
    /// For every preset ratio, the smallest crop of that ratio holding the subject (grown along one axis), if it fits in
    /// the image; the winner has the highest subject/crop area fill, ties going to the larger crop. With no face the
    /// whole image is used and the ratio closest to the image's own is cropped centrally at maximum size.
    /// </summary>
    public static SubjectCrop Choose(int width, int height, IReadOnlyList<FaceBox> faces, SubjectCropOptions? options = null)
    {
        options ??= SubjectCropOptions.Default;
        if (options.AspectRatios.Count == 0) throw new DreamBoothException("subject crop: the list of aspect ratios is empty");
        var subject = SubjectBox(width, height, faces, options);
        if (subject is null)
        {
            double ar = (double)width / height;
            var ratio = options.AspectRatios.MinBy(r => Math.Abs(Math.Log(r.Value / ar)));
            return new SubjectCrop(Largest(width, height, ratio, new PointF(width / 2f, height / 2f)), ratio, null);
        }
        var s = subject.Value;
        (Rectangle Rect, AspectRatio Ratio, double Fill)? best = null;
        foreach (var ratio in options.AspectRatios)
        {
            double cw = Math.Max(s.Width, s.Height * ratio.Value);
            double ch = cw / ratio.Value;
            if (cw > width + 0.5 || ch > height + 0.5) continue;
            var rect = Place(width, height, (int)Math.Ceiling(Math.Min(cw, width)), (int)Math.Ceiling(Math.Min(ch, height)), new PointF(s.X + s.Width / 2, s.Y + s.Height / 2));
            double fill = s.Width * s.Height / (rect.Width * (double)rect.Height);
            if (best is null || fill > best.Value.Fill + 1e-9 || (Math.Abs(fill - best.Value.Fill) <= 1e-9 && rect.Width * rect.Height > best.Value.Rect.Width * best.Value.Rect.Height))
                best = (rect, ratio, fill);
        }
        if (best is { } b) return new SubjectCrop(b.Rect, b.Ratio, s);
        // the subject is larger than any preset crop fits: take the largest crop of the ratio closest to the subject's
        double sa = s.Width / s.Height;
        var r2 = options.AspectRatios.MinBy(r => Math.Abs(Math.Log(r.Value / sa)));
        var centre = new PointF(s.X + s.Width / 2, s.Y + s.Height * 0.4f);
        return new SubjectCrop(Largest(width, height, r2, centre), r2, s);
    }

    static Rectangle Largest(int width, int height, AspectRatio ratio, PointF centre)
    {
        double cw = Math.Min(width, height * ratio.Value);
        double ch = cw / ratio.Value;
        return Place(width, height, (int)Math.Floor(cw + 1e-6), (int)Math.Floor(ch + 1e-6), centre);
    }

    static Rectangle Place(int width, int height, int cw, int ch, PointF centre)
    {
        cw = Math.Clamp(cw, 1, width); ch = Math.Clamp(ch, 1, height);
        int x = Math.Clamp((int)Math.Round(centre.X - cw / 2.0), 0, width - cw);
        int y = Math.Clamp((int)Math.Round(centre.Y - ch / 2.0), 0, height - ch);
        return new Rectangle(x, y, cw, ch);
    }
}
