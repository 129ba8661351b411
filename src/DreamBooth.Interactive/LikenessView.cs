using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using DreamBooth.Evaluation;
using DreamBooth.Likeness;

namespace DreamBooth.Interactive;

/// <summary>
/// Notebook views of the likeness results: the x/y plot's likeness (suggestion and reason, the grid with the scores
/// drawn, the per-checkpoint chart with the base model as baseline, the numbers), the dataset identity check (issues,
/// the distance matrix) and a list of scored images.
/// </summary>
public static class LikenessView
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() =>
    {
        Formatters.Html<XYLikenessReport>(ToHtml);
        Formatters.Html<IdentityCheckReport>(ToHtml);
    });

    static string F(double? v, string format = "0.00") => v is double d ? d.ToString(format, CultureInfo.InvariantCulture) : "–";

    /// <summary>
    /// Likeness per checkpoint, one line per prompt (mean distance of its cells with a face; gaps where none), the base
    /// model's value for each prompt as a dashed level, the 0.6 threshold, and the share of context cells that leak
    /// (right axis: their context is closer to a training photo than to the base model's picture for the same prompt and seed).
    /// </summary>
    public static PlotlyFigure Chart(XYLikenessReport report)
    {
        var columns = report.Checkpoints.Where(c => !c.Baseline).ToList();
        bool epochs = columns.All(c => c.Checkpoint?.Epoch is not null);
        double X(XYCheckpointLikeness c, int i) => epochs ? c.Checkpoint!.Epoch!.Value : i + 1;
        var xs = columns.Select((c, i) => X(c, i)).ToList();
        var baseline = report.Checkpoints.FirstOrDefault(c => c.Baseline);
        var palette = new[] { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf" };
        var series = new List<Charts.Series>();
        var rows = report.Cells.GroupBy(c => (c.Cell.Row, c.Cell.Prompt)).ToList();
        for (int r = 0; r < rows.Count; r++)
        {
            var row = rows[r].ToList();
            string color = palette[r % palette.Length];
            string name = row[0].Cell.Prompt + (row[0].InstanceRow ? "" : " (class)");
            double Mean(XYCheckpointLikeness c) =>
                row.Where(x => Equals(x.Cell.Checkpoint, c.Checkpoint) && x.Score.Distance is not null).Select(x => x.Score.Distance!.Value).DefaultIfEmpty(double.NaN).Average();
            series.Add(new Charts.Series(name, xs, columns.Select(Mean).ToList(), color, 2.5));
            if (baseline is not null && xs.Count > 0 && Mean(baseline) is var b && double.IsFinite(b))
                series.Add(new Charts.Series($"{name}: base model", [xs[0], xs[^1]], [b, b], color, 1.5, 0.7, "dash"));
        }
        if (xs.Count > 0)
            series.Add(new Charts.Series($"same-person threshold {F(FaceDistance.Threshold, "0.0")}", [xs[0], xs[^1]], [FaceDistance.Threshold, FaceDistance.Threshold], "#888888", 1, 0.8, "dot"));
        if (columns.Any(c => c.LeakShare is not null))
            series.Add(new Charts.Series("context cells leaking training-photo context (right axis)", xs,
                columns.Select(c => c.LeakShare ?? double.NaN).ToList(), "#444444", 1.5, 0.8, "dashdot", "y2"));
        return Charts.Lines("Likeness per checkpoint (face distance to the instance photos, lower = more alike)",
            epochs ? "epoch" : "checkpoint", "face distance", series, y2Title: $"leaking share (closer to a training photo than to {report.ReferenceColumn ?? "the first column"}'s picture)");
    }

    public static string ToHtml(XYLikenessReport report)
    {
        var sb = new StringBuilder("<div class=\"dreambooth-likeness\">");
        sb.Append("<div><b>Suggested checkpoint: ").Append(Html.Encode(report.Suggested?.Label ?? "none")).Append("</b>");
        if (report.Suggested?.Checkpoint?.Path is { } path) sb.Append(" — <code>").Append(Html.Encode(path)).Append("</code>");
        sb.Append("</div><div>").Append(Html.Encode(report.Reason)).Append("</div>");
        sb.Append("<details open><summary>the grid with each cell's likeness (✓ = under ")
          .Append(F(FaceDistance.Threshold, "0.0")).Append("; subject rows green/red, class rows blue/orange, grey = no face; leak = the background, clothes and framing are closer to a training photo than to the base model's picture)</summary>")
          .Append(Html.Img(report.Grid, "x/y plot with likeness scores", maxWidth: Math.Min(report.Grid.Width, 1024))).Append("</details>");
        sb.Append(Charts.ToHtml(Chart(report)));
        sb.Append(DatasetReportView.Table(["checkpoint", "face distance", "subject cells with a face", "under 0.6", "context ΔE to the nearest training photo", $"context ΔE to {report.ReferenceColumn ?? "the first column"}", "leaking context cells", "class cells like the person"],
            report.Checkpoints.Select(c => new[]
            {
                c.Label + (c.Baseline ? " (baseline)" : "") + (ReferenceEquals(c, report.Suggested) ? " ← suggested" : ""),
                F(c.Distance), $"{c.InstanceFaces}/{c.InstanceCells}", c.SamePerson.ToString(CultureInfo.InvariantCulture),
                F(c.ContextDistance, "0.0"), F(c.BaseContextDistance, "0.0"), c.ContextCells == 0 ? "–" : $"{c.LeakingCells}/{c.ContextCells}",
                c.ClassCells == 0 ? "–" : $"{c.ClassLikePerson}/{c.ClassCells}",
            })));
        sb.Append("<div style=\"font-size:smaller\">").Append(Html.Encode(
            $"face distance: {LikenessJson.Metric}; same person under {F(FaceDistance.Threshold, "0.0")}. context: {LikenessJson.ContextMetric}. " +
            $"Reference: {report.Reference.WithFace.Count} of {report.Reference.Photos.Count} instance photo(s) with a face.")).Append("</div>");
        return sb.Append("</div>").ToString();
    }

    public static string ToHtml(IdentityCheckReport report)
    {
        var sb = new StringBuilder("<div class=\"dreambooth-identity-check\">");
        sb.Append("<div><b>").Append(Html.Encode(report.Summary)).Append("</b></div>");
        if (report.Issues.Count > 0)
            sb.Append(DatasetReportView.Table(["issue", "photos", "detail"], report.Issues.Select(i => new[] { i.Kind, string.Join(", ", i.Photos), i.Detail })));
        // the distance matrix, coloured: green = same person, red = someone else, yellow = the same shot
        sb.Append("<table style=\"border-collapse:collapse;font-size:smaller\"><caption style=\"text-align:left\">face distance between the photos (same person &lt; ")
          .Append(F(report.Options.SomeoneElse)).Append(", the same shot &lt; ").Append(F(report.Options.NearDuplicate)).Append(")</caption><tr><th></th>");
        for (int j = 0; j < report.Photos.Count; j++) sb.Append("<th title=\"").Append(Html.Encode(report.Photos[j].Name)).Append("\">").Append(j + 1).Append("</th>");
        sb.Append("<th style=\"text-align:left\">faces</th><th style=\"text-align:left\">median</th></tr>");
        for (int i = 0; i < report.Photos.Count; i++)
        {
            var p = report.Photos[i];
            sb.Append("<tr><th style=\"text-align:left\">").Append(i + 1).Append(". ").Append(Html.Encode(p.Name)).Append("</th>");
            for (int j = 0; j < report.Photos.Count; j++)
            {
                var d = report.Distances[i][j];
                string bg = i == j || d is null ? "#eeeeee" : d < report.Options.NearDuplicate ? "#fff2a8" : d < report.Options.SomeoneElse ? "#c8eccf" : "#f6c3c3";
                sb.Append("<td style=\"background:").Append(bg).Append(";padding:2px 6px;text-align:center\">").Append(i == j ? "" : F(d)).Append("</td>");
            }
            sb.Append("<td>").Append(p.Faces).Append("</td><td>").Append(F(p.MedianDistance)).Append("</td></tr>");
        }
        sb.Append("</table>");
        return sb.Append("</div>").ToString();
    }
}
