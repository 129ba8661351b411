using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;

namespace DreamBooth.Tests.Training;

public class TrainingConfigTests
{
    internal static TrainingConfig ValidConfig(TempDir dir, int images = 2)
    {
        var inst = Directory.CreateDirectory(dir.File("inst")).FullName;
        for (int i = 0; i < images; i++) File.WriteAllBytes(Path.Combine(inst, $"{i}.png"), [0]);
        Directory.CreateDirectory(dir.File("class"));
        return new TrainingConfig
        {
            PretrainedModel = "runwayml/stable-diffusion-v1-5",
            OutputDir = dir.File("out"),
            Concepts = [new ConceptConfig { InstanceDir = inst, ClassDir = dir.File("class") }],
        };
    }

    [Fact]
    public void Defaults_are_the_recipe()
    {
        var c = new TrainingConfig();
        Assert.Equal(200, c.Epochs);
        Assert.Equal(10, c.SaveEveryEpochs);
        Assert.Equal(0, c.PreviewEveryEpochs);
        Assert.Equal((1, 1, 4), (c.BatchSize, c.GradientAccumulationSteps, c.ClassBatchSize));
        Assert.Equal((1e-7, 1e-7), (c.LearningRate, c.TextEncoderLearningRate));
        Assert.Equal(("constant_with_warmup", 0), (c.LrScheduler, c.LrWarmupSteps));
        Assert.Equal(("lion", 0.1, 0.1), (c.Optimizer, c.WeightDecay, c.TextEncoderWeightDecay));
        Assert.Equal("bf16", c.MixedPrecision);
        Assert.Equal((true, 0.9999, false), (c.UseEma, c.EmaDecay, c.SaveEmaWeights));
        Assert.Equal((true, true, 0.75), (c.CacheLatents, c.TrainUnet, c.TextEncoderStepRatio));
        Assert.Equal((false, 1, 0.0, 1.0), (c.FreezeClipNormalization, c.ClipSkip, c.TextEncoderMaxGradNorm, c.MaxGradNorm));
        Assert.Equal((true, false, true, 75), (c.PadTokens, c.StrictTokens, c.ShuffleTags, c.MaxTokenLength));
        Assert.Equal((0.75, false, 0.1, 100), (c.PriorLossWeight, c.ScalePriorLoss, c.PriorLossWeightMin, c.PriorLossTargetEpochs));
        Assert.Equal((false, false, 1024), (c.Hflip, c.DynamicImageNormalization, c.MaxResolution));
        var k = new ConceptConfig();
        Assert.Equal(("ohwx man", "man", 100, 7.5, 40), (k.InstancePrompt, k.ClassPrompt, k.ClassImagesPerInstance, k.ClassGuidanceScale, k.ClassSteps));
    }

    [Fact]
    public void Json_uses_snake_case_names_and_round_trips()
    {
        var c = new TrainingConfig { LearningRate = 2e-6, Concepts = [new ConceptConfig { InstanceDir = "a", ClassDir = "b" }], PreviewPrompts = ["x"] };
        string json = c.ToJson();
        foreach (var key in new[] { "\"learning_rate\"", "\"text_encoder_learning_rate\"", "\"lr_scheduler\"", "\"text_encoder_step_ratio\"",
                                    "\"prior_loss_weight_min\"", "\"freeze_clip_normalization\"", "\"instance_dir\"", "\"class_images_per_instance\"" })
            Assert.Contains(key, json);
        var back = TrainingConfig.FromJson(json);
        Assert.Equal(json, back.ToJson());
        Assert.Equal(2e-6, back.LearningRate);
    }

    [Fact]
    public void Unknown_keys_are_all_reported_with_a_suggestion()
    {
        var e = Assert.Throws<DreamBoothException>(() => TrainingConfig.FromJson("""{"learning_rat": 1e-6, "foo": 1, "concepts": [{"instance_dri": "x"}]}""", "cfg.json"));
        Assert.StartsWith("cfg.json: ", e.Message);
        Assert.Contains("unknown setting 'learning_rat' (did you mean 'learning_rate'?)", e.Message);
        Assert.Contains("unknown setting 'foo'", e.Message);
        Assert.Contains("unknown setting 'concepts[0].instance_dri' (did you mean 'concepts[0].instance_dir'?)", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Wrong_type_names_the_key()
    {
        var e = Assert.Throws<DreamBoothException>(() => TrainingConfig.FromJson("""{"epochs": "many"}"""));
        Assert.Contains("'epochs'", e.Message);
        Assert.Contains("an integer", e.Message);
    }

    [Fact]
    public void Valid_config_has_no_problems()
    {
        using var dir = TestPaths.NewTempDir();
        Assert.Empty(ValidConfig(dir).Validate());
    }

    [Fact]
    public void Validation_lists_every_problem_one_line_each()
    {
        using var dir = TestPaths.NewTempDir();
        var c = ValidConfig(dir, images: 1) with
        {
            LearningRate = -1,
            MaxResolution = 1000,
            Optimizer = "sgd",
            ClipSkip = 0,
            MaxTokenLength = 100,
            EmaDecay = 1.5,
        };
        c = c with { Concepts = [.. c.Concepts, new ConceptConfig { InstanceDir = dir.File("missing") }] };
        var p = c.Validate();
        Assert.Contains(p, l => l.StartsWith("learning_rate = -1 is out of range"));
        Assert.Contains(p, l => l == "max_resolution = 1000 is not a positive multiple of 64 (resolution_step)");
        Assert.Contains(p, l => l.StartsWith("optimizer = \"sgd\" is not one of: lion, adamw, adamw8bit"));
        Assert.Contains(p, l => l.StartsWith("clip_skip = 0 is out of range"));
        Assert.Contains(p, l => l.StartsWith("max_token_length = 100"));
        Assert.Contains(p, l => l.StartsWith("ema_decay = 1.5"));
        Assert.Contains(p, l => l.StartsWith("concepts[0].instance_dir") && l.Contains("has 1 image(s) (expected at least 2)"));
        Assert.Contains(p, l => l.StartsWith("concepts[1].instance_dir") && l.EndsWith("does not exist"));
        Assert.All(p, l => Assert.DoesNotContain('\n', l));
        var e = Assert.Throws<DreamBoothException>(() => c.ThrowIfInvalid(source: "x.json"));
        Assert.StartsWith($"x.json: {p.Count} problem(s): ", e.Message);
    }

    [Fact]
    public void Load_resolves_relative_folders_against_the_config_file()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.File("cfg.json"), """{"pretrained_model": "owner/repo", "output_dir": "out", "concepts": [{"instance_dir": "inst", "class_dir": "class"}]}""");
        var c = TrainingConfig.Load(dir.File("cfg.json"));
        Assert.Equal(dir.File("out"), c.OutputDir);
        Assert.Equal(dir.File("inst"), c.Concepts[0].InstanceDir);
        Assert.Equal("owner/repo", c.PretrainedModel);
    }

    [Fact]
    public void Save_then_load_gives_the_same_config()
    {
        using var dir = TestPaths.NewTempDir();
        var c = ValidConfig(dir) with { Optimizer = "adamw8bit", Hflip = true };
        c.Save(dir.File("c.json"));
        Assert.Equal(c.ToJson(), TrainingConfig.Load(dir.File("c.json")).ToJson());
    }
}
