using DreamBooth.Checkpoints;
using DreamBooth.Pipelines;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

/// <summary>What the trainer produces around the step: class images first, previews, TensorBoard files.</summary>
public class TrainerOutputsTests
{
    sealed class Sync(Action<TrainingEvent> a) : IProgress<TrainingEvent> { public void Report(TrainingEvent v) => a(v); }

    [Fact]
    public void Missing_class_images_are_generated_before_training_and_nothing_more()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir);   // 2 instance images, 2 class images already there
        var concept = c.Concepts[0] with { GenerateClassImages = true, ClassImagesPerInstance = 3, ClassSteps = 1, ClassPrompt = "man", ClassNegativePrompt = "blurry" };
        c = c with { Concepts = [concept], Epochs = 1, ClassBatchSize = 3 };
        var request = Assert.Single(ClassImagePreparation.Requests(c, 0));
        Assert.Equal(6, request.Needed);
        Assert.Equal(3, request.BatchSize);
        Assert.Equal((1, "man", "blurry"), (request.Steps, request.ClassPrompt, request.NegativePrompt));
        Assert.Empty(ClassImagePreparation.Requests(c with { Concepts = [concept with { GenerateClassImages = false }] }, 0));

        using var m = DreamBoothTrainerTests.TinyModel();
        var messages = new List<string>();
        using (var t = new DreamBoothTrainer(c, m, setupProgress: new Sync(e => messages.Add(e.Message ?? ""))))
        {
            var report = Assert.Single(t.ClassImageReports);
            Assert.Equal((2, 4), (report.Found, report.Generated));   // the shortfall, nothing more
            Assert.Equal(6, t.Data.ClassImages.Count);                // and training uses them
            Assert.Contains(messages, s => s.Contains("generated 4"));
        }
        var files = ClassImageGenerator.Scan(concept.ClassDir).readable;
        Assert.Equal(6, files.Count);
        Assert.Equal(4, files.Count(f => Path.GetFileName(f).StartsWith(ClassImageGenerator.FilePrefix)));
        Assert.Equal("man", PngInfotext.Read(files.First(f => Path.GetFileName(f).StartsWith("class-")))!.Prompt);

        // a second run finds them all and generates none
        using (var t = new DreamBoothTrainer(c, m))
            Assert.Empty(t.ClassImageReports);
        Assert.Equal(6, ClassImageGenerator.Scan(concept.ClassDir).readable.Count);
    }

    [Fact]
    public void Class_images_are_generated_at_the_instance_buckets_sizes_not_max_resolution_square()
    {
        // two portrait photos (48x64) and one landscape (64x48), max_resolution 64: the extension's ClassDataset
        // generates each bucket's class images at that bucket's resolution, and so do we (not 64x64)
        using var dir = TestPaths.NewTempDir();
        var inst = Directory.CreateDirectory(dir.File("photos")).FullName;
        foreach (var (name, w, h) in new[] { ("a", 48, 64), ("b", 48, 64), ("c", 64, 48) })
            using (var img = new SixLabors.ImageSharp.Image<SixLabors.ImageSharp.PixelFormats.Rgb24>(w, h))
                SixLabors.ImageSharp.ImageExtensions.SaveAsPng(img, Path.Combine(inst, name + ".png"));
        var c = DreamBoothTrainerTests.TinyConfig(dir) with
        {
            Epochs = 1, MaxResolution = 64, ResolutionStep = 16, ClassBatchSize = 2,
            Concepts = [new ConceptConfig { InstanceDir = inst, ClassDir = dir.File("generated"), ClassImagesPerInstance = 2, ClassSteps = 1 }],
        };
        var need = ClassImagePreparation.Plan(c, 0);
        Assert.Equal([("48x64", 2, 4), ("64x48", 1, 2)], need.Buckets.Select(b => (b.Size, b.InstanceImages, b.ToGenerate)));
        Assert.Contains("6 to generate at the instance bucket size (4 at 48x64, 2 at 64x48)", need.ToString());
        Assert.Equal([(48, 64), (64, 48)], ClassImagePreparation.Requests(c, 0).Select(r => (r.Width, r.Height)));

        using var m = DreamBoothTrainerTests.TinyModel();
        var messages = new List<string>();
        using (var t = new DreamBoothTrainer(c, m, setupProgress: new Sync(e => messages.Add(e.Message ?? ""))))
            Assert.Equal(6, t.Data.ClassImages.Count);
        Assert.Contains(messages, s => s.Contains("at the instance bucket size (4 at 48x64, 2 at 64x48)"));
        var sizes = ClassImageGenerator.Scan(dir.File("generated")).readable
            .Select(f => SixLabors.ImageSharp.Image.Identify(f)).Select(i => $"{i.Width}x{i.Height}").ToList();
        Assert.Equal(4, sizes.Count(s => s == "48x64"));
        Assert.Equal(2, sizes.Count(s => s == "64x48"));
        Assert.Equal([3, 2, 1], ClassImagePreparation.Split(6, [3, 2, 1]).Select(x => x));
        Assert.Equal([4, 3, 3], ClassImagePreparation.Split(10, [1, 1, 1]));
    }

    /// <summary>Records the epochs it is called at and one UNet weight the model holds at that moment.</summary>
    sealed class RecordingRenderer : IPreviewRenderer
    {
        public readonly List<int> Epochs = new();
        public Tensor? LastWeight;
        public IReadOnlyList<string> Render(StableDiffusionModel model, IReadOnlyList<string> prompts, long seed, string outputDir, int epoch)
        {
            Epochs.Add(epoch);
            LastWeight?.Dispose();
            LastWeight = model.UNet.named_parameters().First(kv => kv.name == "conv_in.weight").parameter.detach().clone();
            return [];
        }
    }

    [Fact]
    public void Previews_render_every_n_epochs_and_at_the_end_with_the_trained_weights()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with
        {
            Epochs = 5, PreviewEveryEpochs = 2, PreviewPrompts = ["ohwx man"], TextEncoderStepRatio = 0,
            UseEma = true, EmaDecay = 0.5, Optimizer = "adamw", LearningRate = 1e-2,
        };
        using var m = DreamBoothTrainerTests.TinyModel();
        var renderer = new RecordingRenderer();
        using var t = new DreamBoothTrainer(c, m, renderer);
        var previews = new List<int>();
        t.Run(new Sync(e => { if (e.Kind == TrainingEventKind.Preview) previews.Add(e.Epoch); }));
        Assert.Equal([2, 4, 5], renderer.Epochs);
        Assert.Equal([2, 4, 5], previews);
        // the last preview saw the trained weights (as the A1111 extension draws previews), not the EMA's
        var trained = m.UNet.named_parameters().First(kv => kv.name == "conv_in.weight").parameter;
        Assert.True(renderer.LastWeight!.BitEqual(trained));
        Assert.False(renderer.LastWeight!.BitEqual(t.Ema!.Shadow["conv_in.weight"]));
    }

    [Fact]
    public void Preview_ema_draws_previews_with_the_ema_weights_and_puts_the_trained_ones_back()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with
        {
            Epochs = 2, PreviewEveryEpochs = 1, PreviewPrompts = ["ohwx man"], TextEncoderStepRatio = 0, PreviewEma = true,
            UseEma = true, EmaDecay = 0.5, Optimizer = "adamw", LearningRate = 1e-2,
        };
        Assert.Contains("preview_ema is on but use_ema is off", (c with { UseEma = false }).Validate(checkFolders: false));
        using var m = DreamBoothTrainerTests.TinyModel();
        var renderer = new RecordingRenderer();
        using var t = new DreamBoothTrainer(c, m, renderer);
        t.Run();
        Assert.True(renderer.LastWeight!.BitEqual(t.Ema!.Shadow["conv_in.weight"]));
        var trained = m.UNet.named_parameters().First(kv => kv.name == "conv_in.weight").parameter;
        Assert.False(renderer.LastWeight!.BitEqual(trained));
    }

    [Fact]
    public void Txt2img_preview_renderer_writes_pngs_with_infotext_per_epoch_folder()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with
        {
            Epochs = 1, PreviewEveryEpochs = 1, PreviewPrompts = ["ohwx man", "ohwx man smiling"], PreviewSeed = 11, TextEncoderStepRatio = 0,
        };
        using var m = DreamBoothTrainerTests.TinyModel();
        using var t = new DreamBoothTrainer(c, m, new Txt2ImgPreviewRenderer(64, 64, steps: 1, cfgScale: 3));
        t.Run();
        string folder = Path.Combine(c.OutputDir, "previews", "epoch_0001");
        Assert.Equal(["preview_00.png", "preview_01.png"], Directory.GetFiles(folder).Select(Path.GetFileName).Order());
        var info = PngInfotext.Read(Path.Combine(folder, "preview_01.png"))!;
        Assert.Equal(("ohwx man smiling", 12L, 64, 1), (info.Prompt, info.Seed, info.Width, info.Steps));
    }

    [Fact]
    public void Tensorboard_event_file_is_written()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir) with { Epochs = 1 };
        using var m = DreamBoothTrainerTests.TinyModel();
        using (var t = new DreamBoothTrainer(c, m)) t.Run();
        var events = Directory.GetFiles(Path.Combine(c.OutputDir, "tensorboard"), "*tfevents*", SearchOption.AllDirectories);
        var file = Assert.Single(events);
        var bytes = File.ReadAllBytes(file);
        Assert.True(bytes.Length > 200, $"{file}: {bytes.Length} bytes");
        string text = System.Text.Encoding.Latin1.GetString(bytes);
        foreach (var tag in new[] { "loss/total", "loss/instance", "loss/prior", "lr/unet", "lr/text_encoder", "grad_norm/unet" })
            Assert.Contains(tag, text);
    }
}

public class OomBackoffTests
{
    [Fact]
    public void Decision_is_checkpointing_then_halve_batch_then_give_up()
    {
        Assert.True(OomBackoff.IsOutOfMemory(new System.Runtime.InteropServices.ExternalException("CUDA out of memory. Tried to allocate 2.00 GiB")));
        Assert.False(OomBackoff.IsOutOfMemory(new System.Runtime.InteropServices.ExternalException("shape mismatch")));
        Assert.False(OomBackoff.IsOutOfMemory(new InvalidOperationException("out of memory")));
        Assert.Equal(OomAction.EnableGradientCheckpointing, OomBackoff.Next(gradientCheckpointing: false, batchSize: 4));
        Assert.Equal(OomAction.HalveBatch, OomBackoff.Next(gradientCheckpointing: true, batchSize: 4));
        Assert.Equal(OomAction.GiveUp, OomBackoff.Next(gradientCheckpointing: true, batchSize: 1));
        Assert.Contains("batch_size to 2", OomBackoff.Describe(OomAction.HalveBatch, 3, 4));
    }

    [Fact]
    public void Injected_oom_enables_checkpointing_retries_the_step_then_stops_with_the_batch_advice()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir, prior: false) with { Epochs = 1, BatchSize = 2, TextEncoderStepRatio = 0, GradientCheckpointing = false };
        using var m = DreamBoothTrainerTests.TinyModel();
        using var t = new DreamBoothTrainer(c, m);
        int failures = 0;
        t.BeforeTrainStep = step => { if (failures++ < 2) throw new System.Runtime.InteropServices.ExternalException("CUDA out of memory. Tried to allocate 1 GiB"); };
        var messages = new List<string>();
        var e = Assert.Throws<DreamBoothException>(() => t.Run(new Sync(ev => { if (ev.Kind == TrainingEventKind.Message) messages.Add(ev.Message!); })));
        Assert.True(m.UNet.GradientCheckpointing);
        Assert.Contains(messages, s => s.Contains("enabled gradient checkpointing"));
        Assert.Contains("set batch_size to 1", e.Message);

        // one failure only: checkpointing on, the step is retried and the run completes
        using var dir2 = TestPaths.NewTempDir();
        using var m2 = DreamBoothTrainerTests.TinyModel();
        using var t2 = new DreamBoothTrainer(c with { OutputDir = dir2.File("out") }, m2);
        int once = 0;
        t2.BeforeTrainStep = step => { if (once++ == 0) throw new System.Runtime.InteropServices.ExternalException("CUDA out of memory"); };
        var r = t2.Run();
        Assert.Equal(1, r.Steps);
        Assert.True(m2.UNet.GradientCheckpointing);
    }

    sealed class Sync(Action<TrainingEvent> a) : IProgress<TrainingEvent> { public void Report(TrainingEvent v) => a(v); }
}
