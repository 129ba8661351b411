using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using SkiaSharp;

namespace DreamBooth.Evaluation;

/// <summary>One picture of a contact sheet and the caption printed under it.</summary>
public sealed record ImageGridItem(Image Image, string? Caption = null);

/// <summary>
/// A contact sheet: pictures of any size fitted into equal square tiles (aspect kept, centred), in rows of
/// <see cref="Columns"/>, each with a wrapped caption underneath. Used for datasets, class images and
/// sample previews; the notebook shows it inline.
/// </summary>
public sealed class ImageGrid
{
    public IReadOnlyList<ImageGridItem> Items { get; }
    public int Columns { get; }
    /// <summary>Side of each square tile in pixels.</summary>
    public int TileSize { get; }
    public int CaptionLines { get; }
    public GridStyle Style { get; }
    public string? Title { get; }

    public ImageGrid(IEnumerable<ImageGridItem> items, int? columns = null, int tileSize = 192, int captionLines = 2, string? title = null, GridStyle? style = null)
    {
        Items = items.ToList();
        if (Items.Count == 0) throw new ArgumentException("an image grid needs at least one image");
        if (tileSize < 8) throw new ArgumentOutOfRangeException(nameof(tileSize), "tiles must be at least 8 pixels");
        Columns = Math.Clamp(columns ?? (int)Math.Ceiling(Math.Sqrt(Items.Count)), 1, Items.Count);
        TileSize = tileSize;
        CaptionLines = Math.Max(0, captionLines);
        Title = title;
        Style = style ?? new GridStyle { Gap = 4 };
    }

    public int Rows => (Items.Count + Columns - 1) / Columns;

    /// <summary>Caption font size: small next to the tile (1/12 of it, 10..20 px) unless the style sets one.</summary>
    public float FontSize => Style.FontSize ?? Math.Clamp(TileSize / 12, 10, 20);

    int Padding => Math.Max(2, (int)(FontSize / 3));

    int CaptionBand(SKFont font) =>
        CaptionLines == 0 || Items.All(i => string.IsNullOrEmpty(i.Caption)) ? 0 : CaptionLines * GridText.LineHeight(font) + Padding;

    /// <summary>Where tile <paramref name="index"/> lies in the rendered sheet.</summary>
    public Rectangle TileRect(int index)
    {
        using var font = GridText.Font(FontSize);
        return TileRect(index, CaptionBand(font), TitleBand());
    }

    Rectangle TileRect(int index, int captionBand, int titleBand)
    {
        int c = index % Columns, r = index / Columns;
        return new Rectangle(c * (TileSize + Style.Gap), titleBand + r * (TileSize + captionBand + Style.Gap), TileSize, TileSize);
    }

    int TitleBand()
    {
        if (string.IsNullOrWhiteSpace(Title)) return 0;
        using var bold = GridText.Font(FontSize, bold: true);
        return GridText.Wrap(Title, bold, SheetWidth - 2 * Padding, 3).Count * GridText.LineHeight(bold) + 2 * Padding;
    }

    int SheetWidth => Columns * TileSize + (Columns - 1) * Style.Gap;

    /// <summary>Draws the sheet.</summary>
    public Image<Rgb24> Render()
    {
        using var font = GridText.Font(FontSize);
        using var bold = GridText.Font(FontSize, bold: true);
        int captionBand = CaptionBand(font), titleBand = TitleBand();
        int width = SheetWidth;
        int height = titleBand + Rows * (TileSize + captionBand) + (Rows - 1) * Style.Gap;

        Image<Rgb24> sheet;
        using (var bitmap = GridText.NewCanvas(width, height, Style.Background, out var canvas))
        using (canvas)
        using (var paint = GridText.Paint(Style.Foreground))
        {
            if (titleBand > 0)
                GridText.DrawCentered(canvas, GridText.Wrap(Title!, bold, width - 2 * Padding, 3), bold, paint,
                    new SKRect(Padding, Padding, width - Padding, titleBand - Padding));
            for (int i = 0; i < Items.Count; i++)
            {
                if (captionBand == 0 || string.IsNullOrEmpty(Items[i].Caption)) continue;
                var tile = TileRect(i, captionBand, titleBand);
                var lines = GridText.Wrap(Items[i].Caption!, font, TileSize - 2, CaptionLines);
                GridText.DrawCentered(canvas, lines, font, paint, new SKRect(tile.Left + 1, tile.Bottom + Padding / 2f, tile.Right - 1, tile.Bottom + captionBand));
            }
            canvas.Flush();
            sheet = GridText.ToImage(bitmap);
        }

        for (int i = 0; i < Items.Count; i++)
        {
            var tile = TileRect(i, captionBand, titleBand);
            using var thumb = Items[i].Image.CloneAs<Rgb24>();
            thumb.Mutate(x => x.Resize(new ResizeOptions { Size = new Size(TileSize, TileSize), Mode = ResizeMode.Max, Sampler = KnownResamplers.Bicubic }));
            var at = new Point(tile.X + (TileSize - thumb.Width) / 2, tile.Y + (TileSize - thumb.Height) / 2);
            sheet.Mutate(x => x.DrawImage(thumb, at, 1f));
        }
        return sheet;
    }
}
