using DreamBooth.Data;
using DreamBooth.Models.FaceRecognition;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Likeness;

/// <summary>How a detected face becomes the recognition net's 150×150 input.</summary>
public sealed record FaceAlignOptions
{
    /// <summary>
    /// Rotate the crop so the eyes are level (dlib's face chips are rotated; face-api's crop is not). Generated faces
    /// are often tilted; the net was trained on upright chips.
    /// </summary>
    public bool Rotate { get; init; } = true;
    /// <summary>face-api's dlib-style geometry: crop side = mean eye-to-mouth distance / 0.45 …</summary>
    public double RelativeScale { get; init; } = 0.45;
    /// <summary>… with the centroid of eyes and mouth at (0.5, 0.43) of the crop.</summary>
    public double RelativeX { get; init; } = 0.5;
    public double RelativeY { get; init; } = 0.43;

    public static FaceAlignOptions Default { get; } = new();
}

/// <summary>An aligned face crop and where it came from: the four source-image corners of the crop (top-left, top-right, bottom-right, bottom-left).</summary>
public sealed record AlignedFace(Image<Rgb24> Image, PointF[] Corners, double Angle, double Side) : IDisposable
{
    public void Dispose() => Image.Dispose();
}

/// <summary>
/// Aligns a face for <see cref="FaceRecognitionNet"/> from BlazeFace's keypoints, with face-api's dlib-style geometry
/// (<c>FaceLandmarks.alignDlib</c>): the eye centres and the mouth centre (BlazeFace gives these three directly,
/// face-api averages its 68 landmarks into them) fix a square whose side is the mean eye-to-mouth distance / 0.45, with
/// their centroid at (0.5, 0.43) of the square; optionally rotated so the eyes are level. The square is resampled to
/// 150×150: pre-shrunk with a triangle filter when the face is larger than 150 px (no aliasing; dlib shrinks its chips
/// through an image pyramid), then bilinear; pixels outside the photo are black, as face-api pads.
/// </summary>
public static class FaceAligner
{
    public static AlignedFace Align(Image<Rgb24> image, FaceBox face, FaceAlignOptions? options = null)
    {
        options ??= FaceAlignOptions.Default;
        if (face.Keypoints.Count < 4) throw new ArgumentException("face alignment needs BlazeFace's keypoints (eyes and mouth)");
        // MediaPipe order: 0 right eye, 1 left eye (the subject's), 2 nose tip, 3 mouth centre, 4/5 ear tragions
        PointF e0 = face.Keypoints[0], e1 = face.Keypoints[1], mouth = face.Keypoints[3];
        double cx = (e0.X + e1.X + mouth.X) / 3.0, cy = (e0.Y + e1.Y + mouth.Y) / 3.0;
        double eyeToMouth = (Dist(e0, mouth) + Dist(e1, mouth)) / 2;
        double side = eyeToMouth / options.RelativeScale;
        if (!(side >= 1)) side = Math.Max(face.Width, face.Height); // degenerate keypoints: the box
        double angle = options.Rotate ? Math.Atan2(e1.Y - e0.Y, e1.X - e0.X) : 0;
        double cos = Math.Cos(angle), sin = Math.Sin(angle);
        // crop coordinates (u, v) in [0, side): source = centre + R(angle) · (u − 0.5·side, v − 0.43·side)
        double ox = -options.RelativeX * side, oy = -options.RelativeY * side;
        PointF Source(double u, double v) => new((float)(cx + cos * (u + ox) - sin * (v + oy)), (float)(cy + sin * (u + ox) + cos * (v + oy)));
        var corners = new[] { Source(0, 0), Source(side, 0), Source(side, side), Source(0, side) };

        int n = FaceRecognitionNet.InputSize;
        double step = side / n; // source pixels per output pixel
        // The part of the photo the crop touches (+2 px for the bilinear taps), shrunk so one output pixel ≈ one pixel.
        float minX = corners.Min(p => p.X) - 2, maxX = corners.Max(p => p.X) + 2, minY = corners.Min(p => p.Y) - 2, maxY = corners.Max(p => p.Y) + 2;
        var region = Rectangle.FromLTRB((int)Math.Floor(Math.Max(0, minX)), (int)Math.Floor(Math.Max(0, minY)),
            (int)Math.Ceiling(Math.Min(image.Width, maxX)), (int)Math.Ceiling(Math.Min(image.Height, maxY)));
        var output = new Image<Rgb24>(n, n, new Rgb24(0, 0, 0));
        if (region.Width < 1 || region.Height < 1) return new AlignedFace(output, corners, angle, side);
        double shrink = step > 1 ? 1 / step : 1;
        int rw = Math.Max(1, (int)Math.Round(region.Width * shrink)), rh = Math.Max(1, (int)Math.Round(region.Height * shrink));
        using var part = image.Clone(c =>
        {
            c.Crop(region);
            if (rw != region.Width || rh != region.Height) c.Resize(rw, rh, KnownResamplers.Triangle);
        });
        double kx = (double)rw / region.Width, ky = (double)rh / region.Height;
        var pixels = new Rgb24[rw * rh];
        part.CopyPixelDataTo(pixels);
        output.ProcessPixelRows(acc =>
        {
            for (int v = 0; v < n; v++)
            {
                var row = acc.GetRowSpan(v);
                for (int u = 0; u < n; u++)
                {
                    var s = Source((u + 0.5) * step, (v + 0.5) * step);
                    // into the shrunk region's pixel grid (pixel centres at +0.5)
                    double x = (s.X - region.X) * kx - 0.5, y = (s.Y - region.Y) * ky - 0.5;
                    row[u] = Bilinear(pixels, rw, rh, x, y);
                }
            }
        });
        return new AlignedFace(output, corners, angle, side);
    }

    static Rgb24 Bilinear(Rgb24[] px, int w, int h, double x, double y)
    {
        if (x < -0.5 || y < -0.5 || x > w - 0.5 || y > h - 0.5) return new Rgb24(0, 0, 0);
        x = Math.Clamp(x, 0, w - 1);
        y = Math.Clamp(y, 0, h - 1);
        int x0 = (int)x, y0 = (int)y;
        int x1 = Math.Min(x0 + 1, w - 1), y1 = Math.Min(y0 + 1, h - 1);
        double fx = x - x0, fy = y - y0;
        Rgb24 a = px[y0 * w + x0], b = px[y0 * w + x1], c = px[y1 * w + x0], d = px[y1 * w + x1];
        byte Mix(byte p, byte q, byte r, byte s) =>
            (byte)Math.Clamp(Math.Round((p * (1 - fx) + q * fx) * (1 - fy) + (r * (1 - fx) + s * fx) * fy), 0, 255);
        return new Rgb24(Mix(a.R, b.R, c.R, d.R), Mix(a.G, b.G, c.G, d.G), Mix(a.B, b.B, c.B, d.B));
    }

    static double Dist(PointF a, PointF b) => Math.Sqrt((a.X - b.X) * (a.X - b.X) + (a.Y - b.Y) * (a.Y - b.Y));
}
