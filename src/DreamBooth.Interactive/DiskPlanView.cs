using System.Runtime.CompilerServices;
using System.Text;
using DreamBooth.Training;

namespace DreamBooth.Interactive;

/// <summary>
/// The notebook view of a <see cref="DiskPlan"/> (the trainer's preflight): one row per kind of file the run writes
/// (count × size each = total, and how it was counted), then each volume's need against its free space.
/// </summary>
public static class DiskPlanView
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() => Formatters.Html<DiskPlan>(ToHtml));

    public static string ToHtml(DiskPlan plan)
    {
        var sb = new StringBuilder("<div class=\"dreambooth-disk-plan\"><table><caption style=\"text-align:left;font-weight:bold\">")
            .Append(Html.Encode(plan.FromEpoch > 0 ? $"Disk: what the run writes from epoch {plan.FromEpoch} on" : "Disk: what the run writes"))
            .Append("</caption><thead><tr><th style=\"text-align:left\">what</th><th>count</th><th>each</th><th>total</th><th style=\"text-align:left\">how it is counted</th></tr></thead><tbody>");
        foreach (var i in plan.Items)
            sb.Append("<tr><td style=\"text-align:left\">").Append(Html.Encode(i.What)).Append("</td><td>").Append(i.Count)
              .Append("</td><td>").Append(Html.Encode(DiskPlan.Gb(i.BytesEach))).Append("</td><td><b>").Append(Html.Encode(DiskPlan.Gb(i.Bytes)))
              .Append("</b></td><td style=\"text-align:left\">").Append(Html.Encode(i.How)).Append("</td></tr>");
        foreach (var (volume, needed, free) in plan.PerVolume)
        {
            bool fits = free is null || needed <= free;
            sb.Append("<tr style=\"color:").Append(fits ? "#1a7f37" : "#c62828").Append(";font-weight:bold\"><td colspan=\"3\" style=\"text-align:left\">on ")
              .Append(Html.Encode(volume)).Append("</td><td>").Append(Html.Encode(DiskPlan.Gb(needed))).Append("</td><td style=\"text-align:left\">")
              .Append(Html.Encode(free is { } f ? $"{DiskPlan.Gb(f)} free: {(fits ? "fits" : "does NOT fit (the trainer refuses to start)")}" : "free space unknown"))
              .Append("</td></tr>");
        }
        return sb.Append("</tbody></table></div>").ToString();
    }
}
