using System.Security.Cryptography;
using DreamBooth.Data;
using DreamBooth.Tests.Cli;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Data;

/// <summary>
/// What prepare must never do: replace a file it did not write, accept a cut-off photo as prepared, or walk a folder
/// loop forever.
/// </summary>
public class PrepareSafetyTests(DetectorFixture fx) : IClassFixture<DetectorFixture>
{
    static readonly PrepareOptions Small = new() { Size = new Bucket(64, 96), MaxParallelism = 2 };

    static string Hash(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));

    static string RawWith(TempDir tmp, params string[] photos)
    {
        string raw = tmp.File("raw");
        Directory.CreateDirectory(raw);
        foreach (var p in photos) File.Copy(Photos.Path_(p), Path.Combine(raw, p));
        return raw;
    }

    [Fact]
    public void A_folder_holding_only_the_temp_file_of_an_interrupted_first_marker_write_is_claimed_and_the_temp_removed()
    {
        using var tmp = TestPaths.NewTempDir();
        string outDir = tmp.File("out");
        Directory.CreateDirectory(outDir);
        // what a prepare killed inside AtomicFile.WriteAllText of its first marker leaves behind
        string temp = Path.Combine(outDir, $".{PreparedFolder.MarkerFileName}.21110.{Guid.NewGuid():N}.tmp");
        File.WriteAllText(temp, "# written by `dreambooth prepare`");
        PreparedFolder.Claim(outDir);
        Assert.False(File.Exists(temp));
        Assert.True(File.Exists(Path.Combine(outDir, PreparedFolder.MarkerFileName)));

        // a file that only looks similar is someone else's: refused, kept
        string other = tmp.File("other");
        Directory.CreateDirectory(other);
        string notOurs = Path.Combine(other, $".{PreparedFolder.MarkerFileName}.notes.tmp");
        File.WriteAllText(notOurs, "mine");
        var e = Assert.Throws<DreamBoothException>(() => PreparedFolder.Claim(other));
        Assert.Contains("did not write", e.Message);
        Assert.Equal("mine", File.ReadAllText(notOurs));
    }

    [Fact]
    public async Task A_non_empty_folder_prepare_did_not_write_is_refused_and_left_as_it_was()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = RawWith(tmp, "astronaut.png");
        string outDir = tmp.File("out");
        Directory.CreateDirectory(outDir);
        // someone's file with the very name prepare would give its output
        File.WriteAllText(Path.Combine(outDir, "astronaut.png"), "my notes, not an image");
        string before = Hash(Path.Combine(outDir, "astronaut.png"));

        var e = await Assert.ThrowsAsync<DreamBoothException>(() => DatasetPreparer.RunAsync(raw, outDir, Small, detector: fx.Detector));
        Assert.Contains("--output", e.Message);
        Assert.Contains("prepare did not write", e.Message);
        Assert.Equal(before, Hash(Path.Combine(outDir, "astronaut.png")));
        Assert.Equal(["astronaut.png"], Directory.GetFileSystemEntries(outDir).Select(Path.GetFileName));

        // the CLI: exit 2, one line naming --output
        var (code, _, err) = await CliTests.Run("prepare", "--input", raw, "--output", outDir, "--size", "64x96");
        Assert.Equal(2, code);
        Assert.Single(err.Trim().Split('\n'));
        Assert.StartsWith("error: --output", err);
        Assert.Equal(before, Hash(Path.Combine(outDir, "astronaut.png")));
    }

    [Fact]
    public async Task A_file_dropped_into_a_prepared_folder_under_an_output_name_is_not_replaced()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = RawWith(tmp, "astronaut.png");
        string outDir = tmp.File("out");
        var first = await DatasetPreparer.RunAsync(raw, outDir, Small, detector: fx.Detector);
        Assert.Equal(1, first.Prepared);
        Assert.True(File.Exists(Path.Combine(outDir, PreparedFolder.MarkerFileName)));

        // a new photo arrives, and someone already put a file of its output name into the prepared folder
        File.Copy(Photos.Path_("coffee.png"), Path.Combine(raw, "coffee.png"));
        File.WriteAllText(Path.Combine(outDir, "coffee.png"), "not prepare's");
        var e = await Assert.ThrowsAsync<DreamBoothException>(() => DatasetPreparer.RunAsync(raw, outDir, Small with { Force = true }, detector: fx.Detector));
        Assert.Contains("'coffee.png' is already there and prepare did not write it", e.Message);
        Assert.Equal("not prepare's", File.ReadAllText(Path.Combine(outDir, "coffee.png")));

        // once it is moved away, prepare goes on; its own earlier outputs are re-written freely (--force)
        File.Delete(Path.Combine(outDir, "coffee.png"));
        var second = await DatasetPreparer.RunAsync(raw, outDir, Small with { Force = true }, detector: fx.Detector);
        Assert.Equal(2, second.Prepared);
        using var img = Image.Load<Rgb24>(Path.Combine(outDir, "coffee.png"));
        Assert.Equal((64, 96), (img.Width, img.Height));
    }

    [Fact]
    public async Task The_identity_check_file_is_listed_as_prepares_and_someone_elses_of_that_name_is_refused_before_any_image()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = RawWith(tmp, "astronaut.png");
        string outDir = tmp.File("out");
        var (code, _, err) = await CliTests.Run("prepare", "--input", raw, "--output", outDir, "--size", "64x96");
        Assert.True(code == 0, err);
        Assert.True(File.Exists(Path.Combine(outDir, DreamBooth.Likeness.DatasetIdentityCheck.FileName)));
        Assert.Contains(DreamBooth.Likeness.DatasetIdentityCheck.FileName, File.ReadAllLines(Path.Combine(outDir, PreparedFolder.MarkerFileName)));

        // in a prepared folder, a file of that name that prepare did not write stops the run before the first image
        (code, _, err) = await CliTests.Run("prepare", "--input", raw, "--output", outDir, "--size", "64x96", "--force");
        Assert.True(code == 0, err);
        var marker = Path.Combine(outDir, PreparedFolder.MarkerFileName);
        File.WriteAllLines(marker, File.ReadAllLines(marker).Where(l => l != DreamBooth.Likeness.DatasetIdentityCheck.FileName));
        File.WriteAllText(Path.Combine(outDir, DreamBooth.Likeness.DatasetIdentityCheck.FileName), "my notes");
        File.Delete(Path.Combine(outDir, "astronaut.png"));
        (code, _, err) = await CliTests.Run("prepare", "--input", raw, "--output", outDir, "--size", "64x96", "--force");
        Assert.Equal(2, code);
        Assert.Contains($"'{DreamBooth.Likeness.DatasetIdentityCheck.FileName}' is already there and prepare did not write it", err);
        Assert.Equal("my notes", File.ReadAllText(Path.Combine(outDir, DreamBooth.Likeness.DatasetIdentityCheck.FileName)));
        Assert.False(File.Exists(Path.Combine(outDir, "astronaut.png")));   // refused before the first image
    }

    [Fact]
    public async Task A_folder_prepared_before_the_marker_existed_is_recognised_by_its_manifest()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = RawWith(tmp, "astronaut.png");
        string outDir = tmp.File("out");
        await DatasetPreparer.RunAsync(raw, outDir, Small, detector: fx.Detector);
        File.Delete(Path.Combine(outDir, PreparedFolder.MarkerFileName));   // as an older version left it
        var again = await DatasetPreparer.RunAsync(raw, outDir, Small with { Force = true }, detector: fx.Detector);
        Assert.Equal(1, again.Prepared);
        Assert.Contains("astronaut.png", File.ReadAllLines(Path.Combine(outDir, PreparedFolder.MarkerFileName)));
    }

    [Fact]
    public async Task An_output_path_that_is_a_file_is_refused_before_any_work()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = RawWith(tmp, "astronaut.png");
        File.WriteAllText(tmp.File("f"), "x");
        var (code, stdout, err) = await CliTests.Run("prepare", "--input", raw, "--output", tmp.File("f"));
        Assert.Equal(2, code);
        Assert.Equal($"error: --output '{tmp.File("f")}' is an existing file (expected a folder)", err.Trim());
        Assert.Equal("", stdout);
        var (code2, _, err2) = await CliTests.Run("prepare", "--input", raw, "--output", tmp.File("f/sub"));
        Assert.Equal(2, code2);
        Assert.Contains("is a file, not a folder", err2);
        Assert.Equal("x", File.ReadAllText(tmp.File("f")));
    }

    static string ProgressiveJpeg => Path.Combine(TestPaths.Fixtures, "jpeg", "rocket-progressive.jpg");

    [Theory]
    [InlineData("rocket.jpg")]              // baseline JPEG: compressed data cut, no end-of-image marker
    [InlineData("rocket-progressive.jpg")]  // progressive JPEG with restart markers: cut inside a later scan's tables or data
    [InlineData("astronaut.png")]           // PNG: cut inside IDAT, no IEND
    public async Task A_photo_cut_to_its_first_third_is_skipped_as_truncated_with_the_reason(string photo)
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = RawWith(tmp, "coffee.png");
        var bytes = File.ReadAllBytes(photo.Contains("progressive") ? ProgressiveJpeg : Photos.Path_(photo));
        string cut = "cut-" + photo;
        File.WriteAllBytes(Path.Combine(raw, cut), bytes[..(bytes.Length / 3)]);
        // what a decoder makes of it: a full-size picture, the missing part filled in without a word
        using (var decoded = Image.Load<Rgb24>(Path.Combine(raw, cut)))
            Assert.True(decoded.Width > 0);

        var report = await DatasetPreparer.RunAsync(raw, tmp.File("out"), Small, detector: fx.Detector);
        Assert.Equal(1, report.Prepared);
        var skip = Assert.Single(report.Manifest.Skipped);
        Assert.Equal(cut, skip.Source);
        Assert.Equal(ImageIngest.CodeTruncated, skip.Code);
        Assert.Contains($"ends after {bytes.Length / 3} bytes", skip.Reason);
        Assert.False(File.Exists(tmp.File("out/" + Path.ChangeExtension(cut, ".png"))));
    }

    [Fact]
    public void Complete_photos_are_not_called_truncated()
    {
        var complete = new[] { "rocket.jpg", "astronaut.png", "camera.png", "chelsea.png", "coffee.png" }.Select(Photos.Path_).Append(ProgressiveJpeg).ToList();
        using var tmp = TestPaths.NewTempDir();
        // bytes after the end-of-image marker (camera makers append data there) do not make a photo incomplete
        File.WriteAllBytes(tmp.File("trailer.jpg"), [.. File.ReadAllBytes(Photos.Path_("rocket.jpg")), .. "trailing data"u8.ToArray()]);
        complete.Add(tmp.File("trailer.jpg"));
        foreach (var path in complete)
        {
            var (loaded, skip) = ImageIngest.Load(path);
            Assert.True(skip is null, $"{Path.GetFileName(path)}: {skip?.Detail}");
            loaded!.Dispose();
        }
    }

    /// <summary>Lists <paramref name="raw"/> within a minute (a walk that follows links into a loop does not end in time).</summary>
    static (IReadOnlyList<string> Files, IReadOnlyList<SkippedFile> NotFollowed) List(string raw)
    {
        IReadOnlyList<SkippedFile> notFollowed = [];
        var listing = Task.Run(() => ImageIngest.ListFiles(raw, null, out notFollowed));
        Assert.True(listing.Wait(TimeSpan.FromSeconds(60)), "listing did not finish in 60 s");
        return (listing.Result, notFollowed);
    }

    [Fact]
    public async Task A_folder_link_to_its_parent_is_read_once_and_reported()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = RawWith(tmp, "coffee.png");
        Directory.CreateDirectory(Path.Combine(raw, "sub"));
        File.Copy(Photos.Path_("camera.png"), Path.Combine(raw, "sub", "camera.png"));
        Directory.CreateSymbolicLink(Path.Combine(raw, "sub", "up"), "..");   // sub/up → raw: a loop

        var (files, notFollowed) = List(raw);
        Assert.Equal([Path.Combine(raw, "coffee.png"), Path.Combine(raw, "sub", "camera.png")], files);
        var skip = Assert.Single(notFollowed);
        Assert.Equal(ImageIngest.CodeRepeatedFolder, skip.Code);
        Assert.EndsWith(Path.Combine("sub", "up"), skip.Source);
        Assert.Contains("the input folder itself", skip.Detail);

        var report = await DatasetPreparer.RunAsync(raw, tmp.File("out"), Small, detector: fx.Detector);
        Assert.Equal(2, report.Prepared);
        Assert.Equal(["sub/up"], report.Manifest.Skipped.Select(s => s.Source));
    }

    [Fact]
    public void A_second_path_to_a_folder_is_not_read_again_and_the_plain_path_wins()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = RawWith(tmp);
        Directory.CreateDirectory(Path.Combine(raw, "sub"));
        File.Copy(Photos.Path_("camera.png"), Path.Combine(raw, "sub", "camera.png"));
        Directory.CreateSymbolicLink(Path.Combine(raw, "again"), Path.Combine(raw, "sub"));   // sorts before "sub"

        var (files, notFollowed) = List(raw);
        Assert.Equal([Path.Combine(raw, "sub", "camera.png")], files);
        var skip = Assert.Single(notFollowed);
        Assert.EndsWith("again", skip.Source);
        Assert.Contains("(sub)", skip.Detail);
    }
}
