using DreamBooth.Pipelines;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Pipelines;

public class PngInfotextTests
{
    static GenerationInfo Sample() => new()
    {
        Prompt = "a photo of sks man, portrait, 85mm",
        NegativePrompt = "blurry, lowres",
        Steps = 40,
        Sampler = "DPM++ 2M Karras",
        CfgScale = 7.5,
        Seed = 1,
        Width = 768,
        Height = 1024,
        ModelHash = "abcdef1234",
        ModelName = "name",
        ClipSkip = 1,
    };

    [Fact]
    public void InfotextHasA1111Layout()
    {
        Assert.Equal(
            "a photo of sks man, portrait, 85mm\nNegative prompt: blurry, lowres\n" +
            "Steps: 40, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1, Size: 768x1024, Model hash: abcdef1234, Model: name, Clip skip: 1",
            Sample().ToInfotext());
        // no negative prompt → no "Negative prompt:" line; whole CFG values print without ".0"
        Assert.Equal("cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Clip skip: 2",
            new GenerationInfo { Prompt = "cat", Steps = 20, Sampler = "Euler a", CfgScale = 7, Seed = 5, ClipSkip = 2 }.ToInfotext());
    }

    [Fact]
    public void ParsesA1111WrittenTextWithExtrasAndQuotedValues()
    {
        const string text = "masterpiece, a man\nin a hat\nNegative prompt: ugly,\nbad hands\n" +
            "Steps: 25, Sampler: Euler a, Schedule type: Automatic, CFG scale: 6.5, Seed: 3839476393, Size: 512x768, " +
            "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Template: \"a, b: c\", Version: v1.10.1";
        var info = GenerationInfo.Parse(text);
        Assert.Equal("masterpiece, a man\nin a hat", info.Prompt);
        Assert.Equal("ugly,\nbad hands", info.NegativePrompt);
        Assert.Equal(25, info.Steps);
        Assert.Equal("Euler a", info.Sampler);
        Assert.Equal(6.5, info.CfgScale);
        Assert.Equal(3839476393L, info.Seed);
        Assert.Equal((512, 768), (info.Width, info.Height));
        Assert.Equal("6ce0161689", info.ModelHash);
        Assert.Equal("v1-5-pruned-emaonly", info.ModelName);
        Assert.Equal(2, info.ClipSkip);
        Assert.Equal("Automatic", info["Schedule type"]);
        Assert.Equal("a, b: c", info["Template"]);
        Assert.Equal("v1.10.1", info["Version"]);
        // and it writes back to an equal record
        Assert.Equal(info, GenerationInfo.Parse(info.ToInfotext()));
    }

    [Fact]
    public void TextWithoutParameterLineIsRejected()
    {
        Assert.Throws<DreamBoothException>(() => GenerationInfo.Parse("just a prompt"));
        Assert.Null(GenerationInfo.TryParse("just a prompt\nSteps: 20"));
        Assert.Throws<DreamBoothException>(() => GenerationInfo.Parse("p\nSteps: many, Sampler: Euler, Seed: 1"));
    }

    [Fact]
    public void RoundTripsThroughAPngFile()
    {
        using var dir = TestPaths.NewTempDir();
        using var image = new Image<Rgb24>(16, 8, new Rgb24(10, 200, 30));
        var info = Sample() with { Extra = [new("Batch size", "4"), new("Note", "commas, colons: and \"quotes\"")] };
        string path = dir.File("out.png");
        PngInfotext.Save(image, path, info);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
        Assert.Equal(info.ToInfotext(), PngInfotext.ReadText(path));
        Assert.Equal(info, PngInfotext.Read(path));
        using var back = Image.Load<Rgb24>(path);
        Assert.Equal(new Rgb24(10, 200, 30), back[3, 4]);
        // the chunk is an uncompressed tEXt chunk keyed "parameters" (what A1111's PNG Info reads)
        var bytes = File.ReadAllBytes(path);
        Assert.True(IndexOf(bytes, "tEXtparameters\0"u8.ToArray()) > 0);
    }

    [Fact]
    public void NonLatinPromptRoundTripsAsInternationalText()
    {
        using var dir = TestPaths.NewTempDir();
        using var image = new Image<Rgb24>(8, 8);
        var info = Sample() with { Prompt = "一个男人的照片, портрет" };
        string path = dir.File("intl.png");
        PngInfotext.Save(image, path, info);
        Assert.Equal(info, PngInfotext.Read(path));
        Assert.True(IndexOf(File.ReadAllBytes(path), "iTXtparameters\0"u8.ToArray()) > 0);
    }

    [Fact]
    public void PngWithoutParametersReadsAsNull()
    {
        using var dir = TestPaths.NewTempDir();
        using var image = new Image<Rgb24>(4, 4);
        string path = dir.File("plain.png");
        image.SaveAsPng(path);
        Assert.Null(PngInfotext.ReadText(path));
        Assert.Null(PngInfotext.Read(path));
        File.WriteAllText(dir.File("bad.png"), "not a png");
        Assert.Throws<DreamBoothException>(() => PngInfotext.ReadText(dir.File("bad.png")));
    }

    static int IndexOf(byte[] haystack, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= haystack.Length; i++)
            if (haystack.AsSpan(i, needle.Length).SequenceEqual(needle)) return i;
        return -1;
    }
}
