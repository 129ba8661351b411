using System.Text.Json;
using DreamBooth.Tests.Cli;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Data;

public class PrepareCliTests
{
    [Fact]
    public async Task Prepare_writes_images_and_manifest_and_reports_skips()
    {
        using var tmp = TestPaths.NewTempDir();
        var raw = tmp.File("raw");
        Directory.CreateDirectory(raw);
        File.Copy(Photos.Path_("astronaut.png"), Path.Combine(raw, "astronaut.png"));
        File.Copy(Photos.Path_("truncated.jpg"), Path.Combine(raw, "truncated.jpg"));
        var (code, stdout, err) = await CliTests.Run("prepare", "--input", raw, "--output", tmp.File("out"), "--size", "96x128",
            "--weights", "a1111", "--entropy-weight", "0", "--debug");
        Assert.True(code == 0, err);
        Assert.Contains("1 image(s)", stdout);
        Assert.Contains("skipped truncated.jpg: corrupt", stdout);
        Assert.True(File.Exists(tmp.File("out/astronaut.png")));
        Assert.True(File.Exists(tmp.File("out/debug/astronaut.png")));
        Assert.True(File.Exists(tmp.File("out/manifest.json")));
        // the identity check of the prepared images
        Assert.Contains("identity check: 1 photo(s)", stdout); // (at 96x128 the face is under the 32 px the descriptor needs)
        Assert.True(File.Exists(tmp.File("out/identity-check.json")));
    }

    [Fact]
    public async Task Prepare_flags_a_second_person_and_can_skip_the_identity_check()
    {
        using var tmp = TestPaths.NewTempDir();
        var raw = tmp.File("raw");
        Directory.CreateDirectory(raw);
        File.Copy(Photos.Path_("astronaut.png"), Path.Combine(raw, "astronaut.png"));
        File.Copy(Photos.Path_("camera.png"), Path.Combine(raw, "camera.png"));
        var (code, stdout, err) = await CliTests.Run("prepare", "--input", raw, "--output", tmp.File("out"), "--size", "384x512");
        Assert.True(code == 0, err);
        Assert.Contains("someone-else: astronaut.png and camera.png are", stdout);
        using (var doc = JsonDocument.Parse(File.ReadAllText(tmp.File("out/identity-check.json"))))
            Assert.Equal("someone-else", doc.RootElement.GetProperty("issues")[0].GetProperty("kind").GetString());
        var (code2, stdout2, err2) = await CliTests.Run("prepare", "--input", raw, "--output", tmp.File("out2"), "--size", "384x512", "--no-identity-check");
        Assert.True(code2 == 0, err2);
        Assert.DoesNotContain("identity check", stdout2);
        Assert.False(File.Exists(tmp.File("out2/identity-check.json")));
    }

    [Theory]
    [InlineData("--size", "big")]
    [InlineData("--face-weight", "-1")]
    [InlineData("--weights", "gimp")]
    public async Task Bad_settings_are_user_errors(string option, string value)
    {
        using var tmp = TestPaths.NewTempDir();
        var (code, _, err) = await CliTests.Run("prepare", "--input", Photos.Dir, "--output", tmp.File("out"), option, value);
        Assert.Equal(2, code);
        Assert.Contains(option, err);
    }

    [Fact]
    public async Task Bench_prepare_prints_one_json_line()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "prepare", "--images", "2", "--megapixels", "0.5", "--size", "96x128");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(stdout.Trim());
        Assert.Equal("prepare", doc.RootElement.GetProperty("bench").GetString());
        Assert.Equal(2, doc.RootElement.GetProperty("prepared").GetInt32());
        Assert.True(doc.RootElement.GetProperty("images_per_s").GetDouble() > 0);
        Assert.True(doc.RootElement.GetProperty("peak_working_set_mib").GetInt64() > 0);
    }
}
