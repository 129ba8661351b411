using DreamBooth.Tests.Infrastructure;
using DreamBooth.Text;
using static DreamBooth.Tests.Cli.CliTests;

namespace DreamBooth.Tests.Cli;

public class TokenizeCommandTests
{
    static string BpeGz => TestPaths.ClipBpeGz;

    static int[] Parse(string line) => System.Text.Json.JsonSerializer.Deserialize<int[]>(line)!;

    [Fact]
    public async Task Prints_one_padded_json_line_per_prompt()
    {
        var (code, stdout, stderr) = await Run("tokenize", "--tokenizer", BpeGz, "a photo of a cat", "ohwx man");
        Assert.True(code == 0, stderr);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        var first = Parse(lines[0]);
        Assert.Equal(77, first.Length);
        Assert.Equal(new[] { 49406, 320, 1125, 539, 320, 2368, 49407, 49407 }, first[..8]);
        Assert.Equal(new[] { 49406, 47993, 786, 49407 }, Parse(lines[1])[..4]);
    }

    [Fact]
    public async Task No_pad_max_length_and_strict_tokens_change_the_ids()
    {
        var (code, stdout, _) = await Run("tokenize", "--tokenizer", BpeGz, "--no-pad", "a photo of a cat", "a cat");
        Assert.Equal(0, code);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(new[] { 49406, 320, 1125, 539, 320, 2368, 49407 }, Parse(lines[0]));
        Assert.Equal(new[] { 49406, 320, 2368, 49407, 49407, 49407, 49407 }, Parse(lines[1]));

        (code, stdout, _) = await Run("tokenize", "--tokenizer", BpeGz, "--max-length", "150", "a cat");
        Assert.Equal(0, code);
        var row = Parse(stdout.Trim());
        Assert.Equal(154, row.Length);
        Assert.Equal(49406, row[77]);

        (code, stdout, _) = await Run("tokenize", "--tokenizer", BpeGz, "--no-pad", "--strict-tokens", "a photo, a cat");
        Assert.Equal(0, code);
        Assert.Equal(new[] { 49406, 320, 1125, 49407, 49406, 320, 2368, 49407 }, Parse(stdout.Trim()));
    }

    [Fact]
    public async Task Reads_a_tokenizer_folder_too()
    {
        using var dir = TestPaths.NewTempDir();
        ClipTokenizer.FromBpeGz(BpeGz).Save(Path.Combine(dir.Path, "tokenizer"));
        // a diffusers model folder (tokenizer/ inside) and the tokenizer folder itself
        foreach (var path in new[] { dir.Path, Path.Combine(dir.Path, "tokenizer") })
        {
            var (code, stdout, stderr) = await Run("tokenize", "--tokenizer", path, "--no-pad", "Hello, World!");
            Assert.True(code == 0, stderr);
            Assert.Equal("[49406,3306,267,1002,256,49407]", stdout.Trim());
        }
    }

    [Fact]
    public async Task Bad_tokenizer_path_and_bad_length_exit_2_with_one_line()
    {
        var (code, _, stderr) = await Run("tokenize", "--tokenizer", "/nonexistent/tok", "a cat");
        Assert.Equal(2, code);
        Assert.Contains("/nonexistent/tok", stderr);
        Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));

        (code, _, stderr) = await Run("tokenize", "--tokenizer", BpeGz, "--max-length", "100", "a cat");
        Assert.Equal(2, code);
        Assert.Contains("max_token_length", stderr);
    }
}
