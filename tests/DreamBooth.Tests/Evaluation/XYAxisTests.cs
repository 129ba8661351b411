using DreamBooth.Evaluation;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Evaluation;

public class XYAxisTests
{
    [Theory]
    [InlineData("1-5", new long[] { 1, 2, 3, 4, 5 })]
    [InlineData("1-10 (+3)", new long[] { 1, 4, 7, 10 })]
    [InlineData("10-1 (-4)", new long[] { 10, 6, 2 })]
    [InlineData("0-100 [5]", new long[] { 0, 25, 50, 75, 100 })]
    [InlineData("7, 42, 1000-1002", new long[] { 7, 42, 1000, 1001, 1002 })]
    [InlineData("5-1", new long[] { 5, 4, 3, 2, 1 })]
    public void Integer_values_and_ranges_expand_like_a1111(string text, long[] expected)
    {
        var axis = XYAxis.Parse(XYAxisKind.Seed, text);
        Assert.Equal(expected, axis.Values.Cast<long>());
    }

    [Theory]
    [InlineData("3, 7.5, 12", new[] { 3, 7.5, 12 })]
    [InlineData("5-9 (+1.5)", new[] { 5, 6.5, 8 })]
    [InlineData("3-12 [4]", new[] { 3.0, 6, 9, 12 })]
    public void Cfg_values_and_ranges(string text, double[] expected)
    {
        var axis = XYAxis.Parse(XYAxisKind.Cfg, text);
        Assert.Equal(expected, axis.Values.Cast<double>());
        Assert.Equal("CFG: " + XYAxis.Format(expected[1]), axis.Label(1));
    }

    [Theory]
    [InlineData(XYAxisKind.Steps, "abc", "'abc' is not an integer")]
    [InlineData(XYAxisKind.Steps, "0", "out of range")]
    [InlineData(XYAxisKind.Seed, "1-10 (-1)", "never reaches 10")]
    [InlineData(XYAxisKind.Seed, "1-1000", "1000 values")]
    [InlineData(XYAxisKind.Cfg, "7,,8", "empty value")]
    [InlineData(XYAxisKind.Cfg, "-3", "out of range")]
    [InlineData(XYAxisKind.Prompt, "\"dog, cat", "unclosed quote")]
    public void Bad_values_are_clear_errors(XYAxisKind kind, string text, string expected)
    {
        var e = Assert.Throws<DreamBoothException>(() => XYAxis.Parse(kind, text));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain("\n", e.Message);
    }

    [Fact]
    public void Csv_keeps_quoted_commas_and_trims()
    {
        Assert.Equal(["sks dog", "a dog, wet", "say \"hi\""], XYAxis.SplitCsv(" sks dog , \"a dog, wet\", \"say \"\"hi\"\"\""));
    }

    [Theory]
    [InlineData("Checkpoint", XYAxisKind.Checkpoint)]
    [InlineData("prompt s/r", XYAxisKind.Prompt)]
    [InlineData("CFG Scale", XYAxisKind.Cfg)]
    [InlineData("seed", XYAxisKind.Seed)]
    [InlineData("steps", XYAxisKind.Steps)]
    [InlineData("Sampler", XYAxisKind.Sampler)]
    public void Axis_kinds_parse_by_name(string name, XYAxisKind kind) => Assert.Equal(kind, XYAxis.ParseKind(name));

    [Fact]
    public void Unknown_axis_kind_lists_the_valid_ones()
    {
        var e = Assert.Throws<DreamBoothException>(() => XYAxis.ParseKind("denoise"));
        Assert.Contains("checkpoint, prompt, cfg, seed, steps or sampler", e.Message);
    }

    [Fact]
    public void Prompt_sr_replaces_the_first_value_in_both_prompts()
    {
        var spec = new XYPlotSpec
        {
            X = XYAxis.Parse(XYAxisKind.Prompt, "sks man, a man, \"sks man, smiling\""),
            Prompt = "photo of sks man in a park",
            NegativePrompt = "blurry, sks man twice",
            Seed = 5,
        };
        var cells = spec.Resolve().Plan();
        Assert.Equal(["photo of sks man in a park", "photo of a man in a park", "photo of sks man, smiling in a park"], cells.Select(c => c.Prompt));
        Assert.Equal("blurry, a man twice", cells[1].NegativePrompt);
        Assert.Equal("prompt: a man", cells[1].XLabel);
        Assert.All(cells, c => Assert.Equal(5, c.Seed));
    }

    [Fact]
    public void Prompt_sr_search_string_must_occur_in_a_prompt()
    {
        var spec = new XYPlotSpec { X = XYAxis.Parse(XYAxisKind.Prompt, "sks dog, cat"), Prompt = "photo of sks man" };
        var e = Assert.Throws<DreamBoothException>(() => spec.Resolve());
        Assert.Contains("'sks dog'", e.Message);
    }

    [Fact]
    public void Checkpoint_folder_lists_saved_epochs_in_epoch_order()
    {
        using var dir = TestPaths.NewTempDir();
        foreach (var name in new[] { "run_0010.safetensors", "run_0002.safetensors", "run_0100.safetensors", "notes.txt", "base.safetensors", "run_0010_ema.safetensors", "run_0010_s000050.safetensors" })
            File.WriteAllText(dir.File(name), "x");
        var axis = XYAxis.Parse(XYAxisKind.Checkpoint, dir.Path);
        Assert.Equal([2, 10, 100], axis.Values.Cast<XYCheckpoint>().Select(c => c.Epoch!.Value));
        Assert.Equal(["epoch 2", "epoch 10", "epoch 100"], Enumerable.Range(0, 3).Select(axis.Label));
        Assert.Equal("run_0002.safetensors, run_0010.safetensors, run_0100.safetensors", axis.RawValues());
    }

    [Fact]
    public void Checkpoint_files_keep_the_given_order_and_name_unnumbered_files()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.File("run_0020.safetensors"), "x");
        File.WriteAllText(dir.File("base.safetensors"), "x");
        var list = XYCheckpoint.Resolve([dir.File("run_0020.safetensors"), dir.File("base.safetensors")]);
        Assert.Equal(["epoch 20", "base"], list.Select(c => c.Label));
    }

    [Fact]
    public void Checkpoint_folder_problems_are_clear()
    {
        using var dir = TestPaths.NewTempDir();
        Assert.Contains("no saved epochs", Assert.Throws<DreamBoothException>(() => XYCheckpoint.FindEpochs(dir.Path)).Message);
        File.WriteAllText(dir.File("a_0001.safetensors"), "x");
        File.WriteAllText(dir.File("b_0002.safetensors"), "x");
        Assert.Contains("2 runs", Assert.Throws<DreamBoothException>(() => XYCheckpoint.FindEpochs(dir.Path)).Message);
        Assert.Contains("not found", Assert.Throws<DreamBoothException>(() => XYCheckpoint.Resolve([dir.File("missing.safetensors")])).Message);
    }

    [Fact]
    public void Spec_validation()
    {
        var seeds = XYAxis.Seeds([1, 2]);
        Assert.Contains("both Seed", Assert.Throws<DreamBoothException>(() => new XYPlotSpec { X = seeds, Y = XYAxis.Seeds([3]) }.Resolve()).Message);
        Assert.Contains("multiple of 8", Assert.Throws<DreamBoothException>(() => new XYPlotSpec { X = seeds, Width = 100 }.Resolve()).Message);
        Assert.Contains("cells", Assert.Throws<DreamBoothException>(() =>
            new XYPlotSpec { X = XYAxis.Seeds(Enumerable.Range(0, 30).Select(i => (long)i)), Y = XYAxis.Steps(Enumerable.Range(1, 30)) }.Resolve()).Message);
        Assert.Contains("Seed axis", Assert.Throws<DreamBoothException>(() => new XYPlotSpec { X = XYAxis.Seeds([-1, 2]) }.Resolve()).Message);
    }

    [Fact]
    public void Random_seed_is_drawn_once_for_the_whole_grid()
    {
        var spec = new XYPlotSpec { X = XYAxis.Cfg([3, 7]), Y = XYAxis.Steps([10, 20]), Seed = -1 }.Resolve(new Random(1));
        Assert.True(spec.Seed >= 0);
        Assert.All(spec.Plan(), c => Assert.Equal(spec.Seed, c.Seed));
    }
}
