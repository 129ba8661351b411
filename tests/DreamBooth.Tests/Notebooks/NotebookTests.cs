using SixLabors.ImageSharp;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Notebooks;

/// <summary>Notebooks change the process's current directory while they run: never in parallel with each other.</summary>
[CollectionDefinition("notebooks", DisableParallelization = true)]
public sealed class NotebookCollection;

[Collection("notebooks")]
public class SmokeNotebookTests
{
    static string Notebook(string name) => Path.Combine(TestPaths.RepoRoot, "notebooks", name);

    [Fact]
    public async Task Smoke_notebook_loads_the_library_runs_torch_and_shows_an_image_and_a_plotly_chart()
    {
        var cells = await NotebookRunner.RunAsync(Notebook("00-smoke.dib"));
        Assert.All(cells, c => Assert.True(c.Error is null, $"cell {c.Index} failed: {c.Error}"));
        var outputs = cells.SelectMany(c => c.Outputs).ToList();
        Assert.Contains(outputs, o => o.MimeType == "text/html" && o.Value.Contains("<img src=\"data:image/png;base64,"));
        // plotly.js itself is embedded (offline), and a plot is created
        Assert.Contains(outputs, o => o.MimeType == "text/html" && o.Value.Contains("Plotly.newPlot") && o.Value.Contains("plotly.js v2") && o.Value.Length > 1_000_000);
        Assert.Contains(outputs, o => o.Value.Contains("backend: cpu"));
        Assert.True(File.Exists(Path.Combine(TestPaths.RepoRoot, "artifacts", "notebooks", "00-smoke.ipynb")));
    }
}

/// <summary>What every teaching notebook test checks: no cell failed, the executed .ipynb exists, and the outputs as HTML.</summary>
static class NotebookAssert
{
    public static string Path(string name) => System.IO.Path.Combine(TestPaths.RepoRoot, "notebooks", name);

    public static async Task<(IReadOnlyList<CellResult> Cells, List<string> Html)> RunAsync(string name, string workDir, IReadOnlyDictionary<string, string>? env = null)
    {
        var vars = new Dictionary<string, string>(env ?? new Dictionary<string, string>()) { ["DREAMBOOTH_NOTEBOOK_WORKDIR"] = workDir };
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var cells = await NotebookRunner.RunAsync(Path(name), vars);
        Console.WriteLine($"{name}: {sw.Elapsed.TotalSeconds:F1} s headless");
        Assert.All(cells, c => Assert.True(c.Error is null, $"cell {c.Index} failed: {c.Error}"));
        Assert.True(File.Exists(System.IO.Path.Combine(TestPaths.RepoRoot, "artifacts", "notebooks", System.IO.Path.ChangeExtension(name, ".ipynb"))));
        return (cells, cells.SelectMany(c => c.Outputs).Where(o => o.MimeType == "text/html").Select(o => o.Value).ToList());
    }

    public static int Images(IEnumerable<string> html) => html.Sum(h => CountOf(h, "<img src=\"data:image/png;base64,"));

    public static int CountOf(string s, string what)
    {
        int n = 0;
        for (int i = s.IndexOf(what, StringComparison.Ordinal); i >= 0; i = s.IndexOf(what, i + what.Length, StringComparison.Ordinal)) n++;
        return n;
    }
}

[Collection("notebooks")]
public class PrepareDataNotebookTests
{
    [Fact]
    public async Task Prepare_data_notebook_shows_before_after_crops_report_with_skips_buckets_and_class_image_counts()
    {
        using var tmp = TestPaths.NewTempDir();
        var work = tmp.Path;
        var (_, html) = await NotebookAssert.RunAsync("01-prepare-data.dib", work);
        var all = string.Join("\n", html);
        // before/after: two pictures per prepared image (5 sample photos prepared in each of the two modes) + contact sheet
        Assert.True(NotebookAssert.Images(html) >= 2 * 5 + 1, $"only {NotebookAssert.Images(html)} images");
        Assert.Contains("dreambooth-crop-previews", all);
        // the corrupt download, the truncated sample and the duplicate are listed with their reasons
        Assert.Contains("<td style=\"text-align:left\">zz-download-cut-short.jpg</td><td style=\"text-align:left\">corrupt</td>", all);
        Assert.Contains(">corrupt<", all);
        Assert.Contains(">duplicate<", all);
        Assert.Contains("same content as astronaut.png", all);
        Assert.Contains("Contact sheet", all);
        // bucket histogram as a Plotly bar chart, and the class-image counts: 100 per instance image
        Assert.Contains(html, h => h.Contains("Plotly.newPlot") && h.Contains("\"type\":\"bar\"") && h.Contains("768x1024"));
        Assert.Contains(">500<", all.Replace(" ", "")); // needed = 5 prepared × 100
        Assert.True(File.Exists(Path.Combine(work, "01-prepare-data", "focal-768x1024", "manifest.json")));
        // the identity check of the prepared images: the astronaut and the cameraman are two people, three photos have no face
        var check = Assert.Single(html, h => h.Contains("dreambooth-identity-check"));
        // (the cat's upscaled crop may pass for a face: the check then sees three identities; either way astronaut and camera are flagged)
        Assert.Contains("identity check: 5 photo(s)", check);
        Assert.Matches("<td style=\"text-align:left\">(someone-else|mixed-identities)</td><td style=\"text-align:left\">astronaut.png, camera.png", check);
        Assert.Contains("<td style=\"text-align:left\">no-face</td><td style=\"text-align:left\">coffee.png</td>", check);
        Assert.Contains("<td style=\"text-align:left\">no-face</td><td style=\"text-align:left\">rocket.jpg</td>", check);
    }
}

[Collection("notebooks")]
public class ConfigureNotebookTests
{
    [Fact]
    public async Task Configure_notebook_renders_the_config_table_inline_problems_lr_chart_arithmetic_saves_json_and_imports_a1111()
    {
        using var tmp = TestPaths.NewTempDir();
        var (cells, html) = await NotebookAssert.RunAsync("02-configure.dib", tmp.Path);
        var all = string.Join("\n", html);
        // the config table: sections, keys, the recipe values
        Assert.Contains("dreambooth-config", all);
        Assert.Contains("<code>learning_rate</code>", all);
        Assert.Contains("<code>concepts[0].class_images_per_instance</code>", all);
        // the deliberately broken config: its problems are listed inline with the setting names
        Assert.Contains("learning_rate = 0 is out of range", all);
        Assert.Contains("optimizer = &quot;sgd&quot; is not one of", all);
        Assert.Contains("max_token_length = 100 is not one of", all);
        // arithmetic of the full recipe for 15 photos, alternate prior steps: 200 × 30 = 6000 steps, text encoder 4500, 20 saves
        Assert.Contains("6000 = 200 &#215; 30", all);
        Assert.Contains("4500 steps", all);
        // and its disk arithmetic: 20 fp16 checkpoints of 2.13 GB, kept; 2 training states at most
        Assert.Contains("dreambooth-disk-plan", all);
        Assert.Contains("42.65 GB", all);
        // LR charts (Plotly)
        Assert.True(html.Count(h => h.Contains("Plotly.newPlot") && h.Contains("learning rate")) >= 2);
        // saved config reloads; A1111 import lists mapped and ignored keys
        var saved = Path.Combine(tmp.Path, "02-configure", "training-config.json");
        Assert.True(File.Exists(saved));
        var savedConfig = DreamBooth.Training.TrainingConfig.Load(saved);
        var toyDemo = new DreamBooth.Toy.ToyDemoOptions { OutputDir = tmp.Path };
        Assert.Equal((toyDemo.Epochs, toyDemo.LearningRate, toyDemo.MixedPrecision, toyDemo.Size),
            (savedConfig.Epochs, savedConfig.LearningRate, savedConfig.MixedPrecision, savedConfig.MaxResolution));
        Assert.Contains(cells.SelectMany(c => c.Outputs), o => o.Value.Contains("reloads equal: True"));
        // the toy's real class images, rendered by its world: 10 per instance image of the sample subject
        int subject = DreamBooth.Training.TrainingConfig.ImageFiles(Path.Combine(TestPaths.RepoRoot, "data-samples", "toy", "subject")).Count();
        Assert.Equal(10 * subject, Directory.EnumerateFiles(Path.Combine(tmp.Path, "class-images"), "*.png").Count());
        Assert.Contains("optimizer → optimizer = lion", all);
        Assert.Contains("attention = &quot;xformers&quot; (attention is always SDPA here)", all);
    }
}

[Collection("notebooks")]
public class TrainNotebookTests
{
    /// <summary>A tiny random diffusers model, two instance and two class images, a 6-epoch config saving every 2 epochs.</summary>
    static string TinySetup(string root)
    {
        var tokenizer = DreamBooth.Text.ClipTokenizer.FromBpeGz(TestPaths.ClipBpeGz);
        var modelDir = Path.Combine(root, "model");
        using (var model = DreamBooth.Checkpoints.StableDiffusionModel.CreateRandom(DreamBooth.Models.Clip.CLIPTextConfig.Tiny,
                   DreamBooth.Models.UNet.UNet2DConditionConfig.Tiny, DreamBooth.Models.Vae.AutoencoderKLConfig.Tiny, tokenizer, seed: 3))
            model.SaveDiffusers(modelDir);
        string inst = Directory.CreateDirectory(Path.Combine(root, "inst")).FullName, cls = Directory.CreateDirectory(Path.Combine(root, "class")).FullName;
        for (int i = 0; i < 2; i++)
        {
            using var a = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(64, 64, new SixLabors.ImageSharp.PixelFormats.Rgb24((byte)(60 * i), 90, 200));
            a.SaveAsPng(Path.Combine(inst, $"ohwx-{i}.png"));
            using var b = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(64, 64, new SixLabors.ImageSharp.PixelFormats.Rgb24(200, (byte)(60 * i), 40));
            b.SaveAsPng(Path.Combine(cls, $"man-{i}.png"));
        }
        var config = new DreamBooth.Training.TrainingConfig
        {
            PretrainedModel = modelDir, OutputDir = Path.Combine(root, "run"), Name = "tiny",
            Concepts = [new DreamBooth.Training.ConceptConfig { InstanceDir = inst, ClassDir = cls, ClassImagesPerInstance = 2, ClassSteps = 2 }],
            Epochs = 6, SaveEveryEpochs = 2, LearningRate = 1e-4, TextEncoderLearningRate = 5e-5, MixedPrecision = "no", UseEma = false,
            MaxResolution = 64, Device = "cpu", Seed = 5,
        };
        var path = Path.Combine(root, "training-config.json");
        config.Save(path);
        return path;
    }

    [Fact]
    public async Task Train_notebook_trains_with_one_live_output_interrupts_with_a_save_resumes_and_shows_the_log()
    {
        using var tmp = TestPaths.NewTempDir();
        var config = TinySetup(tmp.Path);
        var (cells, html) = await NotebookAssert.RunAsync("03-train.dib", tmp.Path, new Dictionary<string, string> { ["DREAMBOOTH_CONFIG"] = config, ["DREAMBOOTH_STOP_AT_STEP"] = "5" });
        var all = string.Join("\n", html);
        // class images topped up: 2 instance × 2 per instance = 4 needed, 2 real, 2 generated
        Assert.Equal(4, Directory.EnumerateFiles(Path.Combine(tmp.Path, "class"), "*.png").Count());
        // each training cell: ONE displayed monitor, updated in place (same id), ending with its final status
        var trainCells = cells.Where(c => c.Code.Contains("TrainingMonitor.For(config).Show()")).ToList();
        Assert.Equal(2, trainCells.Count);
        foreach (var c in trainCells)
        {
            var produced = c.Displays.Where(d => d.Kind == "produced").ToList();
            Assert.Single(produced);
            Assert.Contains(c.Displays, d => d.Kind == "updated");
            Assert.All(c.Displays.Where(d => d.Kind == "updated"), d => Assert.Equal(produced[0].DisplayId, d.DisplayId));
        }
        Assert.Contains("interrupted at step 5", all);
        Assert.Contains(cells.SelectMany(c => c.Outputs), o => o.Value.Contains("interrupted at step 5"));
        Assert.Contains(cells.SelectMany(c => c.Outputs), o => o.Value.Contains("finished at step 24"));   // 6 epochs × (2 instance + 2 class steps)
        Assert.Contains(html, h => h.Contains("dreambooth-training-monitor") && h.Contains("Plotly.newPlot") && h.Contains("prior (smoothed)"));
        // the log as a DataFrame: the resumed run's steps 6..24
        Assert.Contains(html, h => h.Contains("loss_smoothed") && h.Contains("19 rows"));
        // saves every 2 epochs + the interruption's
        var saves = Directory.EnumerateFiles(Path.Combine(tmp.Path, "run"), "*.safetensors").Select(Path.GetFileName).ToList();
        Assert.Contains("tiny_0002.safetensors", saves);
        Assert.Contains("tiny_0006.safetensors", saves);
        Assert.True(saves.Count >= 4, string.Join(", ", saves));
    }
}

[Collection("notebooks")]
public class XYPlotNotebookTests
{
    [Fact]
    public async Task XY_plot_notebook_renders_a_labelled_checkpoint_by_prompt_grid_saves_it_and_names_the_chosen_file()
    {
        using var tmp = TestPaths.NewTempDir();
        var tokenizer = DreamBooth.Text.ClipTokenizer.FromBpeGz(TestPaths.ClipBpeGz);
        var baseDir = Path.Combine(tmp.Path, "model");
        var runDir = Directory.CreateDirectory(Path.Combine(tmp.Path, "run")).FullName;
        foreach (var (seed, file) in new[] { (3L, ""), (12L, "tiny_0002.safetensors"), (14L, "tiny_0004.safetensors"), (15L, "tiny_0004_s000009.safetensors") })
        {
            using var m = DreamBooth.Checkpoints.StableDiffusionModel.CreateRandom(DreamBooth.Models.Clip.CLIPTextConfig.Tiny,
                DreamBooth.Models.UNet.UNet2DConditionConfig.Tiny, DreamBooth.Models.Vae.AutoencoderKLConfig.Tiny, tokenizer, seed);
            if (file == "") m.SaveDiffusers(baseDir);
            else m.SaveSingleFile(Path.Combine(runDir, file), TorchSharp.torch.ScalarType.Float32);
        }
        // the likeness reference: a photo of a real person (the tiny models draw 16×16 noise, so no cell has a face)
        var instanceDir = Directory.CreateDirectory(Path.Combine(tmp.Path, "instance")).FullName;
        File.Copy(TestPaths.Photo("astronaut.png"), Path.Combine(instanceDir, "astronaut.png"));
        var config = new DreamBooth.Training.TrainingConfig
        {
            PretrainedModel = baseDir, OutputDir = runDir, Name = "tiny",
            Concepts = [new DreamBooth.Training.ConceptConfig { InstanceDir = instanceDir }],
        };
        var configPath = Path.Combine(tmp.Path, "training-config.json");
        config.Save(configPath);
        var (cells, html) = await NotebookAssert.RunAsync("04-xy-plot.dib", tmp.Path, new Dictionary<string, string>
        {
            ["DREAMBOOTH_CONFIG"] = configPath, ["DREAMBOOTH_XY_STEPS"] = "3", ["DREAMBOOTH_CHOSEN_EPOCH"] = "2",
        });
        var text = string.Join("\n", cells.SelectMany(c => c.Outputs).Select(o => o.Value));
        // the mid-epoch save is not an epoch: two columns
        Assert.Contains("epoch 2:", text);
        Assert.Contains("epoch 4:", text);
        Assert.DoesNotContain("s000009", text.Split("chosen:")[0]);
        // the grid inline, labelled, 2 checkpoints × 3 prompts, saved with infotext
        Assert.Contains(html, h => h.Contains("dreambooth-xyplot") && h.Contains("<img src=\"data:image/png;base64,"));
        var grid = Path.Combine(runDir, "xy-grid.png");
        Assert.True(File.Exists(grid));
        var info = DreamBooth.Pipelines.PngInfotext.ReadText(grid)!;
        Assert.Contains("X Type: Checkpoint name", info);
        Assert.Contains("Y Type: Prompt S/R", info);
        Assert.Contains("ohwx man on a beach", info);
        Assert.Contains(html, h => h.Contains("prompt: man") && h.Contains("epoch 4"));
        Assert.Contains("X Values: \"model, tiny_0002.safetensors, tiny_0004.safetensors\"", info); // the base model first
        Assert.Contains($"chosen: epoch 2 → {Path.Combine(runDir, "tiny_0002.safetensors")}", text);
        // likeness: every cell scored (no face in 16×16 noise), the chart with the base model, the JSON and the scored grid saved
        var likeness = Assert.Single(html, h => h.Contains("dreambooth-likeness\""));
        Assert.Contains("Suggested checkpoint: none", likeness);
        Assert.Contains("no face was found in any cell", likeness);
        Assert.Contains("Plotly.newPlot", likeness);
        Assert.Contains("base model (baseline)", likeness);
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(runDir, "xy-likeness.json")))!;
        Assert.Equal(9, json["cells"]!.AsArray().Count);
        Assert.Equal("ohwx", (string)json["instance_token"]!);
        Assert.True(File.Exists(Path.Combine(runDir, "xy-grid-likeness.png")));
        // the calibration on the sample photos: the mirror is the same person, the cameraman is not, the cat has no face
        var gallery = Assert.Single(html, h => h.Contains("dreambooth-likeness-gallery"));
        var scores = System.Text.RegularExpressions.Regex.Matches(gallery, @"<figcaption>([^<]+)<br/><b[^>]*>([^<]+)</b>")
            .ToDictionary(m => System.Net.WebUtility.HtmlDecode(m.Groups[1].Value), m => System.Net.WebUtility.HtmlDecode(m.Groups[2].Value));
        Assert.EndsWith("✓", scores["mirrored"]);
        Assert.EndsWith("✓", scores["cropped, rotated 10°"]);
        Assert.True(double.Parse(scores["the cameraman"], System.Globalization.CultureInfo.InvariantCulture) > 0.6, scores["the cameraman"]);
        Assert.Equal("no face", scores["a cat"]);
    }
}
