using DreamBooth.Evaluation;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Evaluation;

public class GridDrawerTests
{
    static readonly Rgb24 White = new(255, 255, 255);

    static Rgb24 ColorOf(int column, int row) => new((byte)(40 + column * 80), (byte)(30 + row * 100), 90);

    static List<Image<Rgb24>> SolidCells(int columns, int rows, int w, int h) =>
        Enumerable.Range(0, columns * rows).Select(i => new Image<Rgb24>(w, h, ColorOf(i % columns, i / columns))).ToList();

    static int CountNot(Image<Rgb24> image, Rectangle r, Rgb24 background)
    {
        int n = 0;
        for (int y = r.Top; y < r.Bottom; y++)
            for (int x = r.Left; x < r.Right; x++)
                if (!image[x, y].Equals(background)) n++;
        return n;
    }

    static bool AllEqual(Image<Rgb24> image, Rectangle r, Rgb24 color)
    {
        for (int y = r.Top; y < r.Bottom; y++)
            for (int x = r.Left; x < r.Right; x++)
                if (!image[x, y].Equals(color)) return false;
        return true;
    }

    [Fact]
    public void Cells_land_in_their_rectangles_under_headers_and_beside_row_labels()
    {
        var style = new GridStyle { FontSize = 14, MinCellSize = 1 };
        var cells = SolidCells(3, 2, 64, 48);
        using var grid = GridDrawer.Draw(cells, 3, ["CFG: 3", "CFG: 7", "CFG: 12"], ["epoch 10", "epoch 20"], null, style, out var layout);

        Assert.Equal(1, layout.Scale);
        Assert.Equal(0, layout.TitleBand);
        Assert.Equal(Math.Max(64 * 3 / 4, 14 * 7), layout.LeftBand);
        Assert.True(layout.TopBand >= 14 && layout.TopBand < 40, $"top band {layout.TopBand}");
        Assert.Equal(layout.LeftBand + 3 * 64, grid.Width);
        Assert.Equal(layout.TopBand + 2 * 48, grid.Height);
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 3; c++)
            {
                var rect = layout.CellRect(c, r);
                Assert.Equal(new Rectangle(layout.LeftBand + c * 64, layout.TopBand + r * 48, 64, 48), rect);
                Assert.True(AllEqual(grid, rect, ColorOf(c, r)), $"cell {c},{r} is not solid {ColorOf(c, r)}");
            }
        // text really drawn in every header and row label, and nothing drawn outside the cells in the corner
        for (int c = 0; c < 3; c++) Assert.True(CountNot(grid, layout.ColumnHeaderRect(c), White) > 20, $"no text in header {c}");
        for (int r = 0; r < 2; r++) Assert.True(CountNot(grid, layout.RowLabelRect(r), White) > 20, $"no text in row label {r}");
        Assert.Equal(0, CountNot(grid, new Rectangle(0, 0, layout.LeftBand, layout.TopBand), White));
        foreach (var c in cells) c.Dispose();
    }

    [Fact]
    public void Long_labels_wrap_and_grow_the_header_band_within_the_cell_width()
    {
        var style = new GridStyle { FontSize = 14, MinCellSize = 1 };
        var shortLayout = GridDrawer.Measure(2, 1, new Size(96, 96), ["a", "b"], null, null, style);
        var longLayout = GridDrawer.Measure(2, 1, new Size(96, 96), ["prompt: a photo of sks man standing in a sunny park", "b"], null, null, style);
        Assert.Single(shortLayout.ColumnLines[0]);
        Assert.True(longLayout.ColumnLines[0].Count >= 3, string.Join("|", longLayout.ColumnLines[0]));
        Assert.True(longLayout.TopBand > shortLayout.TopBand * 2);
        using var font = GridText.Font(14);
        Assert.All(longLayout.ColumnLines[0], line => Assert.True(font.MeasureText(line) <= 96 - 2 * longLayout.Padding, line));
        Assert.Equal("prompt: a photo of sks man standing in a sunny park", string.Join(" ", longLayout.ColumnLines[0]));
        Assert.Equal(0, shortLayout.LeftBand);
    }

    [Fact]
    public void Wrap_breaks_overlong_words_and_ellipsizes_past_max_lines()
    {
        using var font = GridText.Font(14);
        var lines = GridText.Wrap("sks_0000000000000000000000000000000001.safetensors", font, 60);
        Assert.True(lines.Count > 2);
        Assert.Equal("sks_0000000000000000000000000000000001.safetensors", string.Concat(lines));
        var capped = GridText.Wrap("one two three four five six seven eight nine ten", font, 50, maxLines: 2);
        Assert.Equal(2, capped.Count);
        Assert.EndsWith("…", capped[1]);
    }

    [Fact]
    public void Tiny_cells_are_enlarged_nearest_neighbour_so_labels_stay_legible()
    {
        using var cell = new Image<Rgb24>(16, 16, new Rgb24(0, 0, 255));
        for (int y = 0; y < 16; y++) for (int x = 0; x < 8; x++) cell[x, y] = new Rgb24(255, 0, 0);
        using var grid = GridDrawer.Draw([cell], 1, ["epoch 1"], ["seed: 1"], "fixed title", null, out var layout);
        Assert.Equal(8, layout.Scale);
        var rect = layout.CellRect(0, 0);
        Assert.Equal(128, rect.Width);
        Assert.True(layout.TitleBand > 0);
        Assert.True(AllEqual(grid, new Rectangle(rect.X, rect.Y, 64, 128), new Rgb24(255, 0, 0)));
        Assert.True(AllEqual(grid, new Rectangle(rect.X + 64, rect.Y, 64, 128), new Rgb24(0, 0, 255)));
        Assert.True(CountNot(grid, layout.TitleRect, White) > 20, "title not drawn");
    }

    [Fact]
    public void Image_grid_fits_pictures_into_tiles_with_captions()
    {
        using var wide = new Image<Rgb24>(200, 100, new Rgb24(255, 0, 0));
        using var tall = new Image<Rgb24>(50, 100, new Rgb24(0, 255, 0));
        using var square = new Image<Rgb24>(64, 64, new Rgb24(0, 0, 255));
        var sheet = new ImageGrid([new(wide, "wide.jpg"), new(tall, "tall.jpg"), new(square, null)], columns: 2, tileSize: 100);
        using var img = sheet.Render();
        Assert.Equal(2, sheet.Rows);
        var t0 = sheet.TileRect(0);
        var t1 = sheet.TileRect(1);
        var t2 = sheet.TileRect(2);
        Assert.Equal(2 * 100 + 4, img.Width);
        // wide: 100x50 centred vertically; tall: 50x100 centred horizontally; square upscaled to 100x100
        Assert.True(AllEqual(img, new Rectangle(t0.X, t0.Y + 26, 100, 48), new Rgb24(255, 0, 0)));
        Assert.Equal(White, img[t0.X + 50, t0.Y + 10]);
        Assert.True(AllEqual(img, new Rectangle(t1.X + 26, t1.Y, 48, 100), new Rgb24(0, 255, 0)));
        Assert.Equal(White, img[t1.X + 10, t1.Y + 50]);
        Assert.True(AllEqual(img, new Rectangle(t2.X + 2, t2.Y + 2, 96, 96), new Rgb24(0, 0, 255)));
        // captions under the first two tiles, none under the third
        int band = t2.Top - t0.Bottom - 4;
        Assert.True(band > 10);
        Assert.Equal(t2.Bottom + band, img.Height);
        Assert.True(CountNot(img, new Rectangle(t0.X, t0.Bottom, 100, band), White) > 20);
        Assert.True(CountNot(img, new Rectangle(t1.X, t1.Bottom, 100, band), White) > 20);
        Assert.Equal(0, CountNot(img, new Rectangle(t2.X, t2.Bottom, 100, img.Height - t2.Bottom), White));
    }

    [Fact]
    public void Xy_grid_labels_show_axis_names_and_epochs()
    {
        var spec = new XYPlotSpec
        {
            X = XYAxis.Checkpoints([new XYCheckpoint("/r/sks_0005.safetensors", "sks", 5), new XYCheckpoint("/r/sks_0010.safetensors", "sks", 10)]),
            Y = XYAxis.Cfg([3, 7.5]), Seed = 42,
        };
        using var result = XYPlotEngine.Run(spec, (cell, _) => new Image<Rgb24>(32, 32, ColorOf(cell.Column, cell.Row)));
        Assert.Equal(["epoch 5", "epoch 10"], result.Layout.ColumnLines.Select(l => string.Join(" ", l)));
        Assert.Equal(["CFG: 3", "CFG: 7.5"], result.Layout.RowLines.Select(l => string.Join(" ", l)));
        Assert.Equal(["seed 42 · 20 steps · DPM++ 2M Karras"], result.Layout.TitleLines);
        for (int r = 0; r < 2; r++)
            for (int c = 0; c < 2; c++)
                Assert.True(AllEqual(result.Grid, result.Layout.CellRect(c, r), ColorOf(c, r)));
    }
}
