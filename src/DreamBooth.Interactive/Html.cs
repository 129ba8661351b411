using System.Net;
using SixLabors.ImageSharp;

namespace DreamBooth.Interactive;

/// <summary>Small HTML helpers shared by the formatters.</summary>
public static class Html
{
    public static string Encode(object? value) => WebUtility.HtmlEncode(value?.ToString() ?? "");

    /// <summary>An image as an inline PNG data URI (renders offline and in saved .ipynb files).</summary>
    public static string PngDataUri(Image image)
    {
        using var ms = new MemoryStream();
        image.SaveAsPng(ms);
        return "data:image/png;base64," + Convert.ToBase64String(ms.ToArray());
    }

    public static string Img(Image image, string? title = null, int? maxWidth = null) =>
        $"<img src=\"{PngDataUri(image)}\" width=\"{image.Width}\" height=\"{image.Height}\"" +
        (maxWidth is int w ? $" style=\"max-width:{w}px;height:auto\"" : " style=\"max-width:100%;height:auto\"") +
        (title is null ? "" : $" title=\"{Encode(title)}\" alt=\"{Encode(title)}\"") + " />";

    /// <summary>A two-column key/value table.</summary>
    public static string KeyValueTable(IEnumerable<(string Key, object? Value)> rows, string? caption = null)
    {
        var sb = new System.Text.StringBuilder("<table>");
        if (caption is not null) sb.Append("<caption style=\"text-align:left;font-weight:bold\">").Append(Encode(caption)).Append("</caption>");
        foreach (var (k, v) in rows)
            sb.Append("<tr><th style=\"text-align:left\">").Append(Encode(k)).Append("</th><td style=\"text-align:left\">").Append(Encode(v)).Append("</td></tr>");
        return sb.Append("</table>").ToString();
    }
}
