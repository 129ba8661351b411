using System.Diagnostics;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Evaluation;

/// <summary>
/// Renders x/y plot cells. The engine calls <see cref="LoadCheckpoint"/> whenever the model changes (once per
/// checkpoint, since the checkpoint axis is the outer loop), then <see cref="Render"/> for each of its cells.
/// </summary>
public interface ICellRenderer
{
    /// <summary>Makes <paramref name="checkpoint"/> the current model (null: the spec names none; the renderer uses its own).</summary>
    void LoadCheckpoint(XYCheckpoint? checkpoint, CancellationToken cancellationToken);

    /// <summary>The image of one cell, rendered with the current model.</summary>
    Image<Rgb24> Render(CellRequest cell, CancellationToken cancellationToken);
}

/// <summary>An <see cref="ICellRenderer"/> from delegates (tests, custom pipelines, notebooks).</summary>
public sealed class DelegateCellRenderer(Func<CellRequest, CancellationToken, Image<Rgb24>> render, Action<XYCheckpoint?>? load = null) : ICellRenderer
{
    public void LoadCheckpoint(XYCheckpoint? checkpoint, CancellationToken cancellationToken) => load?.Invoke(checkpoint);
    public Image<Rgb24> Render(CellRequest cell, CancellationToken cancellationToken) => render(cell, cancellationToken);
}

public enum XYPlotPhase { LoadingCheckpoint, RenderingCell, CellDone, Composing }

/// <summary>Progress of an x/y plot: <paramref name="Done"/> of <paramref name="Total"/> cells finished.</summary>
public sealed record XYPlotProgress(XYPlotPhase Phase, int Done, int Total, CellRequest? Cell, TimeSpan Elapsed)
{
    /// <summary>Estimated time left from the mean time per finished cell.</summary>
    public TimeSpan? Remaining => Done == 0 ? null : TimeSpan.FromTicks(Elapsed.Ticks / Done * (Total - Done));

    public override string ToString() => Phase switch
    {
        XYPlotPhase.LoadingCheckpoint => $"[{Done}/{Total}] loading {Cell?.Checkpoint?.Label ?? "model"}",
        XYPlotPhase.RenderingCell => $"[{Done}/{Total}] rendering {Cell?.XLabel}{(Cell?.YLabel is null ? "" : " × " + Cell.YLabel)}",
        XYPlotPhase.CellDone => $"[{Done}/{Total}] done {Cell?.XLabel}{(Cell?.YLabel is null ? "" : " × " + Cell.YLabel)}" +
                                (Remaining is TimeSpan r ? $", ~{r.TotalSeconds:0}s left" : ""),
        _ => $"[{Done}/{Total}] composing the grid",
    };
}

/// <summary>
/// Runs an x/y plot: plans the cells (checkpoint axis outermost, so each model loads once), renders each
/// through an <see cref="ICellRenderer"/>, reports progress, honours cancellation, and composes the labelled grid.
/// </summary>
public static class XYPlotEngine
{
    public static XYPlotResult Run(XYPlotSpec spec, ICellRenderer renderer, IProgress<XYPlotProgress>? progress = null,
        CancellationToken cancellationToken = default, GridStyle? style = null)
    {
        spec = spec.Resolve();
        var plan = spec.Plan();
        var images = new Image<Rgb24>?[plan.Count];
        var clock = Stopwatch.StartNew();
        int loads = 0;
        try
        {
            XYCheckpoint? current = null;
            bool loaded = false;
            for (int i = 0; i < plan.Count; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var cell = plan[i];
                if (!loaded || !Equals(cell.Checkpoint, current))
                {
                    progress?.Report(new XYPlotProgress(XYPlotPhase.LoadingCheckpoint, i, plan.Count, cell, clock.Elapsed));
                    renderer.LoadCheckpoint(cell.Checkpoint, cancellationToken);
                    current = cell.Checkpoint;
                    loaded = true;
                    loads++;
                }
                progress?.Report(new XYPlotProgress(XYPlotPhase.RenderingCell, i, plan.Count, cell, clock.Elapsed));
                var image = renderer.Render(cell, cancellationToken)
                            ?? throw new InvalidOperationException($"the cell renderer returned no image for cell {cell.Index}");
                images[cell.Row * spec.X.Count + cell.Column] = image;
                progress?.Report(new XYPlotProgress(XYPlotPhase.CellDone, i + 1, plan.Count, cell, clock.Elapsed));
            }
            cancellationToken.ThrowIfCancellationRequested();
            progress?.Report(new XYPlotProgress(XYPlotPhase.Composing, plan.Count, plan.Count, null, clock.Elapsed));
            var ordered = images.Select(im => im!).ToList();
            var columnLabels = Enumerable.Range(0, spec.X.Count).Select(spec.X.Label).ToList();
            var rowLabels = spec.Y is null ? null : Enumerable.Range(0, spec.Y.Count).Select(spec.Y.Label).ToList();
            var grid = GridDrawer.Draw(ordered, spec.X.Count, columnLabels, rowLabels, spec.FixedSummary(), style, out var layout);
            var cells = plan.OrderBy(c => c.Row).ThenBy(c => c.Column)
                .Select(c => new XYPlotCell(c, images[c.Row * spec.X.Count + c.Column]!)).ToList();
            return new XYPlotResult(spec, grid, layout, cells, loads, clock.Elapsed);
        }
        catch
        {
            foreach (var im in images) im?.Dispose();
            throw;
        }
    }

    public static XYPlotResult Run(XYPlotSpec spec, Func<CellRequest, CancellationToken, Image<Rgb24>> render,
        IProgress<XYPlotProgress>? progress = null, CancellationToken cancellationToken = default, GridStyle? style = null) =>
        Run(spec, new DelegateCellRenderer(render), progress, cancellationToken, style);
}
