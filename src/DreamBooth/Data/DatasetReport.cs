using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Data;

/// <summary>
/// The result of a preparation run, for people: counts, skipped files with reasons, the bucket histogram and a
/// contact sheet. Notebook formatters (DreamBooth.Interactive) render it; the CLI prints <see cref="Summary"/>.
/// </summary>
public sealed class DatasetReport(string outputFolder, DatasetManifest manifest, int filesSeen, int reused, TimeSpan elapsed, IReadOnlyList<Bucket> buckets)
{
    public string OutputFolder { get; } = outputFolder;
    public DatasetManifest Manifest { get; } = manifest;
    /// <summary>Files found in the input folder.</summary>
    public int FilesSeen { get; } = filesSeen;
    /// <summary>Images in the dataset (prepared now or earlier).</summary>
    public int Prepared => Manifest.Items.Count;
    /// <summary>Images reused from a previous run (same content, same settings).</summary>
    public int Reused { get; } = reused;
    public int Skipped => Manifest.Skipped.Count(s => s.Code != ImageIngest.CodeDuplicate);
    public int Duplicates => Manifest.Skipped.Count(s => s.Code == ImageIngest.CodeDuplicate);
    public int WithFaces => Manifest.Items.Count(i => i.Faces.Count > 0);
    public int WithWarnings => Manifest.Items.Count(i => i.Warnings.Count > 0);
    public TimeSpan Elapsed { get; } = elapsed;
    public IReadOnlyList<Bucket> Buckets { get; } = buckets;
    public IReadOnlyList<ManifestSkip> SkippedFiles => Manifest.Skipped;

    /// <summary>Images per bucket ("768x1024" → count), every bucket listed (zeros included), in bucket order.</summary>
    public IReadOnlyDictionary<string, int> BucketHistogram
    {
        get
        {
            var h = Buckets.ToDictionary(b => b.ToString(), _ => 0);
            foreach (var i in Manifest.Items) h[i.Bucket] = h.GetValueOrDefault(i.Bucket) + 1;
            return h;
        }
    }

    /// <summary>Skip counts per reason code.</summary>
    public IReadOnlyDictionary<string, int> SkippedByCode =>
        Manifest.Skipped.GroupBy(s => s.Code).OrderBy(g => g.Key, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.Count());

    public string Summary =>
        $"{Prepared} image(s) in {OutputFolder} ({Prepared - Reused} prepared, {Reused} unchanged), {WithFaces} with faces, " +
        $"{Skipped} skipped, {Duplicates} duplicate(s), {WithWarnings} with warnings, {Elapsed.TotalSeconds:F1} s";

    /// <summary>A grid of thumbnails of the prepared images (letterboxed into square cells), in manifest order.</summary>
    public Image<Rgb24> ContactSheet(int columns = 6, int cell = 160, int max = 60)
    {
        if (columns <= 0 || cell <= 0) throw new DreamBoothException("contact sheet: columns and cell size must be positive");
        var items = Manifest.Items.Take(max).ToList();
        int rows = Math.Max(1, (items.Count + columns - 1) / columns);
        int pad = 4;
        var sheet = new Image<Rgb24>(columns * (cell + pad) + pad, rows * (cell + pad) + pad, new Rgb24(32, 32, 32));
        for (int k = 0; k < items.Count; k++)
        {
            var path = Path.Combine(OutputFolder, items[k].Output);
            if (!File.Exists(path)) continue;
            using var thumb = Image.Load<Rgb24>(path);
            thumb.Mutate(c => c.Resize(new ResizeOptions { Size = new Size(cell, cell), Mode = ResizeMode.Max, Sampler = KnownResamplers.Lanczos3 }));
            int x = pad + (k % columns) * (cell + pad) + (cell - thumb.Width) / 2;
            int y = pad + (k / columns) * (cell + pad) + (cell - thumb.Height) / 2;
            sheet.Mutate(c => c.DrawImage(thumb, new Point(x, y), 1f));
        }
        return sheet;
    }

    public override string ToString() => Summary;
}
