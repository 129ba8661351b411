using DreamBooth.Checkpoints;
using DreamBooth.Evaluation;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Pipelines;
using DreamBooth.Tests.Cli;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using ScalarType = TorchSharp.torch.ScalarType;
using Size = SixLabors.ImageSharp.Size;

namespace DreamBooth.Tests.Evaluation;

/// <summary>The x/y plot over real (tiny, random) single-file checkpoints, through the txt2img pipeline.</summary>
public class XYPlotEndToEndTests(Xunit.Abstractions.ITestOutputHelper output)
{
    /// <summary>A training output folder: sks_0001/sks_0002.safetensors (different random weights), the tiny configs and tokenizer/ beside them.</summary>
    static TempDir TinyRun(params int[] epochs)
    {
        var dir = TestPaths.NewTempDir("xyplot-e2e");
        var tokenizer = ClipTokenizer.FromBpeGz(TestPaths.ClipBpeGz);
        foreach (var e in epochs)
        {
            using var model = StableDiffusionModel.CreateRandom(CLIPTextConfig.Tiny, UNet2DConditionConfig.Tiny, AutoencoderKLConfig.Tiny, tokenizer, seed: 100 + e);
            model.SaveSingleFile(dir.File($"sks_{e:0000}.safetensors"), ScalarType.Float32);
        }
        tokenizer.Save(dir.File("tokenizer"));
        foreach (var (component, json) in new[] { ("text_encoder", CLIPTextConfig.Tiny.ToJson()), ("unet", UNet2DConditionConfig.Tiny.ToJson()), ("vae", AutoencoderKLConfig.Tiny.ToJson()) })
        {
            Directory.CreateDirectory(dir.File(component));
            File.WriteAllText(Path.Combine(dir.File(component), "config.json"), json);
        }
        return dir;
    }

    static ModelLoadOptions TinyOptions(TempDir dir) => new()
    {
        TokenizerPath = dir.File("tokenizer"),
        TextEncoderConfig = CLIPTextConfig.Tiny, UNetConfig = UNet2DConditionConfig.Tiny, VaeConfig = AutoencoderKLConfig.Tiny,
    };

    sealed class Log(Action<XYPlotProgress> write) : IProgress<XYPlotProgress>
    {
        public void Report(XYPlotProgress value) => write(value);
    }

    static byte[] Pixels(Image<Rgb24> image)
    {
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        return bytes;
    }

    [Fact]
    public void Two_tiny_checkpoints_load_once_each_and_render_deterministically()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var run = TinyRun(1, 2);
        output.WriteLine($"made 2 tiny checkpoints in {clock.Elapsed.TotalSeconds:0.0} s");
        int loads = 0;
        var options = TinyOptions(run);
        using var renderer = new Txt2ImgCellRenderer(c => { loads++; return StableDiffusionModel.Load(c.Path, options); });
        var spec = new XYPlotSpec
        {
            X = XYAxis.Parse(XYAxisKind.Checkpoint, run.Path),
            Y = XYAxis.Parse(XYAxisKind.Prompt, "sks dog, a cat"),
            Prompt = "a photo of sks dog", Steps = 3, Seed = 1234, Sampler = "Euler",
        };
        clock.Restart();
        using var result = XYPlotEngine.Run(spec, renderer, new Log(p => output.WriteLine($"{p.Elapsed.TotalSeconds,6:0.00}s {p}")));
        output.WriteLine($"2×2 grid, 3 steps: {clock.Elapsed.TotalSeconds:0.0} s ({result.Elapsed.TotalSeconds / 4:0.00} s per cell incl. loads)");

        Assert.Equal(2, loads);
        Assert.Equal(2, result.CheckpointLoads);
        Assert.All(result.Cells, c => Assert.Equal(new Size(16, 16), c.Image.Size()));
        Assert.NotEqual(Pixels(result[0, 0].Image), Pixels(result[1, 0].Image));   // different weights
        Assert.Equal(["epoch 1", "epoch 2"], result.Layout.ColumnLines.Select(l => string.Join(" ", l)));

        // the same cell rendered again (same checkpoint, prompt and seed) is bit-identical
        using var again = XYPlotEngine.Run(spec with { X = XYAxis.Checkpoints([(XYCheckpoint)spec.X.Values[1]]) }, renderer);
        Assert.Equal(Pixels(result[1, 1].Image), Pixels(again[0, 1].Image));
    }

    [Fact]
    public async Task Cli_xyplot_writes_a_labelled_grid_png_with_axis_infotext()
    {
        using var run = TinyRun(3, 7);
        var output = run.File("grid.png");
        var (code, stdout, stderr) = await CliTests.Run("xyplot", "--checkpoints", run.Path, "--prompts", "a photo of sks dog",
            "--y", "cfg", "--values", "1, 7", "--steps", "2", "--seed", "5", "--sampler", "euler a", "--device", "cpu", "--output", output);
        Assert.True(code == 0, stderr);
        Assert.Contains("epoch 7", stdout);
        Assert.Contains($"saved {output}", stdout);
        var info = PngInfotext.ReadText(output)!;
        Assert.StartsWith("a photo of sks dog\n", info);
        Assert.Contains("Sampler: Euler a", info);
        Assert.Contains("Seed: 5", info);
        Assert.Contains("X Type: Checkpoint name", info);
        Assert.Contains("X Values: \"sks_0003.safetensors, sks_0007.safetensors\"", info);
        Assert.Contains("Y Type: CFG Scale", info);
        using var grid = Image.Load<Rgb24>(output);
        var layout = GridDrawer.Measure(2, 2, new Size(16, 16), ["epoch 3", "epoch 7"], ["CFG: 1", "CFG: 7"], "seed 5 · 2 steps · Euler a");
        Assert.Equal(new Size(layout.Width, layout.Height), grid.Size());
    }

    [Fact]
    public async Task Cli_xyplot_scores_likeness_against_the_instance_photos_with_the_base_model_as_baseline()
    {
        using var run = TinyRun(3, 7);
        using (var baseModel = StableDiffusionModel.CreateRandom(CLIPTextConfig.Tiny, UNet2DConditionConfig.Tiny, AutoencoderKLConfig.Tiny, ClipTokenizer.FromBpeGz(TestPaths.ClipBpeGz), seed: 1))
            baseModel.SaveSingleFile(run.File("base.safetensors"), ScalarType.Float32);
        var instance = Directory.CreateDirectory(run.File("instance")).FullName;
        File.Copy(TestPaths.Photo("astronaut.png"), Path.Combine(instance, "astronaut.png"));
        var output = run.File("grid.png");
        var (code, stdout, stderr) = await CliTests.Run("xyplot", "--checkpoints", run.Path, "--baseline", run.File("base.safetensors"),
            "--prompts", "photo of ohwx man", "photo of man", "--steps", "2", "--seed", "5", "--device", "cpu", "--output", output,
            "--score", "likeness", "--instance-dir", instance);
        Assert.True(code == 0, stderr);
        // the tiny random models draw 16×16 noise, no face to describe: every cell says so, and nothing is suggested
        Assert.Contains("likeness base model (baseline): distance no face (0/1 under 0.6), leaking context cells –", stdout);
        Assert.Contains("likeness epoch 3: distance no face (0/1 under 0.6), leaking context cells ", stdout);
        Assert.Contains("likeness epoch 7: distance no face", stdout);
        Assert.Contains("suggested: none: no face was found in any cell", stdout);
        Assert.True(File.Exists(output));
        using (var grid = Image.Load<Rgb24>(output))
        using (var scored = Image.Load<Rgb24>(run.File("grid-likeness.png")))
            Assert.Equal(grid.Size(), scored.Size());
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(run.File("grid-likeness.json")))!;
        Assert.Equal(["base model", "epoch 3", "epoch 7"], json["checkpoints"]!.AsArray().Select(c => (string)c!["label"]!));
        Assert.True((bool)json["checkpoints"]![0]!["baseline"]!);
        Assert.Equal(6, json["cells"]!.AsArray().Count);
        Assert.All(json["cells"]!.AsArray(), c => Assert.Equal(0, (int)c!["faces"]!));
        Assert.Equal(3, json["cells"]!.AsArray().Count(c => (bool)c!["instance_row"]!));
        Assert.All(json["cells"]!.AsArray(), c => Assert.NotNull(c!["context_distance"]));

        // bad input is refused before anything is rendered
        async Task Bad(string expected, params string[] extra)
        {
            var bad = run.File("bad.png");
            var (c, _, err) = await CliTests.Run(["xyplot", "--checkpoints", run.Path, "--prompts", "photo of ohwx man", "--steps", "1", "--device", "cpu", "--output", bad, .. extra]);
            Assert.Equal(2, c);
            Assert.Contains(expected, err);
            Assert.False(File.Exists(bad));
        }
        await Bad("--score likeness needs --instance-dir", "--score", "likeness");
        await Bad("--score 'beauty': expected likeness", "--score", "beauty", "--instance-dir", instance);
        await Bad("--instance-dir: folder not found", "--score", "likeness", "--instance-dir", run.File("nope"));
        await Bad("--instance-dir is only used with --score likeness", "--instance-dir", instance);
        await Bad("--baseline: model not found", "--baseline", run.File("nope.safetensors"));
        var faceless = Directory.CreateDirectory(run.File("faceless")).FullName;
        File.Copy(TestPaths.Photo("coffee.png"), Path.Combine(faceless, "coffee.png"));
        await Bad("no face found in any of the 1 reference image(s)", "--score", "likeness", "--instance-dir", faceless);
    }
}
