using System.Text.Json;
using DreamBooth.Cli.Commands.Bench;

namespace DreamBooth.Tests.Cli;

/// <summary>CI smoke: every bench sub-command runs at its smallest size and prints well-formed JSON lines. No timing assertions.</summary>
public class BenchCommandTests
{
    static List<JsonElement> Lines(string stdout) =>
        stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();

    static void Positive(JsonElement e, string field) =>
        Assert.True(e.GetProperty(field).GetDouble() > 0, $"{field} = {e.GetProperty(field)}");

    [Fact]
    public async Task Bench_sample_prints_one_line_per_size_and_batch()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "sample", "--tiny", "--device", "cpu", "--sizes", "16x16,16x24", "--batches", "1", "--steps", "2");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal(2, lines.Count);
        Assert.Equal([(16, 16, 1), (16, 24, 1)],
            lines.Select(l => (l.GetProperty("width").GetInt32(), l.GetProperty("height").GetInt32(), l.GetProperty("batch").GetInt32())));
        foreach (var l in lines)
        {
            Assert.Equal("sample", l.GetProperty("bench").GetString());
            Assert.Equal("tiny-random", l.GetProperty("model").GetString());
            Assert.Equal(7.5, l.GetProperty("cfg").GetDouble());
            Assert.Equal(2 * l.GetProperty("batch").GetInt32(), l.GetProperty("unet_batch").GetInt32());
            Positive(l, "it_per_s");
            Positive(l, "s_per_it");
            Assert.Equal(1.0, l.GetProperty("it_per_s").GetDouble() * l.GetProperty("s_per_it").GetDouble(), 2);
            Positive(l, "peak_memory_mib");
            Assert.Equal("fp32", l.GetProperty("dtype").GetString());
            Assert.StartsWith("cpu", l.GetProperty("device").GetString());
        }
    }

    [Fact]
    public async Task Bench_train_prints_one_line_per_case_with_the_step_fields()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "train", "--tiny", "--device", "cpu", "--sizes", "16x16", "--steps", "1", "--warmup", "0",
            "--train-text-encoder", "both", "--ema", "on", "--gradient-checkpointing", "off", "--optimizer", "flat-lion");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal([true, false], lines.Select(l => l.GetProperty("train_text_encoder").GetBoolean()));
        foreach (var l in lines)
        {
            Assert.Equal("train", l.GetProperty("bench").GetString());
            Assert.Equal(BenchTrainCommand.Loop, l.GetProperty("loop").GetString());
            Assert.True(l.GetProperty("ema").GetBoolean());
            Assert.False(l.GetProperty("gradient_checkpointing").GetBoolean());
            Assert.Equal("flat-lion", l.GetProperty("optimizer").GetString());
            Positive(l, "it_per_s");
            Positive(l, "ms_per_step");
            Positive(l, "peak_memory_mib");
            Assert.True(double.IsFinite(l.GetProperty("last_loss").GetDouble()) && l.GetProperty("last_loss").GetDouble() > 0);
            Assert.Equal(JsonValueKind.Null, l.GetProperty("achieved_tflops").ValueKind); // no FLOP count for the tiny model
        }
    }

    [Fact]
    public async Task Bench_load_measures_each_stored_dtype_and_load_dtype_in_a_child_process()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "load", "--tiny", "--repeat", "1");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        // fp32 and the file's own dtype: the fp32 file's two coincide, so three cases
        Assert.Equal(["fp16/fp32", "fp16/fp16", "fp32/fp32"],
            lines.Select(l => l.GetProperty("stored_dtype").GetString() + "/" + l.GetProperty("loaded_dtype").GetString()));
        foreach (var l in lines)
        {
            Assert.Equal("load", l.GetProperty("bench").GetString());
            Positive(l, "load_seconds");
            Positive(l, "peak_rss_mib");
            Positive(l, "model_mib");
            Assert.True(l.GetProperty("gb_per_s").GetDouble() >= 0);
            Assert.True(l.GetProperty("peak_rss_mib").GetInt64() >= l.GetProperty("rss_before_load_mib").GetInt64());
            Assert.True(l.GetProperty("peak_over_model").GetDouble() > 1);
            Positive(l, "load_cpu_seconds");
            if (OperatingSystem.IsLinux()) Assert.Equal(JsonValueKind.Number, l.GetProperty("cat_gb_per_s").ValueKind);
        }
        // the same parameters whatever the file stores; the fp16 load is half the fp32 model
        Assert.Single(lines.Select(l => l.GetProperty("parameters").GetInt64()).Distinct());
        Assert.True(lines[1].GetProperty("model_mib").GetInt64() * 2 <= lines[0].GetProperty("model_mib").GetInt64() + 1);
    }

    [Fact]
    public async Task Bench_load_reads_a_diffusers_folder_through_the_same_path()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "load", "--tiny", "--repeat", "1", "--dtypes", "fp16", "--layouts", "single,diffusers", "--load-dtypes", "stored");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal(["single", "diffusers"], lines.Select(l => l.GetProperty("layout").GetString()));
        Assert.All(lines, l => Assert.Equal("fp16", l.GetProperty("loaded_dtype").GetString()));
        // the same weights in both layouts (the folder has no position_ids and a few more bytes of headers)
        Assert.Single(lines.Select(l => l.GetProperty("parameters").GetInt64()).Distinct());
        Assert.Single(lines.Select(l => l.GetProperty("model_mib").GetInt64()).Distinct());
        if (OperatingSystem.IsLinux()) Assert.All(lines, l => Assert.Equal(JsonValueKind.Number, l.GetProperty("cat_gb_per_s").ValueKind));
    }

    [Fact]
    public async Task Bench_load_repeats_end_with_a_min_median_summary()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "load", "--tiny", "--repeat", "2", "--dtypes", "fp16", "--load-dtypes", "stored");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal(3, lines.Count);
        var summary = lines[2];
        Assert.True(summary.GetProperty("summary").GetBoolean());
        Assert.Equal(2, summary.GetProperty("runs").GetInt32());
        var seconds = lines.Take(2).Select(l => l.GetProperty("load_seconds").GetDouble()).ToList();
        Assert.Equal(seconds.Min(), summary.GetProperty("load_seconds_min").GetDouble());
        Assert.InRange(summary.GetProperty("load_seconds_median").GetDouble(), seconds.Average() - 0.001, seconds.Average() + 0.001); // of two runs: their mean
    }

    [Fact]
    public async Task Bench_optimizer_times_both_lion_variants_on_the_same_parameters()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "optimizer", "--tiny", "--device", "cpu", "--steps", "1");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal(["lion", "flat-lion"], lines.Select(l => l.GetProperty("optimizer").GetString()));
        Assert.Equal(lines[0].GetProperty("parameters").GetInt64(), lines[1].GetProperty("parameters").GetInt64());
        foreach (var l in lines) Positive(l, "ms_per_step");
    }

    [Theory]
    [InlineData(512, 512, 5.34)]
    [InlineData(768, 768, 13.8)]
    [InlineData(768, 1024, 18.4)]
    public void Step_flop_count_follows_the_unet_forward_figures(int w, int h, double tflop) =>
        Assert.Equal(tflop, BenchTrainCommand.StepTflop(w, h), 1);

    [Fact]
    public async Task Bad_bench_settings_are_user_errors()
    {
        var (code, _, err) = await CliTests.Run("bench", "train", "--tiny", "--optimizer", "sgd");
        Assert.Equal(2, code);
        Assert.Contains("--optimizer", err);
        (code, _, err) = await CliTests.Run("bench", "sample", "--tiny", "--sizes", "15x16");
        Assert.Equal(2, code);
        Assert.Contains("--sizes", err);
    }
}
