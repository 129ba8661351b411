using System.Globalization;
using DreamBooth.Pipelines;
using DreamBooth.Schedulers;

namespace DreamBooth.Evaluation;

/// <summary>
/// What an x/y plot renders: X values in columns, Y values in rows (Y optional), and the fixed
/// generation settings every cell shares unless an axis varies them. One seed for the whole grid
/// unless the seed is an axis (A1111's behaviour), so differences between cells come from the axes only.
/// </summary>
public sealed record XYPlotSpec
{
    public required XYAxis X { get; init; }
    /// <summary>Rows; null for a single row.</summary>
    public XYAxis? Y { get; init; }
    public string Prompt { get; init; } = "";
    public string NegativePrompt { get; init; } = "";
    public double Cfg { get; init; } = 7.5;
    /// <summary>The seed of every cell (−1: one random seed chosen for the whole grid by <see cref="Resolve"/>).</summary>
    public long Seed { get; init; } = -1;
    public int Steps { get; init; } = 20;
    public string Sampler { get; init; } = "DPM++ 2M Karras";
    /// <summary>Image size; null = the model's native size (chosen by the renderer).</summary>
    public int? Width { get; init; }
    public int? Height { get; init; }
    public int ClipSkip { get; init; } = 1;
    /// <summary>The model of every cell when the checkpoint is not an axis (may be null for renderers that need none).</summary>
    public XYCheckpoint? Checkpoint { get; init; }

    /// <summary>The largest grid allowed (a guard against an accidental 64×64 plot).</summary>
    public const int MaxCells = 400;

    IEnumerable<XYAxis> Axes => Y is null ? [X] : [X, Y];

    /// <summary>Checks the spec; returns it with a random seed drawn when <see cref="Seed"/> is −1.</summary>
    public XYPlotSpec Resolve(Random? rng = null)
    {
        if (Y is not null && Y.Kind == X.Kind)
            throw new DreamBoothException($"x/y plot: X and Y are both {X.Name()}: choose two different axes");
        int cells = X.Count * (Y?.Count ?? 1);
        if (cells > MaxCells)
            throw new DreamBoothException($"x/y plot: {X.Count}×{Y?.Count ?? 1} = {cells} cells, at most {MaxCells} allowed");
        if (!double.IsFinite(Cfg) || Cfg < 0) throw new DreamBoothException($"x/y plot: cfg {Cfg} must be ≥ 0");
        if (Steps is < 1 or > 1000) throw new DreamBoothException($"x/y plot: steps {Steps} must be 1..1000");
        if (ClipSkip is < 1 or > 12) throw new DreamBoothException($"x/y plot: clip skip {ClipSkip} must be 1..12");
        if (Width is int w && (w < 8 || w % 8 != 0)) throw new DreamBoothException($"x/y plot: width {w} must be a positive multiple of 8");
        if (Height is int h && (h < 8 || h % 8 != 0)) throw new DreamBoothException($"x/y plot: height {h} must be a positive multiple of 8");
        string sampler = SamplerFactory.Canonical(Sampler);
        if (Seed < -1) throw new DreamBoothException($"x/y plot: seed {Seed} must be ≥ 0 (or −1 for random)");
        if (Axes.Any(a => a.Kind == XYAxisKind.Checkpoint) && Checkpoint is not null)
            throw new DreamBoothException("x/y plot: the checkpoint is an axis, so no fixed checkpoint may be given as well");
        foreach (var a in Axes.Where(a => a.Kind == XYAxisKind.Prompt))
        {
            var search = (string)a.Values[0];
            if (!Prompt.Contains(search, StringComparison.Ordinal) && !NegativePrompt.Contains(search, StringComparison.Ordinal))
                throw new DreamBoothException($"Prompt S/R: the search string '{search}' (the first value) is not in the prompt or the negative prompt");
        }
        foreach (var a in Axes.Where(a => a.Kind == XYAxisKind.Seed))
            foreach (long s in a.Values.Cast<long>())
                if (s < 0) throw new DreamBoothException($"Seed axis: {s} must be ≥ 0 (a random seed per cell would make the grid unrepeatable)");
        var resolved = this with { Sampler = sampler };
        if (Seed >= 0) return resolved;
        var r = rng ?? Random.Shared;
        return resolved with { Seed = r.NextInt64(0, GenerationRequest.MaxRandomSeed + 1) };
    }

    /// <summary>
    /// The cells in render order. The checkpoint axis is the outer loop (each model loads once); otherwise
    /// rows then columns. Prompt S/R replaces the search string in both prompts.
    /// </summary>
    public IReadOnlyList<CellRequest> Plan()
    {
        int cols = X.Count, rows = Y?.Count ?? 1;
        bool columnsOuter = X.Kind == XYAxisKind.Checkpoint;
        var cells = new List<CellRequest>(cols * rows);
        int outerCount = columnsOuter ? cols : rows, innerCount = columnsOuter ? rows : cols;
        for (int o = 0; o < outerCount; o++)
            for (int i = 0; i < innerCount; i++)
            {
                int c = columnsOuter ? o : i, r = columnsOuter ? i : o;
                cells.Add(Cell(cells.Count, c, r));
            }
        return cells;
    }

    CellRequest Cell(int index, int column, int row)
    {
        var cell = new CellRequest
        {
            Index = index, Column = column, Row = row,
            Checkpoint = Checkpoint, Prompt = Prompt, NegativePrompt = NegativePrompt, Cfg = Cfg, Seed = Seed,
            Steps = Steps, Sampler = Sampler, Width = Width, Height = Height, ClipSkip = ClipSkip,
            XLabel = X.Label(column), YLabel = Y?.Label(row),
        };
        cell = Apply(cell, X, column);
        return Y is null ? cell : Apply(cell, Y, row);
    }

    static CellRequest Apply(CellRequest cell, XYAxis axis, int index) => axis.Values[index] switch
    {
        XYCheckpoint c => cell with { Checkpoint = c },
        string s when axis.Kind == XYAxisKind.Prompt => cell with
        {
            Prompt = cell.Prompt.Replace((string)axis.Values[0], s, StringComparison.Ordinal),
            NegativePrompt = cell.NegativePrompt.Replace((string)axis.Values[0], s, StringComparison.Ordinal),
        },
        string s => cell with { Sampler = s },
        double d => cell with { Cfg = d },
        long seed => cell with { Seed = seed },
        int steps => cell with { Steps = steps },
        var v => throw new InvalidOperationException($"unexpected axis value {v}"),
    };

    /// <summary>A one-line summary of what the grid holds fixed (the grid title).</summary>
    public string FixedSummary()
    {
        var kinds = Axes.Select(a => a.Kind).ToHashSet();
        var parts = new List<string>();
        if (!kinds.Contains(XYAxisKind.Checkpoint) && Checkpoint is not null) parts.Add(Checkpoint.Label);
        if (!kinds.Contains(XYAxisKind.Seed)) parts.Add($"seed {Seed}");
        if (!kinds.Contains(XYAxisKind.Cfg)) parts.Add($"CFG {XYAxis.Format(Cfg)}");
        if (!kinds.Contains(XYAxisKind.Steps)) parts.Add($"{Steps} steps");
        if (!kinds.Contains(XYAxisKind.Sampler)) parts.Add(Sampler);
        if (ClipSkip != 1) parts.Add($"clip skip {ClipSkip}");
        return string.Join(" · ", parts);
    }
}

/// <summary>One cell of an x/y plot: where it sits and the complete settings it is rendered with.</summary>
public sealed record CellRequest
{
    /// <summary>Position in render order.</summary>
    public int Index { get; init; }
    public int Column { get; init; }
    public int Row { get; init; }
    public XYCheckpoint? Checkpoint { get; init; }
    public string Prompt { get; init; } = "";
    public string NegativePrompt { get; init; } = "";
    public double Cfg { get; init; }
    public long Seed { get; init; }
    public int Steps { get; init; }
    public string Sampler { get; init; } = "";
    public int? Width { get; init; }
    public int? Height { get; init; }
    public int ClipSkip { get; init; } = 1;
    public string XLabel { get; init; } = "";
    public string? YLabel { get; init; }

    /// <summary>All settings on one line (tooltips, logs).</summary>
    public string Describe() =>
        string.Join(", ", new[]
        {
            Checkpoint is null ? null : $"{Checkpoint.Label} ({System.IO.Path.GetFileName(Checkpoint.Path)})",
            $"prompt: {Prompt}",
            NegativePrompt.Length > 0 ? $"negative: {NegativePrompt}" : null,
            $"steps: {Steps}", $"sampler: {Sampler}", $"CFG: {XYAxis.Format(Cfg)}",
            $"seed: {Seed.ToString(CultureInfo.InvariantCulture)}",
            ClipSkip != 1 ? $"clip skip: {ClipSkip}" : null,
        }.Where(s => s is not null));
}
