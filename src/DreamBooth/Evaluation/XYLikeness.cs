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
    /// A checkpoint leaks context when at least this fraction of its context cells leak. A cell leaks when its context
    /// (everything but the face) is closer to a training photo than to the reference column's cell (the base model's
    /// picture for the same prompt and seed).
    /// </summary>
    public double LeakFraction { get; init; } = 0.5;
    /// <summary>Checkpoints within this much of the best likeness count as equally alike; the earliest of them is suggested.</summary>
    public double Tie { get; init; } = 0.02;
    /// <summary>The baseline column; null = the first checkpoint without an epoch when others have one (e.g. "base model").</summary>
    public XYCheckpoint? Baseline { get; init; }

    public static XYLikenessOptions Default { get; } = new();

    /// <summary>The options for a concept: the instance token is the first word of the instance prompt that the class prompt lacks ("ohwx man" / "man" → "ohwx").</summary>
    public static XYLikenessOptions For(string instancePrompt, string classPrompt) =>
        new() { InstanceToken = FaceDistance.InstanceToken(instancePrompt, classPrompt) };
}

/// <summary>One cell's likeness, whether its row asks for the subject, and its context compared with the base model's cell.</summary>
/// <param name="InstanceRow">The prompt holds the instance token.</param>
/// <param name="ContextRow">A subject row that asks for more than the plain subject prompt (its context should follow the prompt, not the photos).</param>
/// <param name="BaseContextDistance">Context distance (ΔE, faces masked) to the reference column's cell of the same row: what the base model drew for this prompt and seed.</param>
/// <param name="Leaks">A context cell whose context is closer to a training photo than to the base model's picture.</param>
public sealed record XYCellLikeness(CellRequest Cell, LikenessScore Score, bool InstanceRow, bool ContextRow = false, double? BaseContextDistance = null, bool Leaks = false);

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
    /// <summary>Mean context distance of the context cells to their nearest instance photo.</summary>
    public double? ContextDistance { get; init; }
    /// <summary>Mean context distance of the context cells to the base model's cells (same prompt and seed).</summary>
    public double? BaseContextDistance { get; init; }
    /// <summary>Subject cells that add context to the subject prompt, and how many of them leak (closer to a training photo than to the base model's picture).</summary>
    public int ContextCells { get; init; }
    public int LeakingCells { get; init; }
    /// <summary>Leaking share of the context cells (null: no context cell to judge).</summary>
    public double? LeakShare => ContextCells == 0 ? null : (double)LeakingCells / ContextCells;
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
    /// <summary>The column context is compared with (the baseline, else the first checkpoint), or null.</summary>
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
            ["same_person"] = c.SamePerson, ["context_distance"] = LikenessJson.R(c.ContextDistance), ["base_context_distance"] = LikenessJson.R(c.BaseContextDistance),
            ["context_cells"] = c.ContextCells, ["leaking_cells"] = c.LeakingCells,
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
            o["context_row"] = c.ContextRow;
            o["base_context_distance"] = LikenessJson.R(c.BaseContextDistance);
            o["leaks"] = c.Leaks;
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
        // context rows: subject rows asking for more than the plain subject prompt (the spec's prompt); if every subject
        // row is the plain prompt (e.g. a seed axis), all of them
        bool varied = cells.Any(c => c.InstanceRow && c.Cell.Prompt != plot.Spec.Prompt);
        cells = cells.Select(c => c with { ContextRow = c.InstanceRow && (!varied || c.Cell.Prompt != plot.Spec.Prompt) }).ToList();
        cells = Compare(cells, null, options);
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

    /// <summary>The reference column: the baseline (option, else the first checkpoint without an epoch when others have one), else the first column.</summary>
    static XYCheckpoint? ReferenceKey(IReadOnlyList<XYCellLikeness> cells, XYLikenessOptions options)
    {
        var all = cells.Select(c => c.Cell.Checkpoint).Distinct().ToList();
        var baseline = options.Baseline ?? (all.Any(c => c?.Epoch is not null) ? all.FirstOrDefault(c => c is not null && c.Epoch is null) : null);
        return baseline ?? all[0];
    }

    static bool IsBaseline(XYCheckpoint? c, IReadOnlyList<XYCellLikeness> cells, XYLikenessOptions options)
    {
        var all = cells.Select(x => x.Cell.Checkpoint).Distinct().ToList();
        var baseline = options.Baseline ?? (all.Any(x => x?.Epoch is not null) ? all.FirstOrDefault(x => x is not null && x.Epoch is null) : null);
        return baseline is not null && Equals(c, baseline);
    }

    /// <summary>Each cell's context against the reference column's cell of the same row (same prompt and seed), and whether it leaks.</summary>
    internal static List<XYCellLikeness> Compare(List<XYCellLikeness> cells, XYCheckpoint? reference, XYLikenessOptions options)
    {
        var refKey = reference ?? ReferenceKey(cells, options);
        var refCells = cells.Where(c => Equals(c.Cell.Checkpoint, refKey)).ToList();
        return cells.Select(c =>
        {
            var r = refCells.FirstOrDefault(x => x.Cell.Row == c.Cell.Row && x.Cell.Prompt == c.Cell.Prompt && x.Cell.Seed == c.Cell.Seed);
            double? toBase = r is null || ReferenceEquals(r, c) || c.Score.Context is null || r.Score.Context is null ? null : c.Score.Context.Distance(r.Score.Context);
            bool leaks = c.ContextRow && toBase is double b && c.Score.ContextDistance is double t && t < b;
            return c with { BaseContextDistance = toBase, Leaks = leaks };
        }).ToList();
    }

    internal static (List<XYCheckpointLikeness> Checkpoints, XYCheckpointLikeness? Reference) Summarise(IReadOnlyList<XYCellLikeness> cells, XYLikenessOptions options)
    {
        var refKey = ReferenceKey(cells, options);
        var list = new List<XYCheckpointLikeness>();
        foreach (var g in cells.GroupBy(c => c.Cell.Checkpoint)) // first-appearance order = the plot's checkpoint order
        {
            var inst = g.Where(c => c.InstanceRow).ToList();
            var withFace = inst.Where(c => c.Score.Distance is not null).ToList();
            var ctx = g.Where(c => c.ContextRow).ToList();
            var cls = g.Where(c => !c.InstanceRow).ToList();
            list.Add(new XYCheckpointLikeness
            {
                Label = g.Key?.Label ?? "model", Checkpoint = g.Key, Baseline = IsBaseline(g.Key, cells, options),
                Distance = withFace.Count == 0 ? null : withFace.Average(c => c.Score.Distance!.Value),
                InstanceCells = inst.Count, InstanceFaces = withFace.Count, SamePerson = withFace.Count(c => c.Score.SamePerson),
                ContextDistance = Mean(ctx.Select(c => c.Score.ContextDistance)),
                BaseContextDistance = Equals(g.Key, refKey) ? null : Mean(ctx.Select(c => c.BaseContextDistance)),
                ContextCells = Equals(g.Key, refKey) ? 0 : ctx.Count(c => c.BaseContextDistance is not null && c.Score.ContextDistance is not null),
                LeakingCells = ctx.Count(c => c.Leaks),
                ClassCells = cls.Count, ClassLikePerson = cls.Count(c => c.Score.SamePerson),
            });
        }
        return (list, list.FirstOrDefault(c => Equals(c.Checkpoint, refKey)));
    }

    static double? Mean(IEnumerable<double?> values)
    {
        var v = values.Where(x => x is not null).Select(x => x!.Value).ToList();
        return v.Count == 0 ? null : v.Average();
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
        bool Leaks(XYCheckpointLikeness c) => c.LeakShare is double r && !ReferenceEquals(c, reference) && r >= options.LeakFraction;
        bool Drifts(XYCheckpointLikeness c) => c.ClassLikePerson > baseDrift;
        bool Alike(XYCheckpointLikeness c) => c.Distance < FaceDistance.Threshold && c.InstanceFaces * 2 >= c.InstanceCells;
        string Context(XYCheckpointLikeness c) => c.ContextCells > 0
            ? $"{c.LeakingCells}/{c.ContextCells} context cells closer to a training photo than to {(reference is null ? "the first column" : reference.Label)}'s picture"
            : "no context row to judge";
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
            var pick = alike.OrderBy(c => Drifts(c)).ThenBy(c => c.LeakShare ?? 0).First();
            return (pick, $"every checkpoint that looks like the person also leaks context or drifts the class; least affected: {Describe(pick)}. Consider fewer epochs, more class images or more varied instance photos");
        }
        var closest = candidates.Where(c => c.Distance is not null).MinBy(c => c.Distance!.Value);
        return (null, closest is null
            ? "no subject cell of any checkpoint shows a face: nothing to compare"
            : $"no checkpoint reaches the {thr} threshold on most subject cells (closest: {Describe(closest)}): the identity is not learned yet — train longer, or check the instance photos");
    }

    /// <summary>
    /// The plot's grid with a caption band at the bottom of each cell: the distance (✓ under 0.6) or "no face", and
    /// "leak" on context cells closer to a training photo than to the base model's picture. Subject rows: green = the person, red = not; class rows: blue = another person, orange = the
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
            string text = s.ShortText + (c.Leaks ? " · leak" : "");
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
