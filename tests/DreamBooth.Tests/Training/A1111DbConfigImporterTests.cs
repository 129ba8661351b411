using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;

namespace DreamBooth.Tests.Training;

public class A1111DbConfigImporterTests
{
    static string Fixture => Path.Combine(TestPaths.RepoRoot, "tests", "DreamBooth.Tests", "Training", "Fixtures", "db_config.json");

    [Fact]
    public void Recipe_db_config_maps_to_the_recipe()
    {
        var r = A1111DbConfigImporter.ImportFile(Fixture);
        var c = r.Config;
        var recipe = new TrainingConfig();
        // every recipe value of the fixture lands on our setting of the same meaning
        Assert.Equal("ohwx", c.Name);
        Assert.Equal("/sd/models/Stable-diffusion/v1-5-pruned.safetensors", c.PretrainedModel);
        Assert.Equal((200, 10, 0), (c.Epochs, c.SaveEveryEpochs, c.PreviewEveryEpochs));
        Assert.Equal((1, 1, 4), (c.BatchSize, c.GradientAccumulationSteps, c.ClassBatchSize));
        Assert.Equal((1e-7, 1e-7, "constant_with_warmup"), (c.LearningRate, c.TextEncoderLearningRate, c.LrScheduler));
        Assert.Equal(("lion", 0.1, 0.1, 0.0), (c.Optimizer, c.WeightDecay, c.TextEncoderWeightDecay, c.TextEncoderMaxGradNorm));
        Assert.Equal(("bf16", true, false), (c.MixedPrecision, c.UseEma, c.SaveEmaWeights));
        Assert.Equal((true, true, 0.75, 0.0), (c.CacheLatents, c.TrainUnet, c.TextEncoderStepRatio, c.OffsetNoise));
        Assert.Equal((false, 1, true, false, true, 75), (c.FreezeClipNormalization, c.ClipSkip, c.PadTokens, c.StrictTokens, c.ShuffleTags, c.MaxTokenLength));
        Assert.Equal((0.75, false, 0.1, 100), (c.PriorLossWeight, c.ScalePriorLoss, c.PriorLossWeightMin, c.PriorLossTargetEpochs));
        Assert.Equal((false, false, 1024, true), (c.Hflip, c.DynamicImageNormalization, c.MaxResolution, c.GradientCheckpointing));
        var k = Assert.Single(c.Concepts);
        Assert.Equal(("/data/instance/ohwx", "ohwx man", "/data/classes/man", "man", "blurry, lowres"), (k.InstanceDir, k.InstancePrompt, k.ClassDir, k.ClassPrompt, k.ClassNegativePrompt));
        Assert.Equal((100, 7.5, 40), (k.ClassImagesPerInstance, k.ClassGuidanceScale, k.ClassSteps));
        Assert.Empty(c.Validate(checkFolders: false));
        // the imported config equals the recipe apart from what the fixture names (paths, name, checkpointing)
        var expected = recipe with { Name = c.Name, PretrainedModel = c.PretrainedModel, GradientCheckpointing = true, Concepts = c.Concepts };
        Assert.Equal(expected.ToJson(), c.ToJson());

        Assert.Contains("stop_text_encoder → text_encoder_step_ratio = 0.75", r.Mapped);
        Assert.Contains("txt_learning_rate → text_encoder_learning_rate = 1E-07", r.Mapped);
    }

    [Fact]
    public void What_we_ignore_is_reported_with_a_reason()
    {
        var r = A1111DbConfigImporter.ImportFile(Fixture);
        Assert.Contains(r.Ignored, l => l.StartsWith("attention = \"default\" (attention is always SDPA"));
        Assert.Contains(r.Ignored, l => l.StartsWith("use_lora = false (LoRA is not supported"));
        Assert.Contains(r.Ignored, l => l.StartsWith("adamw_weight_decay (weight_decay takes precedence)"));
        Assert.Contains(r.Ignored, l => l.StartsWith("model_dir = ") && l.EndsWith("(extension bookkeeping)"));
        Assert.Contains(r.Ignored, l => l.StartsWith("concepts_list[0].instance_token = \"ohwx\""));
        Assert.Contains(r.Ignored, l => l.StartsWith("tomesd = 0"));
        Assert.Contains(r.Ignored, l => l.StartsWith("split_loss = true"));
        // nothing is silently dropped: each top-level key is mapped or ignored
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Fixture))!.AsObject();
        foreach (var kv in json)
            Assert.True(r.Mapped.Any(m => m.StartsWith(kv.Key + " ")) || r.Ignored.Any(i => i.StartsWith(kv.Key + " ") || i.StartsWith(kv.Key + "[")) || kv.Key is "sanity_prompt" or "sanity_seed" or "pretrained_model_name_or_path",
                $"{kv.Key} neither mapped nor reported");
    }

    [Fact]
    public void Issue_15_settings_map_from_the_extensions_keys_and_the_messages_say_what_it_does()
    {
        var r = A1111DbConfigImporter.Import("""
            {"train_batch_size": 1, "half_model": true, "prior_loss_weight": 0.75, "infer_ema": false, "ema_predict": false,
             "save_state_after": true, "gradient_checkpointing": true,
             "concepts_list": [{"instance_data_dir": "i", "class_data_dir": "c", "num_class_images_per": 100}]}
            """);
        Assert.Equal(("fp16", "alternate", true, false), (r.Config.SaveDtype, r.Config.PriorStepping, r.Config.GradientCheckpointing, r.Config.PreviewEma));
        Assert.Contains("half_model → save_dtype = fp16", r.Mapped);
        Assert.Contains(r.Mapped, m => m.StartsWith("train_batch_size = 1 → prior_stepping = alternate"));
        Assert.Contains(r.Mapped, m => m.StartsWith("prior_loss_weight → prior_loss_weight = 0.75") && m.Contains("set 1 to match it exactly"));
        // previews here use the trained weights unless preview_ema: the messages about the extension's EMA keys say so
        Assert.Contains(r.Ignored, i => i.StartsWith("infer_ema = false") && i.Contains("training previews use the trained weights, as here (preview_ema = false)"));
        Assert.Contains(r.Ignored, i => i.StartsWith("ema_predict = false") && i.Contains("never reads"));
        Assert.Contains(r.Ignored, i => i.StartsWith("save_state_after = true") && i.Contains("keep_training_states"));

        var half = A1111DbConfigImporter.Import("""{"half_model": false}""");
        Assert.Equal("fp16", half.Config.SaveDtype);   // the recipe's default kept; the message says what the extension would do
        Assert.Contains(half.Ignored, i => i.StartsWith("half_model = false") && i.Contains("fp32"));
        var batch4 = A1111DbConfigImporter.Import("""{"train_batch_size": 4, "concepts_list": [{"instance_data_dir": "i", "class_data_dir": "c"}]}""");
        Assert.Contains(batch4.Ignored, i => i.StartsWith("train_batch_size = 4 with class images") && i.Contains("prior_stepping \"joint\" with batch_size 2"));
    }

    [Fact]
    public void Unsupported_optimizer_and_scheduler_are_reported_and_defaults_kept()
    {
        var r = A1111DbConfigImporter.Import("""{"optimizer": "Prodigy", "lr_scheduler": "rex", "learning_rate": 2e-6, "max_token_length": 300}""");
        Assert.Equal("lion", r.Config.Optimizer);
        Assert.Equal("constant_with_warmup", r.Config.LrScheduler);
        Assert.Equal(2e-6, r.Config.LearningRate);
        Assert.Contains("optimizer = Prodigy (not supported; kept lion)", r.Ignored);
        Assert.Contains("lr_scheduler = rex (not supported; kept constant_with_warmup)", r.Ignored);
        Assert.Contains(r.Ignored, l => l.StartsWith("max_token_length = 300"));
        Assert.Equal("adamw8bit", A1111DbConfigImporter.Import("""{"optimizer": "8bit AdamW"}""").Config.Optimizer);
        Assert.Equal("adamw", A1111DbConfigImporter.Import("""{"optimizer": "Torch AdamW"}""").Config.Optimizer);
    }
}
