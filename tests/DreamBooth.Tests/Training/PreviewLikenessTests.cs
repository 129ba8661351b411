using DreamBooth.Checkpoints;
using DreamBooth.Interactive;
using DreamBooth.Likeness;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Likeness;
using DreamBooth.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Tests.Training;

/// <summary>preview_likeness: the trainer's previews are scored through the preview scorer hook and logged beside the loss.</summary>
public class PreviewLikenessTests(DescriberFixture fx) : IClassFixture<DescriberFixture>
{
    sealed class Sync(Action<TrainingEvent> a) : IProgress<TrainingEvent> { public void Report(TrainingEvent v) => a(v); }

    /// <summary>"Previews" that are real photos: the astronaut for prompts with ohwx, the cameraman otherwise.</summary>
    sealed class PhotoPreviews : IPreviewRenderer
    {
        public IReadOnlyList<string> Render(StableDiffusionModel model, IReadOnlyList<string> prompts, long seed, string outputDir, int epoch)
        {
            var dir = Directory.CreateDirectory(Path.Combine(outputDir, $"epoch_{epoch:0000}")).FullName;
            return prompts.Select((p, k) =>
            {
                var file = Path.Combine(dir, $"preview_{k:00}.png");
                File.Copy(TestPaths.Photo(p.Contains("ohwx") ? "astronaut.png" : "camera.png"), file, overwrite: true);
                return file;
            }).ToList();
        }
    }

    [Fact]
    public void Previews_are_scored_each_preview_epoch_into_the_event_csv_tensorboard_and_the_monitor()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with
        {
            Epochs = 2, PreviewEveryEpochs = 1, PreviewPrompts = ["photo of ohwx man", "photo of man"], TextEncoderStepRatio = 0, PreviewLikeness = true,
        };
        using var astronaut = Image.Load<Rgb24>(TestPaths.Photo("astronaut.png"));
        using var mirror = astronaut.Clone(x => x.Crop(new Rectangle(60, 0, 400, 460)).Flip(FlipMode.Horizontal));
        var scorer = new LikenessPreviewScorer(IdentityReference.FromImages([("mirror-crop.png", mirror)], fx.Describer), c.OutputDir, "ohwx");
        using var m = DreamBoothTrainerTests.TinyModel();
        var events = new List<TrainingEvent>();
        var monitor = new TrainingMonitor(epochs: c.Epochs);
        using (var t = new DreamBoothTrainer(c, m, new PhotoPreviews(), previewScorer: scorer))
            t.Run(new Sync(e => { events.Add(e); monitor.Report(e); }));

        var previews = events.Where(e => e.Kind == TrainingEventKind.Preview).ToList();
        Assert.Equal(2, previews.Count);
        // the mean is over the subject preview only (the astronaut vs its mirrored crop), not the class preview (the cameraman)
        Assert.All(previews, e => Assert.InRange(e.Likeness!.Value, 0.05, 0.45));
        Assert.All(previews, e => Assert.Contains("mean face distance over 1/1 subject preview(s) with a face (1 under 0.6)", e.Message));
        var csv = File.ReadAllLines(Path.Combine(c.OutputDir, LikenessPreviewScorer.CsvName));
        Assert.Equal(LikenessPreviewScorer.CsvHeader, csv[0]);
        Assert.Equal(5, csv.Length);
        Assert.StartsWith("1,", csv[1]);
        Assert.Contains(",0,1,", csv[2]);                      // the class preview: subject 0, 1 face
        Assert.EndsWith("\"photo of man\"", csv[2]);
        var classDistance = double.Parse(csv[2].Split(',')[5], System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(classDistance > 0.6, csv[2]);               // logged, and not the person
        Assert.NotEmpty(Directory.GetFiles(Path.Combine(c.OutputDir, "tensorboard", "likeness"), "*tfevents*"));
        // the monitor: one likeness point per preview epoch, its chart and the captions
        Assert.Equal(2, monitor.Likeness.Count);
        Assert.Equal(previews[1].Likeness, monitor.Likeness[1].Distance);
        var html = monitor.ToHtml();
        Assert.Contains("preview likeness to the instance photos", html);
        Assert.Contains("preview_00.png &#183; likeness 0.", html);
    }

    [Fact]
    public void Preview_likeness_needs_previews_and_instance_photos_with_a_face()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with { PreviewLikeness = true };
        Assert.Contains(c.Validate(checkFolders: false), p => p.Contains("preview_likeness = true needs preview_every_epochs > 0"));
        // the tiny config's instance images are flat colours: no face, so the run is refused before training
        var e = Assert.Throws<DreamBoothException>(() => LikenessPreviewScorer.For(c with { PreviewEveryEpochs = 1, PreviewPrompts = ["ohwx man"] }));
        Assert.Contains("preview_likeness: likeness reference: no face found in any of the 2 reference image(s)", e.Message);
        // and the JSON key round-trips
        var path = dir.File("c.json");
        (c with { PreviewEveryEpochs = 1, PreviewPrompts = ["ohwx man"] }).Save(path);
        Assert.Contains("\"preview_likeness\": true", File.ReadAllText(path));
        Assert.True(TrainingConfig.Load(path).PreviewLikeness);
    }
}
