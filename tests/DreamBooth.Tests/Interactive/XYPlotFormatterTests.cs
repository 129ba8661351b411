using System.Text.RegularExpressions;
using DreamBooth.Evaluation;
using DreamBooth.Interactive;
using Microsoft.DotNet.Interactive.Formatting;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Interactive;

public class XYPlotFormatterTests
{
    static XYPlotResult SmallPlot() => XYPlotEngine.Run(
        new XYPlotSpec
        {
            X = XYAxis.Checkpoints([new XYCheckpoint("/r/sks_0005.safetensors", "sks", 5), new XYCheckpoint("/r/sks_0010.safetensors", "sks", 10)]),
            Y = XYAxis.Parse(XYAxisKind.Prompt, "sks dog, a <b>dog</b>"),
            Prompt = "photo of sks dog", Seed = 11,
        },
        (cell, _) => new Image<Rgb24>(16, 16, new Rgb24((byte)(cell.Column * 100), 0, 0)));

    [Fact]
    public void Html_shows_the_grid_and_every_cell_enlargeable_with_its_settings()
    {
        using var result = SmallPlot();
        var html = XYPlotFormatter.ToHtml(result);
        // the labelled grid + 4 cells, each a data-URI PNG behind its own zoom toggle
        Assert.Equal(5, Regex.Matches(html, "<img src=\"data:image/png;base64,").Count);
        Assert.Equal(5, Regex.Matches(html, "type=\"checkbox\"").Count);
        Assert.Contains("<th style=\"text-align:center\">epoch 10</th>", html);
        Assert.Contains("prompt: a &lt;b&gt;dog&lt;/b&gt;", html);          // labels are escaped
        Assert.Contains("title=\"epoch 5 (sks_0005.safetensors), prompt: photo of a &lt;b&gt;dog&lt;/b&gt;", html);
        Assert.Contains("X Type: Checkpoint name", html);
        Assert.DoesNotContain("<b>dog</b>", html);
    }

    [Fact]
    public void Registered_formatter_renders_results_and_contact_sheets_as_html()
    {
        Formatters.Register();
        using var result = SmallPlot();
        var html = result.ToDisplayString(HtmlFormatter.MimeType);
        Assert.Contains("class=\"dreambooth-xyplot\"", html);
        using var img = new Image<Rgb24>(20, 10);
        var sheet = new ImageGrid([new ImageGridItem(img, "a.jpg")], tileSize: 32);
        Assert.Contains("data:image/png;base64,", sheet.ToDisplayString(HtmlFormatter.MimeType));
    }
}
