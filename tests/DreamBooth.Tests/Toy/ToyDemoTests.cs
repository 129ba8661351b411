using System.Text.Json;
using DreamBooth.Pipelines;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Toy;
using SixLabors.ImageSharp;

namespace DreamBooth.Tests.Toy;

/// <summary>
/// The README's main job, shortened (2 epochs, 2 probe pictures, 4 sampling steps): every stage runs on the
/// embedded toy model and writes what the README promises. Whether the subject is learned is measured by
/// the full run's figures (see the closing notes / MODEL_CARD), not asserted here.
/// </summary>
public class ToyDemoTests
{
    [Fact]
    public async Task Demo_runs_every_stage_and_writes_grid_loss_curve_and_figures()
    {
        using var dir = TestPaths.NewTempDir();
        var log = new List<string>();
        var result = await ToyDemo.RunAsync(new ToyDemoOptions
        {
            OutputDir = dir.Path,
            Epochs = 2,
            SaveEveryEpochs = 1,
            ProbeSamples = 2,
            SamplingSteps = 4,
        }, new Progress<string>(log.Add));

        Assert.Equal(2, result.Checkpoints.Count);
        Assert.All(result.Checkpoints, c => Assert.True(File.Exists(c), c));
        Assert.Equal(Directory.GetFiles(Path.Combine(dir.Path, "instance"), "*.png").Length * ToyWorld.ClassImagesPerInstanceImage,
            Directory.GetFiles(Path.Combine(dir.Path, "class"), "*.png").Length);
        Assert.EndsWith("xy-grid.png", result.GridPath);
        using (var grid = Image.Load(result.GridPath))
            Assert.True(grid.Width > 2 * 32 && grid.Height > 3 * 32, $"grid {grid.Width}x{grid.Height}");
        Assert.Contains("X Type: Checkpoint", PngInfotext.ReadText(result.GridPath) ?? "", StringComparison.OrdinalIgnoreCase);
        using (var curve = Image.Load(result.LossCurvePath)) Assert.True(curve.Width >= 600);
        using var metrics = JsonDocument.Parse(File.ReadAllText(result.MetricsPath));
        Assert.Equal(2, metrics.RootElement.GetProperty("instance_before").GetProperty("count").GetInt32());
        Assert.Equal(result.TrainingSteps, metrics.RootElement.GetProperty("training_steps").GetInt32());
        Assert.True(result.TrainingSteps >= 2 * 2);
        Assert.Contains("\"ohwx man\" after", result.Summary());
    }
}
