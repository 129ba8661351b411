using System.Globalization;
using System.Text.Json.Nodes;
using DreamBooth.Likeness;
using DreamBooth.Pipelines;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Evaluation;

/// <summary>How an x/y plot's likeness is summarised.</summary>
public sealed record XYLikenessOptions
{
    /// <summary>
    /// Rows whose prompt contains this token ask for the subject (their likeness should rise); the others are class
    /// prompts ("man"), whose cells should NOT turn into the subject (language drift). Null: every row asks for the subject.
    /// </summary>
    public string? InstanceToken { get; init; } = "ohwx";
    /// <summary>
    /// A checkpoint leaks context when its cells' context distance to the nearest instance photo falls below this
    /// fraction of the reference column's (the base model's, else the first checkpoint's), on the same prompts and seed.
    /// </summary>
    public double LeakRatio { get; init; } = 0.75;
    /// <summary>Checkpoints within this much of the best likeness count as equally alike; the earliest of them is suggested.</summary>
    public double Tie { get; init; } = 0.02;
    /// <summary>The baseline column; null = the first checkpoint without an epoch when others have one (e.g. "base model").</summary>
    public XYCheckpoint? Baseline { get; init; }

    public static XYLikenessOptions Default { get; } = new();

    /// <summary>The options for a concept: the instance token is the first word of the instance prompt that the class prompt lacks ("ohwx man" / "man" → "ohwx").</summary>
    public static XYLikenessOptions For(string instancePrompt, string classPrompt) =>
        new() { InstanceToken = FaceDistance.InstanceToken(instancePrompt, classPrompt) };
}

/// <summary>One cell's likeness and whether its row asks for the subject.</summary>
public sealed record XYCellLikeness(CellRequest Cell, LikenessScore Score, bool InstanceRow);

/// <summary>One checkpoint (column) summarised over its cells.</summary>
public sealed record XYCheckpointLikeness
{
    public required string Label { get; init; }
    public XYCheckpoint? Checkpoint { get; init; }
    public bool Baseline { get; init; }
    /// <summary>Mean likeness distance over the instance-row cells with a face (null: none had one).</summary>
    public double? Distance { get; init; }
    public int InstanceCells { get; init; }
    public int InstanceFaces { get; init; }
    /// <summary>Instance cells under the 0.6 threshold.</summary>
    public int SamePerson { get; init; }
    /// <summary>Mean context distance of the instance cells to their nearest instance photo.</summary>
    public double? ContextDistance { get; init; }
    /// <summary><see cref="ContextDistance"/> divided by the reference column's on the same rows (1 = as far as the base model).</summary>
    public double? ContextRatio { get; init; }
    public int ClassCells { get; init; }
    /// <summary>Class-row cells whose face is the subject (&lt; 0.6): the class drifts towards the person.</summary>
    public int ClassLikePerson { get; init; }
}

/// <summary>
/// The likeness of every cell of an x/y plot to the instance photos, per checkpoint and prompt, paired with the
/// context-leakage signal, a suggested checkpoint with its reason, and the grid with each cell's score drawn on it.
/// </summary>
public sealed class XYLikenessReport : IDisposable
{
    public required XYPlotResult Plot { get; init; }
    /// <summary>Cells in the plot's row-major order.</summary>
    public required IReadOnlyList<XYCellLikeness> Cells { get; init; }
    /// <summary>Per checkpoint, in the plot's checkpoint order (one group "model" when the checkpoint is not an axis).</summary>
    public required IReadOnlyList<XYCheckpointLikeness> Checkpoints { get; init; }
    /// <summary>The column the context ratios are relative to (the baseline, else the first checkpoint), or null.</summary>
    public string? ReferenceColumn { get; init; }
    public XYCheckpointLikeness? Suggested { get; init; }
    public required string Reason { get; init; }
    /// <summary>The grid with each cell's likeness drawn on it.</summary>
    public required Image<Rgb24> Grid { get; init; }
    public required IdentityReference Reference { get; init; }
    public XYLikenessOptions Options { get; init; } = XYLikenessOptions.Default;

    /// <summary>The cell at (column, row) of the grid.</summary>
    public XYCellLikeness this[int column, int row] => Cells[row * Plot.Spec.X.Count + column];

    /// <summary>Prompts in row order (the labels of the rows that vary the prompt, else the cells' prompts).</summary>
    public IReadOnlyList<string> Prompts => Cells.Select(c => c.Cell.Prompt).Distinct().ToList();

    /// <summary>The annotated grid saved as PNG (with the plot's infotext).</summary>
    public string SaveGrid(string path)
    {
        if (!path.EndsWith(".png", StringComparison.OrdinalIgnoreCase)) throw new DreamBoothException($"likeness grid '{path}': give a .png path");
        var full = Path.GetFullPath(path);
        using var copy = Grid.Clone();
        PngInfotext.Save(copy, full, Plot.Infotext);
        return full;
    }

    public JsonObject ToJson() => new()
    {
        ["metric"] = LikenessJson.Metric,
        ["threshold"] = FaceDistance.Threshold,
        ["context_metric"] = LikenessJson.ContextMetric,
        ["instance_token"] = Options.InstanceToken,
        ["reference_column"] = ReferenceColumn,
        ["suggested"] = Suggested?.Label,
        ["suggested_path"] = Suggested?.Checkpoint?.Path,
        ["reason"] = Reason,
        ["reference"] = LikenessJson.Reference(Reference),
        ["checkpoints"] = new JsonArray(Checkpoints.Select(c => (JsonNode)new JsonObject
        {
            ["label"] = c.Label, ["path"] = c.Checkpoint?.Path, ["epoch"] = c.Checkpoint?.Epoch, ["baseline"] = c.Baseline,
            ["distance"] = LikenessJson.R(c.Distance), ["instance_cells"] = c.InstanceCells, ["instance_faces"] = c.InstanceFaces,
            ["same_person"] = c.SamePerson, ["context_distance"] = LikenessJson.R(c.ContextDistance), ["context_ratio"] = LikenessJson.R(c.ContextRatio),
            ["class_cells"] = c.ClassCells, ["class_like_person"] = c.ClassLikePerson,
        }).ToArray()),
        ["cells"] = new JsonArray(Cells.Select(c =>
        {
            var o = LikenessJson.Score($"{c.Cell.XLabel}{(c.Cell.YLabel is null ? "" : " × " + c.Cell.YLabel)}", c.Score);
            o["column"] = c.Cell.Column;
            o["row"] = c.Cell.Row;
            o["checkpoint"] = c.Cell.Checkpoint?.Label;
            o["prompt"] = c.Cell.Prompt;
            o["seed"] = c.Cell.Seed;
            o["instance_row"] = c.InstanceRow;
            return (JsonNode)o;
        }).ToArray()),
    };

    public void Dispose() => Grid.Dispose();
}

/// <summary>Scores an <see cref="XYPlotResult"/> with a <see cref="LikenessScorer"/> (see <see cref="XYLikenessReport"/>).</summary>
public static class XYLikeness
{
    public static XYLikenessReport Score(XYPlotResult plot, LikenessScorer scorer, XYLikenessOptions? options = null,
        IProgress<int>? progress = null, CancellationToken ct = default)
    {
        options ??= XYLikenessOptions.Default;
        var cells = new List<XYCellLikeness>();
        foreach (var cell in plot.Cells)
        {
            ct.ThrowIfCancellationRequested();
            bool instance = options.InstanceToken is not { Length: > 0 } token || cell.Request.Prompt.Contains(token, StringComparison.OrdinalIgnoreCase);
            cells.Add(new XYCellLikeness(cell.Request, scorer.Score(cell.Image, ct), instance));
            progress?.Report(cells.Count);
        }
        var (checkpoints, reference) = Summarise(cells, options);
        var (suggested, reason) = scorer.Reference.WithFace.Count == 0
            ? (null, $"none of the {scorer.Reference.Photos.Count} instance photo(s) shows a face, so there is no identity to compare with (the toy world's figures have no faces: its probe, `dreambooth toy probe`, measures the subject instead); the context distances are still measured")
            : Suggest(checkpoints, cells, reference, options);
        return new XYLikenessReport
        {
            Plot = plot, Cells = cells, Checkpoints = checkpoints, ReferenceColumn = reference?.Label, Suggested = suggested, Reason = reason,
            Grid = Annotate(plot, cells), Reference = scorer.Reference, Options = options,
        };
    }

    internal static (List<XYCheckpointLikeness> Checkpoints, XYCheckpointLikeness? Reference) Summarise(IReadOnlyList<XYCellLikeness> cells, XYLikenessOptions options)
    {
        var groups = cells.GroupBy(c => c.Cell.Checkpoint).ToList(); // first-appearance order = the plot's checkpoint order
        var all = groups.Select(g => g.Key).ToList();
        var baseline = options.Baseline ?? (all.Any(c => c?.Epoch is not null) ? all.FirstOrDefault(c => c is not null && c.Epoch is null) : null);
        // the reference column for context ratios: the baseline, else the first checkpoint
        var refKey = baseline ?? all[0];
        var refCells = groups.First(g => Equals(g.Key, refKey)).Where(c => c.InstanceRow).ToList();
        var list = new List<XYCheckpointLikeness>();
        foreach (var g in groups)
        {
            var inst = g.Where(c => c.InstanceRow).ToList();
            var withFace = inst.Where(c => c.Score.Distance is not null).ToList();
            var ctx = inst.Where(c => c.Score.ContextDistance is not null).ToList();
            // ratio on matching cells only (same row: same prompt and seed)
            var ratios = ctx.Select(c => (c, r: refCells.FirstOrDefault(r => r.Cell.Row == c.Cell.Row && r.Cell.Prompt == c.Cell.Prompt && r.Cell.Seed == c.Cell.Seed)))
                .Where(p => p.r?.Score.ContextDistance is > 0).Select(p => p.c.Score.ContextDistance!.Value / p.r!.Score.ContextDistance!.Value).ToList();
            var cls = g.Where(c => !c.InstanceRow).ToList();
            list.Add(new XYCheckpointLikeness
            {
                Label = g.Key?.Label ?? "model", Checkpoint = g.Key, Baseline = baseline is not null && Equals(g.Key, baseline),
                Distance = withFace.Count == 0 ? null : withFace.Average(c => c.Score.Distance!.Value),
                InstanceCells = inst.Count, InstanceFaces = withFace.Count, SamePerson = withFace.Count(c => c.Score.SamePerson),
                ContextDistance = ctx.Count == 0 ? null : ctx.Average(c => c.Score.ContextDistance!.Value),
                ContextRatio = ratios.Count == 0 ? null : ratios.Average(),
                ClassCells = cls.Count, ClassLikePerson = cls.Count(c => c.Score.SamePerson),
            });
        }
        return (list, list.FirstOrDefault(c => Equals(c.Checkpoint, refKey)));
    }

    internal static (XYCheckpointLikeness? Suggested, string Reason) Suggest(IReadOnlyList<XYCheckpointLikeness> checkpoints, IReadOnlyList<XYCellLikeness> cells,
        XYCheckpointLikeness? reference, XYLikenessOptions options)
    {
        static string F(double? v) => v is double d ? d.ToString("0.00", CultureInfo.InvariantCulture) : "–";
        string thr = FaceDistance.Threshold.ToString("0.0", CultureInfo.InvariantCulture);
        if (cells.All(c => !c.Score.FaceFound))
            return (null, "no face was found in any cell: the likeness score needs human faces (the toy world's figures have none; its probe measures the subject instead)");
        var candidates = checkpoints.Where(c => !c.Baseline).ToList();
        int baseDrift = checkpoints.FirstOrDefault(c => c.Baseline)?.ClassLikePerson ?? 0;
        bool Leaks(XYCheckpointLikeness c) => c.ContextRatio is double r && !ReferenceEquals(c, reference) && r < options.LeakRatio;
        bool Drifts(XYCheckpointLikeness c) => c.ClassLikePerson > baseDrift;
        bool Alike(XYCheckpointLikeness c) => c.Distance < FaceDistance.Threshold && c.InstanceFaces * 2 >= c.InstanceCells;
        string Context(XYCheckpointLikeness c) => c.ContextRatio is double r ? $"context {F(r)}× {(reference is null ? "the first column" : reference.Label)}'s" : "context not comparable";
        string Describe(XYCheckpointLikeness c) =>
            $"{c.Label}: mean distance {F(c.Distance)} over {c.InstanceFaces}/{c.InstanceCells} subject cells with a face ({c.SamePerson} under {thr}), {Context(c)}" +
            (c.ClassCells > 0 ? $", {c.ClassLikePerson}/{c.ClassCells} class cells look like the person" : "");

        var eligible = candidates.Where(c => Alike(c) && !Leaks(c) && !Drifts(c)).ToList();
        if (eligible.Count > 0)
        {
            double best = eligible.Min(c => c.Distance!.Value);
            var pick = eligible.First(c => c.Distance!.Value <= best + options.Tie); // checkpoint order: the earliest of the tied
            var rejected = candidates.Where(c => Alike(c) && (Leaks(c) || Drifts(c))).ToList();
            string why = $"{Describe(pick)}: looks like the person and still follows the prompt" +
                         (pick.Distance > best ? $" (as alike as the best, {F(best)}, within {F(options.Tie)}, and earlier)" : "") +
                         (rejected.Count > 0 ? $". Also like the person but rejected: {string.Join("; ", rejected.Select(c => $"{c.Label} {F(c.Distance)} ({(Leaks(c) ? "leaks context, " + Context(c) : "the class prompt turns into the person")})"))}" : "");
            return (pick, why);
        }
        var alike = candidates.Where(Alike).ToList();
        if (alike.Count > 0)
        {
            var pick = alike.OrderBy(c => Drifts(c)).ThenByDescending(c => c.ContextRatio ?? 0).First();
            return (pick, $"every checkpoint that looks like the person also leaks context or drifts the class; least affected: {Describe(pick)}. Consider fewer epochs, more class images or more varied instance photos");
        }
        var closest = candidates.Where(c => c.Distance is not null).MinBy(c => c.Distance!.Value);
        return (null, closest is null
            ? "no subject cell of any checkpoint shows a face: nothing to compare"
            : $"no checkpoint reaches the {thr} threshold on most subject cells (closest: {Describe(closest)}): the identity is not learned yet — train longer, or check the instance photos");
    }

    /// <summary>
    /// The plot's grid with a caption band at the bottom of each cell: the distance (✓ under 0.6) or "no face", and the
    /// context distance. Subject rows: green = the person, red = not; class rows: blue = another person, orange = the
    /// person (the class drifts); grey = no face.
    /// </summary>
    internal static Image<Rgb24> Annotate(XYPlotResult plot, IReadOnlyList<XYCellLikeness> cells)
    {
        var grid = plot.Grid.Clone();
        var layout = plot.Layout;
        float size = Math.Clamp(layout.CellWidth / 11f, 10, 28);
        using var font = GridText.Font(size, bold: true);
        int band = GridText.LineHeight(font) + 4;
        using var paint = GridText.Paint(new Rgb24(255, 255, 255));
        foreach (var c in cells)
        {
            var rect = layout.CellRect(c.Cell.Column, c.Cell.Row);
            var s = c.Score;
            // subject rows: green = the person, red = not; class rows: blue = another person (as it should be), orange = the person (drift)
            var bg = !s.FaceFound ? new Rgb24(90, 90, 90)
                : c.InstanceRow ? (s.SamePerson ? new Rgb24(24, 128, 56) : new Rgb24(176, 40, 40))
                : (s.SamePerson ? new Rgb24(214, 120, 0) : new Rgb24(40, 80, 160));
            string text = s.ShortText + (s.ContextDistance is double ctx ? $" · ctx {ctx.ToString("0", CultureInfo.InvariantCulture)}" : "");
            using var bitmap = GridText.NewCanvas(rect.Width, band, bg, out var canvas);
            using (canvas)
            {
                GridText.DrawCentered(canvas, GridText.Wrap(text, font, rect.Width - 4, 1), font, paint, new SkiaSharp.SKRect(2, 0, rect.Width - 2, band));
                canvas.Flush();
            }
            using var label = GridText.ToImage(bitmap);
            grid.Mutate(x => x.DrawImage(label, new Point(rect.X, rect.Bottom - band), 0.85f));
        }
        return grid;
    }
}
