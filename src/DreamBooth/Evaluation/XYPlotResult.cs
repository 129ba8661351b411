using System.Globalization;
using System.Text;
using DreamBooth.IO;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;
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
            var sb = new StringBuilder(first.Prompt);
            if (first.NegativePrompt.Length > 0) sb.Append("\nNegative prompt: ").Append(first.NegativePrompt);
            var p = new List<string>
            {
                $"Steps: {first.Steps}", $"Sampler: {first.Sampler}", $"CFG scale: {XYAxis.Format(first.Cfg)}",
                $"Seed: {first.Seed.ToString(CultureInfo.InvariantCulture)}",
                $"Size: {Cells[0].Image.Width}x{Cells[0].Image.Height}",
            };
            if (first.Checkpoint is not null) p.Add($"Model: {System.IO.Path.GetFileNameWithoutExtension(first.Checkpoint.Path)}");
            if (first.ClipSkip != 1) p.Add($"Clip skip: {first.ClipSkip}");
            p.Add($"X Type: {A1111TypeName(Spec.X.Kind)}");
            p.Add($"X Values: {Quote(Spec.X.RawValues())}");
            if (Spec.Y is not null)
            {
                p.Add($"Y Type: {A1111TypeName(Spec.Y.Kind)}");
                p.Add($"Y Values: {Quote(Spec.Y.RawValues())}");
            }
            return sb.Append('\n').Append(string.Join(", ", p)).ToString();
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

    static string Quote(string v) => "\"" + v.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";

    /// <summary>Saves the grid as PNG (atomically) with the infotext in a <c>parameters</c> text chunk; returns the full path.</summary>
    public string Save(string path)
    {
        if (!path.EndsWith(".png", StringComparison.OrdinalIgnoreCase))
            throw new DreamBoothException($"x/y plot output '{path}' must be a .png file");
        var full = System.IO.Path.GetFullPath(path);
        var infotext = Infotext;
        using var copy = Grid.Clone();
        var meta = copy.Metadata.GetPngMetadata();
        meta.TextData.Clear();
        meta.TextData.Add(new PngTextData("parameters", infotext, "", ""));
        AtomicFile.Write(full, s => copy.SaveAsPng(s, new PngEncoder { TextCompressionThreshold = int.MaxValue }));
        Path = full;
        return full;
    }

    /// <summary>Reads the <c>parameters</c> text chunk of a PNG (null when absent).</summary>
    public static string? ReadInfotext(string pngPath)
    {
        var info = Image.Identify(pngPath) ?? throw new DreamBoothException($"'{pngPath}' is not an image");
        return info.Metadata.GetPngMetadata().TextData.FirstOrDefault(t => t.Keyword == "parameters").Value;
    }

    public void Dispose()
    {
        Grid.Dispose();
        foreach (var c in Cells) c.Image.Dispose();
    }
}
