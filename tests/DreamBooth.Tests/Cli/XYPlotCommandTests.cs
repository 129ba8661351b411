using DreamBooth.Cli.Commands;
using DreamBooth.Evaluation;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Cli;

public class XYPlotCommandTests
{
    static TempDir RunFolder(out string dir, params int[] epochs)
    {
        var tmp = TestPaths.NewTempDir("xyplot-cli");
        foreach (var e in epochs) File.WriteAllText(tmp.File($"sks_{e:0000}.safetensors"), "x");
        dir = tmp.Path;
        return tmp;
    }

    [Fact]
    public void Defaults_put_epochs_in_columns_and_prompts_in_rows()
    {
        using var _ = RunFolder(out var dir, 20, 10);
        var spec = XYPlotCommand.BuildSpec(new() { Checkpoints = [dir], Prompts = ["photo of sks man", "sks man as a knight"], Seed = 4 });
        Assert.Equal(XYAxisKind.Checkpoint, spec.X.Kind);
        Assert.Equal(["epoch 10", "epoch 20"], Enumerable.Range(0, 2).Select(spec.X.Label));
        Assert.Equal(XYAxisKind.Prompt, spec.Y!.Kind);
        Assert.Equal(["photo of sks man", "sks man as a knight"], spec.Plan().Where(c => c.Column == 0).Select(c => c.Prompt));
        Assert.Null(spec.Checkpoint);
    }

    [Fact]
    public void One_prompt_without_values_is_a_single_row()
    {
        using var _ = RunFolder(out var dir, 1, 2, 3);
        var spec = XYPlotCommand.BuildSpec(new() { Checkpoints = [dir], Prompts = ["photo of sks man"] });
        Assert.Null(spec.Y);
        Assert.Equal(3, spec.Plan().Count);
    }

    [Fact]
    public void Other_axes_take_a1111_values_and_a_single_fixed_model()
    {
        using var _ = RunFolder(out var dir, 7);
        var spec = XYPlotCommand.BuildSpec(new()
        {
            Checkpoints = [dir], Prompts = ["photo of sks man"], X = "cfg", XValues = "3-9 [3]", Y = "seed", YValues = "1, 2", Size = "64x96",
        });
        Assert.Equal([3.0, 6, 9], spec.X.Values.Cast<double>());
        Assert.Equal([1L, 2], spec.Y!.Values.Cast<long>());
        Assert.Equal(7, spec.Checkpoint!.Epoch);
        Assert.Equal((64, 96), (spec.Width!.Value, spec.Height!.Value));
    }

    [Theory]
    [InlineData("cfg", null, "--x-values")]
    [InlineData("seed", "1,2", "checkpoint is not an axis")]
    public void Bad_combinations_name_the_option(string x, string? xValues, string expected)
    {
        using var _ = RunFolder(out var dir, 1, 2);
        var e = Assert.Throws<DreamBoothException>(() => XYPlotCommand.BuildSpec(new() { Checkpoints = [dir], Prompts = ["p"], X = x, XValues = xValues }));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public async Task Cli_reports_bad_input_with_exit_2()
    {
        using var _ = RunFolder(out var dir, 1);
        var (code, _, err) = await CliTests.Run("xyplot", "--checkpoints", dir, "--prompts", "photo of sks man", "--y", "steps", "--values", "0-5", "--output", Path.Combine(dir, "g.png"));
        Assert.Equal(2, code);
        Assert.Contains("Steps axis", err);
    }
}
