using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Pipelines;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Pipelines;

namespace DreamBooth.Tests.Cli;

public class SamplingCommandTests
{
    /// <summary>A tiny random model saved as a diffusers folder (configs included) under <paramref name="dir"/>.</summary>
    internal static string TinyModelFolder(TempDir dir)
    {
        string path = dir.File("tiny-model");
        using var model = StableDiffusionModel.CreateRandom(CLIPTextConfig.Tiny, UNet2DConditionConfig.Tiny, AutoencoderKLConfig.Tiny, TinyPipeline.Tokenizer, seed: 3);
        model.SaveDiffusers(path);
        return path;
    }

    [Fact]
    public async Task SampleWritesPngsWithInfotextAndReportsSeeds()
    {
        using var dir = TestPaths.NewTempDir();
        string model = TinyModelFolder(dir);
        string output = dir.File("out");
        var (code, stdout, stderr) = await CliTests.Run("sample", "--model", model, "--prompt", "a man, portrait", "--negative", "blurry",
            "--steps", "2", "--sampler", "euler a", "--seed", "100", "--size", "16x24", "--count", "3", "--batch", "2", "--output", output);
        Assert.True(code == 0, stderr);
        var files = Directory.GetFiles(output, "*.png").Select(p => Path.GetFileName(p)).Order(StringComparer.Ordinal).ToArray();
        Assert.Equal(["00000-100.png", "00001-101.png", "00002-102.png"], files);
        var info = PngInfotext.Read(Path.Combine(output, "00001-101.png"))!;
        Assert.Equal("a man, portrait", info.Prompt);
        Assert.Equal("blurry", info.NegativePrompt);
        Assert.Equal("Euler a", info.Sampler);
        Assert.Equal(101, info.Seed);
        Assert.Equal((16, 24), (info.Width, info.Height));
        Assert.Contains("s/it", stdout);
        // a second run continues the numbering instead of overwriting
        var (code2, _, _) = await CliTests.Run("sample", "--model", model, "--prompt", "x", "--steps", "1", "--size", "16x16", "--seed", "5", "--output", output);
        Assert.Equal(0, code2);
        Assert.True(File.Exists(Path.Combine(output, "00003-5.png")));
    }

    [Fact]
    public async Task Without_size_sample_draws_at_the_models_native_size()
    {
        // the embedded toy model is 32 px: at the old fixed default of 512x512 it took 19.5 min and drew a tiled mess
        using var dir = TestPaths.NewTempDir();
        string toy = Path.Combine(TestPaths.DataSamples, "toy", "model");
        var (code, stdout, stderr) = await CliTests.Run("sample", "--model", toy, "--prompt", "ohwx man", "--steps", "2", "--seed", "3", "--output", dir.File("out"));
        Assert.True(code == 0, stderr);
        Assert.Contains(", 32x32, on ", stdout);
        var info = PngInfotext.Read(Path.Combine(dir.File("out"), "00000-3.png"))!;
        Assert.Equal((32, 32), (info.Width, info.Height));
        // a diffusers folder: UNet sample_size × VAE downsampling, whatever it is
        string tiny = TinyModelFolder(dir);
        int native;
        using (var m = StableDiffusionModel.Load(tiny)) native = m.UNet.Config.SampleSize * m.Vae.DownsampleFactor;
        Assert.NotEqual(512, native);
        (code, _, stderr) = await CliTests.Run("sample", "--model", tiny, "--prompt", "x", "--steps", "1", "--seed", "4", "--output", dir.File("tiny"));
        Assert.True(code == 0, stderr);
        info = PngInfotext.Read(Path.Combine(dir.File("tiny"), "00000-4.png"))!;
        Assert.Equal((native, native), (info.Width, info.Height));
        var (_, help, _) = await CliTests.Run("sample", "--help");
        Assert.Contains("default: the model's native size", help);
    }

    [Theory]
    [InlineData("--sampler", "LMS", "DPM++ 2M Karras")]
    [InlineData("--size", "15x16", "width")]
    [InlineData("--size", "big", "WIDTHxHEIGHT")]
    public async Task BadSettingsAreUserErrors(string option, string value, string expected)
    {
        using var dir = TestPaths.NewTempDir();
        var (code, _, stderr) = await CliTests.Run("sample", "--model", dir.File("missing"), "--prompt", "x", option, value, "--output", dir.File("o"));
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
    }

    [Fact]
    public async Task ClassImagesTopsUpTheFolder()
    {
        using var dir = TestPaths.NewTempDir();
        string model = TinyModelFolder(dir);
        string classDir = dir.File("class");
        Directory.CreateDirectory(classDir);
        using (var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(20, 20))
            SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, Path.Combine(classDir, "real.png"));
        var (code, stdout, stderr) = await CliTests.Run("class-images", "--model", model, "--class-dir", classDir, "--class-prompt", "man",
            "--count", "3", "--steps", "2", "--size", "16x16", "--batch", "2", "--seed", "9");
        Assert.True(code == 0, stderr);
        Assert.Contains("needed 3, found 1, generated 2", stdout);
        Assert.True(File.Exists(Path.Combine(classDir, "class-00000-9.png")));
        Assert.Equal("man", File.ReadAllText(Path.Combine(classDir, "class-00001-10.txt")));
        var (code2, stdout2, _) = await CliTests.Run("class-images", "--model", model, "--class-dir", classDir, "--class-prompt", "man", "--count", "3");
        Assert.Equal(0, code2);
        Assert.Contains("nothing to generate", stdout2);
    }
}
