using System.Text.Json;
using DreamBooth.Cli.Commands.Bench;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Cli;

/// <summary>CI smoke: every bench sub-command runs at its smallest size and prints well-formed JSON lines. No timing assertions.</summary>
public class BenchCommandTests
{
    static List<JsonElement> Lines(string stdout) =>
        stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();

    static void Positive(JsonElement e, string field) =>
        Assert.True(e.GetProperty(field).GetDouble() > 0, $"{field} = {e.GetProperty(field)}");

    [Theory]
    [InlineData(0.0047123, 0.004712)]
    [InlineData(212.3456, 212.3)]
    [InlineData(123456.0, 123500.0)]
    [InlineData(1.0, 1.0)]
    public void Rates_keep_four_significant_digits_however_slow(double v, double expected)
    {
        Assert.Equal(expected, DreamBooth.Cli.Commands.Bench.BenchSupport.Significant(v), 12);
        // a slow case's it/s and s/it still multiply to 1 (a fixed 4 decimals gave 0.0047 × 212.3 = 0.998)
        double product = DreamBooth.Cli.Commands.Bench.BenchSupport.Significant(v) * DreamBooth.Cli.Commands.Bench.BenchSupport.Significant(1 / v);
        Assert.InRange(product, 0.999, 1.001);
    }

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
            // both are printed to 4 significant digits (BenchSupport.Significant), so they multiply to 1 within 1e-3
            double itPerS = l.GetProperty("it_per_s").GetDouble(), sPerIt = l.GetProperty("s_per_it").GetDouble();
            Assert.InRange(itPerS * sPerIt, 0.999, 1.001);
            Positive(l, "peak_memory_mib");
            Assert.Equal("fp32", l.GetProperty("dtype").GetString());
            Assert.StartsWith("cpu", l.GetProperty("device").GetString());
        }
    }

    [Fact]
    public async Task Bench_train_prints_one_line_per_case_with_the_step_fields()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "train", "--tiny", "--device", "cpu", "--sizes", "16x16", "--steps", "1", "--warmup", "0",
            "--train-text-encoder", "both", "--ema", "on", "--gradient-checkpointing", "off", "--optimizer", "lion-per-tensor", "--profile-steps", "0");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal([true, false], lines.Select(l => l.GetProperty("train_text_encoder").GetBoolean()));
        foreach (var l in lines)
        {
            Assert.Equal("train", l.GetProperty("bench").GetString());
            Assert.Equal(BenchTrainCommand.Loop, l.GetProperty("loop").GetString());
            Assert.True(l.GetProperty("ema").GetBoolean());
            Assert.False(l.GetProperty("gradient_checkpointing").GetBoolean());
            Assert.Equal("lion-per-tensor", l.GetProperty("optimizer").GetString());
            Positive(l, "it_per_s");
            Positive(l, "ms_per_step");
            Positive(l, "peak_memory_mib");
            Assert.True(double.IsFinite(l.GetProperty("last_loss").GetDouble()) && l.GetProperty("last_loss").GetDouble() > 0);
            Assert.Equal("ours", l.GetProperty("implementation").GetString());
            // the tiny model's FLOPs are counted from its config like the full model's
            double tflop = FlopCount.TrainStepFlops(UNet2DConditionConfig.Tiny, CLIPTextConfig.Tiny, 8, 8, l.GetProperty("train_text_encoder").GetBoolean()) / 1e12;
            Assert.Equal(tflop, l.GetProperty("step_tflop").GetDouble(), 9);
            Assert.Equal(tflop * l.GetProperty("it_per_s").GetDouble(), l.GetProperty("achieved_tflops").GetDouble(), 3);
            Assert.Equal(JsonValueKind.Null, l.GetProperty("phases_ms").ValueKind); // --profile-steps 0
        }
    }

    [Fact]
    public async Task Bench_train_runs_each_optimizer_with_ema_and_checkpointing_off_and_profiles_the_phases()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "train", "--tiny", "--device", "cpu", "--sizes", "16x16", "--steps", "1", "--warmup", "0",
            "--train-text-encoder", "off", "--ema", "off", "--gradient-checkpointing", "on", "--optimizer", "lion,adamw8bit", "--profile-steps", "2");
        Assert.True(code == 0, err);
        var lines = Lines(stdout);
        Assert.Equal(["lion", "adamw8bit"], lines.Select(l => l.GetProperty("optimizer").GetString()));
        Assert.Equal(["16x16 unet ema-off gc-on lion fp32", "16x16 unet ema-off gc-on adamw8bit fp32"], lines.Select(l => l.GetProperty("case").GetString()));
        foreach (var l in lines)
        {
            Assert.False(l.GetProperty("ema").GetBoolean());
            Assert.True(l.GetProperty("gradient_checkpointing").GetBoolean());
            Assert.True(double.IsFinite(l.GetProperty("last_loss").GetDouble()));
            var phases = l.GetProperty("phases_ms");
            // the trainer's step, EMA off: no ema phase; each profiled step timed each part once. The flattened Lion reads
            // back after queuing its update (conditional on the device); the per-tensor AdamW 8-bit reads before it
            string[] order = l.GetProperty("optimizer").GetString() == "lion"
                ? ["forward", "backward", "gradients", "optimizer", "read"]
                : ["forward", "backward", "gradients", "read", "optimizer"];
            Assert.Equal(order, phases.EnumerateObject().Select(p => p.Name));
            foreach (var p in phases.EnumerateObject())
            {
                Assert.Equal(2, p.Value.GetProperty("steps").GetInt32());
                double host = p.Value.GetProperty("host_ms").GetDouble(), done = p.Value.GetProperty("done_ms").GetDouble();
                Assert.True(host > 0 && done >= host, $"{p.Name}: host {host} done {done}");
            }
        }
        (code, _, err) = await CliTests.Run("bench", "train", "--tiny", "--device", "cpu", "--sizes", "16x16", "--optimizer", "sgd");
        Assert.Equal(2, code);
        Assert.Contains("--optimizer", err);
        Assert.Contains("adamw8bit", err);
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
        Assert.Equal([("lion", false), ("flat-lion", false), ("flat-lion", true)],
            lines.Select(l => (l.GetProperty("optimizer").GetString(), l.GetProperty("conditional").GetBoolean())));
        Assert.Single(lines.Select(l => l.GetProperty("parameters").GetInt64()).Distinct());
        foreach (var l in lines) Positive(l, "ms_per_step");
    }

    [Fact]
    public void Unet_forward_count_matches_the_published_sd15_figures()
    {
        // 64x64 latent (512²), one sample: 401.64 GMAC of convolutions and matmuls, hand-derived per block
        // (tools/gpu/reference/flops.py states the same count independently in Python); the TensorRT deck's 0.84 TFLOP
        // and onnx-tool's 444 GMAC also count element-wise work, so ours is a little lower, as it should be.
        double macs = FlopCount.UNetForwardMacs(UNet2DConditionConfig.StableDiffusion15, 64, 64);
        Assert.Equal(401.63672064e9, macs, 1e3);
        Assert.InRange(2 * macs / 1e12, 0.80, 0.84);
        // attention's core grows with the square of the tokens: 768x1024 has 3x the tokens of 512², the UNet > 3x the work
        double large = FlopCount.UNetForwardMacs(UNet2DConditionConfig.StableDiffusion15, 128, 96);
        Assert.Equal(1569.38633216e9, large, 1e3);
        // CLIP ViT-L/14 text encoder, 77 tokens: 6.65 GMAC (onnx-tool 6.78 with element-wise work)
        Assert.Equal(6.64925184e9, FlopCount.ClipForwardMacs(CLIPTextConfig.StableDiffusion15), 1e3);
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

    [Fact]
    public async Task Bench_recipe_run_tiny_trains_kills_resumes_and_passes_every_check()
    {
        using var dir = TestPaths.NewTempDir();
        // 4 epochs: the kill lands in step 6 of 16, leaving the watch 10 steps to see step 5 on a busy machine
        var (code, stdout, err) = await CliTests.Run("bench", "recipe-run", "--tiny", "--device", "cpu", "--epochs", "4", "--dir", dir.Path);
        Assert.True(code == 0, err + stdout);
        var lines = Lines(stdout);
        var summary = lines[^1];
        Assert.True(summary.GetProperty("passed").GetBoolean(), summary.ToString());
        foreach (var check in new[] { "a1111_keys", "fp16_size", "one_state_kept", "killed", "bitwise_resume", "steps" })
            Assert.True(summary.GetProperty("checks").GetProperty(check).GetProperty("ok").GetBoolean(), check);
        Assert.Equal("SIGKILL", summary.GetProperty("checks").GetProperty("killed").GetProperty("signal").GetString());
        Positive(summary, "predicted_peak_bytes");
        Positive(summary, "measured_peak_rss_bytes");
        // a peak per phase, for the reference run and for the resumed process
        var phases = lines.Where(l => l.TryGetProperty("run", out _)).Select(l => (l.GetProperty("run").GetString(), l.GetProperty("phase").GetString())).ToHashSet();
        foreach (var phase in new[] { "load", "setup", "first_step", "step", "save" }) Assert.Contains(("reference", phase), phases);
        Assert.Contains(("resumed", "resume"), phases);
        Assert.All(lines.Where(l => l.TryGetProperty("run", out _)), l => Positive(l, "peak_rss_mib"));
        Assert.False(Directory.Exists(Path.Combine(dir.Path, "recipe-run")));   // removed without --keep
    }

    [Fact]
    public async Task Bench_memory_single_pass_prints_a_unet_line_per_setting_and_a_vae_encode_line()
    {
        var (code, stdout, err) = await CliTests.Run("bench", "memory", "--tiny", "--parts", "unet,vae", "--latents", "8x8", "--gradient-checkpointing", "both", "--single-pass");
        Assert.True(code == 0, err + stdout);
        var lines = Lines(stdout);
        Assert.Equal(["unet", "unet", "vae"], lines.Select(l => l.GetProperty("part").GetString()));
        Assert.Equal([false, true], lines.Take(2).Select(l => l.GetProperty("gradient_checkpointing").GetBoolean()));
        foreach (var l in lines.Take(2))
        {
            Assert.True(l.GetProperty("single_pass").GetBoolean());
            Assert.Equal(JsonValueKind.Null, l.GetProperty("first_pass_mib").ValueKind);   // no warm-up pass
            Assert.Equal("16x16", l.GetProperty("image").GetString());
            Positive(l, "step_peak_mib");
        }
        Assert.Equal("fp32", lines[2].GetProperty("dtype").GetString());   // the VAE encodes in its loaded dtype (fp32 in the recipe)
        Assert.Equal("16x16", lines[2].GetProperty("image").GetString());
        Assert.True(lines[2].GetProperty("encode_peak_mib").GetInt64() >= 0);
    }

    [Theory]
    [InlineData(512, 512, false, 4.820)]
    [InlineData(512, 512, true, 4.899)]
    [InlineData(768, 1024, false, 18.833)]
    public void Step_flops_are_three_forwards_of_two_samples(int w, int h, bool te, double tflop) =>
        Assert.Equal(tflop, FlopCount.TrainStepFlops(UNet2DConditionConfig.StableDiffusion15, CLIPTextConfig.StableDiffusion15, h / 8, w / 8, te) / 1e12, 3);

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
