using DreamBooth.Evaluation;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Evaluation;

public class XYPlotEngineTests
{
    static IReadOnlyList<XYCheckpoint> Epochs(params int[] epochs) =>
        epochs.Select(e => new XYCheckpoint($"/runs/sks_{e:0000}.safetensors", "sks", e)).ToList();

    /// <summary>A fake model loader + renderer: records loads and the model each cell was rendered with.</summary>
    sealed class FakeRenderer : ICellRenderer
    {
        public readonly List<XYCheckpoint?> Loads = [];
        public readonly List<(CellRequest Cell, XYCheckpoint? Model)> Rendered = [];
        XYCheckpoint? _current;
        public Action<CellRequest>? OnRender;

        public void LoadCheckpoint(XYCheckpoint? checkpoint, CancellationToken ct) { Loads.Add(checkpoint); _current = checkpoint; }

        public Image<Rgb24> Render(CellRequest cell, CancellationToken ct)
        {
            OnRender?.Invoke(cell);
            Rendered.Add((cell, _current));
            return new Image<Rgb24>(16, 16, new Rgb24((byte)(cell.Column * 60), (byte)(cell.Row * 60), 200));
        }
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Checkpoint_axis_is_the_outer_loop_so_each_model_loads_once(bool checkpointOnX)
    {
        var ckpt = XYAxis.Checkpoints(Epochs(5, 10, 15));
        var cfg = XYAxis.Cfg([4, 7.5]);
        var spec = new XYPlotSpec { X = checkpointOnX ? ckpt : cfg, Y = checkpointOnX ? cfg : ckpt, Prompt = "sks", Seed = 3 };
        var fake = new FakeRenderer();
        using var result = XYPlotEngine.Run(spec, fake);

        Assert.Equal(3, fake.Loads.Count);
        Assert.Equal(3, result.CheckpointLoads);
        Assert.Equal([5, 10, 15], fake.Loads.Select(c => c!.Epoch!.Value));
        Assert.Equal(6, fake.Rendered.Count);
        Assert.All(fake.Rendered, r => Assert.Same(r.Cell.Checkpoint, r.Model));
        // cells of one checkpoint are contiguous
        var order = fake.Rendered.Select(r => r.Model!.Epoch!.Value).ToList();
        Assert.Equal([5, 5, 10, 10, 15, 15], order);
        Assert.All(fake.Rendered, r => Assert.Equal(3, r.Cell.Seed));
    }

    [Fact]
    public void Without_a_checkpoint_axis_the_fixed_model_loads_once_and_cells_go_row_by_row()
    {
        var fixedModel = Epochs(40)[0];
        var spec = new XYPlotSpec { X = XYAxis.Seeds([1, 2, 3]), Y = XYAxis.Parse(XYAxisKind.Sampler, "Euler a, DDIM"), Checkpoint = fixedModel, Seed = 9 };
        var fake = new FakeRenderer();
        using var result = XYPlotEngine.Run(spec, fake);
        Assert.Equal([fixedModel], fake.Loads);
        Assert.Equal([(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)], fake.Rendered.Select(r => (r.Cell.Column, r.Cell.Row)));
        Assert.Equal([1L, 2, 3, 1, 2, 3], fake.Rendered.Select(r => r.Cell.Seed));
        Assert.Equal(["Euler a", "Euler a", "Euler a", "DDIM", "DDIM", "DDIM"], fake.Rendered.Select(r => r.Cell.Sampler));
        // result cells row-major with the settings each was rendered with
        Assert.Equal(2L, result[1, 1].Request.Seed);
        Assert.Equal("DDIM", result[1, 1].Request.Sampler);
        Assert.Equal(new Rgb24(60, 60, 200), result[1, 1].Image[0, 0]);
    }

    [Fact]
    public void Progress_reports_every_cell_and_loads()
    {
        var spec = new XYPlotSpec { X = XYAxis.Checkpoints(Epochs(1, 2)), Y = XYAxis.Steps([10, 20]), Seed = 1 };
        var events = new List<XYPlotProgress>();
        using var _ = XYPlotEngine.Run(spec, new FakeRenderer(), new SyncProgress<XYPlotProgress>(events.Add));
        Assert.Equal(2, events.Count(e => e.Phase == XYPlotPhase.LoadingCheckpoint));
        Assert.Equal([1, 2, 3, 4], events.Where(e => e.Phase == XYPlotPhase.CellDone).Select(e => e.Done));
        Assert.All(events, e => Assert.Equal(4, e.Total));
        Assert.Equal(XYPlotPhase.Composing, events[^1].Phase);
    }

    [Fact]
    public void Cancellation_stops_between_cells()
    {
        using var cts = new CancellationTokenSource();
        var fake = new FakeRenderer();
        fake.OnRender = c => { if (c.Index == 2) cts.Cancel(); };
        var spec = new XYPlotSpec { X = XYAxis.Seeds([1, 2, 3, 4, 5]), Seed = 1 };
        Assert.Throws<OperationCanceledException>(() => XYPlotEngine.Run(spec, fake, cancellationToken: cts.Token));
        Assert.Equal(3, fake.Rendered.Count);
    }

    [Fact]
    public void Infotext_describes_the_axes_and_is_saved_in_the_png()
    {
        var spec = new XYPlotSpec
        {
            X = XYAxis.Checkpoints(Epochs(10, 20)), Y = XYAxis.Parse(XYAxisKind.Prompt, "sks dog, \"a dog, wet\""),
            Prompt = "photo of sks dog", NegativePrompt = "blurry", Seed = 77, Steps = 12, Cfg = 6, Sampler = "Euler a",
        };
        using var result = XYPlotEngine.Run(spec, new FakeRenderer());
        using var dir = Infrastructure.TestPaths.NewTempDir();
        var path = result.Save(dir.File("grid.png"));
        Assert.Equal(path, result.Path);
        var text = DreamBooth.Pipelines.PngInfotext.ReadText(path);
        Assert.Equal(
            "photo of sks dog\nNegative prompt: blurry\nSteps: 12, Sampler: Euler a, CFG scale: 6, Seed: 77, Size: 16x16, Model: sks_0010, Clip skip: 1, " +
            "X Type: Checkpoint name, X Values: \"sks_0010.safetensors, sks_0020.safetensors\", Y Type: Prompt S/R, Y Values: \"sks dog, \\\"a dog, wet\\\"\"",
            text);
        using var back = Image.Load<Rgb24>(path);
        Assert.Equal(result.Grid.Size(), back.Size());
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp"));
    }

    sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
    {
        public void Report(T value) => report(value);
    }
}
