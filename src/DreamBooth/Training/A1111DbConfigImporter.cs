using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace DreamBooth.Training;

/// <summary>The result of importing an A1111 extension db_config.json.</summary>
public sealed record A1111ImportResult(TrainingConfig Config, IReadOnlyList<string> Mapped, IReadOnlyList<string> Ignored);

/// <summary>
/// Maps a d8ahazard/sd_dreambooth_extension <c>db_config.json</c> (its DreamboothConfig fields) onto a
/// <see cref="TrainingConfig"/>. Every key is either mapped (listed in <c>Mapped</c> as "theirs → ours")
/// or reported in <c>Ignored</c> with why; values we cannot honour (an optimizer we lack, a scheduler
/// we lack) are reported and the recipe default is kept.
/// </summary>
public static class A1111DbConfigImporter
{
    // extension bookkeeping: paths/revisions of its own model folder, UI state; nothing to train with
    static readonly HashSet<string> Bookkeeping =
    [
        "model_dir", "model_path", "revision", "epoch", "lifetime_revision", "initial_revision", "has_ema",
        "concepts_path", "use_concepts", "disable_logging", "graph_smoothing", "shared_diffusers_path",
        "use_shared_src", "use_subdir", "snapshot", "pretrained_vae_name_or_path", "epoch_pause_frequency",
        "epoch_pause_time", "scheduler", "sanity_seed", "save_safetensors",
    ];

    static readonly Dictionary<string, string> Reasons = new()
    {
        ["attention"] = "attention is always SDPA here",
        ["split_loss"] = "the loss is always split per sample into instance and prior",
        ["train_unfrozen"] = "all UNet layers always train",
        ["gradient_set_to_none"] = "gradients are always set to none",
        ["noise_scheduler"] = "training noise comes from the base model's scheduler config",
        ["half_model"] = "false: the extension then saves fp32 single files; kept save_dtype fp16 (set save_dtype fp32 to match)",
        ["v2"] = "SD 2.x is not supported",
        ["tf32_enable"] = "not configurable",
        ["deterministic"] = "training is always seeded (seed)",
        ["min_snr_gamma"] = "Min-SNR weighting is not implemented (the extension ignores it too)",
        ["ema_predict"] = "a UI checkbox the extension's training code never reads; previews here use the trained weights (preview_ema = false)",
        ["infer_ema"] = "the extension uses it to sample from a saved model's ema_unet (class images, its sampling tab); its training previews use the trained weights, as here (preview_ema = false)",
        ["disable_class_matching"] = "class images of any size count here (as with this on); missing ones are generated at the instance buckets' sizes",
        ["learning_rate_min"] = "only used by schedulers we do not have",
        ["lr_factor"] = "only used by schedulers we do not have",
        ["lr_scale_pos"] = "only used by schedulers we do not have",
        ["tomesd"] = "token merging is not implemented",
        ["train_imagic"] = "Imagic is not implemented",
        ["save_ckpt_after"] = "a save always happens at the end",
        ["save_ckpt_during"] = "saves follow save_every_epochs",
        ["save_ckpt_cancel"] = "cancel always saves",
        ["save_state_after"] = "a training state is written with every save; the newest keep_training_states are kept",
        ["save_state_during"] = "a training state is written with every save; the newest keep_training_states are kept",
        ["save_state_cancel"] = "a training state is always written on cancel",
        ["custom_model_name"] = "use name",
        ["sanity_prompt"] = "mapped to preview_prompts only when not empty",
    };

    public static A1111ImportResult ImportFile(string path)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"{path}: db_config.json not found");
        return Import(File.ReadAllText(path), path);
    }

    public static A1111ImportResult Import(string json, string source = "db_config.json")
    {
        JsonObject root;
        root = TrainingConfig.ParseUntrusted(json, source) as JsonObject ?? throw new DreamBoothException($"{source}: expected a JSON object");

        var c = new TrainingConfig();
        var mapped = new List<string>();
        var ignored = new List<string>();
        var used = new HashSet<string>();

        JsonNode? Get(string key) { used.Add(key); return root[key]; }
        bool Has(string key) => root.ContainsKey(key) && root[key] is not null;
        T? Val<T>(string key)
        {
            var n = Get(key);
            if (n is null) return default;
            try { return n.GetValue<T>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                if (typeof(T) == typeof(double) && n is JsonValue v && v.TryGetValue(out long l)) return (T)(object)(double)l;
                if (typeof(T) == typeof(int) && n is JsonValue v2 && v2.TryGetValue(out double d) && d == Math.Floor(d))
                {
                    if (d < int.MinValue || d > int.MaxValue)
                        throw new DreamBoothException($"{source}: '{key}' = {n.ToJsonString()} is out of range (expected {IntegerRange(key, d < 0)})");
                    return (T)(object)(int)d;
                }
                throw new DreamBoothException($"{source}: '{key}' has the wrong type (expected {TypeName(typeof(T))}, found {Describe(n)})");
            }
        }
        void Map<T>(string theirs, string ours, Func<T, TrainingConfig> set)
        {
            if (!Has(theirs)) { used.Add(theirs); return; }
            var v = Val<T>(theirs)!;
            c = set(v);
            mapped.Add($"{theirs} → {ours} = {Format(v)}");
        }

        string? name = Has("model_name") ? Val<string>("model_name") : null;
        if (!string.IsNullOrWhiteSpace(name)) { c = c with { Name = name }; mapped.Add($"model_name → name = {name}"); }
        else used.Add("model_name");
        string? src = Has("src") ? Val<string>("src") : null;
        string? pre = Has("pretrained_model_name_or_path") ? Val<string>("pretrained_model_name_or_path") : null;
        if (!string.IsNullOrWhiteSpace(src)) { c = c with { PretrainedModel = src }; mapped.Add($"src → pretrained_model = {src}"); }
        else if (!string.IsNullOrWhiteSpace(pre)) { c = c with { PretrainedModel = pre }; mapped.Add($"pretrained_model_name_or_path → pretrained_model = {pre}"); }

        Map<int>("num_train_epochs", "epochs", v => c with { Epochs = v });
        Map<int>("save_embedding_every", "save_every_epochs", v => c with { SaveEveryEpochs = v });
        Map<int>("save_preview_every", "preview_every_epochs", v => c with { PreviewEveryEpochs = v });
        Map<int>("train_batch_size", "batch_size", v => c with { BatchSize = v });
        Map<int>("gradient_accumulation_steps", "gradient_accumulation_steps", v => c with { GradientAccumulationSteps = v });
        Map<int>("sample_batch_size", "class_batch_size", v => c with { ClassBatchSize = v });
        Map<double>("learning_rate", "learning_rate", v => c with { LearningRate = v });
        Map<double>("txt_learning_rate", "text_encoder_learning_rate", v => c with { TextEncoderLearningRate = v });
        Map<int>("lr_warmup_steps", "lr_warmup_steps", v => c with { LrWarmupSteps = v });
        Map<int>("lr_cycles", "lr_num_cycles", v => c with { LrNumCycles = v });
        Map<double>("lr_power", "lr_power", v => c with { LrPower = v });
        if (Has("weight_decay")) Map<double>("weight_decay", "weight_decay", v => c with { WeightDecay = v });
        else if (Has("adamw_weight_decay")) Map<double>("adamw_weight_decay", "weight_decay", v => c with { WeightDecay = v });
        if (Has("weight_decay") && Has("adamw_weight_decay")) { used.Add("adamw_weight_decay"); ignored.Add("adamw_weight_decay (weight_decay takes precedence)"); }
        used.Add("weight_decay"); used.Add("adamw_weight_decay");
        Map<double>("tenc_weight_decay", "text_encoder_weight_decay", v => c with { TextEncoderWeightDecay = v });
        Map<double>("tenc_grad_clip_norm", "text_encoder_max_grad_norm", v => c with { TextEncoderMaxGradNorm = v });
        Map<bool>("use_ema", "use_ema", v => c with { UseEma = v });
        Map<bool>("save_ema", "save_ema_weights", v => c with { SaveEmaWeights = v });
        Map<bool>("cache_latents", "cache_latents", v => c with { CacheLatents = v });
        Map<bool>("train_unet", "train_unet", v => c with { TrainUnet = v });
        Map<double>("stop_text_encoder", "text_encoder_step_ratio", v => c with { TextEncoderStepRatio = v });
        Map<double>("offset_noise", "offset_noise", v => c with { OffsetNoise = v });
        Map<bool>("freeze_clip_normalization", "freeze_clip_normalization", v => c with { FreezeClipNormalization = v });
        Map<int>("clip_skip", "clip_skip", v => c with { ClipSkip = Math.Max(1, v) });
        Map<bool>("pad_tokens", "pad_tokens", v => c with { PadTokens = v });
        Map<bool>("strict_tokens", "strict_tokens", v => c with { StrictTokens = v });
        Map<bool>("shuffle_tags", "shuffle_tags", v => c with { ShuffleTags = v });
        Map<double>("prior_loss_weight", "prior_loss_weight", v => c with { PriorLossWeight = v });
        if (Has("prior_loss_weight"))
            mapped[^1] += " (class steps' loss × this weight here; the extension's SD1.x code at batch 1 leaves class steps at weight 1: set 1 to match it exactly)";
        Map<bool>("prior_loss_scale", "scale_prior_loss", v => c with { ScalePriorLoss = v });
        Map<double>("prior_loss_weight_min", "prior_loss_weight_min", v => c with { PriorLossWeightMin = v });
        Map<int>("prior_loss_target", "prior_loss_target_epochs", v => c with { PriorLossTargetEpochs = v });
        Map<bool>("hflip", "hflip", v => c with { Hflip = v });
        Map<bool>("dynamic_img_norm", "dynamic_image_normalization", v => c with { DynamicImageNormalization = v });
        Map<int>("resolution", "max_resolution", v => c with { MaxResolution = v });
        Map<bool>("gradient_checkpointing", "gradient_checkpointing", v => c with { GradientCheckpointing = v });
        if (Has("half_model"))
        {
            if (Val<bool>("half_model")) { c = c with { SaveDtype = "fp16" }; mapped.Add("half_model → save_dtype = fp16"); }
            else ignored.Add($"half_model = false ({Reasons["half_model"]})");
        }

        if (Has("max_token_length"))
        {
            int v = Val<int>("max_token_length");
            if (v is 75 or 150 or 225) { c = c with { MaxTokenLength = v }; mapped.Add($"max_token_length → max_token_length = {v}"); }
            else ignored.Add($"max_token_length = {v} (only 75, 150, 225 are supported; kept {c.MaxTokenLength})");
        }
        if (Has("lr_scheduler"))
        {
            string v = Val<string>("lr_scheduler")!;
            string? ours = v switch
            {
                "constant" or "constant_with_warmup" or "linear" or "cosine" or "cosine_with_restarts" or "polynomial" => v,
                "linear_with_warmup" => "linear",
                _ => null,
            };
            if (ours is null) ignored.Add($"lr_scheduler = {v} (not supported; kept {c.LrScheduler})");
            else { c = c with { LrScheduler = ours }; mapped.Add($"lr_scheduler → lr_scheduler = {ours}"); }
        }
        if (Has("optimizer"))
        {
            string v = Val<string>("optimizer")!;
            string? ours = v.Trim().ToLowerInvariant() switch
            {
                "lion" => "lion",
                "8bit adamw" or "8bit adam" or "paged 8bit adamw" => "adamw8bit",
                "torch adamw" or "adamw" => "adamw",
                _ => null,
            };
            if (ours is null) ignored.Add($"optimizer = {v} (not supported; kept {c.Optimizer})");
            else
            {
                c = c with { Optimizer = ours };
                mapped.Add($"optimizer → optimizer = {ours}" + (v.StartsWith("Paged", StringComparison.OrdinalIgnoreCase) ? " (paging not applicable)" : ""));
            }
        }
        if (Has("mixed_precision"))
        {
            string v = Val<string>("mixed_precision")!;
            if (TrainingConfig.MixedPrecisions.Contains(v)) { c = c with { MixedPrecision = v }; mapped.Add($"mixed_precision → mixed_precision = {v}"); }
            else ignored.Add($"mixed_precision = {v} (not one of no, fp16, bf16; kept {c.MixedPrecision})");
        }
        if (Has("sanity_prompt"))
        {
            string v = Val<string>("sanity_prompt") ?? "";
            if (!string.IsNullOrWhiteSpace(v))
            {
                c = c with { PreviewPrompts = [v] };
                mapped.Add($"sanity_prompt → preview_prompts = [{v}]");
                if (Has("sanity_seed")) { long s = Val<long>("sanity_seed"); c = c with { PreviewSeed = s }; mapped.Add($"sanity_seed → preview_seed = {s}"); }
            }
        }

        if (Has("concepts_list") && root["concepts_list"] is not JsonArray)
            throw new DreamBoothException($"{source}: 'concepts_list' has the wrong type (expected a list of concepts, found {Describe(root["concepts_list"])})");
        if (Get("concepts_list") is JsonArray list)
        {
            var concepts = new List<ConceptConfig>();
            for (int i = 0; i < list.Count; i++)
            {
                if (list[i] is not JsonObject co) { ignored.Add($"concepts_list[{i}] (not an object)"); continue; }
                concepts.Add(ImportConcept(co, $"concepts_list[{i}]", ignored, source));
            }
            c = c with { Concepts = concepts };
            mapped.Add($"concepts_list → concepts ({concepts.Count})");
        }
        // the extension's bucket sampler steps an instance image, then a class image (db_dataset.py, shuffle_buckets):
        // at batch 1 that is prior_stepping "alternate"; its batches of B > 1 hold about B/2 instance and B/2 class images
        if (c.Concepts.Any(k => k.HasPrior))
        {
            if (c.BatchSize > 1)
                ignored.Add($"train_batch_size = {c.BatchSize} with class images: the extension's batches then mix instance and class images (about {c.BatchSize / 2} of each) in one step; the nearest here is prior_stepping \"joint\" with batch_size {Math.Max(1, c.BatchSize / 2)} (kept prior_stepping {c.PriorStepping}, batch_size {c.BatchSize})");
            else mapped.Add("train_batch_size = 1 → prior_stepping = alternate (the extension's sampler: an instance step, then a class step)");
        }

        foreach (var kv in root)
        {
            if (used.Contains(kv.Key)) continue;
            string value = kv.Value?.ToJsonString() ?? "null";
            if (value.Length > 60) value = value[..57] + "...";
            if (Bookkeeping.Contains(kv.Key)) ignored.Add($"{kv.Key} = {value} (extension bookkeeping)");
            else if (Reasons.TryGetValue(kv.Key, out var why)) ignored.Add($"{kv.Key} = {value} ({why})");
            else if (kv.Key.StartsWith("lora_", StringComparison.Ordinal) || kv.Key.StartsWith("save_lora", StringComparison.Ordinal) || kv.Key is "use_lora" or "use_lora_extended")
                ignored.Add($"{kv.Key} = {value} (LoRA is not supported: full fine-tuning only)");
            else if (kv.Key.StartsWith("adaptation_", StringComparison.Ordinal))
                ignored.Add($"{kv.Key} = {value} (D-Adaptation optimizers are not supported)");
            else ignored.Add($"{kv.Key} = {value} (not used)");
        }
        return new A1111ImportResult(c, mapped, ignored);
    }

    static ConceptConfig ImportConcept(JsonObject o, string where, List<string> ignored, string source)
    {
        var c = new ConceptConfig();
        string S(string k) => o[k] switch
        {
            null => "",
            JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
            var n => throw new DreamBoothException($"{source}: {where}.{k} has the wrong type (expected a string, found {Describe(n)})"),
        };
        double D(string k, double dflt)
        {
            if (o[k] is null) return dflt;
            if (o[k] is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue(out double d) && double.IsFinite(d)) return d;
            throw new DreamBoothException($"{source}: {where}.{k} has the wrong type (expected a number, found {Describe(o[k])})");
        }
        int I(string k, int dflt, string ours)
        {
            double d = D(k, dflt);
            if (d != Math.Floor(d)) throw new DreamBoothException($"{source}: {where}.{k} = {d.ToString(CultureInfo.InvariantCulture)} has the wrong type (expected an integer)");
            if (d < int.MinValue || d > int.MaxValue)
                throw new DreamBoothException($"{source}: {where}.{k} = {o[k]!.ToJsonString()} is out of range (expected {TrainingConfig.RangeOf("concepts[0]." + ours, d < 0)})");
            return (int)d;
        }
        var known = new HashSet<string> { "instance_data_dir", "instance_prompt", "class_data_dir", "class_prompt", "class_negative_prompt", "num_class_images_per", "class_guidance_scale", "class_infer_steps" };
        c = c with
        {
            InstanceDir = S("instance_data_dir"),
            InstancePrompt = o.ContainsKey("instance_prompt") ? S("instance_prompt") : c.InstancePrompt,
            ClassDir = S("class_data_dir"),
            ClassPrompt = o.ContainsKey("class_prompt") ? S("class_prompt") : c.ClassPrompt,
            ClassNegativePrompt = S("class_negative_prompt"),
            ClassImagesPerInstance = I("num_class_images_per", c.ClassImagesPerInstance, "class_images_per_instance"),
            ClassGuidanceScale = D("class_guidance_scale", c.ClassGuidanceScale),
            ClassSteps = I("class_infer_steps", c.ClassSteps, "class_steps"),
        };
        // the extension generates class images into classifiers_{i} when class_data_dir is empty but
        // class images are wanted: keep prior preservation on with a folder next to the output
        if (string.IsNullOrWhiteSpace(c.ClassDir) && c.ClassImagesPerInstance > 0)
            c = c with { ClassDir = Path.Combine("output", "classifiers_" + where[(where.IndexOf('[') + 1)..where.IndexOf(']')]) };
        foreach (var kv in o)
            if (!known.Contains(kv.Key))
                ignored.Add($"{where}.{kv.Key} = {kv.Value?.ToJsonString() ?? "null"} ({(kv.Key is "instance_token" or "class_token" ? "write the token into the prompts" : kv.Key.StartsWith("save_", StringComparison.Ordinal) || kv.Key is "n_save_sample" or "sample_seed" ? "per-concept samples: use preview_prompts" : "not used")})");
        return c;
    }

    /// <summary>Our setting an A1111 integer key maps onto, for the range in an out-of-range message.</summary>
    static readonly Dictionary<string, string> IntegerTargets = new()
    {
        ["num_train_epochs"] = "epochs", ["save_embedding_every"] = "save_every_epochs", ["save_preview_every"] = "preview_every_epochs",
        ["train_batch_size"] = "batch_size", ["gradient_accumulation_steps"] = "gradient_accumulation_steps", ["sample_batch_size"] = "class_batch_size",
        ["lr_warmup_steps"] = "lr_warmup_steps", ["lr_cycles"] = "lr_num_cycles", ["clip_skip"] = "clip_skip",
        ["prior_loss_target"] = "prior_loss_target_epochs", ["resolution"] = "max_resolution", ["max_token_length"] = "max_token_length",
    };

    static string IntegerRange(string theirs, bool negative) =>
        IntegerTargets.TryGetValue(theirs, out var ours) ? $"{TrainingConfig.RangeOf(ours, negative)} for {ours}" : "an integer from -2147483648 to 2147483647";

    static string TypeName(Type t) => t == typeof(int) || t == typeof(long) ? "an integer" : t == typeof(double) ? "a number"
        : t == typeof(bool) ? "true or false" : t == typeof(string) ? "a string" : t.Name;

    static string Describe(JsonNode? n)
    {
        string kind = n switch
        {
            null => "null",
            JsonObject => "an object",
            JsonArray => "a list",
            JsonValue v => v.GetValueKind() switch
            {
                JsonValueKind.Number => "a number",
                JsonValueKind.String => "a string",
                JsonValueKind.True or JsonValueKind.False => "true/false",
                _ => "a value",
            },
            _ => "a value",
        };
        string text = n?.ToJsonString() ?? "null";
        return text.Length > 40 ? kind : $"{kind} {text}";
    }

    static string Format(object? v) => v switch
    {
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        bool b => b ? "true" : "false",
        null => "null",
        _ => Convert.ToString(v, CultureInfo.InvariantCulture) ?? "",
    };
}
