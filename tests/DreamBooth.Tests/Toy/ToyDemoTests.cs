using System.Text.Json;
using DreamBooth.Pipelines;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Toy;
using SixLabors.ImageSharp;

namespace DreamBooth.Tests.Toy;

/// <summary>
/// The README's main job with its defaults (seeded, ≈ 1.5 min on 2 cores): every stage runs on the embedded toy
/// model, writes what the README promises, and DreamBooth measurably works — "ohwx man" draws the subject's
/// purple shirt after training and not before, while "man" keeps drawing varied men.
/// </summary>
[Collection(DreamBooth.Tests.Models.SerialModelTests.Name)]
public class ToyDemoTests
{
    [Fact]
    public async Task Demo_learns_the_subject_keeps_the_class_and_writes_grid_loss_curve_and_figures()
    {
        using var dir = TestPaths.NewTempDir();
        var log = new List<string>();
        var options = new ToyDemoOptions { OutputDir = dir.Path };
        var result = await ToyDemo.RunAsync(options, new Progress<string>(log.Add));

        // the subject is learned: "ohwx man" draws the purple shirt after training, not before
        Assert.True(result.InstanceBefore.SubjectRate <= 0.1, $"before: {result.InstanceBefore.SubjectRate:P0}");
        Assert.True(result.InstanceAfter.SubjectRate >= 0.5, $"after: {result.InstanceAfter.SubjectRate:P0}");
        Assert.True(result.InstanceAfter.SubjectRate - result.InstanceBefore.SubjectRate >= 0.4);
        // prior preservation: "man" does not turn into the subject and still draws varied shirts
        Assert.True(result.ClassAfter.SubjectRate <= 0.2, $"man after: {result.ClassAfter.SubjectRate:P0}");
        Assert.True(result.ClassAfter.DistinctShirtColors >= 4, $"man after: {result.ClassAfter.DistinctShirtColors} colours");
        Assert.True(result.ClassAfter.ClassDiversity >= 0.45, $"man after: diversity {result.ClassAfter.ClassDiversity:0.00}");

        int expectedSaves = options.Epochs / options.SaveEveryEpochs;
        Assert.Equal(expectedSaves, result.Checkpoints.Count);
        Assert.All(result.Checkpoints, c => Assert.True(File.Exists(c), c));
        Assert.Equal(Directory.GetFiles(Path.Combine(dir.Path, "instance"), "*.png").Length * ToyWorld.ClassImagesPerInstanceImage,
            Directory.GetFiles(Path.Combine(dir.Path, "class"), "*.png").Length);
        Assert.EndsWith("xy-grid.png", result.GridPath);
        using (var grid = Image.Load(result.GridPath))   // base model + every save × the grid prompts
            Assert.True(grid.Width > (expectedSaves + 1) * options.Size && grid.Height > ToyDemo.GridPrompts.Length * options.Size, $"grid {grid.Width}x{grid.Height}");
        Assert.Contains("X Type: Checkpoint", PngInfotext.ReadText(result.GridPath) ?? "", StringComparison.OrdinalIgnoreCase);
        using (var curve = Image.Load(result.LossCurvePath)) Assert.True(curve.Width >= 600);
        using var metrics = JsonDocument.Parse(File.ReadAllText(result.MetricsPath));
        Assert.Equal(options.ProbeSamples, metrics.RootElement.GetProperty("instance_before").GetProperty("count").GetInt32());
        Assert.Equal(result.InstanceAfter.SubjectRate, metrics.RootElement.GetProperty("instance_after").GetProperty("subject_rate").GetDouble());
        Assert.Equal(result.TrainingSteps, metrics.RootElement.GetProperty("training_steps").GetInt32());
        Assert.Equal(options.Epochs * 7, result.TrainingSteps);
        Assert.Contains("\"ohwx man\" after", result.Summary());

        // the saves are self-describing: config/ + tokenizer/ beside them, so a path alone loads one
        using var saved = DreamBooth.Checkpoints.StableDiffusionModel.Load(result.Checkpoints[^1]);
        Assert.Equal(64, saved.UNet.Config.CrossAttentionDim);
    }

    /// <summary>A StringWriter that cancels once a written line matches (Ctrl+C at a known moment).</summary>
    sealed class CancelOn(Func<string, bool> when, CancellationTokenSource cts) : StringWriter
    {
        public override void WriteLine(string? value)
        {
            base.WriteLine(value);
            if (value is not null && when(value)) cts.Cancel();
        }
    }

    static readonly string[] Small = ["--epochs", "12", "--save-every", "6", "--probe-samples", "4"];

    /// <summary>metrics.json without what differs between any two runs: timings and the run's own folder in paths.</summary>
    static string Figures(string dir)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "metrics.json")))!.AsObject();
        foreach (var key in new[] { "seconds", "total_seconds", "grid", "loss_curve", "checkpoints" }) node.Remove(key);
        return node.ToJsonString();
    }

    static Dictionary<string, byte[]> Tensors(string path)
    {
        using var st = DreamBooth.Checkpoints.SafeTensors.Open(path);
        return st.LoadAll().ToDictionary(kv => kv.Key, kv => { var b = kv.Value.bytes.ToArray(); kv.Value.Dispose(); return b; });
    }

    static byte[] Pixels(string png)
    {
        using var img = Image.Load<SixLabors.ImageSharp.PixelFormats.Rgb24>(png);
        var bytes = new byte[img.Width * img.Height * 3];
        img.CopyPixelDataTo(bytes);
        return bytes;
    }

    [Fact]
    public async Task Demo_cancelled_mid_training_says_how_to_resume_and_resume_gives_the_uninterrupted_figures()
    {
        using var dir = TestPaths.NewTempDir();
        string a = dir.File("a"), b = dir.File("b");
        var (code, stdout, err) = await Cli.CliTests.Run(["demo", "--output", a, .. Small]);
        Assert.True(code == 0, err + stdout);

        // Ctrl+C once the first epoch is reported: the trainer saves its state before the next step and stops (a save
        // named like an epoch's, ohwx-toy_0001, which the grid must not show: it compares the scheduled saves)
        using var cts = new CancellationTokenSource();
        var output = new CancelOn(line => line.Contains("epoch 1/12"), cts);
        var error = new StringWriter();
        code = await DreamBooth.Cli.CliApp.RunAsync(["demo", "--output", b, .. Small], output, error, cts.Token);
        Assert.True(code == 130, error.ToString() + output);
        Assert.Matches(@"cancelled: training cancelled at step \d+ of 84; its state is saved in ", error.ToString());
        Assert.Contains($"finish it with: dreambooth demo --output {b} --resume", error.ToString());
        Assert.False(File.Exists(Path.Combine(b, "metrics.json")));

        // the same command again would start over and lose the saved training: refused, pointing at --resume
        (code, _, err) = await Cli.CliTests.Run(["demo", "--output", b, .. Small]);
        Assert.Equal(2, code);
        Assert.Contains("holds an unfinished demo run: finish it with --resume", err);
        // --resume takes the run's saved settings; another setting is refused
        (code, _, err) = await Cli.CliTests.Run("demo", "--output", b, "--resume", "--epochs", "5");
        Assert.Equal(2, code);
        Assert.Contains("--epochs: --resume finishes the run with the settings it started with", err);

        (code, stdout, err) = await Cli.CliTests.Run("demo", "--output", b, "--resume");
        Assert.True(code == 0, err + stdout);
        Assert.Matches(@"train: resuming at step \d+/84", stdout);

        // training resumed bitwise, so every figure, save and grid pixel equals the uninterrupted run's
        Assert.Equal(Figures(a), Figures(b));
        foreach (var save in new[] { "ohwx-toy_0006.safetensors", "ohwx-toy_0012.safetensors" })
        {
            // tensor by tensor (the metadata holds each run's own output folder)
            var x = Tensors(Path.Combine(a, "train", save));
            var y = Tensors(Path.Combine(b, "train", save));
            Assert.Equal(x.Keys.Order(), y.Keys.Order());
            Assert.All(x.Keys, k => Assert.True(x[k].AsSpan().SequenceEqual(y[k]), $"{save}: {k} differs after resume"));
        }
        Assert.Equal(Pixels(Path.Combine(a, "xy-grid.png")), Pixels(Path.Combine(b, "xy-grid.png")));
        Assert.Equal(Pixels(Path.Combine(a, "samples-after-ohwx-man.png")), Pixels(Path.Combine(b, "samples-after-ohwx-man.png")));

        // the sample sheets are captioned (a text band above the pictures, different before and after) and the loss
        // curve carries its note under the plot
        using var before = Image.Load<SixLabors.ImageSharp.PixelFormats.Rgb24>(Path.Combine(a, "samples-before-ohwx-man.png"));
        using var after = Image.Load<SixLabors.ImageSharp.PixelFormats.Rgb24>(Path.Combine(a, "samples-after-ohwx-man.png"));
        int sheetHeight = 2 * PictureSize;   // 4 samples: one row of 32-px pictures at zoom 2
        Assert.True(before.Height > sheetHeight + 20, $"sheet {before.Width}x{before.Height}: no caption band");
        int band = before.Height - sheetHeight;
        Assert.True(DarkPixels(before, band) > 200, "no caption text drawn");
        Assert.NotEqual(Band(before, band), Band(after, band));
        using var curve = Image.Load<SixLabors.ImageSharp.PixelFormats.Rgb24>(Path.Combine(a, "loss-curve.png"));
        Assert.True(curve.Height > 420, $"loss curve {curve.Width}x{curve.Height}: no note band");
        Assert.Contains(DreamBooth.Toy.ToyDemo.LossCurveNote, stdout);
    }

    const int PictureSize = 32;   // the toy model's native size

    static int DarkPixels(Image<SixLabors.ImageSharp.PixelFormats.Rgb24> img, int rows)
    {
        int n = 0;
        for (int y = 0; y < rows; y++)
            for (int x = 0; x < img.Width; x++)
                if (img[x, y].R < 100) n++;
        return n;
    }

    static string Band(Image<SixLabors.ImageSharp.PixelFormats.Rgb24> img, int rows)
    {
        var sb = new System.Text.StringBuilder();
        for (int y = 0; y < rows; y++)
            for (int x = 0; x < img.Width; x++)
                sb.Append(img[x, y].R < 128 ? '#' : '.');
        return sb.ToString();
    }
}
