using System.Reflection;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using DreamBooth.IO;

namespace DreamBooth.Training;

/// <summary>
/// One concept: the subject's photos with their prompt, and the class ("prior") images that keep the
/// model's idea of the class intact. JSON keys are the snake_case property names.
/// </summary>
public sealed record ConceptConfig
{
    /// <summary>Folder of (prepared) instance images. Relative paths resolve against the config file's folder.</summary>
    public string InstanceDir { get; init; } = "";
    /// <summary>Instance prompt; <c>[filewords]</c> is replaced by the image's .txt caption.</summary>
    public string InstancePrompt { get; init; } = "ohwx man";
    /// <summary>Folder of class images; empty = no prior preservation for this concept.</summary>
    public string ClassDir { get; init; } = "";
    public string ClassPrompt { get; init; } = "man";
    public string ClassNegativePrompt { get; init; } = "";
    /// <summary>Class images wanted per instance image (A1111 "Class Images Per Instance Image").</summary>
    public int ClassImagesPerInstance { get; init; } = 100;
    public double ClassGuidanceScale { get; init; } = 7.5;
    public int ClassSteps { get; init; } = 40;
    /// <summary>Generate the missing class images before training (needs the sampling pipeline).</summary>
    public bool GenerateClassImages { get; init; } = true;

    public bool HasPrior => !string.IsNullOrWhiteSpace(ClassDir);
}

/// <summary>
/// Every setting of the DreamBooth recipe, with the recipe's values as defaults. JSON uses snake_case
/// keys (the property names: <c>learning_rate</c>, <c>text_encoder_learning_rate</c>, <c>lr_scheduler</c>, ...).
/// Loading is strict: an unknown key, a wrong type or a value out of range is an error naming the key.
/// </summary>
public sealed record TrainingConfig
{
    public const int MinInstanceImages = 2;
    public static readonly string[] LrSchedulers = ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"];
    public static readonly string[] Optimizers = ["lion", "adamw", "adamw8bit"];
    public static readonly string[] MixedPrecisions = ["no", "fp16", "bf16"];
    public static readonly string[] SaveDtypes = ["fp16", "bf16", "fp32"];
    public static readonly string[] EmaDevices = ["device", "cpu"];
    public static readonly string[] PriorSteppings = ["alternate", "joint"];
    public static readonly string[] ImageExtensions = [".png", ".jpg", ".jpeg", ".webp", ".bmp"];

    // ---- model and output ----
    /// <summary>Base model: single-file checkpoint, diffusers folder or Hub repo id.</summary>
    public string PretrainedModel { get; init; } = "";
    /// <summary>Output folder for saves, state, logs, previews.</summary>
    public string OutputDir { get; init; } = "output";
    /// <summary>File name prefix of saves: <c>{name}_{epoch:0000}.safetensors</c>.</summary>
    public string Name { get; init; } = "dreambooth";
    public List<ConceptConfig> Concepts { get; init; } = [];

    // ---- intervals ----
    /// <summary>One epoch = every instance image once (with prior_stepping "alternate", each followed by a class-image step: 2 steps a photo).</summary>
    public int Epochs { get; init; } = 200;
    public int SaveEveryEpochs { get; init; } = 10;
    /// <summary>0 = no previews.</summary>
    public int PreviewEveryEpochs { get; init; } = 0;
    /// <summary>Previews are drawn with the trained weights (as the A1111 extension draws them); true = with the EMA weights (needs use_ema).</summary>
    public bool PreviewEma { get; init; } = false;
    public List<string> PreviewPrompts { get; init; } = [];
    public long PreviewSeed { get; init; } = 420420;
    /// <summary>Score each preview's face likeness to the instance photos (mean face-descriptor distance, &lt; 0.6 = the person): likeness.csv, TensorBoard, the monitor.</summary>
    public bool PreviewLikeness { get; init; } = false;
    /// <summary>0 = keep every save (the x/y plot compares them all); N = delete all but the newest N saves.</summary>
    public int KeepLastSaves { get; init; } = 0;
    /// <summary>
    /// Training states (<c>.state</c>: fp32 masters, optimizer moments, EMA) kept on disk: 1 = only the newest (the one
    /// <c>training_state.json</c> points at), N = the newest N, 0 = every one. A new state is written and the pointer
    /// switched before an older one is deleted, so a crash mid-save always leaves a complete state.
    /// </summary>
    public int KeepTrainingStates { get; init; } = 1;
    /// <summary>Float dtype of the saved checkpoints: fp16 (the SD1.5 norm, 2 GB), bf16, or fp32 (4 GB; the masters exactly).</summary>
    public string SaveDtype { get; init; } = "fp16";
    public bool SaveEmaWeights { get; init; } = false;
    public bool SaveDiffusersAtEnd { get; init; } = false;

    // ---- batch ----
    public int BatchSize { get; init; } = 1;
    public int GradientAccumulationSteps { get; init; } = 1;
    /// <summary>
    /// How instance and class images share steps when prior preservation is on. "alternate" (the A1111 extension's
    /// bucket sampler): a batch of instance images, then a batch of their class images, each its own step, so an epoch
    /// is 2 × the instance batches; class steps' loss is prior_loss_weight × MSE. "joint" (diffusers'
    /// train_dreambooth): instance and class images in one batch, loss = instance + prior_loss_weight × prior.
    /// </summary>
    public string PriorStepping { get; init; } = "alternate";
    /// <summary>Batch size used to generate class images.</summary>
    public int ClassBatchSize { get; init; } = 4;

    // ---- learning rate ----
    public double LearningRate { get; init; } = 1e-7;
    public double TextEncoderLearningRate { get; init; } = 1e-7;
    public string LrScheduler { get; init; } = "constant_with_warmup";
    public int LrWarmupSteps { get; init; } = 0;
    /// <summary>Cycles for cosine_with_restarts (integer count, diffusers' meaning).</summary>
    public int LrNumCycles { get; init; } = 1;
    /// <summary>Exponent of the polynomial schedule.</summary>
    public double LrPower { get; init; } = 1.0;
    /// <summary>Final LR of the polynomial schedule (must be below each group's LR).</summary>
    public double LrEnd { get; init; } = 0.0;

    // ---- optimizer ----
    public string Optimizer { get; init; } = "lion";
    public double WeightDecay { get; init; } = 0.1;
    public double TextEncoderWeightDecay { get; init; } = 0.1;
    /// <summary>0 = off.</summary>
    public double TextEncoderMaxGradNorm { get; init; } = 0.0;
    /// <summary>0 = off.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    // ---- precision, EMA, memory ----
    public string MixedPrecision { get; init; } = "bf16";
    public bool UseEma { get; init; } = true;
    public double EmaDecay { get; init; } = 0.9999;
    /// <summary>Decay warm-up <c>min(decay, (1+s)/(10+s))</c>.</summary>
    public bool EmaWarmup { get; init; } = false;
    /// <summary>device | cpu: where the EMA copy lives.</summary>
    public string EmaDevice { get; init; } = "device";
    public bool CacheLatents { get; init; } = true;
    /// <summary>Recompute UNet activations in backward instead of keeping them (on by default, as in the A1111 extension).</summary>
    public bool GradientCheckpointing { get; init; } = true;
    /// <summary>auto | cpu | cuda | cuda:N.</summary>
    public string Device { get; init; } = "auto";

    // ---- what trains ----
    public bool TrainUnet { get; init; } = true;
    /// <summary>The TE trains for the first round(ratio × total steps) steps, then is frozen.</summary>
    public double TextEncoderStepRatio { get; init; } = 0.75;
    public bool FreezeClipNormalization { get; init; } = false;
    public double OffsetNoise { get; init; } = 0.0;
    public int ClipSkip { get; init; } = 1;

    // ---- tokens ----
    public bool PadTokens { get; init; } = true;
    public bool StrictTokens { get; init; } = false;
    public bool ShuffleTags { get; init; } = true;
    public int MaxTokenLength { get; init; } = 75;

    // ---- prior loss ----
    public double PriorLossWeight { get; init; } = 0.75;
    public bool ScalePriorLoss { get; init; } = false;
    public double PriorLossWeightMin { get; init; } = 0.1;
    public int PriorLossTargetEpochs { get; init; } = 100;

    // ---- images ----
    public bool Hflip { get; init; } = false;
    public bool DynamicImageNormalization { get; init; } = false;
    public int MaxResolution { get; init; } = 1024;
    /// <summary>Bucket sides are multiples of this (64 for SD1.x; a tiny model with fewer downsamplings can use 8–32).</summary>
    public int ResolutionStep { get; init; } = 64;

    public long Seed { get; init; } = 1234;

    // ------------------------------------------------------------------ JSON

    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
        NumberHandling = JsonNumberHandling.Strict,
        IgnoreReadOnlyProperties = true,
    };

    static readonly JsonSerializerOptions ReadOptions = new(JsonOptions)
    {
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Skip,
        ReadCommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
    };

    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    public void Save(string path) => AtomicFile.WriteAllText(path, ToJson() + "\n");

    /// <summary>Parses JSON strictly; every unknown key is reported (all of them, in one exception).</summary>
    public static TrainingConfig FromJson(string json, string source = "config")
    {
        var root = ParseUntrusted(json, source, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        if (root is not JsonObject obj) throw new DreamBoothException($"{source}: expected a JSON object at the top level");

        var problems = new List<string>();
        CheckKeys(obj, typeof(TrainingConfig), "", problems);
        if (obj["concepts"] is JsonArray arr)
            for (int i = 0; i < arr.Count; i++)
                if (arr[i] is JsonObject c) CheckKeys(c, typeof(ConceptConfig), $"concepts[{i}].", problems);
        if (problems.Count > 0) throw new DreamBoothException($"{source}: " + string.Join("; ", problems));

        try
        {
            return JsonSerializer.Deserialize<TrainingConfig>(json, ReadOptions)
                   ?? throw new DreamBoothException($"{source}: empty config");
        }
        catch (JsonException e)
        {
            string key = (e.Path ?? "?").TrimStart('$', '.');
            if (OutOfRangeInteger(obj, key) is { } value)
                throw new DreamBoothException($"{source}: setting '{key}' = {value} is out of range (expected {RangeOf(key, value.StartsWith('-'))})");
            throw new DreamBoothException($"{source}: setting '{key}' has the wrong type (expected {ExpectedType(key)})");
        }
    }

    /// <summary>The JSON text of <paramref name="key"/> when it is a whole number too large for its (integer) setting, else null.</summary>
    static string? OutOfRangeInteger(JsonObject root, string key)
    {
        JsonNode? node = root;
        foreach (var part in key.Split('.'))
        {
            int bracket = part.IndexOf('[');
            node = node is JsonObject o ? o[bracket < 0 ? part : part[..bracket]] : null;
            if (bracket >= 0 && node is JsonArray a && int.TryParse(part[(bracket + 1)..^1], out int index) && index < a.Count) node = a[index];
        }
        if (node is not JsonValue v || v.GetValueKind() != JsonValueKind.Number) return null;
        string text = v.ToJsonString();
        return double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double d)
               && d == Math.Floor(d) && (d > int.MaxValue || d < int.MinValue) && ExpectedType(key) == "an integer" ? text : null;
    }

    /// <summary>
    /// The accepted range of an integer setting as <see cref="Validate"/> states it ("≥ 1 and ≤ 1000000"), found by
    /// validating a config that holds the type's extreme value in that setting; the type's own range when Validate has none.
    /// </summary>
    internal static string RangeOf(string key, bool negative)
    {
        string leaf = key.Contains('.') ? key[(key.LastIndexOf('.') + 1)..] : key;
        bool concept = key.StartsWith("concepts", StringComparison.Ordinal) && key.Contains('.');
        var type = concept ? typeof(ConceptConfig) : typeof(TrainingConfig);
        string typeRange = "an integer from -2147483648 to 2147483647";
        if (!Keys(type).TryGetValue(leaf, out var p) || p.PropertyType != typeof(int)) return typeRange;
        var probe = JsonNode.Parse(new TrainingConfig { Concepts = [new ConceptConfig { InstanceDir = "." }] }.ToJson())!.AsObject();
        var target = concept ? probe["concepts"]![0]!.AsObject() : probe;
        target[leaf] = negative ? int.MinValue : int.MaxValue;
        var config = JsonSerializer.Deserialize<TrainingConfig>(probe.ToJsonString(), ReadOptions)!;
        string prefix = (concept ? "concepts[0]." : "") + leaf + " = ";
        var problem = config.Validate(checkFolders: false).FirstOrDefault(x => x.StartsWith(prefix, StringComparison.Ordinal) && x.Contains("(expected "));
        if (problem is null) return typeRange;
        int at = problem.IndexOf("(expected ", StringComparison.Ordinal) + "(expected ".Length;
        return "an integer " + problem[at..problem.LastIndexOf(')')];
    }

    /// <summary>Loads a config file; relative folders in it resolve against the file's folder.</summary>
    public static TrainingConfig Load(string path)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"{path}: config file not found");
        var cfg = FromJson(File.ReadAllText(path), path);
        return cfg.ResolvePaths(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>Makes relative folders absolute against <paramref name="baseDir"/>.</summary>
    public TrainingConfig ResolvePaths(string baseDir)
    {
        string R(string p) => string.IsNullOrWhiteSpace(p) || Path.IsPathRooted(p) ? p : Path.GetFullPath(Path.Combine(baseDir, p));
        string model = PretrainedModel;
        // A Hub repo id (owner/name) stays as is; a local relative path that exists is resolved.
        if (!string.IsNullOrWhiteSpace(model) && !Path.IsPathRooted(model))
        {
            string candidate = Path.GetFullPath(Path.Combine(baseDir, model));
            if (File.Exists(candidate) || Directory.Exists(candidate)) model = candidate;
        }
        return this with
        {
            PretrainedModel = model,
            OutputDir = R(OutputDir),
            Concepts = Concepts.Select(c => c with { InstanceDir = R(c.InstanceDir), ClassDir = R(c.ClassDir) }).ToList(),
        };
    }

    static readonly Dictionary<Type, Dictionary<string, PropertyInfo>> KeyCache = new();

    internal static Dictionary<string, PropertyInfo> Keys(Type t)
    {
        lock (KeyCache)
        {
            if (!KeyCache.TryGetValue(t, out var d))
            {
                d = t.GetProperties(BindingFlags.Public | BindingFlags.Instance)
                     .Where(p => p.CanWrite)
                     .ToDictionary(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name), p => p);
                KeyCache[t] = d;
            }
            return d;
        }
    }

    static void CheckKeys(JsonObject obj, Type t, string prefix, List<string> problems)
    {
        var keys = Keys(t);
        foreach (var kv in obj)
            if (!keys.ContainsKey(kv.Key))
            {
                if (kv.Key.Length > 64 || problems.Count >= 20)
                {
                    // a hostile file can hold megabyte keys or thousands of them: bounded work, bounded message
                    if (problems.Count < 21) problems.Add($"unknown setting '{prefix}{kv.Key[..Math.Min(kv.Key.Length, 64)]}...'");
                    continue;
                }
                string? near = keys.Keys.OrderBy(k => Levenshtein(k, kv.Key)).FirstOrDefault();
                problems.Add($"unknown setting '{prefix}{kv.Key}'" + (near is not null && Levenshtein(near, kv.Key) <= 3 ? $" (did you mean '{prefix}{near}'?)" : ""));
            }
    }

    /// <summary>
    /// Parses a user's JSON file into nodes and touches every object and string once, so that what
    /// <see cref="JsonNode"/> checks lazily (a key that appears twice, an unpaired surrogate escape) is
    /// reported here as a <see cref="DreamBoothException"/> instead of surfacing mid-import as another exception.
    /// </summary>
    internal static JsonNode? ParseUntrusted(string json, string source, JsonDocumentOptions options = default)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(json, documentOptions: options); }
        catch (JsonException e) { throw new DreamBoothException($"{source}: not valid JSON ({e.Message})"); }
        var pending = new Stack<JsonNode?>();
        pending.Push(root);
        try
        {
            while (pending.Count > 0)
            {
                switch (pending.Pop())
                {
                    case JsonObject o: foreach (var kv in o) pending.Push(kv.Value); break;
                    case JsonArray a: foreach (var v in a) pending.Push(v); break;
                    case JsonValue v when v.GetValueKind() == JsonValueKind.String: _ = v.GetValue<string>(); break;
                }
            }
        }
        catch (ArgumentException e) { throw new DreamBoothException($"{source}: a key appears twice in one object ({e.Message})"); }
        catch (InvalidOperationException e) { throw new DreamBoothException($"{source}: invalid string ({e.Message})"); }
        return root;
    }

    static string ExpectedType(string key)
    {
        string leaf = key.Contains('.') ? key[(key.LastIndexOf('.') + 1)..] : key;
        var t = key.StartsWith("concepts", StringComparison.Ordinal) && key.Contains('.') ? typeof(ConceptConfig) : typeof(TrainingConfig);
        if (!Keys(t).TryGetValue(leaf, out var p)) return "a value of the right type";
        var pt = p.PropertyType;
        return pt == typeof(bool) ? "true or false" : pt == typeof(int) || pt == typeof(long) ? "an integer"
             : pt == typeof(double) ? "a number" : pt == typeof(string) ? "a string" : "a list";
    }

    static readonly HashSet<string> ReservedStems = new(StringComparer.OrdinalIgnoreCase)
    {
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9",
        "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    };

    /// <summary>
    /// A name that can prefix files in the output folder on every OS without escaping it: no separators, control
    /// characters or characters Windows refuses, no leading '.'/'-', no trailing '.'/space, not a device name.
    /// </summary>
    internal static bool IsSafeFileStem(string name) =>
        !string.IsNullOrWhiteSpace(name) && name.Length <= 100
        && name.All(c => char.IsLetterOrDigit(c) || c is ' ' or '-' or '_' or '.' or '(' or ')' or '+')
        && name[0] is not ('.' or '-') && name[^1] is not ('.' or ' ')
        && !ReservedStems.Contains(name.Split('.')[0].Trim());

    static int Levenshtein(string a, string b)
    {
        var d = new int[a.Length + 1, b.Length + 1];
        for (int i = 0; i <= a.Length; i++) d[i, 0] = i;
        for (int j = 0; j <= b.Length; j++) d[0, j] = j;
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
                d[i, j] = Math.Min(Math.Min(d[i - 1, j] + 1, d[i, j - 1] + 1), d[i - 1, j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1));
        return d[a.Length, b.Length];
    }

    // ------------------------------------------------------------------ validation

    /// <summary>
    /// Every problem with the settings, one line each (empty = valid). With <paramref name="checkFolders"/>
    /// the concept folders must exist and hold enough images.
    /// </summary>
    public IReadOnlyList<string> Validate(bool checkFolders = true)
    {
        var p = new List<string>();
        void Range(string key, double v, double lo, double hi, bool loOpen = false)
        {
            if (double.IsNaN(v) || (loOpen ? v <= lo : v < lo) || v > hi)
                p.Add($"{key} = {v} is out of range (expected {(loOpen ? "> " : "≥ ")}{lo}{(double.IsPositiveInfinity(hi) ? "" : $" and ≤ {hi}")})");
        }
        void OneOf(string key, string v, string[] allowed)
        {
            if (!allowed.Contains(v)) p.Add($"{key} = \"{v}\" is not one of: {string.Join(", ", allowed.Select(a => a == "" ? "\"\"" : a))}");
        }
        double inf = double.PositiveInfinity;

        if (string.IsNullOrWhiteSpace(PretrainedModel)) p.Add("pretrained_model is empty (expected a checkpoint file, diffusers folder or Hub repo id)");
        if (string.IsNullOrWhiteSpace(OutputDir)) p.Add("output_dir is empty");
        else if (checkFolders && OutputPath.FolderProblem(OutputDir) is { } outputProblem) p.Add($"output_dir '{OutputDir}' {outputProblem}");
        if (!IsSafeFileStem(Name))
            p.Add($"name = {JsonSerializer.Serialize(Name)} is not a valid file name prefix (letters, digits, spaces and -_.()+ only, at most 100 characters, not starting with '.' or '-', not a reserved device name)");

        Range("epochs", Epochs, 1, 1_000_000);
        Range("save_every_epochs", SaveEveryEpochs, 0, inf);
        Range("preview_every_epochs", PreviewEveryEpochs, 0, inf);
        if (PreviewEveryEpochs > 0 && PreviewPrompts.Count == 0) p.Add("preview_every_epochs > 0 but preview_prompts is empty");
        if (PreviewLikeness && PreviewEveryEpochs == 0) p.Add("preview_likeness = true needs preview_every_epochs > 0 (it scores the previews)");
        Range("keep_last_saves", KeepLastSaves, 0, inf);
        Range("keep_training_states", KeepTrainingStates, 0, inf);
        OneOf("save_dtype", SaveDtype, SaveDtypes);
        if (PreviewEma && !UseEma) p.Add("preview_ema is on but use_ema is off");
        if (SaveEmaWeights && !UseEma) p.Add("save_ema_weights is on but use_ema is off");

        Range("batch_size", BatchSize, 1, 1024);
        Range("gradient_accumulation_steps", GradientAccumulationSteps, 1, 1024);
        Range("class_batch_size", ClassBatchSize, 1, 1024);
        OneOf("prior_stepping", PriorStepping, PriorSteppings);

        Range("learning_rate", LearningRate, 0, 1, loOpen: true);
        Range("text_encoder_learning_rate", TextEncoderLearningRate, 0, 1);
        OneOf("lr_scheduler", LrScheduler, LrSchedulers);
        Range("lr_warmup_steps", LrWarmupSteps, 0, inf);
        Range("lr_num_cycles", LrNumCycles, 1, 10_000);
        Range("lr_power", LrPower, 0, 100, loOpen: true);
        Range("lr_end", LrEnd, 0, 1);
        if (LrScheduler == "polynomial" && LrEnd >= LearningRate) p.Add($"lr_end = {LrEnd} must be below learning_rate = {LearningRate} for the polynomial schedule");
        if (LrScheduler == "polynomial" && TextEncoderStepRatio > 0 && TextEncoderLearningRate > 0 && LrEnd >= TextEncoderLearningRate)
            p.Add($"lr_end = {LrEnd} must be below text_encoder_learning_rate = {TextEncoderLearningRate} for the polynomial schedule");

        OneOf("optimizer", Optimizer, Optimizers);
        Range("weight_decay", WeightDecay, 0, 10);
        Range("text_encoder_weight_decay", TextEncoderWeightDecay, 0, 10);
        Range("text_encoder_max_grad_norm", TextEncoderMaxGradNorm, 0, inf);
        Range("max_grad_norm", MaxGradNorm, 0, inf);

        OneOf("mixed_precision", MixedPrecision, MixedPrecisions);
        Range("ema_decay", EmaDecay, 0, 1);
        if (EmaDecay >= 1) p.Add($"ema_decay = {EmaDecay} must be below 1");
        OneOf("ema_device", EmaDevice, EmaDevices);
        if (!(Device is "auto" or "cpu" or "cuda" || (Device.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(Device[5..], out _))))
            p.Add($"device = \"{Device}\" is not one of: auto, cpu, cuda, cuda:N");

        Range("text_encoder_step_ratio", TextEncoderStepRatio, 0, 1);
        if (!TrainUnet && TextEncoderStepRatio <= 0) p.Add("train_unet is off and text_encoder_step_ratio is 0: nothing would train");
        Range("offset_noise", OffsetNoise, -1, 1);
        Range("clip_skip", ClipSkip, 1, 12);
        if (MaxTokenLength is not (75 or 150 or 225)) p.Add($"max_token_length = {MaxTokenLength} is not one of: 75, 150, 225");

        Range("prior_loss_weight", PriorLossWeight, 0, 100);
        Range("prior_loss_weight_min", PriorLossWeightMin, 0, 100);
        Range("prior_loss_target_epochs", PriorLossTargetEpochs, 1, inf);
        if (ResolutionStep is < 8 or > 64 || ResolutionStep % 8 != 0) p.Add($"resolution_step = {ResolutionStep} is not one of 8, 16, ..., 64");
        else if (MaxResolution < ResolutionStep || MaxResolution % ResolutionStep != 0) p.Add($"max_resolution = {MaxResolution} is not a positive multiple of {ResolutionStep} (resolution_step)");
        else Range("max_resolution", MaxResolution, ResolutionStep, 4096);

        if (Concepts.Count == 0) p.Add("concepts is empty (expected at least one concept with an instance_dir)");
        for (int i = 0; i < Concepts.Count; i++)
        {
            var c = Concepts[i];
            string k = $"concepts[{i}]";
            if (string.IsNullOrWhiteSpace(c.InstancePrompt)) p.Add($"{k}.instance_prompt is empty");
            if (c.HasPrior && string.IsNullOrWhiteSpace(c.ClassPrompt)) p.Add($"{k}.class_prompt is empty");
            Range($"{k}.class_images_per_instance", c.ClassImagesPerInstance, 0, 10_000);
            Range($"{k}.class_guidance_scale", c.ClassGuidanceScale, 0, 100);
            Range($"{k}.class_steps", c.ClassSteps, 1, 1000);
            if (string.IsNullOrWhiteSpace(c.InstanceDir)) { p.Add($"{k}.instance_dir is empty"); continue; }
            if (!checkFolders) continue;
            if (!Directory.Exists(c.InstanceDir)) p.Add($"{k}.instance_dir '{c.InstanceDir}' does not exist");
            else
            {
                int n = CountImages(c.InstanceDir);
                if (n < MinInstanceImages) p.Add($"{k}.instance_dir '{c.InstanceDir}' has {n} image(s) (expected at least {MinInstanceImages})");
            }
            if (c.HasPrior && OutputPath.FolderProblem(c.ClassDir) is { } classProblem)
                p.Add($"{k}.class_dir '{c.ClassDir}' {classProblem}");
            else if (c.HasPrior && !Directory.Exists(c.ClassDir) && !(c.GenerateClassImages && c.ClassImagesPerInstance > 0))
                p.Add($"{k}.class_dir '{c.ClassDir}' does not exist and generate_class_images is off");
        }
        return p;
    }

    /// <summary>Throws one <see cref="DreamBoothException"/> listing every problem, if any.</summary>
    public void ThrowIfInvalid(bool checkFolders = true, string source = "config")
    {
        var problems = Validate(checkFolders);
        if (problems.Count > 0) throw new DreamBoothException($"{source}: {problems.Count} problem(s): " + string.Join("; ", problems));
    }

    public static IEnumerable<string> ImageFiles(string dir) =>
        Directory.Exists(dir)
            ? Directory.EnumerateFiles(dir).Where(f => ImageExtensions.Contains(Path.GetExtension(f).ToLowerInvariant())).Order(StringComparer.Ordinal)
            : [];

    static int CountImages(string dir) => ImageFiles(dir).Count();
}
