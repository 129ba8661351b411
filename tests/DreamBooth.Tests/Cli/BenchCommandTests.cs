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
    public async Task Bench_load_measures_each_stored_dtype_in_a_child_process()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "load", "--tiny", "--repeat", "1");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal(["fp16", "fp32"], lines.Select(l => l.GetProperty("stored_dtype").GetString()));
        foreach (var l in lines)
        {
            Assert.Equal("load", l.GetProperty("bench").GetString());
            Positive(l, "load_seconds");
            Positive(l, "peak_rss_mib");
            Assert.True(l.GetProperty("peak_rss_mib").GetInt64() >= l.GetProperty("rss_before_load_mib").GetInt64());
            Assert.Equal("fp32", l.GetProperty("loaded_dtype").GetString());
        }
        // the fp16 file holds the same parameters in half the bytes of tensor data
        Assert.Equal(lines[0].GetProperty("parameters").GetInt64(), lines[1].GetProperty("parameters").GetInt64());
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

    [Fact]
    public async Task Bench_grad_check_compares_a_read_per_tensor_with_one_read_on_the_same_gradients()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "grad-check", "--tiny", "--device", "cpu", "--steps", "1");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal(["per-tensor", "one-read"], lines.Select(l => l.GetProperty("way").GetString()));
        long tensors = lines[0].GetProperty("tensors").GetInt64();
        Assert.Equal(tensors + 2, lines[0].GetProperty("device_reads").GetInt64());   // a read per gradient + one per group norm
        Assert.Equal(1, lines[1].GetProperty("device_reads").GetInt64());
        Assert.Equal(lines[0].GetProperty("unet_grad_norm").GetDouble(), lines[1].GetProperty("unet_grad_norm").GetDouble(), 2);
        foreach (var l in lines) Positive(l, "ms_per_check");
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
