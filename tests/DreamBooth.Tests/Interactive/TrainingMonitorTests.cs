using DreamBooth.Interactive;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Notebooks;

namespace DreamBooth.Tests.Interactive;

[Collection("notebooks")]
public class TrainingMonitorTests
{
    static IEnumerable<TrainingSample> Samples(int n) => Enumerable.Range(1, n).Select(i =>
        new TrainingSample(i, n, (i + 4) / 5, n / 5, 1.0 / i, 0.8 / i, 0.2 + 0.01 * (i % 3), 1e-4, i <= n * 3 / 4 ? 5e-5 : 0));

    [Fact]
    public void Log_smoothing_eta_and_chart_follow_the_reported_steps()
    {
        var m = new TrainingMonitor(smoothing: 0.5);
        foreach (var s in Samples(20)) m.Report(s);
        var log = m.Log;
        Assert.Equal(20, log.Rows.Count);
        Assert.Equal(1.0, (double)log["loss"][0]!);
        // debiased EMA: the first smoothed value is the first loss; the second is (0.5·0.5·1 + 0.5·0.5)/(1−0.25)
        Assert.Equal(1.0, (double)log["loss_smoothed"][0]!, 12);
        Assert.Equal((0.25 * 1.0 + 0.5 * 0.5) / 0.75, (double)log["loss_smoothed"][1]!, 12);
        Assert.Equal(0.0, (double)log["te_lr"][19]!);
        Assert.NotNull(m.Eta);
        var json = m.LossChart().ToJson();
        Assert.Contains("\"loss (smoothed)\"", json);
        Assert.Contains("\"prior (smoothed)\"", json);
        Assert.Contains("\"instance (smoothed)\"", json);
        m.Complete("finished");
        Assert.Contains("finished", m.ToHtml());
        Assert.Null(m.DisplayId); // outside a notebook nothing is displayed, and nothing breaks
    }

    [Fact]
    public void StopAtStep_cancels_the_token_given_to_the_trainer_once()
    {
        var m = new TrainingMonitor { StopAtStep = 7 };
        var token = m.CancellationToken;
        foreach (var s in Samples(6)) m.Report(s with { TotalSteps = 20 });
        Assert.False(token.IsCancellationRequested);
        m.Report(new TrainingSample(7, 20, 2, 4, 0.1));
        Assert.True(token.IsCancellationRequested);
        m.Report(new TrainingSample(8, 20, 2, 4, 0.1));
        Assert.Single(m.Messages, x => x.Contains("interrupt requested at step 7"));
    }

    [Fact]
    public async Task In_a_notebook_the_monitor_updates_the_one_output_it_displayed_throttled()
    {
        var lib = typeof(TrainingMonitor).Assembly.Location;
        var cells = await NotebookRunner.RunCodeAsync(Path.Combine(TestPaths.RepoRoot, "notebooks", "monitor-test.dib"),
        [
            $"#r \"{lib}\"\n#r \"{typeof(DreamBooth.DreamBoothException).Assembly.Location}\"\n#r \"{typeof(SixLabors.ImageSharp.Image).Assembly.Location}\"\n#r \"{typeof(Microsoft.Data.Analysis.DataFrame).Assembly.Location}\"\nDreamBooth.Interactive.Formatters.Register();",
            """
            using DreamBooth.Interactive;
            var monitor = new TrainingMonitor(updateInterval: TimeSpan.FromMilliseconds(200)).Show();
            for (int i = 1; i <= 40; i++)
            {
                monitor.Report(new TrainingSample(i, 40, i, 40, 1.0 / i, 0.8 / i, 0.2, 1e-4, 5e-5));
                if (i == 20) monitor.AddPreview("ohwx man", new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(16, 16));
                await Task.Delay(20);
            }
            monitor.AddMessage("saved ohwx_0040.safetensors");
            monitor.Complete("finished: 40 steps");
            """,
            "monitor.Updates.ToString()",
        ]);
        Assert.All(cells, c => Assert.True(c.Error is null, $"cell {c.Index} failed: {c.Error}"));
        var run = cells[1];
        var produced = run.Displays.Where(d => d.Kind == "produced").ToList();
        var updated = run.Displays.Where(d => d.Kind == "updated").ToList();
        Assert.Single(produced);                       // ONE displayed value, never a wall of outputs
        Assert.NotNull(produced[0].DisplayId);
        Assert.NotEmpty(updated);
        Assert.All(updated, u => Assert.Equal(produced[0].DisplayId, u.DisplayId)); // updates target the displayed output
        // throttled: 40 steps over ≥ 0.8 s at 200 ms → far fewer updates than reports, plus the final one
        int updates = int.Parse(cells[2].Outputs.First(o => o.MimeType == "text/plain").Value);
        Assert.Equal(updated.Count, updates);
        Assert.InRange(updates, 2, 15);
        var last = run.Outputs.Last(o => o.MimeType == "text/html").Value;
        Assert.Contains("finished: 40 steps", last);
        Assert.Contains("Plotly.newPlot", last);
        Assert.Contains("plotly.js v2", last);      // the final output stands alone
        Assert.Contains("<img src=\"data:image/png;base64,", last);
        Assert.Contains("saved ohwx_0040.safetensors", last);
    }
}
