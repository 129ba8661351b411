using DreamBooth.Pipelines;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Evaluation;

/// <summary>One rendered cell: its settings and its image (source size, before any grid enlargement).</summary>
public sealed record XYPlotCell(CellRequest Request, Image<Rgb24> Image);

/// <summary>
/// A finished x/y plot: the labelled grid, every cell with the settings it was rendered with, the layout
/// (where each cell and label sits in the grid) and, once saved, the PNG's path.
/// </summary>
public sealed class XYPlotResult : IDisposable
{
    public XYPlotSpec Spec { get; }
    public Image<Rgb24> Grid { get; }
    public GridLayout Layout { get; }
    /// <summary>Cells in row-major order (row 0 left to right, then row 1…).</summary>
    public IReadOnlyList<XYPlotCell> Cells { get; }
    /// <summary>How many times a model was loaded (one per checkpoint when the checkpoint is an axis).</summary>
    public int CheckpointLoads { get; }
    public TimeSpan Elapsed { get; }
    /// <summary>Where <see cref="Save"/> wrote the grid; null before.</summary>
    public string? Path { get; private set; }

    public XYPlotResult(XYPlotSpec spec, Image<Rgb24> grid, GridLayout layout, IReadOnlyList<XYPlotCell> cells, int checkpointLoads, TimeSpan elapsed)
    {
        Spec = spec;
        Grid = grid;
        Layout = layout;
        Cells = cells;
        CheckpointLoads = checkpointLoads;
        Elapsed = elapsed;
    }

    public XYPlotCell this[int column, int row] => Cells[row * Spec.X.Count + column];

    /// <summary>
    /// A1111-style infotext of the grid: the first cell's generation parameters followed by
    /// "X Type: …, X Values: …, Y Type: …, Y Values: …" describing the axes.
    /// </summary>
    public string Infotext
    {
        get
        {
            var first = Cells[0].Request;
            var extra = new List<KeyValuePair<string, string>>
            {
                new("X Type", A1111TypeName(Spec.X.Kind)),
                new("X Values", Spec.X.RawValues()),
            };
            if (Spec.Y is not null)
            {
                extra.Add(new("Y Type", A1111TypeName(Spec.Y.Kind)));
                extra.Add(new("Y Values", Spec.Y.RawValues()));
            }
            return new GenerationInfo
            {
                Prompt = first.Prompt, NegativePrompt = first.NegativePrompt, Steps = first.Steps, Sampler = first.Sampler,
                CfgScale = first.Cfg, Seed = first.Seed, Width = Cells[0].Image.Width, Height = Cells[0].Image.Height,
                ModelName = first.Checkpoint is null ? null : System.IO.Path.GetFileNameWithoutExtension(first.Checkpoint.Path),
                ClipSkip = first.ClipSkip, Extra = extra,
            }.ToInfotext();
        }
    }

    /// <summary>A1111's X/Y/Z type names (what its infotext parser expects).</summary>
    public static string A1111TypeName(XYAxisKind kind) => kind switch
    {
        XYAxisKind.Checkpoint => "Checkpoint name",
        XYAxisKind.Prompt => "Prompt S/R",
        XYAxisKind.Cfg => "CFG Scale",
        XYAxisKind.Seed => "Seed",
        XYAxisKind.Steps => "Steps",
        XYAxisKind.Sampler => "Sampler",
        _ => kind.ToString(),
    };

    /// <summary>Saves the grid as PNG (atomically) with the infotext in a <c>parameters</c> text chunk; returns the full path.</summary>
    public string Save(string path)
    {
        if (!path.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
            throw new DreamBoothException($"x/y plot output '{path}': the grid is written as PNG, give a .png path");
        var full = System.IO.Path.GetFullPath(path);
        using var copy = Grid.Clone();
        PngInfotext.Save(copy, full, Infotext);
        Path = full;
        return full;
    }

    public void Dispose()
    {
        Grid.Dispose();
        foreach (var c in Cells) c.Image.Dispose();
    }
}
