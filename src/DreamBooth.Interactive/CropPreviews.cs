using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using DreamBooth.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Interactive;

/// <summary>One prepared image: the source with what the cropper saw drawn on it, and the training image made from it.</summary>
public sealed record CropPreview(ManifestItem Item, string? OverlayPath, string OutputPath);

/// <summary>
/// Before/after of every prepared image of a run, side by side: the source with face boxes (red),
/// rejected candidates (orange), the subject crop (magenta), the focal point and crop rectangle (green) —
/// the debug overlay written by <see cref="DatasetPreparer"/> with <c>Debug = true</c> — next to the
/// training image, with the manifest's numbers underneath.
/// </summary>
public sealed class CropPreviews(IReadOnlyList<CropPreview> items, int height)
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() => Formatters.Html<CropPreviews>(p => p.ToHtml()));

    public IReadOnlyList<CropPreview> Items { get; } = items;
    /// <summary>Display height of each picture in pixels.</summary>
    public int Height { get; } = height;

    /// <summary>The previews of a report (at most <paramref name="max"/>, manifest order); overlays exist when the run had Debug on.</summary>
    public static CropPreviews From(DatasetReport report, int height = 256, int max = 24)
    {
        if (height < 16) throw new DreamBoothException($"crop previews: height {height} is too small (expected at least 16)");
        var items = report.Manifest.Items.Take(max).Select(i => new CropPreview(i,
            i.Debug is null ? null : Path.Combine(report.OutputFolder, i.Debug),
            Path.Combine(report.OutputFolder, i.Output))).ToList();
        return new CropPreviews(items, height);
    }

    public string ToHtml()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder("<div class=\"dreambooth-crop-previews\">");
        sb.Append("<div style=\"font-size:90%\">before: red = face, orange = rejected candidate, magenta = subject crop, green = crop and focal point · after: the training image</div>");
        sb.Append("<table><thead><tr><th style=\"text-align:left\">source</th><th>before</th><th>after</th></tr></thead><tbody>");
        foreach (var p in Items)
        {
            var i = p.Item;
            var faces = i.Faces.Count == 0 ? "no face" : string.Join(", ", i.Faces.Select(f => string.Create(inv, $"{f.Width:F0}×{f.Height:F0} at ({f.X:F0},{f.Y:F0}) score {f.Score:F2}")));
            var facts = new List<string>
            {
                $"{i.OriginalWidth}×{i.OriginalHeight} → {i.OutputWidth}×{i.OutputHeight}",
                "faces: " + faces,
                string.Create(inv, $"focal point: ({i.FocalX:F0}, {i.FocalY:F0})") + (i.FocalFallback ? " (centre: nothing detected)" : ""),
                $"crop: {i.Crop.Width}×{i.Crop.Height} at ({i.Crop.X},{i.Crop.Y})",
            };
            if (i.SubjectCrop is { } s) facts.Add($"subject crop {i.AspectRatio}: {s.Width}×{s.Height} at ({s.X},{s.Y})");
            facts.AddRange(i.Warnings.Select(w => "⚠ " + w));
            sb.Append("<tr><td style=\"text-align:left;vertical-align:top;max-width:320px\"><b>").Append(Html.Encode(i.Source)).Append("</b><br/>")
              .Append(string.Join("<br/>", facts.Select(Html.Encode))).Append("</td>");
            sb.Append("<td>").Append(Picture(p.OverlayPath, i.Source + " (before)")).Append("</td>");
            sb.Append("<td>").Append(Picture(p.OutputPath, i.Output + " (after)")).Append("</td></tr>");
        }
        sb.Append("</tbody></table>");
        if (Items.Count == 0) sb.Append("<i>no prepared images</i>");
        return sb.Append("</div>").ToString();
    }

    string Picture(string? path, string title)
    {
        if (path is null || !File.Exists(path)) return "<i>no overlay (prepare with Debug = true)</i>";
        using var image = Image.Load<Rgb24>(path);
        if (image.Height > Height)
            image.Mutate(c => c.Resize(new ResizeOptions { Size = new Size(0, Height), Sampler = KnownResamplers.Lanczos3 }));
        return Html.Img(image, title);
    }
}
