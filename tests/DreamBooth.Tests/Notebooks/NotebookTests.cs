using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Notebooks;

/// <summary>Notebooks change the process's current directory while they run: never in parallel with each other.</summary>
[CollectionDefinition("notebooks", DisableParallelization = true)]
public sealed class NotebookCollection;

[Collection("notebooks")]
public class SmokeNotebookTests
{
    static string Notebook(string name) => Path.Combine(TestPaths.RepoRoot, "notebooks", name);

    [Fact]
    public async Task Smoke_notebook_loads_the_library_runs_torch_and_shows_an_image_and_a_plotly_chart()
    {
        var cells = await NotebookRunner.RunAsync(Notebook("00-smoke.dib"));
        Assert.All(cells, c => Assert.True(c.Error is null, $"cell {c.Index} failed: {c.Error}"));
        var outputs = cells.SelectMany(c => c.Outputs).ToList();
        Assert.Contains(outputs, o => o.MimeType == "text/html" && o.Value.Contains("<img src=\"data:image/png;base64,"));
        // plotly.js itself is embedded (offline), and a plot is created
        Assert.Contains(outputs, o => o.MimeType == "text/html" && o.Value.Contains("Plotly.newPlot") && o.Value.Contains("plotly.js v2") && o.Value.Length > 1_000_000);
        Assert.Contains(outputs, o => o.Value.Contains("backend: cpu"));
        Assert.True(File.Exists(Path.Combine(TestPaths.RepoRoot, "artifacts", "notebooks", "00-smoke.ipynb")));
    }
}
