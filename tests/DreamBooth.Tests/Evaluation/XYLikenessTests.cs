using DreamBooth.Evaluation;
using DreamBooth.Likeness;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Likeness;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Tests.Evaluation;

public class XYLikenessTests(DescriberFixture fx) : IClassFixture<DescriberFixture>
{
    /// <summary>
    /// A "training run" whose cells are real photos. The plain subject row: the base model draws the cameraman, the epochs
    /// the instance photo. The context row ("… at a table"): the base model draws the cameraman's face on a coffee table,
    /// epoch 2 the astronaut's face on the same table (like the person, follows the prompt), epoch 4 the instance photo
    /// itself (like the person, but the training photo's context leaked). Class rows ("man") draw the cameraman.
    /// </summary>
    sealed class PhotoRenderer : ICellRenderer, IDisposable
    {
        readonly Image<Rgb24> _astronaut = Image.Load<Rgb24>(TestPaths.Photo("astronaut.png"));
        readonly Image<Rgb24> _camera = Image.Load<Rgb24>(TestPaths.Photo("camera.png"));
        readonly Image<Rgb24> _astronautAtTable;
        readonly Image<Rgb24> _cameraAtTable;
        XYCheckpoint? _current;

        public PhotoRenderer()
        {
            _astronautAtTable = AtTable(_astronaut, new Rectangle(130, 30, 190, 230));
            _cameraAtTable = AtTable(_camera, new Rectangle(150, 80, 150, 160));
        }

        /// <summary>The face region of a photo pasted onto the coffee-table photo, at the same place.</summary>
        static Image<Rgb24> AtTable(Image<Rgb24> photo, Rectangle face)
        {
            var table = Image.Load<Rgb24>(TestPaths.Photo("coffee.png"));
            table.Mutate(c => c.Resize(512, 512));
            using var part = photo.Clone(c => c.Crop(face));
            table.Mutate(c => c.DrawImage(part, face.Location, 1f));
            return table;
        }

        public void LoadCheckpoint(XYCheckpoint? checkpoint, CancellationToken ct) => _current = checkpoint;

        public Image<Rgb24> Render(CellRequest cell, CancellationToken ct)
        {
            bool instance = cell.Prompt.Contains("ohwx", StringComparison.Ordinal), table = cell.Prompt.Contains("table", StringComparison.Ordinal);
            var source = !instance ? _camera
                : _current!.Epoch is null ? (table ? _cameraAtTable : _camera)
                : table && _current.Epoch == 2 ? _astronautAtTable : _astronaut;
            return source.Clone(c => c.Resize(256, 256));
        }

        public void Dispose()
        {
            _astronaut.Dispose();
            _camera.Dispose();
            _astronautAtTable.Dispose();
            _cameraAtTable.Dispose();
        }
    }

    [Fact]
    public void Scores_every_cell_summarises_per_checkpoint_suggests_the_one_that_is_alike_without_leaking_and_draws_the_scores()
    {
        using var astronaut = Image.Load<Rgb24>(TestPaths.Photo("astronaut.png"));
        using var mirrorCrop = astronaut.Clone(c => c.Crop(new Rectangle(60, 0, 400, 460)).Flip(FlipMode.Horizontal));
        var reference = IdentityReference.FromImages([("astronaut.png", astronaut), ("mirror-crop.png", mirrorCrop)], fx.Describer);
        var checkpoints = new[]
        {
            new XYCheckpoint("/models/base.safetensors", "base model", null),
            new XYCheckpoint("/runs/ohwx_0002.safetensors", "ohwx", 2),
            new XYCheckpoint("/runs/ohwx_0004.safetensors", "ohwx", 4),
        };
        var spec = new XYPlotSpec { X = XYAxis.Checkpoints(checkpoints), Y = XYAxis.PromptSR(["ohwx man", "ohwx man at a table", "man"]), Prompt = "photo of ohwx man", Seed = 1 };
        using var renderer = new PhotoRenderer();
        using var plot = XYPlotEngine.Run(spec, renderer);
        using var report = XYLikeness.Score(plot, new LikenessScorer(fx.Describer, reference));

        // every cell scored by the scorer (same numbers as scoring the cell image directly)
        Assert.Equal(9, report.Cells.Count);
        var direct = new LikenessScorer(fx.Describer, reference).Score(plot[1, 1].Image);
        Assert.Equal(direct.Distance, report[1, 1].Score.Distance);
        Assert.True(report[1, 1].Score.SamePerson);             // epoch 2, at a table: the astronaut's face
        Assert.True(report[2, 1].Score.SamePerson);             // epoch 4, at a table: the astronaut photo
        Assert.False(report[0, 1].Score.SamePerson);            // base model: the cameraman
        Assert.All(Enumerable.Range(0, 3), c => Assert.False(report[c, 2].InstanceRow));
        // the plain subject row is not judged for context, the "at a table" row is
        Assert.False(report[2, 0].ContextRow);
        Assert.True(report[2, 1].ContextRow);
        // epoch 4's table cell is the training photo (context distance 0 to it, far from the base model's table): it leaks;
        // epoch 2's table cell is much closer to the base model's table than to any training photo
        Assert.True(report[2, 1].Leaks);
        Assert.True(report[2, 1].Score.ContextDistance < 1.0); // the photo itself, resized
        Assert.False(report[1, 1].Leaks);
        Assert.True(report[1, 1].BaseContextDistance < report[1, 1].Score.ContextDistance, $"{report[1, 1].BaseContextDistance} vs {report[1, 1].Score.ContextDistance}");
        var (b, e2, e4) = (report.Checkpoints[0], report.Checkpoints[1], report.Checkpoints[2]);
        Assert.True(b.Baseline);
        Assert.Equal("base model", report.ReferenceColumn);
        Assert.Equal((1, 1), (e4.LeakingCells, e4.ContextCells));
        Assert.Equal((0, 1), (e2.LeakingCells, e2.ContextCells));
        Assert.True(e4.Distance < 0.6 && e2.Distance < 0.6, $"{e2.Distance}, {e4.Distance}"); // both look like the person
        Assert.Equal(0, e2.ClassLikePerson);
        // suggestion: epoch 2, and the reason names epoch 4's leak
        Assert.Same(e2, report.Suggested);
        Assert.Contains("epoch 2: mean distance", report.Reason);
        Assert.Contains("epoch 4", report.Reason);
        Assert.Contains("leaks context", report.Reason);
        // the grid shows the scores: a green band under same-person cells, red under the others
        var rect = plot.Layout.CellRect(1, 0);
        var green = report.Grid[rect.X + 1, rect.Bottom - 2];
        Assert.True(green.G > green.R + 40, $"band under a same-person cell: {green}");
        rect = plot.Layout.CellRect(0, 0);
        var red = report.Grid[rect.X + 1, rect.Bottom - 2];
        Assert.True(red.R > red.G + 40, $"band under a different-person cell: {red}");
        Assert.Equal(plot.Grid[rect.X + 1, rect.Y + 1], report.Grid[rect.X + 1, rect.Y + 1]); // the image above the band is untouched
        Console.WriteLine(report.Reason);
        // the chart: a line per prompt over epochs 2 and 4, the base model's level dashed, the 0.6 line, the context ratio on the right axis
        var chart = DreamBooth.Interactive.LikenessView.Chart(report);
        var names = chart.Data.Select(t => (string)t!["name"]!).ToList();
        Assert.Contains("photo of ohwx man", names);
        Assert.Contains("photo of man (class)", names);
        Assert.Contains("photo of ohwx man: base model", names);
        Assert.Contains("photo of ohwx man at a table", names);
        Assert.Contains("same-person threshold 0.6", names);
        var ohwx = chart.Data.First(t => (string)t!["name"]! == "photo of ohwx man")!;
        Assert.Equal([2.0, 4.0], ohwx["x"]!.AsArray().Select(v => (double)v!));
        Assert.Equal(report[1, 0].Score.Distance!.Value, (double)ohwx["y"]![0]!, 9);
        var baseLevel = chart.Data.First(t => (string)t!["name"]! == "photo of ohwx man: base model")!;
        Assert.Equal(report[0, 0].Score.Distance!.Value, (double)baseLevel["y"]![0]!, 9);
        Assert.Equal("dash", (string)baseLevel["line"]!["dash"]!);
        Assert.Contains(chart.Data, t => (string?)t!["yaxis"] == "y2");
        // as data
        var json = report.ToJson();
        Assert.Equal("epoch 2", (string)json["suggested"]!);
        Assert.Equal(9, json["cells"]!.AsArray().Count);
        Assert.True((bool)json["cells"]![5]!["leaks"]!);          // row 1, column 2 (row-major): epoch 4 at a table
        Assert.Equal(3, json["checkpoints"]!.AsArray().Count);
    }

    [Fact]
    public void Cells_without_faces_say_so_and_no_checkpoint_is_suggested()
    {
        using var astronaut = Image.Load<Rgb24>(TestPaths.Photo("astronaut.png"));
        var reference = IdentityReference.FromImages([("astronaut.png", astronaut)], fx.Describer);
        var spec = new XYPlotSpec { X = XYAxis.Checkpoints([new XYCheckpoint("/r/t_0001.safetensors", "t", 1), new XYCheckpoint("/r/t_0002.safetensors", "t", 2)]), Prompt = "ohwx man", Seed = 1 };
        // a tiny model's output: flat colour, no face
        using var plot = XYPlotEngine.Run(spec, (cell, _) => new Image<Rgb24>(64, 64, new Rgb24((byte)(40 * cell.Column), 120, 90)));
        using var report = XYLikeness.Score(plot, new LikenessScorer(fx.Describer, reference));
        Assert.All(report.Cells, c => Assert.False(c.Score.FaceFound));
        Assert.Null(report.Suggested);
        Assert.Contains("no face was found in any cell", report.Reason);
        var rect = plot.Layout.CellRect(0, 0);
        var grey = report.Grid[rect.X + 1, rect.Bottom - 2];
        Assert.True(Math.Abs(grey.R - grey.G) < 30 && Math.Abs(grey.G - grey.B) < 40, $"grey band: {grey}");
        // one plain prompt: its cells are the context cells; the first column is the reference without a baseline
        Assert.All(report.Cells, c => Assert.True(c.ContextRow));
        Assert.Equal((0, 1), (report.Checkpoints[0].ContextCells, report.Checkpoints[1].ContextCells));
        Assert.NotNull(report[1, 0].BaseContextDistance);
    }
}
