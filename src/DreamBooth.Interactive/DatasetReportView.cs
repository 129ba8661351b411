using System.Runtime.CompilerServices;
using System.Text;
using DreamBooth.Data;

namespace DreamBooth.Interactive;

/// <summary>
/// The notebook view of a <see cref="DatasetReport"/>: the counts, the skipped files with their reasons,
/// the images that carry warnings, the contact sheet and the bucket histogram (Plotly), in one output.
/// </summary>
public static class DatasetReportView
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() => Formatters.Html<DatasetReport>(ToHtml));

    /// <summary>The bucket histogram as a Plotly bar chart (every bucket, zeros included, in bucket order).</summary>
    public static PlotlyFigure BucketChart(DatasetReport report)
    {
        var h = report.BucketHistogram;
        return Charts.Bars($"images per aspect bucket ({report.Prepared} image(s), {h.Count} bucket(s))",
            h.Keys.ToList(), h.Values.Select(v => (double)v).ToList(), "bucket (width x height)", "images");
    }

    public static string ToHtml(DatasetReport r)
    {
        var sb = new StringBuilder("<div class=\"dreambooth-dataset-report\">");
        sb.Append(Html.KeyValueTable(
        [
            ("output folder", r.OutputFolder),
            ("files seen", r.FilesSeen),
            ("images in the dataset", $"{r.Prepared} ({r.Prepared - r.Reused} prepared now, {r.Reused} unchanged)"),
            ("with a face", r.WithFaces),
            ("skipped", r.Skipped),
            ("duplicates", r.Duplicates),
            ("with warnings", r.WithWarnings),
            ("time", $"{r.Elapsed.TotalSeconds:F1} s"),
        ], "Dataset report"));
        if (r.SkippedFiles.Count > 0)
        {
            sb.Append("<h4>Skipped files</h4>");
            sb.Append(Table(["file", "code", "reason"], r.SkippedFiles.Select(s => new[] { s.Source, s.Code, s.Reason })));
        }
        var warned = r.Manifest.Items.Where(i => i.Warnings.Count > 0).ToList();
        if (warned.Count > 0)
        {
            sb.Append("<h4>Warnings</h4>");
            sb.Append(Table(["file", "warnings"], warned.Select(i => new[] { i.Source, string.Join("; ", i.Warnings) })));
        }
        if (r.Prepared > 0)
        {
            sb.Append("<h4>Contact sheet</h4>");
            using var sheet = r.ContactSheet();
            sb.Append(Html.Img(sheet, "contact sheet of the prepared images"));
        }
        sb.Append("<h4>Aspect buckets</h4>");
        sb.Append(Charts.ToHtml(BucketChart(r)));
        return sb.Append("</div>").ToString();
    }

    internal static string Table(IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string>> rows)
    {
        var sb = new StringBuilder("<table><thead><tr>");
        foreach (var h in headers) sb.Append("<th style=\"text-align:left\">").Append(Html.Encode(h)).Append("</th>");
        sb.Append("</tr></thead><tbody>");
        foreach (var row in rows)
        {
            sb.Append("<tr>");
            foreach (var c in row) sb.Append("<td style=\"text-align:left\">").Append(Html.Encode(c)).Append("</td>");
            sb.Append("</tr>");
        }
        return sb.Append("</tbody></table>").ToString();
    }
}
