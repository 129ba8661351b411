using Microsoft.Data.Analysis;
using Microsoft.DotNet.Interactive.Formatting;
using Plotly.NET;
using SixLabors.ImageSharp;

namespace DreamBooth.Interactive;

/// <summary>
/// Registers the workbench's notebook formatters: images as inline PNG, Plotly charts with plotly.js
/// embedded, DataFrames as tables, and every library result type that has an HTML view.
/// Called once by <see cref="Notebook.Setup"/>; safe to call again.
/// </summary>
public static class Formatters
{
    static readonly List<Action> Registrations = [];
    static bool _done;

    /// <summary>Lets other parts of this assembly add their formatters (one file per result type).</summary>
    public static void Add(Action register) { lock (Registrations) Registrations.Add(register); }

    public static void Register()
    {
        lock (Registrations)
        {
            if (_done) return;
            XYPlotFormatter.Hook();
            Formatter.Register<Image>((image, writer) => writer.Write(DreamBooth.Interactive.Html.Img(image)), HtmlFormatter.MimeType);
            Formatter.SetPreferredMimeTypesFor(typeof(Image), HtmlFormatter.MimeType);
            Formatter.Register<PlotlyFigure>((figure, writer) => writer.Write(Charts.ToHtml(figure)), HtmlFormatter.MimeType);
            Formatter.SetPreferredMimeTypesFor(typeof(PlotlyFigure), HtmlFormatter.MimeType);
            Formatter.Register<GenericChart>((chart, writer) => writer.Write(Charts.ToHtml(chart)), HtmlFormatter.MimeType);
            Formatter.SetPreferredMimeTypesFor(typeof(GenericChart), HtmlFormatter.MimeType);
            Formatter.Register<DataFrame>((df, writer) => writer.Write(DataFrameHtml.ToHtml(df)), HtmlFormatter.MimeType);
            Formatter.SetPreferredMimeTypesFor(typeof(DataFrame), HtmlFormatter.MimeType);
            foreach (var r in Registrations) r();
            _done = true;
        }
    }

    /// <summary>Registers an HTML formatter for a library type.</summary>
    public static void Html<T>(Func<T, string> render) where T : notnull
    {
        Formatter.Register<T>((value, writer) => writer.Write(render(value)), HtmlFormatter.MimeType);
        Formatter.SetPreferredMimeTypesFor(typeof(T), HtmlFormatter.MimeType);
    }
}
