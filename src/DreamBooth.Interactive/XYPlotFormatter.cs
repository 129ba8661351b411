using System.Text;
using DreamBooth.Evaluation;
using SixLabors.ImageSharp;

namespace DreamBooth.Interactive;

/// <summary>
/// Notebook views of the x/y plot and of contact sheets. An x/y plot shows the labelled grid (the saved PNG;
/// click to see it at full size), then the same cells as a table with the axis labels, each cell a thumbnail
/// that enlarges on click and shows its full settings on hover. Works without scripts (a hidden checkbox per
/// image toggles its size), so saved .ipynb files keep the behaviour where the viewer allows styles.
/// </summary>
public static class XYPlotFormatter
{
    /// <summary>Called once from <see cref="Formatters.Register"/>.</summary>
    internal static void Hook() => Formatters.Add(() =>
    {
        Formatters.Html<XYPlotResult>(ToHtml);
        Formatters.Html<ImageGrid>(grid => ToHtml(grid));
    });

    /// <summary>Cells at or below this count start with the cell table open.</summary>
    public const int OpenTableUpTo = 16;

    public static string ToHtml(XYPlotResult result)
    {
        string id = "dbxy" + Guid.NewGuid().ToString("N")[..10];
        var spec = result.Spec;
        var sb = new StringBuilder();
        sb.Append($"<div id=\"{id}\" class=\"dreambooth-xyplot\">");
        sb.Append(ZoomStyle(id));
        sb.Append("<div><b>x/y plot</b>: ")
          .Append(Html.Encode($"{spec.X.Name()} × {(spec.Y?.Name() ?? "—")}, {spec.X.Count}×{spec.Y?.Count ?? 1} cells, " +
                              $"{result.CheckpointLoads} model load(s), {result.Elapsed.TotalSeconds:0.0} s"))
          .Append("</div>");
        if (result.Path is not null) sb.Append("<div>saved: <code>").Append(Html.Encode(result.Path)).Append("</code></div>");

        sb.Append("<details open><summary>labelled grid (click to zoom)</summary>");
        sb.Append(Zoomable(id, "grid", result.Grid, "x/y plot grid: " + spec.FixedSummary(), thumbWidth: Math.Min(result.Grid.Width, 1024), fullWidth: result.Grid.Width));
        sb.Append("</details>");

        int cols = spec.X.Count, rows = spec.Y?.Count ?? 1;
        sb.Append(result.Cells.Count <= OpenTableUpTo ? "<details open>" : "<details>")
          .Append("<summary>cells (click one to enlarge it, hover for its settings)</summary>");
        sb.Append("<table style=\"border-collapse:collapse\"><tr><th></th>");
        for (int c = 0; c < cols; c++) sb.Append("<th style=\"text-align:center\">").Append(Html.Encode(spec.X.Label(c))).Append("</th>");
        sb.Append("</tr>");
        for (int r = 0; r < rows; r++)
        {
            sb.Append("<tr><th style=\"text-align:right;vertical-align:middle\">").Append(Html.Encode(spec.Y?.Label(r) ?? "")).Append("</th>");
            for (int c = 0; c < cols; c++)
            {
                var cell = result[c, r];
                int w = cell.Image.Width;
                int thumb = Math.Clamp(w, 96, 160), full = Math.Max(w, 384);
                sb.Append("<td style=\"padding:2px;vertical-align:top\">")
                  .Append(Zoomable(id, $"c{c}r{r}", cell.Image, cell.Request.Describe(), thumb, full))
                  .Append("</td>");
            }
            sb.Append("</tr>");
        }
        sb.Append("</table></details>");
        sb.Append("<details><summary>infotext</summary><pre style=\"white-space:pre-wrap\">").Append(Html.Encode(result.Infotext)).Append("</pre></details>");
        return sb.Append("</div>").ToString();
    }

    public static string ToHtml(ImageGrid grid)
    {
        using var image = grid.Render();
        string id = "dbgrid" + Guid.NewGuid().ToString("N")[..10];
        return $"<div id=\"{id}\">{ZoomStyle(id)}{Zoomable(id, "sheet", image, grid.Title ?? $"{grid.Items.Count} images", Math.Min(image.Width, 1024), image.Width)}</div>";
    }

    static string ZoomStyle(string id) =>
        $"<style>#{id} input.z{{display:none}} #{id} input.z:checked + label img{{width:var(--full) !important;cursor:zoom-out}}" +
        $" #{id} label img{{cursor:zoom-in}}</style>";

    /// <summary>An image shown <paramref name="thumbWidth"/> wide that toggles to <paramref name="fullWidth"/> on click (pixelated when enlarged).</summary>
    static string Zoomable(string id, string key, Image image, string title, int thumbWidth, int fullWidth)
    {
        string inputId = $"{id}-{key}";
        string pixelated = fullWidth > image.Width || thumbWidth > image.Width ? "image-rendering:pixelated;" : "";
        return $"<input type=\"checkbox\" class=\"z\" id=\"{inputId}\" style=\"display:none\" />" +
               $"<label for=\"{inputId}\"><img src=\"{Html.PngDataUri(image)}\" title=\"{Html.Encode(title)}\" alt=\"{Html.Encode(title)}\" " +
               $"style=\"--full:{fullWidth}px;width:{thumbWidth}px;max-width:none;height:auto;{pixelated}\" /></label>";
    }
}
