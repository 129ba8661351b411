using System.Text.Json.Nodes;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Likeness;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Tests.Cli;

public class LikenessCommandTests
{
    /// <summary>reference/: astronaut + a mirrored crop; images/: a JPEG re-encode of astronaut, the cameraman, the coffee cup, a broken file.</summary>
    static (string Reference, string Images) Folders(TempDir tmp)
    {
        var reference = Directory.CreateDirectory(tmp.File("reference")).FullName;
        var images = Directory.CreateDirectory(tmp.File("images")).FullName;
        File.Copy(TestPaths.Photo("astronaut.png"), Path.Combine(reference, "a1.png"));
        using (var a = Image.Load<Rgb24>(TestPaths.Photo("astronaut.png")))
        {
            using var crop = a.Clone(c => c.Crop(new Rectangle(60, 0, 400, 460)).Flip(FlipMode.Horizontal));
            crop.SaveAsPng(Path.Combine(reference, "a2-crop-mirror.png"));
            using var jpeg = PhotoVariants.Jpeg(a, 60);
            jpeg.SaveAsJpeg(Path.Combine(images, "astronaut-q60.jpg"));
        }
        File.Copy(TestPaths.Photo("camera.png"), Path.Combine(images, "camera.png"));
        File.Copy(TestPaths.Photo("coffee.png"), Path.Combine(images, "coffee.png"));
        File.Copy(TestPaths.Photo("truncated.jpg"), Path.Combine(images, "zz-truncated.jpg"));
        return (reference, images);
    }

    [Fact]
    public async Task Scores_a_folder_against_a_reference_as_json()
    {
        using var tmp = TestPaths.NewTempDir();
        var (reference, images) = Folders(tmp);
        var (code, stdout, stderr) = await CliTests.Run("likeness", "--reference", reference, "--images", images);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(0.6, (double)json["threshold"]!);
        Assert.Equal(2, json["reference"]!["photos"]!.AsArray().Count(p => (bool)p!["described"]!));
        var byName = json["images"]!.AsArray().ToDictionary(i => (string)i!["name"]!, i => i!);
        Assert.Equal(["astronaut-q60.jpg", "camera.png", "coffee.png"], byName.Keys.Order().ToArray());
        Assert.True((bool)byName["astronaut-q60.jpg"]["same_person"]!);
        Assert.True((double)byName["astronaut-q60.jpg"]["distance"]! < 0.6);
        Assert.False((bool)byName["camera.png"]["same_person"]!);
        Assert.True((double)byName["camera.png"]["distance"]! > 0.6);
        Assert.Equal(0, (int)byName["coffee.png"]["faces"]!);
        Assert.Null(byName["coffee.png"]["distance"]);
        Assert.Null(byName["coffee.png"]["same_person"]);
        // the truncated JPEG is listed, not fatal
        var skipped = Assert.Single(json["skipped"]!.AsArray());
        Assert.EndsWith("zz-truncated.jpg", (string)skipped!["file"]!);
        Assert.Equal(2, (int)json["summary"]!["with_face"]!);
        Assert.Equal(1, (int)json["summary"]!["same_person"]!);
        // the reference's own check: two shots of one photo are near-duplicates
        Assert.Contains(json["reference_check"]!["issues"]!.AsArray(), i => (string)i!["kind"]! == "near-duplicate");
    }

    [Fact]
    public async Task Writes_json_to_output_and_bad_input_exits_2_with_one_line()
    {
        using var tmp = TestPaths.NewTempDir();
        var (reference, images) = Folders(tmp);
        var outFile = tmp.File("likeness.json");
        var (code, stdout, stderr) = await CliTests.Run("likeness", "--reference", reference, "--output", outFile);
        Assert.True(code == 0, stderr);
        Assert.Contains("reference checked", stdout);
        Assert.NotNull(JsonNode.Parse(File.ReadAllText(outFile))!["reference_check"]);
        Assert.Null(JsonNode.Parse(File.ReadAllText(outFile))!["images"]);

        async Task Bad(string expected, params string[] args)
        {
            var (c, _, err) = await CliTests.Run(["likeness", .. args]);
            Assert.Equal(2, c);
            Assert.Contains(expected, err);
            Assert.Single(err.Trim().Split('\n'));
        }
        await Bad("--reference: folder not found", "--reference", tmp.File("nope"));
        await Bad("--images: folder not found", "--reference", reference, "--images", tmp.File("nope"));
        await Bad("give a .json path", "--reference", reference, "--output", tmp.File("x.txt"));
        var empty = Directory.CreateDirectory(tmp.File("empty")).FullName;
        await Bad("holds no files", "--reference", reference, "--images", empty);
        // a reference without any face: nothing to compare with
        var faceless = Directory.CreateDirectory(tmp.File("faceless")).FullName;
        File.Copy(TestPaths.Photo("coffee.png"), Path.Combine(faceless, "coffee.png"));
        await Bad("no face found in any of the 1 reference image(s) (coffee.png)", "--reference", faceless, "--images", images);
        // only unreadable images to score
        var broken = Directory.CreateDirectory(tmp.File("broken")).FullName;
        File.Copy(TestPaths.Photo("truncated.jpg"), Path.Combine(broken, "t.jpg"));
        await Bad("none of the 1 file(s)", "--reference", reference, "--images", broken);
    }
}
