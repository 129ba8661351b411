using DreamBooth.Pipelines;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Pipelines;

public class ClassImageGeneratorTests
{
    static ClassImageRequest Request(string dir, int needed, long seed = 7, int batch = 2) => new()
    {
        ClassDirectory = dir,
        Needed = needed,
        ClassPrompt = "photo of a man",
        NegativePrompt = "cartoon",
        Steps = 2,
        Sampler = "Euler a",
        BatchSize = batch,
        Width = 16,
        Height = 16,
        Seed = seed,
    };

    static string[] Names(string dir) => Directory.GetFiles(dir).Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;

    [Fact]
    public void NeededIsPerInstanceTimesInstanceImages()
    {
        Assert.Equal(2700, ClassImageRequest.NeededFor(27, 100));
        Assert.Equal(0, ClassImageRequest.NeededFor(27, 0));
        Assert.Throws<DreamBoothException>(() => ClassImageRequest.NeededFor(-1, 100));
    }

    [Fact]
    public void TopsUpExactlyTheShortfallCountingExistingImagesOfAnySize()
    {
        using var dir = TestPaths.NewTempDir();
        using (var big = new Image<Rgb24>(40, 30)) big.SaveAsJpeg(dir.File("real-1.jpg"));
        using (var small = new Image<Rgb24>(8, 12)) small.SaveAsPng(dir.File("real-2.png"));
        File.WriteAllText(dir.File("broken.jpg"), "not an image");
        File.WriteAllText(dir.File("notes.md"), "ignored: not an image extension");
        using var pipeline = TinyPipeline.Create();
        var events = new List<ClassImageProgress>();
        var report = new ClassImageGenerator(pipeline).Run(Request(dir.Path, needed: 5), new Inline(events.Add));

        Assert.Equal(5, report.Needed);
        Assert.Equal(2, report.Found);
        Assert.Equal(3, report.Generated);
        Assert.Equal(1, report.SkippedUnreadable);
        Assert.Equal(5, report.Available);
        Assert.Equal(
            ["broken.jpg", "class-00000-7.png", "class-00000-7.txt", "class-00001-8.png", "class-00001-8.txt",
             "class-00002-9.png", "class-00002-9.txt", "notes.md", "real-1.jpg", "real-2.png"],
            Names(dir.Path));
        Assert.Equal("photo of a man", File.ReadAllText(dir.File("class-00001-8.txt")));
        var info = PngInfotext.Read(dir.File("class-00002-9.png"))!;
        Assert.Equal(9, info.Seed);
        Assert.Equal("photo of a man", info.Prompt);
        Assert.Equal("cartoon", info.NegativePrompt);
        Assert.Equal(7.5, info.CfgScale);
        Assert.Equal(3, events.Count(e => e.LastFile is not null));
        Assert.Equal(3, events[^1].Generated);

        // a second run finds enough and generates nothing
        var again = new ClassImageGenerator(pipeline).Run(Request(dir.Path, needed: 5));
        Assert.Equal(5, again.Found);
        Assert.Equal(0, again.Generated);
        Assert.Equal(10, Names(dir.Path).Length);
    }

    [Fact]
    public void ResumesAfterCancellationWithoutDuplicatesOrLoss()
    {
        using var interrupted = TestPaths.NewTempDir();
        using var straight = TestPaths.NewTempDir();
        using var pipeline = TinyPipeline.Create();
        var generator = new ClassImageGenerator(pipeline);

        using var cts = new CancellationTokenSource();
        var cancelAfterTwo = new Inline(p => { if (p.Generated >= 2 && p.LastFile is not null) cts.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() => generator.Run(Request(interrupted.Path, needed: 5, seed: -1, batch: 1), cancelAfterTwo, cts.Token));
        var partial = Directory.GetFiles(interrupted.Path, "*.png");
        Assert.Equal(2, partial.Length);
        Assert.Empty(Directory.GetFiles(interrupted.Path, "*.tmp"));

        // resume with seed −1 again: the base seed of the first run is kept
        var resumed = generator.Run(Request(interrupted.Path, needed: 5, seed: -1, batch: 2));
        Assert.Equal(2, resumed.Found);
        Assert.Equal(3, resumed.Generated);
        var seeds = Directory.GetFiles(interrupted.Path, "*.png").Select(p => PngInfotext.Read(p)!.Seed).Order().ToArray();
        Assert.Equal(5, seeds.Length);
        Assert.Equal(Enumerable.Range(0, 5).Select(i => seeds[0] + i), seeds);

        // the same as one uninterrupted run with that base seed, file for file and pixel for pixel (±1/255 across batch sizes)
        generator.Run(Request(straight.Path, needed: 5, seed: seeds[0], batch: 3));
        Assert.Equal(Names(straight.Path), Names(interrupted.Path));
        foreach (var name in Names(straight.Path).Where(n => n.EndsWith(".png")))
        {
            using var x = Image.Load<Rgb24>(Path.Combine(straight.Path, name));
            using var y = Image.Load<Rgb24>(Path.Combine(interrupted.Path, name));
            var bx = new byte[16 * 16 * 3];
            var by = new byte[16 * 16 * 3];
            x.CopyPixelDataTo(bx);
            y.CopyPixelDataTo(by);
            Assert.True(bx.Zip(by).All(p => Math.Abs(p.First - p.Second) <= 1), name);
        }
    }

    [Fact]
    public void MissingClassPromptIsAUserErrorOnlyWhenSomethingIsMissing()
    {
        using var dir = TestPaths.NewTempDir();
        using var pipeline = TinyPipeline.Create();
        var generator = new ClassImageGenerator(pipeline);
        var e = Assert.Throws<DreamBoothException>(() => generator.Run(Request(dir.Path, 1) with { ClassPrompt = "" }));
        Assert.Contains("class prompt", e.Message);
        Assert.Equal(0, generator.Run(Request(dir.Path, 0) with { ClassPrompt = "" }).Generated);
    }

    sealed class Inline(Action<ClassImageProgress> report) : IProgress<ClassImageProgress>
    {
        public void Report(ClassImageProgress value) => report(value);
    }
}
