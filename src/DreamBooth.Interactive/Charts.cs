using System.Text.Json;
using System.Text.Json.Nodes;
using Plotly.NET;

namespace DreamBooth.Interactive;

/// <summary>
/// A Plotly figure (plotly.js <c>data</c> + <c>layout</c>) rendered inline with plotly.js embedded, so it
/// shows offline and in saved .ipynb files. We build the figure JSON ourselves: inside the notebook
/// kernel, Plotly.NET's own serialization fails to initialise (its Giraffe.ViewEngine dependency binds
/// against a different FSharp.Core there: MissingMethodException), while its bundled plotly.js is fine.
/// </summary>
public sealed class PlotlyFigure(JsonArray data, JsonObject layout)
{
    public JsonArray Data { get; } = data;
    public JsonObject Layout { get; } = layout;

    public string ToJson() => new JsonObject { ["data"] = Data.DeepClone(), ["layout"] = Layout.DeepClone() }.ToJsonString();

    /// <summary>Self-contained HTML (plotly.js inline once per notebook session, see <see cref="Charts.ToHtml(PlotlyFigure)"/>).</summary>
    public string ToHtml() => Charts.ToHtml(this);
}

/// <summary>Chart builders and the plotly.js embedding shared by every chart the workbench shows.</summary>
public static class Charts
{
    static bool _scriptEmitted;
    static string? _plotlyJs;

    /// <summary>One line trace.</summary>
    public sealed record Series(string Name, IReadOnlyList<double> X, IReadOnlyList<double> Y, string? Color = null, double? Width = null, double Opacity = 1.0, string? Dash = null, string? YAxis = null);

    /// <summary>A line chart of named series (e.g. raw and smoothed loss).</summary>
    public static PlotlyFigure Lines(string title, string xTitle, string yTitle, IEnumerable<Series> series, string? y2Title = null, bool logY = false)
    {
        var data = new JsonArray();
        foreach (var s in series)
        {
            var t = new JsonObject
            {
                ["type"] = "scatter",
                ["mode"] = "lines",
                ["name"] = s.Name,
                ["x"] = Numbers(s.X),
                ["y"] = Numbers(s.Y),
                ["opacity"] = s.Opacity,
            };
            var line = new JsonObject();
            if (s.Color is not null) line["color"] = s.Color;
            if (s.Width is double w) line["width"] = w;
            if (s.Dash is not null) line["dash"] = s.Dash;
            if (line.Count > 0) t["line"] = line;
            if (s.YAxis is not null) t["yaxis"] = s.YAxis;
            data.Add(t);
        }
        var layout = BaseLayout(title, xTitle, yTitle, logY);
        if (y2Title is not null)
            layout["yaxis2"] = new JsonObject { ["title"] = new JsonObject { ["text"] = y2Title }, ["overlaying"] = "y", ["side"] = "right" };
        return new PlotlyFigure(data, layout);
    }

    /// <summary>A bar chart (e.g. the bucket histogram).</summary>
    public static PlotlyFigure Bars(string title, IReadOnlyList<string> labels, IReadOnlyList<double> values, string xTitle = "", string yTitle = "count")
    {
        var t = new JsonObject
        {
            ["type"] = "bar",
            ["x"] = new JsonArray(labels.Select(l => (JsonNode?)JsonValue.Create(l)).ToArray()),
            ["y"] = Numbers(values),
            ["textposition"] = "auto",
            ["text"] = new JsonArray(values.Select(v => (JsonNode?)JsonValue.Create(v.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToArray()),
        };
        return new PlotlyFigure([t], BaseLayout(title, xTitle, yTitle, false));
    }

    static JsonArray Numbers(IEnumerable<double> values) =>
        new(values.Select(v => (JsonNode?)(double.IsFinite(v) ? JsonValue.Create(v) : null)).ToArray());

    static JsonObject BaseLayout(string title, string xTitle, string yTitle, bool logY)
    {
        var y = new JsonObject { ["title"] = new JsonObject { ["text"] = yTitle } };
        if (logY) y["type"] = "log";
        return new JsonObject
        {
            ["title"] = new JsonObject { ["text"] = title },
            ["xaxis"] = new JsonObject { ["title"] = new JsonObject { ["text"] = xTitle } },
            ["yaxis"] = y,
            ["height"] = 380,
            ["margin"] = new JsonObject { ["l"] = 60, ["r"] = 60, ["t"] = 50, ["b"] = 50 },
        };
    }

    /// <summary>
    /// The figure's HTML. The first chart after <see cref="ResetEmbeddedScript"/> (called by each
    /// notebook's set-up) carries plotly.js itself inline, so every saved notebook is self-contained;
    /// later charts of the same session reuse the loaded <c>Plotly</c> global instead of repeating
    /// 3.5 MB per output (the training monitor redraws every few seconds).
    /// </summary>
    public static string ToHtml(PlotlyFigure figure) => Wrap(figure.ToJson());

    /// <summary>The figure's HTML, carrying plotly.js inline when <paramref name="embedScript"/> (a final output that must stand alone).</summary>
    public static string ToHtml(PlotlyFigure figure, bool embedScript)
    {
        var html = Wrap(figure.ToJson());
        return embedScript && !html.StartsWith("<script type=\"text/javascript\">", StringComparison.Ordinal)
            ? $"<script type=\"text/javascript\">{PlotlyJs()}</script>{html}" : html;
    }

    /// <summary>Same for a Plotly.NET chart built by the user (works where Plotly.NET's JSON layer initialises).</summary>
    public static string ToHtml(GenericChart chart) => Wrap(GenericChart.toFigureJson(chart));

    static string Wrap(string figureJson)
    {
        string id = "plot-" + Guid.NewGuid().ToString("N");
        string html =
            $"<div id=\"{id}\" style=\"width:100%\"></div>" +
            "<script type=\"text/javascript\">(function(){" +
            $"var fig={figureJson};" +
            $"function draw(){{ if (typeof Plotly === 'undefined') {{ setTimeout(draw, 50); return; }} Plotly.newPlot('{id}', fig.data, fig.layout, {{responsive:true}}); }}" +
            "draw();})();</script>";
        bool embed;
        lock (typeof(Charts)) { embed = !_scriptEmitted; _scriptEmitted = true; }
        return embed ? $"<script type=\"text/javascript\">{PlotlyJs()}</script>{html}" : html;
    }

    /// <summary>Makes the next chart embed plotly.js again (a new notebook/kernel).</summary>
    public static void ResetEmbeddedScript() { lock (typeof(Charts)) _scriptEmitted = false; }

    /// <summary>The plotly.js bundled inside the Plotly.NET package (no network needed).</summary>
    public static string PlotlyJs()
    {
        if (_plotlyJs is not null) return _plotlyJs;
        var asm = typeof(GenericChart).Assembly;
        var name = asm.GetManifestResourceNames().First(n => n.EndsWith(".min.js", StringComparison.Ordinal) && n.Contains("plotly", StringComparison.OrdinalIgnoreCase));
        using var stream = asm.GetManifestResourceStream(name)!;
        using var reader = new StreamReader(stream);
        return _plotlyJs = reader.ReadToEnd();
    }
}
