using DreamBooth.Runtime;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using SkiaSharp;

namespace DreamBooth.Data;

/// <summary>
/// The --debug picture: the source (at most 1024 px) with face boxes and keypoints (red; rejected candidates orange),
/// edge points (blue), the entropy window centre (yellow), the subject crop (magenta), the focal point and crop
/// rectangle (green), and the effective detector weights written in the corner.
/// </summary>
public static class DebugOverlay
{
    static readonly Rgb24 Red = new(230, 40, 40), Orange = new(255, 150, 0), Blue = new(40, 120, 255),
        Yellow = new(255, 230, 0), Green = new(0, 230, 70), Magenta = new(230, 0, 230);

    public static Image<Rgb24> Draw(Image<Rgb24> source, FaceDetectionResult faces, CropPlan plan, SubjectCrop? subject)
    {
        float s = Math.Min(1f, 1024f / Math.Max(source.Width, source.Height));
        var img = source.Clone(c => { if (s < 1f) c.Resize((int)Math.Round(source.Width * s), (int)Math.Round(source.Height * s)); });
        int t = Math.Max(1, (int)Math.Round(Math.Max(img.Width, img.Height) / 400f));
        RectangleF Sc(RectangleF r) => new(r.X * s, r.Y * s, r.Width * s, r.Height * s);
        foreach (var f in faces.Rejected) Rect(img, Sc(f.Rect), Orange, t);
        foreach (var f in faces.Faces)
        {
            Rect(img, Sc(f.Rect), Red, t);
            foreach (var k in f.Keypoints) Dot(img, k.X * s, k.Y * s, 2 * t, Red);
        }
        var a = plan.Analysis;
        foreach (var p in a.EdgePoints) Rect(img, new RectangleF(p.X * s - 2 * t, p.Y * s - 2 * t, 4 * t, 4 * t), Blue, 1);
        foreach (var p in a.EntropyPoints) Dot(img, p.X * s, p.Y * s, 4 * t, Yellow);
        foreach (var p in a.FacePoints) Dot(img, p.X * s, p.Y * s, 3 * t, Red);
        if (subject is not null) Rect(img, Sc(subject.Rect), Magenta, t);
        Rect(img, Sc(plan.SourceRect), Green, 2 * t);
        Ring(img, a.FocalPoint.X * s, a.FocalPoint.Y * s, 0.07f * Math.Min(img.Width, img.Height), Green, 2 * t);
        Label(img, a.Fallback
            ? "no detector points: centre"
            : $"Face: {a.FaceWeight:F2}  Edge: {a.EdgesWeight:F2}  Entropy: {a.EntropyWeight:F2}  faces: {faces.Faces.Count}");
        return img;
    }

    static void Set(Image<Rgb24> img, int x, int y, Rgb24 c)
    {
        if ((uint)x < (uint)img.Width && (uint)y < (uint)img.Height) img[x, y] = c;
    }

    static void Rect(Image<Rgb24> img, RectangleF r, Rgb24 c, int thickness)
    {
        int x0 = (int)Math.Round(r.Left), y0 = (int)Math.Round(r.Top), x1 = (int)Math.Round(r.Right) - 1, y1 = (int)Math.Round(r.Bottom) - 1;
        for (int k = 0; k < thickness; k++)
        {
            for (int x = x0; x <= x1; x++) { Set(img, x, y0 + k, c); Set(img, x, y1 - k, c); }
            for (int y = y0; y <= y1; y++) { Set(img, x0 + k, y, c); Set(img, x1 - k, y, c); }
        }
    }

    static void Dot(Image<Rgb24> img, float cx, float cy, int radius, Rgb24 c)
    {
        for (int y = -radius; y <= radius; y++)
            for (int x = -radius; x <= radius; x++)
                if (x * x + y * y <= radius * radius) Set(img, (int)cx + x, (int)cy + y, c);
    }

    static void Ring(Image<Rgb24> img, float cx, float cy, float radius, Rgb24 c, int thickness)
    {
        int r = (int)Math.Ceiling(radius) + thickness;
        for (int y = -r; y <= r; y++)
            for (int x = -r; x <= r; x++)
            {
                double d = Math.Sqrt(x * x + y * y);
                if (Math.Abs(d - radius) <= thickness / 2.0 + 0.5) Set(img, (int)cx + x, (int)cy + y, c);
            }
    }

    /// <summary>White text on a dark band at the top-left, rendered with SkiaSharp and the bundled DejaVu font.</summary>
    static void Label(Image<Rgb24> img, string text)
    {
        string font;
        try { font = WorkbenchAssets.Find(WorkbenchAssets.FontRegular); }
        catch (DreamBoothException) { return; } // overlay without text when the font asset is missing
        float size = Math.Max(11f, img.Width / 48f);
        using var typeface = SKTypeface.FromFile(font);
        using var skFont = new SKFont(typeface, size);
        float width = skFont.MeasureText(text);
        int bw = Math.Min(img.Width, (int)Math.Ceiling(width) + 8), bh = Math.Min(img.Height, (int)Math.Ceiling(size * 1.4f));
        using var bmp = new SKBitmap(new SKImageInfo(bw, bh, SKColorType.Rgba8888, SKAlphaType.Premul));
        using (var canvas = new SKCanvas(bmp))
        {
            canvas.Clear(new SKColor(0, 0, 0, 170));
            using var paint = new SKPaint { Color = SKColors.White, IsAntialias = true };
            canvas.DrawText(text, 4, size * 1.05f, SKTextAlign.Left, skFont, paint);
        }
        for (int y = 0; y < bh; y++)
            for (int x = 0; x < bw; x++)
            {
                var p = bmp.GetPixel(x, y); // unpremultiplied
                var d = img[x, y];
                int al = p.Alpha, ia = 255 - al;
                img[x, y] = new Rgb24((byte)((p.Red * al + d.R * ia) / 255), (byte)((p.Green * al + d.G * ia) / 255), (byte)((p.Blue * al + d.B * ia) / 255));
            }
    }
}
