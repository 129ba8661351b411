using System.Security.Cryptography;
using System.Text;
using DreamBooth.Data;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Formats.Png;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Data;

public class DatasetPreparerTests(DetectorFixture fx) : IClassFixture<DetectorFixture>
{
    static readonly PrepareOptions Small = new() { Size = new Bucket(64, 96), MaxParallelism = 2 };

    static Dictionary<string, string> HashAll(string dir) =>
        Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
            .ToDictionary(f => f, f => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(f))));

    /// <summary>A BMP header that claims 60000×60000 pixels (10.8 GB of RGB) followed by a few bytes.</summary>
    static byte[] BombBmp()
    {
        var b = new byte[54 + 64];
        b[0] = (byte)'B'; b[1] = (byte)'M';
        BitConverter.TryWriteBytes(b.AsSpan(2), b.Length);
        BitConverter.TryWriteBytes(b.AsSpan(10), 54);
        BitConverter.TryWriteBytes(b.AsSpan(14), 40);
        BitConverter.TryWriteBytes(b.AsSpan(18), 60000);
        BitConverter.TryWriteBytes(b.AsSpan(22), 60000);
        BitConverter.TryWriteBytes(b.AsSpan(26), (short)1);
        BitConverter.TryWriteBytes(b.AsSpan(28), (short)24);
        return b;
    }

    static void MakeInputs(string raw)
    {
        Directory.CreateDirectory(raw);
        File.Copy(Photos.Path_("astronaut.png"), Path.Combine(raw, "astronaut.png"));
        File.Copy(Photos.Path_("astronaut.png"), Path.Combine(raw, "astronaut-copy.png"));        // duplicate
        File.Copy(Photos.Path_("truncated.jpg"), Path.Combine(raw, "truncated.jpg"));             // truncated
        File.WriteAllBytes(Path.Combine(raw, "zero.jpg"), []);                                     // zero bytes
        File.WriteAllText(Path.Combine(raw, "notes.jpg"), "this is not a picture");               // non-image with an image extension
        File.WriteAllBytes(Path.Combine(raw, "bomb.bmp"), BombBmp());                              // decompression bomb
        File.WriteAllBytes(Path.Combine(raw, "garbage.png"), [0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10, 0, 0, 0, 13, (byte)'I', (byte)'H', (byte)'D', (byte)'R', 1, 2, 3]); // corrupt header
        File.Copy(Photos.Path_("coffee.png"), Path.Combine(raw, "png-named.jpg"));                // wrong extension, valid content
        using (var cmyk = new Image<Rgb24>(80, 60, new Rgb24(200, 60, 40)))                       // CMYK JPEG
            cmyk.SaveAsJpeg(Path.Combine(raw, "cmyk.jpg"), new JpegEncoder { ColorType = JpegColorType.Cmyk, Quality = 95 });
        using (var deep = new Image<Rgba64>(80, 60, new Rgba64(0, 65535, 0, 65535)))              // 16-bit PNG
            deep.SaveAsPng(Path.Combine(raw, "deep16.png"), new PngEncoder { BitDepth = PngBitDepth.Bit16, ColorType = PngColorType.RgbWithAlpha });
        using (var clear = new Image<Rgba32>(80, 60, new Rgba32(255, 0, 0, 0)))                    // fully transparent
            clear.SaveAsPng(Path.Combine(raw, "alpha.png"));
        using (var gif = new Image<Rgba32>(80, 60, new Rgba32(0, 0, 255, 255)))                    // animated GIF: blue, then red
        {
            using var second = new Image<Rgba32>(80, 60, new Rgba32(255, 0, 0, 255));
            gif.Frames.AddFrame(second.Frames.RootFrame);
            gif.Metadata.GetGifMetadata().RepeatCount = 0;
            gif.SaveAsGif(Path.Combine(raw, "anim.gif"), new GifEncoder());
        }
        using (var rotated = new Image<Rgb24>(120, 60, new Rgb24(90, 90, 90)))                     // EXIF orientation 6 (rotate 90°)
        {
            rotated.Metadata.ExifProfile = new ExifProfile();
            rotated.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
            rotated.SaveAsJpeg(Path.Combine(raw, "sub", "rotated.jpg").Also(p => Directory.CreateDirectory(Path.GetDirectoryName(p)!)));
        }
        File.WriteAllText(Path.Combine(raw, "astronaut.txt"), "a caption side-car, not an image");
        File.WriteAllText(Path.Combine(raw, "locked.jpg"), "held open exclusively during the run");
    }

    [Fact]
    public async Task Every_bad_input_is_skipped_with_a_reason_and_no_source_changes()
    {
        using var tmp = TestPaths.NewTempDir();
        var raw = tmp.File("raw");
        MakeInputs(raw);
        var before = HashAll(raw);
        DatasetReport report;
        // "unreadable": tests run as root, so chmod 000 would not stop reads; an exclusive lock does (FileShare.None)
        using (new FileStream(Path.Combine(raw, "locked.jpg"), FileMode.Open, FileAccess.Read, FileShare.None))
            report = await DatasetPreparer.RunAsync(raw, tmp.File("out"), Small, detector: fx.Detector);
        Assert.Equal(before, HashAll(raw));

        var skipped = report.SkippedFiles.ToDictionary(s => s.Source, s => s.Code);
        Assert.Equal(ImageIngest.CodeCorrupt, skipped["truncated.jpg"]);
        Assert.Equal(ImageIngest.CodeEmpty, skipped["zero.jpg"]);
        Assert.Equal(ImageIngest.CodeNotImage, skipped["notes.jpg"]);
        Assert.Equal(ImageIngest.CodeTooLarge, skipped["bomb.bmp"]);
        Assert.Contains(skipped["garbage.png"], new[] { ImageIngest.CodeCorrupt, ImageIngest.CodeNotImage });
        Assert.Equal(ImageIngest.CodeUnreadable, skipped["locked.jpg"]);
        Assert.Equal(ImageIngest.CodeDuplicate, skipped["astronaut.png"] == ImageIngest.CodeDuplicate ? skipped["astronaut.png"] : skipped["astronaut-copy.png"]);
        Assert.All(report.SkippedFiles, s => Assert.False(string.IsNullOrWhiteSpace(s.Reason)));
        Assert.DoesNotContain("astronaut.txt", skipped.Keys);
        Assert.Equal(7, skipped.Count);

        var items = report.Manifest.Items.ToDictionary(i => i.Source);
        Assert.Equal(new[] { "alpha.png", "anim.gif", "astronaut-copy.png", "cmyk.jpg", "deep16.png", "png-named.jpg", "sub/rotated.jpg" }, items.Keys.Order(StringComparer.Ordinal));
        Rgb24 Centre(string src)
        {
            using var o = Image.Load<Rgb24>(Path.Combine(report.OutputFolder, items[src].Output));
            Assert.Equal((64, 96), (o.Width, o.Height));
            return o[o.Width / 2, o.Height / 2];
        }
        static void Near(Rgb24 e, Rgb24 a, int tol) =>
            Assert.True(Math.Abs(e.R - a.R) <= tol && Math.Abs(e.G - a.G) <= tol && Math.Abs(e.B - a.B) <= tol, $"expected {e}, got {a}");
        Near(new Rgb24(200, 60, 40), Centre("cmyk.jpg"), 25);
        Near(new Rgb24(0, 255, 0), Centre("deep16.png"), 1);
        Near(new Rgb24(127, 127, 127), Centre("alpha.png"), 1);     // composited on the neutral background
        Near(new Rgb24(0, 0, 255), Centre("anim.gif"), 2);          // first frame
        Assert.Contains(items["anim.gif"].Warnings, w => w.Contains("first frame"));
        Assert.Contains(items["alpha.png"].Warnings, w => w.Contains("transparen"));
        Assert.Contains(items["png-named.jpg"].Warnings, w => w.Contains("PNG"));
        Assert.Equal((60, 120), (items["sub/rotated.jpg"].OriginalWidth, items["sub/rotated.jpg"].OriginalHeight)); // EXIF applied
        Assert.Equal("sub_rotated.png", items["sub/rotated.jpg"].Output);
    }

    [Fact]
    public async Task Rerun_is_idempotent_unless_forced_and_the_manifest_round_trips()
    {
        using var tmp = TestPaths.NewTempDir();
        var raw = tmp.File("raw");
        Directory.CreateDirectory(raw);
        foreach (var n in new[] { "astronaut.png", "camera.png", "coffee.png" }) File.Copy(Photos.Path_(n), Path.Combine(raw, n));
        var outDir = tmp.File("out");
        var options = Small with { Debug = true };
        var first = await DatasetPreparer.RunAsync(raw, outDir, options, detector: fx.Detector);
        Assert.Equal(3, first.Prepared);
        Assert.Equal(0, first.Reused);
        Assert.Equal(2, first.WithFaces);
        Assert.All(first.Manifest.Items, i => Assert.True(File.Exists(Path.Combine(outDir, i.Debug!))));
        var stamps = Directory.EnumerateFiles(outDir, "*.png", SearchOption.AllDirectories).ToDictionary(f => f, File.GetLastWriteTimeUtc);

        var second = await DatasetPreparer.RunAsync(raw, outDir, options, detector: fx.Detector);
        Assert.Equal(3, second.Reused);
        Assert.Equal(stamps, Directory.EnumerateFiles(outDir, "*.png", SearchOption.AllDirectories).ToDictionary(f => f, File.GetLastWriteTimeUtc));
        Assert.Equal(first.Manifest.ToJson(), second.Manifest.ToJson());

        var forced = await DatasetPreparer.RunAsync(raw, outDir, options with { Force = true }, detector: fx.Detector);
        Assert.Equal(0, forced.Reused);
        var changed = await DatasetPreparer.RunAsync(raw, outDir, options with { Focal = FocalCropOptions.A1111 }, detector: fx.Detector);
        Assert.Equal(0, changed.Reused); // other settings: redo

        var json = File.ReadAllText(Path.Combine(outDir, DatasetManifest.FileName));
        var loaded = DatasetManifest.FromJson(json);
        Assert.Equal(json, loaded.ToJson());
        var astro = loaded.Items.Single(i => i.Source == "astronaut.png");
        Assert.Contains("\"crop\": {", json);
        Assert.Equal(512, astro.OriginalWidth);
        var f = Assert.Single(astro.Faces);
        Assert.True(astro.Crop.X <= f.X && astro.Crop.X + astro.Crop.Width >= f.X + f.Width, "crop keeps the face");
        Assert.True(astro.Crop.Y + astro.Crop.Height <= 512 && astro.Crop.X + astro.Crop.Width <= 512);
    }

    [Fact]
    public async Task Subject_mode_puts_every_image_in_a_bucket()
    {
        using var tmp = TestPaths.NewTempDir();
        var options = new PrepareOptions { Mode = PrepareMode.Subject, Size = new Bucket(256, 384), BucketMaxResolution = 512, BucketMinSide = 128, MaxParallelism = 2 };
        var report = await DatasetPreparer.RunAsync(Photos.Dir, tmp.File("out"), options, detector: fx.Detector);
        Assert.Equal(5, report.Prepared);
        Assert.Equal(ImageIngest.CodeCorrupt, Assert.Single(report.SkippedFiles).Code); // truncated.jpg; README.md is a side-car
        var names = report.Buckets.Select(b => b.ToString()).ToHashSet();
        foreach (var i in report.Manifest.Items)
        {
            Assert.Contains(i.Bucket, names);
            using var img = Image.Load<Rgb24>(Path.Combine(report.OutputFolder, i.Output));
            Assert.Equal(i.Bucket, $"{img.Width}x{img.Height}");
            Assert.NotNull(i.SubjectCrop);
        }
        Assert.Equal(5, report.BucketHistogram.Values.Sum());
        using var sheet = report.ContactSheet(columns: 3, cell: 64);
        Assert.Equal(3 * 68 + 4, sheet.Width);
        Assert.Equal(2 * 68 + 4, sheet.Height);
        Assert.NotEqual(new Rgb24(32, 32, 32), sheet[4 + 32, 4 + 32]); // first thumbnail drawn
    }

    [Fact]
    public async Task Output_inside_input_is_excluded_and_same_folder_refused()
    {
        using var tmp = TestPaths.NewTempDir();
        File.Copy(Photos.Path_("coffee.png"), tmp.File("coffee.png"));
        await Assert.ThrowsAsync<DreamBoothException>(() => DatasetPreparer.RunAsync(tmp.Path, tmp.Path, Small, detector: fx.Detector));
        var r1 = await DatasetPreparer.RunAsync(tmp.Path, tmp.File("prepared"), Small, detector: fx.Detector);
        var r2 = await DatasetPreparer.RunAsync(tmp.Path, tmp.File("prepared"), Small, detector: fx.Detector);
        Assert.Equal(1, r1.Prepared);
        Assert.Equal(1, r2.Reused);
        Assert.Empty(r2.SkippedFiles);
    }

    [Fact]
    public async Task Large_jpegs_decode_at_dct_scale_with_coordinates_in_source_pixels()
    {
        using var tmp = TestPaths.NewTempDir();
        var raw = tmp.File("raw");
        Directory.CreateDirectory(raw);
        using (var img = new Image<Rgb24>(3200, 2400))
        {
            img.ProcessPixelRows(acc =>
            {
                for (int y = 0; y < acc.Height; y++)
                {
                    var row = acc.GetRowSpan(y);
                    for (int x = 0; x < row.Length; x++) row[x] = new Rgb24((byte)(x / 13), (byte)(y / 10), (byte)((x + y) / 22));
                }
            });
            img.Metadata.ExifProfile = new ExifProfile();
            img.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)6);
            img.SaveAsJpeg(Path.Combine(raw, "big.jpg"), new JpegEncoder { Quality = 92 });
        }
        var report = await DatasetPreparer.RunAsync(raw, tmp.File("out"), new PrepareOptions { Size = new Bucket(96, 128) }, detector: fx.Detector);
        var item = Assert.Single(report.Manifest.Items);
        Assert.Equal(0.5, item.DecodeScale);                      // need = max(96/2400, 128/3200, detector's working scale 14/(0.015·2400)) = 0.39
        Assert.Equal((2400, 3200), (item.OriginalWidth, item.OriginalHeight)); // EXIF 6 applied
        Assert.Equal(new ManifestRect(0, 0, 2400, 3200), item.Crop);
        Assert.DoesNotContain(item.Warnings, w => w.Contains("upscaled"));
        Assert.Contains(item.Warnings, w => w.Contains("EXIF orientation 6"));
        // same pixels (within JPEG/resampling noise) as the full-resolution path
        var (full, _) = ImageIngest.Load(Path.Combine(raw, "big.jpg"));
        using (full)
        {
            using var reference = FocalCrop.Apply(full!.Image, FocalCrop.Plan(full.Image, [], 96, 128, FocalCropOptions.Recipe));
            using var fast = Image.Load<Rgb24>(Path.Combine(report.OutputFolder, item.Output));
            double diff = 0;
            for (int y = 0; y < 128; y++)
                for (int x = 0; x < 96; x++)
                {
                    var a = reference[x, y]; var b = fast[x, y];
                    diff += Math.Abs(a.R - b.R) + Math.Abs(a.G - b.G) + Math.Abs(a.B - b.B);
                }
            Assert.InRange(diff / (96 * 128 * 3), 0, 3);
        }
    }

    [Fact]
    public async Task Cancellation_stops_the_run()
    {
        using var tmp = TestPaths.NewTempDir();
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => DatasetPreparer.RunAsync(Photos.Dir, tmp.File("out"), Small, null, cts.Token, fx.Detector));
    }
}

static class Ext
{
    public static T Also<T>(this T value, Action<T> action) { action(value); return value; }
}
