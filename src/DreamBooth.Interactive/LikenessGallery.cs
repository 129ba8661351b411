using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using DreamBooth.Likeness;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Interactive;

/// <summary>Images scored against a reference person, shown as thumbnails with their distance (notebook calibration cells).</summary>
public sealed class LikenessGallery
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() => Formatters.Html<LikenessGallery>(g => g.ToHtml()));

    public string Title { get; }
    public IReadOnlyList<(string Name, LikenessScore Score)> Items { get; }
    readonly List<string> _thumbs;

    LikenessGallery(string title, List<(string, LikenessScore)> items, List<string> thumbs)
    {
        Title = title;
        Items = items;
        _thumbs = thumbs;
    }

    /// <summary>Scores each image with <paramref name="scorer"/> and keeps a 160 px thumbnail of it.</summary>
    public static LikenessGallery Score(LikenessScorer scorer, IEnumerable<(string Name, Image<Rgb24> Image)> images, string title)
    {
        var items = new List<(string, LikenessScore)>();
        var thumbs = new List<string>();
        foreach (var (name, image) in images)
        {
            items.Add((name, scorer.Score(image)));
            using var thumb = image.Clone(c => c.Resize(new ResizeOptions { Size = new Size(160, 160), Mode = ResizeMode.Max }));
            thumbs.Add(Html.PngDataUri(thumb));
        }
        return new LikenessGallery(title, items, thumbs);
    }

    public string ToHtml()
    {
        var sb = new StringBuilder("<div class=\"dreambooth-likeness-gallery\"><div><b>").Append(Html.Encode(Title)).Append("</b></div><div style=\"display:flex;flex-wrap:wrap;gap:8px\">");
        for (int i = 0; i < Items.Count; i++)
        {
            var (name, s) = Items[i];
            string color = !s.FaceFound ? "#666" : s.SamePerson ? "#187a38" : "#b02828";
            sb.Append("<figure style=\"margin:0;text-align:center\"><img src=\"").Append(_thumbs[i]).Append("\" style=\"max-width:160px;height:auto\" /><figcaption>")
              .Append(Html.Encode(name)).Append("<br/><b style=\"color:").Append(color).Append("\">").Append(Html.Encode(s.ShortText)).Append("</b>");
            if (s.MinDistance is double m) sb.Append(" <span style=\"font-size:smaller\">(min ").Append(m.ToString("0.00", CultureInfo.InvariantCulture)).Append(")</span>");
            sb.Append("</figcaption></figure>");
        }
        return sb.Append("</div></div>").ToString();
    }
}
