using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using SkiaSharp;

namespace DreamBooth.Evaluation;

/// <summary>How a labelled grid looks.</summary>
public sealed record GridStyle
{
    /// <summary>Label font size in pixels; null = A1111's (cell width + height) / 25, kept within 12..48.</summary>
    public float? FontSize { get; init; }
    /// <summary>Cells smaller than this (shorter side, pixels) are enlarged by a whole factor, nearest-neighbour, so labels stay legible next to tiny images.</summary>
    public int MinCellSize { get; init; } = 128;
    /// <summary>Pixels between cells.</summary>
    public int Gap { get; init; }
    /// <summary>At most this many lines per column header (the last one ends in "…").</summary>
    public int MaxHeaderLines { get; init; } = 6;
    public Rgb24 Background { get; init; } = new(255, 255, 255);
    public Rgb24 Foreground { get; init; } = new(0, 0, 0);

    public static GridStyle Default { get; } = new();
}

/// <summary>
/// Where everything of a labelled grid sits: an optional bold title band on top, then a band of column
/// headers, then rows of cells with their labels in a band on the left (3/4 of a cell wide, as A1111).
/// </summary>
public sealed record GridLayout
{
    public int Columns { get; init; }
    public int Rows { get; init; }
    /// <summary>Displayed cell size (source size × <see cref="Scale"/>).</summary>
    public int CellWidth { get; init; }
    public int CellHeight { get; init; }
    /// <summary>Whole-number enlargement applied to the source images.</summary>
    public int Scale { get; init; } = 1;
    public int Gap { get; init; }
    public float FontSize { get; init; }
    public int Padding { get; init; }
    public int TitleBand { get; init; }
    public int TopBand { get; init; }
    public int LeftBand { get; init; }
    public int Width { get; init; }
    public int Height { get; init; }
    public IReadOnlyList<string> TitleLines { get; init; } = [];
    public IReadOnlyList<IReadOnlyList<string>> ColumnLines { get; init; } = [];
    public IReadOnlyList<IReadOnlyList<string>> RowLines { get; init; } = [];

    public Rectangle CellRect(int column, int row) =>
        new(LeftBand + column * (CellWidth + Gap), TitleBand + TopBand + row * (CellHeight + Gap), CellWidth, CellHeight);

    public Rectangle ColumnHeaderRect(int column) => new(LeftBand + column * (CellWidth + Gap), TitleBand, CellWidth, TopBand);

    public Rectangle RowLabelRect(int row) => new(0, TitleBand + TopBand + row * (CellHeight + Gap), LeftBand, CellHeight);

    public Rectangle TitleRect => new(0, 0, Width, TitleBand);
}

/// <summary>
/// Draws labelled image grids (the x/y plot's output): column headers on top, row labels on the left,
/// long labels word-wrapped; text by SkiaSharp with DejaVu Sans, images composed with ImageSharp.
/// </summary>
public static class GridDrawer
{
    /// <summary>The layout of a grid of <paramref name="columns"/>×<paramref name="rows"/> cells of <paramref name="cellSize"/> (source pixels).</summary>
    public static GridLayout Measure(int columns, int rows, Size cellSize, IReadOnlyList<string>? columnLabels, IReadOnlyList<string>? rowLabels,
        string? title = null, GridStyle? style = null)
    {
        style ??= GridStyle.Default;
        if (columns < 1 || rows < 1) throw new ArgumentException($"a grid needs at least one cell (got {columns}×{rows})");
        if (cellSize.Width < 1 || cellSize.Height < 1) throw new ArgumentException($"cell size {cellSize} is empty");
        if (columnLabels is not null && columnLabels.Count != columns) throw new ArgumentException($"{columnLabels.Count} column labels for {columns} columns");
        if (rowLabels is not null && rowLabels.Count != rows) throw new ArgumentException($"{rowLabels.Count} row labels for {rows} rows");

        int shorter = Math.Min(cellSize.Width, cellSize.Height);
        int scale = shorter >= style.MinCellSize ? 1 : (int)Math.Ceiling(style.MinCellSize / (double)shorter);
        int cw = cellSize.Width * scale, ch = cellSize.Height * scale;
        float fontSize = style.FontSize ?? Math.Clamp((cw + ch) / 25, 12, 48);
        int pad = Math.Max(2, (int)(fontSize / 3));

        using var font = GridText.Font(fontSize);
        using var bold = GridText.Font(fontSize, bold: true);
        int lineHeight = GridText.LineHeight(font);

        var columnLines = (columnLabels ?? []).Select(l => GridText.Wrap(l, font, cw - 2 * pad, style.MaxHeaderLines)).ToList();
        int topBand = columnLabels is null ? 0 : columnLines.Max(l => l.Count) * lineHeight + 2 * pad;

        int leftBand = rowLabels is null ? 0 : Math.Max(cw * 3 / 4, (int)(fontSize * 7));
        int rowMaxLines = Math.Max(1, (ch - 2 * pad) / lineHeight);
        var rowLines = (rowLabels ?? []).Select(l => GridText.Wrap(l, font, leftBand - 2 * pad, rowMaxLines)).ToList();

        int width = leftBand + columns * cw + (columns - 1) * style.Gap;
        var titleLines = string.IsNullOrWhiteSpace(title) ? [] : GridText.Wrap(title, bold, width - 2 * pad, 4);
        int titleBand = titleLines.Count == 0 ? 0 : titleLines.Count * GridText.LineHeight(bold) + 2 * pad;

        return new GridLayout
        {
            Columns = columns, Rows = rows, CellWidth = cw, CellHeight = ch, Scale = scale, Gap = style.Gap,
            FontSize = fontSize, Padding = pad, TitleBand = titleBand, TopBand = topBand, LeftBand = leftBand,
            Width = width, Height = titleBand + topBand + rows * ch + (rows - 1) * style.Gap,
            TitleLines = titleLines, ColumnLines = columnLines, RowLines = rowLines,
        };
    }

    /// <summary>
    /// Composes <paramref name="cells"/> (row-major, columns × rows, all the size of the first; others are
    /// resized to it) under their column headers and beside their row labels.
    /// </summary>
    public static Image<Rgb24> Draw(IReadOnlyList<Image<Rgb24>> cells, int columns, IReadOnlyList<string>? columnLabels, IReadOnlyList<string>? rowLabels,
        string? title, GridStyle? style, out GridLayout layout)
    {
        style ??= GridStyle.Default;
        if (cells.Count == 0) throw new ArgumentException("no cells to draw");
        if (cells.Count % columns != 0) throw new ArgumentException($"{cells.Count} cells do not fill {columns} columns");
        int rows = cells.Count / columns;
        layout = Measure(columns, rows, cells[0].Size(), columnLabels, rowLabels, title, style);

        // Text is drawn only on the label bands (not on a canvas the size of the whole grid), then pasted.
        var grid = new Image<Rgb24>(layout.Width, layout.Height, style.Background);
        using (var font = GridText.Font(layout.FontSize))
        using (var bold = GridText.Font(layout.FontSize, bold: true))
        using (var paint = GridText.Paint(style.Foreground))
        {
            var l = layout;
            int top = l.TitleBand + l.TopBand;
            if (top > 0)
                Paste(grid, new Point(0, 0), l.Width, top, style.Background, 0, canvas =>
                {
                    if (l.TitleBand > 0) GridText.DrawCentered(canvas, l.TitleLines, bold, paint, ToSk(l.TitleRect, l.Padding));
                    for (int c = 0; c < l.ColumnLines.Count; c++)
                        GridText.DrawCentered(canvas, l.ColumnLines[c], font, paint, ToSk(l.ColumnHeaderRect(c), l.Padding));
                });
            if (l.LeftBand > 0)
                Paste(grid, new Point(0, top), l.LeftBand, l.Height - top, style.Background, top, canvas =>
                {
                    for (int r = 0; r < l.RowLines.Count; r++)
                        GridText.DrawCentered(canvas, l.RowLines[r], font, paint, ToSk(l.RowLabelRect(r), l.Padding));
                });
        }

        var size = new Size(layout.CellWidth, layout.CellHeight);
        for (int i = 0; i < cells.Count; i++)
        {
            var rect = layout.CellRect(i % columns, i / columns);
            var cell = cells[i];
            if (cell.Size() == size) grid.Mutate(x => x.DrawImage(cell, rect.Location, 1f));
            else
            {
                var sampler = cell.Width * layout.Scale == size.Width && cell.Height * layout.Scale == size.Height
                    ? KnownResamplers.NearestNeighbor : KnownResamplers.Bicubic;
                using var scaled = cell.Clone(x => x.Resize(size, sampler, compand: false));
                grid.Mutate(x => x.DrawImage(scaled, rect.Location, 1f));
            }
        }
        return grid;
    }

    public static Image<Rgb24> Draw(IReadOnlyList<Image<Rgb24>> cells, int columns, IReadOnlyList<string>? columnLabels, IReadOnlyList<string>? rowLabels,
        string? title = null, GridStyle? style = null) => Draw(cells, columns, columnLabels, rowLabels, title, style, out _);

    /// <summary>
    /// <paramref name="image"/> under a caption band: <paramref name="title"/> in bold, then <paramref name="details"/>, both
    /// word-wrapped to the image's width (at least 320 px wide; a narrower image is centred).
    /// </summary>
    public static Image<Rgb24> Caption(Image<Rgb24> image, string title, string? details = null, GridStyle? style = null)
    {
        style ??= GridStyle.Default;
        const int pad = 8;
        int width = Math.Max(320, image.Width);
        using var titleFont = GridText.Font(style.FontSize ?? 15, bold: true);
        using var font = GridText.Font(Math.Max(10, (style.FontSize ?? 15) - 2));
        var titleLines = GridText.Wrap(title, titleFont, width - 2 * pad, maxLines: 3);
        var detailLines = string.IsNullOrWhiteSpace(details) ? [] : GridText.Wrap(details, font, width - 2 * pad, maxLines: 6);
        int band = pad + titleLines.Count * GridText.LineHeight(titleFont) + detailLines.Count * GridText.LineHeight(font) + pad;
        var result = new Image<Rgb24>(width, band + image.Height, style.Background);
        using (var bitmap = GridText.NewCanvas(width, band, style.Background, out var canvas))
        {
            using (canvas)
            using (var paint = GridText.Paint(style.Foreground))
            {
                float y = pad;
                foreach (var (lines, f) in new[] { (titleLines, titleFont), (detailLines, font) })
                    foreach (var line in lines)
                    {
                        canvas.DrawText(line, pad, y - f.Metrics.Ascent, SKTextAlign.Left, f, paint);
                        y += GridText.LineHeight(f);
                    }
                canvas.Flush();
            }
            using var text = GridText.ToImage(bitmap);
            result.Mutate(x => x.DrawImage(text, new Point(0, 0), 1f));
        }
        result.Mutate(x => x.DrawImage(image, new Point((width - image.Width) / 2, band), 1f));
        return result;
    }

    /// <summary>Draws on a <paramref name="width"/>×<paramref name="height"/> canvas whose origin is grid row <paramref name="offsetY"/>, then pastes it at <paramref name="at"/>.</summary>
    static void Paste(Image<Rgb24> grid, Point at, int width, int height, Rgb24 background, int offsetY, Action<SKCanvas> draw)
    {
        using var bitmap = GridText.NewCanvas(width, height, background, out var canvas);
        using (canvas)
        {
            canvas.Translate(0, -offsetY);
            draw(canvas);
            canvas.Flush();
        }
        using var band = GridText.ToImage(bitmap);
        grid.Mutate(x => x.DrawImage(band, at, 1f));
    }

    static SKRect ToSk(Rectangle r, int pad) => new(r.Left + pad, r.Top + pad, r.Right - pad, r.Bottom - pad);
}
