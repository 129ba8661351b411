using System.Globalization;
using DreamBooth.Runtime;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SkiaSharp;

namespace DreamBooth.Evaluation;

/// <summary>One named line of a loss plot.</summary>
public sealed record PlotSeries(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y, SKColor Color, float Width = 1.5f);

/// <summary>
/// A static PNG line chart (the CLI's loss curve; notebooks use interactive Plotly charts instead):
/// axes with ticks, a legend, NaN gaps skipped. Text through SkiaSharp with the DejaVu font.
/// </summary>
public static class LossCurvePlot
{
    /// <summary>Exponential moving average as TensorBoard smooths (bias-corrected), NaN-aware.</summary>
    public static double[] Smooth(IReadOnlyList<double> values, double weight = 0.9)
    {
        var result = new double[values.Count];
        double last = 0, debias = 0;
        for (int i = 0; i < values.Count; i++)
        {
            double v = values[i];
            if (double.IsNaN(v)) { result[i] = double.NaN; continue; }
            last = last * weight + (1 - weight) * v;
            debias = debias * weight + (1 - weight);
            result[i] = last / debias;
        }
        return result;
    }

    /// <summary>Reads the trainer's log.csv (header names as in <c>TrainingEvent.CsvHeader</c>).</summary>
    public static Dictionary<string, List<double>> ReadCsv(string path)
    {
        var lines = File.ReadAllLines(path).Where(l => l.Length > 0).ToList();
        if (lines.Count == 0) throw new DreamBoothException($"{path}: empty training log");
        var header = lines[0].Split(',');
        var columns = header.ToDictionary(h => h, _ => new List<double>());
        foreach (var line in lines.Skip(1))
        {
            var cells = line.Split(',');
            for (int i = 0; i < header.Length; i++)
                columns[header[i]].Add(i < cells.Length && double.TryParse(cells[i], NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : double.NaN);
        }
        return columns;
    }

    /// <summary>Instance and prior loss (raw, faint) with their smoothed curves, from a training log.</summary>
    /// <param name="note">Optional lines under the plot (word-wrapped), e.g. how to read the curve.</param>
    public static Image<Rgb24> FromTrainingLog(string csvPath, string title, int width = 900, int height = 420, string? note = null)
    {
        var c = ReadCsv(csvPath);
        var step = c["step"];
        var series = new List<PlotSeries>
        {
            new("instance loss", step, c["instance_loss"], new SKColor(31, 119, 180, 90), 1f),
            new("instance (smoothed)", step, Smooth(c["instance_loss"]), new SKColor(31, 119, 180), 2.2f),
        };
        if (c["prior_loss"].Any(v => !double.IsNaN(v)))
        {
            series.Add(new("prior loss", step, c["prior_loss"], new SKColor(255, 127, 14, 90), 1f));
            series.Add(new("prior (smoothed)", step, Smooth(c["prior_loss"]), new SKColor(255, 127, 14), 2.2f));
        }
        return Render(title, "step", "loss", series, width, height, note);
    }

    public static Image<Rgb24> Render(string title, string xTitle, string yTitle, IReadOnlyList<PlotSeries> series, int width = 900, int height = 420, string? note = null)
    {
        var all = series.SelectMany(s => s.X.Zip(s.Y)).Where(p => double.IsFinite(p.First) && double.IsFinite(p.Second)).ToList();
        if (all.Count == 0) throw new DreamBoothException($"plot '{title}': no finite points");
        double x0 = all.Min(p => p.First), x1 = all.Max(p => p.First);
        double y0 = Math.Min(0, all.Min(p => p.Second)), y1 = all.Max(p => p.Second);
        if (x1 <= x0) x1 = x0 + 1;
        if (y1 <= y0) y1 = y0 + 1;
        y1 += (y1 - y0) * 0.05;

        using var typeface = SKTypeface.FromFile(WorkbenchAssets.Find(WorkbenchAssets.FontRegular));
        using var bold = SKTypeface.FromFile(WorkbenchAssets.Find(WorkbenchAssets.FontBold));
        using var font = new SKFont(typeface, 12);
        using var titleFont = new SKFont(bold, 15);
        var noteLines = string.IsNullOrWhiteSpace(note) ? [] : GridText.Wrap(note, font, width - 2 * 14, maxLines: 4);
        int noteBand = noteLines.Count == 0 ? 0 : noteLines.Count * GridText.LineHeight(font) + 8;
        height += noteBand;
        using var surface = SKSurface.Create(new SKImageInfo(width, height, SKColorType.Rgba8888, SKAlphaType.Premul));
        var canvas = surface.Canvas;
        canvas.Clear(SKColors.White);
        const float left = 64, right = 170, top = 36;
        float bottom = 46 + noteBand;
        float pw = width - left - right, ph = height - top - bottom;
        float X(double v) => left + (float)((v - x0) / (x1 - x0)) * pw;
        float Y(double v) => top + ph - (float)((v - y0) / (y1 - y0)) * ph;

        using var axis = new SKPaint { Color = new SKColor(60, 60, 60), StrokeWidth = 1, IsAntialias = true, Style = SKPaintStyle.Stroke };
        using var grid = new SKPaint { Color = new SKColor(225, 225, 225), StrokeWidth = 1, Style = SKPaintStyle.Stroke };
        using var text = new SKPaint { Color = new SKColor(40, 40, 40), IsAntialias = true };
        foreach (var (v, _) in Ticks(y0, y1))
        {
            canvas.DrawLine(left, Y(v), left + pw, Y(v), grid);
            canvas.DrawText(v.ToString("G3", CultureInfo.InvariantCulture), left - 6, Y(v) + 4, SKTextAlign.Right, font, text);
        }
        foreach (var (v, _) in Ticks(x0, x1))
        {
            canvas.DrawLine(X(v), top, X(v), top + ph, grid);
            canvas.DrawText(v.ToString("G4", CultureInfo.InvariantCulture), X(v), top + ph + 16, SKTextAlign.Center, font, text);
        }
        canvas.DrawRect(left, top, pw, ph, axis);
        canvas.DrawText(title, left, 22, SKTextAlign.Left, titleFont, text);
        canvas.DrawText(xTitle, left + pw / 2, height - noteBand - 10, SKTextAlign.Center, font, text);
        for (int i = 0; i < noteLines.Count; i++)
            canvas.DrawText(noteLines[i], 14, height - noteBand + 4 + i * GridText.LineHeight(font) - font.Metrics.Ascent, SKTextAlign.Left, font, text);
        canvas.Save();
        canvas.RotateDegrees(-90, 14, top + ph / 2);
        canvas.DrawText(yTitle, 14, top + ph / 2 + 4, SKTextAlign.Center, font, text);
        canvas.Restore();

        float ly = top + 10;
        foreach (var s in series)
        {
            using var paint = new SKPaint { Color = s.Color, StrokeWidth = s.Width, IsAntialias = true, Style = SKPaintStyle.Stroke };
            canvas.Save();
            canvas.ClipRect(new SKRect(left, top, left + pw, top + ph));
            int previous = -1;
            for (int i = 0; i < s.X.Count && i < s.Y.Count; i++)
            {
                if (!double.IsFinite(s.Y[i]) || !double.IsFinite(s.X[i])) { previous = -1; continue; }
                if (previous >= 0) canvas.DrawLine(X(s.X[previous]), Y(s.Y[previous]), X(s.X[i]), Y(s.Y[i]), paint);
                previous = i;
            }
            canvas.Restore();
            canvas.DrawLine(left + pw + 12, ly, left + pw + 36, ly, paint);
            canvas.DrawText(s.Name, left + pw + 42, ly + 4, SKTextAlign.Left, font, text);
            ly += 18;
        }

        using var snapshot = surface.Snapshot();
        using var pixmap = snapshot.PeekPixels();
        var rgba = pixmap.GetPixelSpan().ToArray();
        using var rgbaImage = SixLabors.ImageSharp.Image.LoadPixelData<Rgba32>(rgba, width, height);
        return rgbaImage.CloneAs<Rgb24>();
    }

    static IEnumerable<(double Value, int Index)> Ticks(double lo, double hi, int target = 6)
    {
        double span = hi - lo;
        double raw = span / target;
        double mag = Math.Pow(10, Math.Floor(Math.Log10(raw)));
        double step = new[] { 1, 2, 2.5, 5, 10 }.Select(m => m * mag).First(s => s >= raw);
        double first = Math.Ceiling(lo / step) * step;
        int i = 0;
        for (double v = first; v <= hi + step * 1e-9; v += step) yield return (Math.Round(v / step) * step, i++);
    }
}
