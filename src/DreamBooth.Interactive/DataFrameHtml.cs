using System.Text;
using Microsoft.Data.Analysis;

namespace DreamBooth.Interactive;

/// <summary>HTML table for a <see cref="DataFrame"/> (the Microsoft.Data.Analysis.Interactive extension is not on every feed).</summary>
public static class DataFrameHtml
{
    public static string ToHtml(DataFrame df, int maxRows = 20)
    {
        var sb = new StringBuilder("<table><thead><tr><th></th>");
        foreach (var c in df.Columns) sb.Append("<th>").Append(Html.Encode(c.Name)).Append("</th>");
        sb.Append("</tr></thead><tbody>");
        long n = df.Rows.Count;
        IEnumerable<long> rows = n <= maxRows ? Range(0, n) : Range(0, maxRows / 2).Concat(Range(n - maxRows / 2, maxRows / 2));
        long previous = -1;
        foreach (var r in rows)
        {
            if (previous >= 0 && r != previous + 1)
                sb.Append("<tr><td colspan=\"").Append(df.Columns.Count + 1).Append("\">…</td></tr>");
            sb.Append("<tr><td><b>").Append(r).Append("</b></td>");
            foreach (var c in df.Columns) sb.Append("<td>").Append(Html.Encode(Format(c[r]))).Append("</td>");
            sb.Append("</tr>");
            previous = r;
        }
        sb.Append("</tbody></table>");
        sb.Append("<div><i>").Append(n).Append(" rows × ").Append(df.Columns.Count).Append(" columns</i></div>");
        return sb.ToString();
    }

    static IEnumerable<long> Range(long start, long count) { for (long i = 0; i < count; i++) yield return start + i; }

    static string Format(object? v) => v switch
    {
        null => "",
        float f => f.ToString("G6", System.Globalization.CultureInfo.InvariantCulture),
        double d => d.ToString("G6", System.Globalization.CultureInfo.InvariantCulture),
        _ => Convert.ToString(v, System.Globalization.CultureInfo.InvariantCulture) ?? "",
    };
}
