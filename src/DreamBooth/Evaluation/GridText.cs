using DreamBooth.Runtime;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SkiaSharp;

namespace DreamBooth.Evaluation;

/// <summary>
/// Text for grids, drawn with SkiaSharp and the DejaVu fonts fetched by the build (ImageSharp.Drawing and
/// SixLabors.Fonts are not available here). Labels are laid out on an SKBitmap canvas that becomes the
/// grid's background; the images are composed on top with ImageSharp.
/// </summary>
public static class GridText
{
    static readonly Lazy<SKTypeface> Regular = new(() => LoadTypeface(WorkbenchAssets.FontRegular));
    static readonly Lazy<SKTypeface> Bold = new(() => LoadTypeface(WorkbenchAssets.FontBold));

    static SKTypeface LoadTypeface(string asset)
    {
        var path = WorkbenchAssets.Find(asset);
        return SKTypeface.FromFile(path) ?? throw new DreamBoothException($"font '{path}' could not be read by SkiaSharp");
    }

    /// <summary>A font of the given pixel size (the caller disposes it).</summary>
    public static SKFont Font(float size, bool bold = false) =>
        new(bold ? Bold.Value : Regular.Value, size) { Edging = SKFontEdging.Antialias, Subpixel = true };

    /// <summary>Line advance of a font, whole pixels.</summary>
    public static int LineHeight(SKFont font) => (int)Math.Ceiling(font.Spacing);

    /// <summary>
    /// Word-wraps <paramref name="text"/> to <paramref name="maxWidth"/> pixels (explicit newlines kept; a word
    /// wider than the line is broken between characters). At most <paramref name="maxLines"/> lines; an
    /// overflowing last line ends with "…".
    /// </summary>
    public static IReadOnlyList<string> Wrap(string text, SKFont font, float maxWidth, int maxLines = int.MaxValue)
    {
        maxWidth = Math.Max(maxWidth, font.Size);
        var lines = new List<string>();
        foreach (var paragraph in text.ReplaceLineEndings("\n").Split('\n'))
        {
            string line = "";
            foreach (var word in paragraph.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                string candidate = line.Length == 0 ? word : line + " " + word;
                if (font.MeasureText(candidate) <= maxWidth) { line = candidate; continue; }
                if (line.Length > 0) lines.Add(line);
                line = word;
                while (font.MeasureText(line) > maxWidth)
                {
                    int fit = Math.Max(1, (int)font.BreakText(line, maxWidth));
                    lines.Add(line[..fit]);
                    line = line[fit..];
                }
            }
            lines.Add(line);
        }
        while (lines.Count > 1 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        if (lines.Count <= maxLines) return lines;
        var kept = lines.Take(maxLines).ToList();
        string last = kept[^1];
        while (last.Length > 0 && font.MeasureText(last + "…") > maxWidth) last = last[..^1];
        kept[^1] = last + "…";
        return kept;
    }

    /// <summary>Draws lines centred horizontally and vertically in <paramref name="rect"/> (clipped to it).</summary>
    public static void DrawCentered(SKCanvas canvas, IReadOnlyList<string> lines, SKFont font, SKPaint paint, SKRect rect)
    {
        if (lines.Count == 0 || rect.Width <= 0 || rect.Height <= 0) return;
        int lineHeight = LineHeight(font);
        float top = rect.Top + (rect.Height - lines.Count * lineHeight) / 2f;
        float ascent = -font.Metrics.Ascent;
        canvas.Save();
        canvas.ClipRect(rect);
        for (int i = 0; i < lines.Count; i++)
        {
            float baseline = top + i * lineHeight + ascent + (lineHeight - (ascent + font.Metrics.Descent)) / 2f;
            canvas.DrawText(lines[i], rect.MidX, baseline, SKTextAlign.Center, font, paint);
        }
        canvas.Restore();
    }

    /// <summary>A canvas of the given size filled with <paramref name="background"/>, to draw labels on.</summary>
    public static SKBitmap NewCanvas(int width, int height, Rgb24 background, out SKCanvas canvas)
    {
        var bitmap = new SKBitmap(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Opaque));
        canvas = new SKCanvas(bitmap);
        canvas.Clear(new SKColor(background.R, background.G, background.B));
        return bitmap;
    }

    /// <summary>Copies an opaque RGBA SkiaSharp bitmap into a new ImageSharp image.</summary>
    public static Image<Rgb24> ToImage(SKBitmap bitmap)
    {
        if (bitmap.ColorType != SKColorType.Rgba8888) throw new ArgumentException("expected an RGBA8888 bitmap", nameof(bitmap));
        using var rgba = Image.LoadPixelData<Rgba32>(bitmap.GetPixelSpan(), bitmap.Width, bitmap.Height);
        return rgba.CloneAs<Rgb24>();
    }

    public static SKPaint Paint(Rgb24 color) => new() { Color = new SKColor(color.R, color.G, color.B), IsAntialias = true };
}
