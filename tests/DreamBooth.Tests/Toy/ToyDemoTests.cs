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
}
