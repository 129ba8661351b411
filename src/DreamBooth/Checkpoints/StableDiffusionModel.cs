using DreamBooth.IO;
using DreamBooth.Models;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Checkpoints;

/// <summary>How <see cref="StableDiffusionModel.Load"/> finds and reads a model.</summary>
public sealed record ModelLoadOptions
{
    /// <summary>Tokenizer for single-file checkpoints: a tokenizer folder (vocab.json + merges.txt) or bpe_simple_vocab_16e6.txt.gz. Without it the Hub's <see cref="HubTokenizerRepo"/> is used.</summary>
    public string? TokenizerPath { get; init; }
    public string HubTokenizerRepo { get; init; } = "openai/clip-vit-large-patch14";
    /// <summary>An already loaded tokenizer for single-file checkpoints (takes precedence over <see cref="TokenizerPath"/>).</summary>
    public ClipTokenizer? Tokenizer { get; init; }
    /// <summary>Single-file checkpoints: take the UNet weights from the EMA copy (model_ema.*).</summary>
    public bool UseEma { get; init; }
    /// <summary>Hub: a single file inside the repo (e.g. "Realistic_Vision_V2.0.safetensors"); without it a diffusers layout is expected.</summary>
    public string? FileName { get; init; }
    public string Revision { get; init; } = "main";
    /// <summary>diffusers weight variant (e.g. "fp16" → diffusion_pytorch_model.fp16.safetensors).</summary>
    public string? Variant { get; init; }
    public IProgress<HubDownloadProgress>? Progress { get; init; }
    /// <summary>The Hub client to use (endpoint, token, cache); default: one from the environment.</summary>
    public HubClient? Hub { get; init; }
    /// <summary>
    /// The dtype of the loaded weights, whatever the file stores: fp32 (null, the default: what training's masters and
    /// CPU inference use), fp16 or bf16. Each tensor is converted as it is read, so a load never holds the model twice.
    /// </summary>
    public ScalarType? Dtype { get; init; }
    /// <summary>Single-file checkpoints carry no configs: these default to SD 1.5.</summary>
    public CLIPTextConfig? TextEncoderConfig { get; init; }
    public UNet2DConditionConfig? UNetConfig { get; init; }
    public AutoencoderKLConfig? VaeConfig { get; init; }
}

/// <summary>
/// The model bundle every consumer uses: text encoder, UNet, VAE, tokenizer and the scheduler config, loaded from a
/// single-file checkpoint (.safetensors/.ckpt, LDM layout), a diffusers folder, or a Hugging Face Hub repo; saved as an
/// A1111 single file or a diffusers folder. Loaded modules are on CPU in <see cref="ModelLoadOptions.Dtype"/> (fp32
/// by default); move them with <see cref="To"/>. A load builds the modules on the meta device (no memory, no random
/// initialisation) and reads every tensor straight into its final storage: its peak is one model plus a staging buffer.
/// </summary>
public sealed class StableDiffusionModel : IDisposable
{
    /// <summary>runwayml/stable-diffusion-v1-5 <c>scheduler/scheduler_config.json</c>.</summary>
    public const string StableDiffusion15SchedulerJson = """
        {
          "_class_name": "PNDMScheduler",
          "_diffusers_version": "0.6.0",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "num_train_timesteps": 1000,
          "prediction_type": "epsilon",
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "trained_betas": null,
          "clip_sample": false
        }
        """;

    readonly Lazy<string?> _shortHash;

    public CLIPTextModel TextEncoder { get; }
    public UNet2DConditionModel UNet { get; }
    public AutoencoderKL Vae { get; }
    public ClipTokenizer Tokenizer { get; }
    public string? SchedulerConfigJson { get; }
    public string Name { get; }
    public string SourcePath { get; }
    /// <summary>A1111's short hash of the source file (first 10 hex of its SHA-256), computed on first use; null for folders.</summary>
    public string? ShortHash => _shortHash.Value;

    StableDiffusionModel(CLIPTextModel te, UNet2DConditionModel unet, AutoencoderKL vae, ClipTokenizer tokenizer, string? scheduler, string name, string source, bool hashable)
    {
        TextEncoder = te; UNet = unet; Vae = vae; Tokenizer = tokenizer; SchedulerConfigJson = scheduler; Name = name; SourcePath = source;
        _shortHash = new Lazy<string?>(() => hashable && File.Exists(source) ? CheckpointInspector.Sha256Of(source)[..10] : null);
    }

    static readonly object RandomInitGate = new();

    /// <summary>
    /// Random-weight model of the given configs (deterministic for a seed): tests and benchmarks. Module
    /// initialisation draws from torch's global generator, so concurrent calls are serialised.
    /// </summary>
    public static StableDiffusionModel CreateRandom(CLIPTextConfig text, UNet2DConditionConfig unet, AutoencoderKLConfig vae, ClipTokenizer tokenizer, long seed)
    {
        CLIPTextModel te; UNet2DConditionModel u; AutoencoderKL v;
        lock (RandomInitGate)
        {
            torch.manual_seed(seed);
            (te, u, v) = Build(text, unet, vae, onMeta: false);
        }
        return new StableDiffusionModel(te, u, v, tokenizer, StableDiffusion15SchedulerJson, $"random-{seed}", "(random)", hashable: false);
    }

    /// <summary>The three modules; <paramref name="onMeta"/>: parameters on the meta device, for a loader to fill.</summary>
    static (CLIPTextModel, UNet2DConditionModel, AutoencoderKL) Build(CLIPTextConfig text, UNet2DConditionConfig unet, AutoencoderKLConfig vae, bool onMeta)
    {
        CLIPTextModel? te = null; UNet2DConditionModel? u = null;
        using var meta = onMeta ? Layers.OnMeta() : null;
        try
        {
            te = new CLIPTextModel(text);
            u = new UNet2DConditionModel(unet);
            var v = new AutoencoderKL(vae);
            te.eval(); u.eval(); v.eval();
            return (te, u, v);
        }
        catch
        {
            te?.Dispose(); u?.Dispose();
            throw;
        }
    }

    /// <summary>Loads from a single file (.safetensors/.ckpt), a diffusers folder, or a Hub repo id (owner/name).</summary>
    public static StableDiffusionModel Load(string pathOrRepoId, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        if (File.Exists(pathOrRepoId)) return LoadSingleFile(Path.GetFullPath(pathOrRepoId), options);
        if (Directory.Exists(pathOrRepoId))
        {
            var dir = Path.GetFullPath(pathOrRepoId);
            if (DiffusersFolder.IsDiffusersFolder(dir)) return LoadDiffusers(dir, options, null);
            if (Directory.Exists(Path.Combine(dir, ConfigFolder)))
            {
                var files = Directory.EnumerateFiles(dir)
                    .Where(f => !Path.GetFileName(f).StartsWith('.'))
                    .Where(f => f.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase))
                    .Order(StringComparer.Ordinal).ToList();
                if (files.Count == 1) return LoadSingleFile(files[0], options);
                throw new DreamBoothException(files.Count == 0
                    ? $"{dir}: has {ConfigFolder}/ but no .safetensors/.ckpt file beside it"
                    : $"{dir}: {files.Count} checkpoint files beside {ConfigFolder}/ ({string.Join(", ", files.Select(Path.GetFileName))}); name the file to load");
            }
            throw new DreamBoothException($"{dir}: folder is not a diffusers model (no {DiffusersFolder.ModelIndex}) nor a single file with {ConfigFolder}/ beside it");
        }
        if (HubClient.IsRepoId(pathOrRepoId)) return LoadFromHub(pathOrRepoId, options);
        throw new DreamBoothException($"model '{pathOrRepoId}': no such file or folder, and not a Hugging Face repo id (owner/name)");
    }

    static StableDiffusionModel LoadFromHub(string repoId, ModelLoadOptions options)
    {
        using var owned = options.Hub is null ? new HubClient() : null;
        var hub = options.Hub ?? owned!;
        if (options.FileName is { } file)
        {
            var local = hub.DownloadFileAsync(repoId, file, options.Revision, options.Progress).GetAwaiter().GetResult();
            return LoadSingleFile(local, options, hub);
        }
        var variant = string.IsNullOrEmpty(options.Variant) ? "" : "." + options.Variant;
        bool Wanted(string f)
        {
            var parts = f.Split('/');
            if (parts.Length == 1) return f == DiffusersFolder.ModelIndex;
            if (parts.Length != 2) return false;
            if (parts[0] is "tokenizer" or "scheduler") return true;
            if (!DiffusersFolder.WeightComponents.Contains(parts[0])) return false;
            var name = parts[1];
            if (name == "config.json") return true;
            return name.StartsWith("diffusion_pytorch_model" + variant + ".", StringComparison.Ordinal)
                   && (name.EndsWith(".safetensors", StringComparison.Ordinal) || name.EndsWith(".safetensors.index.json", StringComparison.Ordinal))
                || name.StartsWith("model" + variant + ".", StringComparison.Ordinal) && name.Contains(".safetensors", StringComparison.Ordinal)
                || name.StartsWith("model" + variant + "-", StringComparison.Ordinal) && name.EndsWith(".safetensors", StringComparison.Ordinal)
                || name.StartsWith("diffusion_pytorch_model" + variant + "-", StringComparison.Ordinal) && name.EndsWith(".safetensors", StringComparison.Ordinal);
        }
        var dir = hub.SnapshotAsync(repoId, Wanted, options.Revision, options.Progress).GetAwaiter().GetResult();
        if (!DiffusersFolder.IsDiffusersFolder(dir))
            throw new DreamBoothException($"{repoId}: not a diffusers repo (no {DiffusersFolder.ModelIndex}); pass the single file's name (ModelLoadOptions.FileName / --model-file)");
        return LoadDiffusers(dir, options, repoId);
    }

    /// <summary>
    /// Single files carry no configs. A <c>config/</c> folder beside the file (text_encoder.json, unet.json, vae.json,
    /// scheduler_config.json — what <see cref="WriteSidecar"/> and the trainer write for non-SD1.5 architectures) and a
    /// <c>tokenizer/</c> folder supply what the options leave unset.
    /// </summary>
    public const string ConfigFolder = "config", TokenizerFolder = "tokenizer";

    /// <summary>
    /// <paramref name="options"/> (default: none) with what they leave unset filled from the sidecar in
    /// <paramref name="dir"/>: <c>config/{text_encoder,unet,vae}.json</c> and <c>tokenizer/</c>. Parts the folder
    /// lacks stay unset.
    /// </summary>
    public static ModelLoadOptions SidecarOptions(string dir, ModelLoadOptions? options = null)
    {
        options ??= new ModelLoadOptions();
        string? Json(string name) => SidecarFile(dir, name);
        var tokenizerDir = Path.Combine(dir, TokenizerFolder);
        return options with
        {
            TextEncoderConfig = options.TextEncoderConfig ?? (Json("text_encoder.json") is { } te ? CLIPTextConfig.Load(te) : null),
            UNetConfig = options.UNetConfig ?? (Json("unet.json") is { } u ? UNet2DConditionConfig.Load(u) : null),
            VaeConfig = options.VaeConfig ?? (Json("vae.json") is { } v ? AutoencoderKLConfig.Load(v) : null),
            TokenizerPath = options.Tokenizer is null && options.TokenizerPath is null && File.Exists(Path.Combine(tokenizerDir, "vocab.json"))
                ? tokenizerDir : options.TokenizerPath,
        };
    }

    static string? SidecarFile(string dir, string name)
    {
        var path = Path.Combine(dir, ConfigFolder, name);
        return File.Exists(path) ? path : null;
    }

    /// <summary>
    /// Writes <c>config/</c> (the three model configs and the scheduler config) and <c>tokenizer/</c> into
    /// <paramref name="dir"/>, so single files saved there load without options.
    /// </summary>
    public void WriteSidecar(string dir)
    {
        var config = Path.Combine(dir, ConfigFolder);
        Directory.CreateDirectory(config);
        AtomicFile.WriteAllText(Path.Combine(config, "text_encoder.json"), TextEncoder.Config.ToJson() + "\n");
        AtomicFile.WriteAllText(Path.Combine(config, "unet.json"), UNet.Config.ToJson() + "\n");
        AtomicFile.WriteAllText(Path.Combine(config, "vae.json"), Vae.Config.ToJson() + "\n");
        AtomicFile.WriteAllText(Path.Combine(config, "scheduler_config.json"), (SchedulerConfigJson ?? StableDiffusion15SchedulerJson).TrimEnd() + "\n");
        Tokenizer.Save(Path.Combine(dir, TokenizerFolder));
    }

    /// <summary>True when the three configs are SD 1.5's (single files of it need no sidecar).</summary>
    public bool IsStableDiffusion15Architecture =>
        TextEncoder.Config.ToJson() == CLIPTextConfig.StableDiffusion15.ToJson()
        && UNet.Config.ToJson() == UNet2DConditionConfig.StableDiffusion15.ToJson()
        && Vae.Config.ToJson() == AutoencoderKLConfig.StableDiffusion15.ToJson();

    static StableDiffusionModel LoadSingleFile(string path, ModelLoadOptions options, HubClient? hub = null)
    {
        var sidecarDir = Path.GetDirectoryName(path)!;
        options = SidecarOptions(sidecarDir, options);
        var schedulerJson = SidecarFile(sidecarDir, "scheduler_config.json") is { } sched ? File.ReadAllText(sched) : null;
        using var file = TensorFile.Open(path);
        var unetConfig = options.UNetConfig ?? UNet2DConditionConfig.StableDiffusion15;
        SingleFileCheckpoint.CheckArchitecture(file, unetConfig);
        var tokenizer = SingleFileTokenizer(path, options, hub);
        var dtype = LoadDtype(options);
        var (te, unet, vae) = Build(options.TextEncoderConfig ?? CLIPTextConfig.StableDiffusion15, unetConfig, options.VaeConfig ?? AutoencoderKLConfig.StableDiffusion15, onMeta: true);
        try
        {
            SingleFileCheckpoint.LoadInto(file, te, unet, vae, options.UseEma, dtype);
        }
        catch
        {
            te.Dispose(); unet.Dispose(); vae.Dispose();
            throw;
        }
        return new StableDiffusionModel(te, unet, vae, tokenizer, schedulerJson ?? StableDiffusion15SchedulerJson, Path.GetFileNameWithoutExtension(path), path, hashable: true);
    }

    static ScalarType LoadDtype(ModelLoadOptions options) => options.Dtype switch
    {
        null => ScalarType.Float32,
        ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16 => options.Dtype.Value,
        var other => throw new DreamBoothException($"model load dtype {other}: expected fp32, fp16 or bf16"),
    };

    static ClipTokenizer SingleFileTokenizer(string checkpoint, ModelLoadOptions options, HubClient? hub)
    {
        if (options.Tokenizer is { } given) return given;
        if (options.TokenizerPath is { } tp) return ClipTokenizer.FromPath(tp);
        using var owned = hub is null && options.Hub is null ? new HubClient() : null;
        var client = hub ?? options.Hub ?? owned!;
        try
        {
            var vocab = client.DownloadFileAsync(options.HubTokenizerRepo, "vocab.json", "main", options.Progress).GetAwaiter().GetResult();
            var merges = client.DownloadFileAsync(options.HubTokenizerRepo, "merges.txt", "main", options.Progress).GetAwaiter().GetResult();
            return ClipTokenizer.FromVocabAndMerges(vocab, merges);
        }
        catch (DreamBoothException e)
        {
            throw new DreamBoothException($"{checkpoint}: a single-file checkpoint has no tokenizer, and {options.HubTokenizerRepo} could not be fetched ({e.Message}); pass --tokenizer PATH (a tokenizer/ folder or bpe_simple_vocab_16e6.txt.gz)", e);
        }
    }

    static StableDiffusionModel LoadDiffusers(string dir, ModelLoadOptions options, string? repoId)
    {
        string Sub(string c) => Path.Combine(dir, c);
        string Config(string c)
        {
            var p = Path.Combine(Sub(c), "config.json");
            return File.Exists(p) ? p : throw new DreamBoothException($"{dir}: missing {c}/config.json");
        }
        var textConfig = CLIPTextConfig.Load(Config("text_encoder"));
        var unetConfig = UNet2DConditionConfig.Load(Config("unet"));
        var vaeConfig = AutoencoderKLConfig.Load(Config("vae"));
        var tokenizer = Directory.Exists(Sub("tokenizer")) ? ClipTokenizer.FromDirectory(Sub("tokenizer"))
            : options.TokenizerPath is { } tp ? ClipTokenizer.FromPath(tp)
            : throw new DreamBoothException($"{dir}: missing tokenizer/ folder (vocab.json + merges.txt)");
        var schedulerPath = Path.Combine(Sub("scheduler"), "scheduler_config.json");
        var scheduler = File.Exists(schedulerPath) ? File.ReadAllText(schedulerPath) : null;
        var dtype = LoadDtype(options);
        var (te, unet, vae) = Build(textConfig, unetConfig, vaeConfig, onMeta: true);
        try
        {
            void LoadComponent(string name, nn.Module module, IReadOnlySet<string>? ignore = null)
            {
                using var weights = DiffusersFolder.OpenWeights(Sub(name), options.Variant)
                    ?? throw new DreamBoothException($"{Sub(name)}: no weights (expected diffusion_pytorch_model.safetensors / model.safetensors, sharded or .bin)");
                StateDictLoader.LoadStrict(module, weights, name, ignore, dtype);
            }
            LoadComponent("unet", unet);
            LoadComponent("vae", vae);
            // older transformers saved position_ids as a persistent buffer; it is a constant arange, not a weight
            LoadComponent("text_encoder", te, new HashSet<string> { "text_model.embeddings.position_ids" });
        }
        catch
        {
            te.Dispose(); unet.Dispose(); vae.Dispose();
            throw;
        }
        return new StableDiffusionModel(te, unet, vae, tokenizer, scheduler, repoId ?? Path.GetFileName(dir.TrimEnd(Path.DirectorySeparatorChar)), dir, hashable: false);
    }

    /// <summary>Writes an A1111/LDM single-file .safetensors (atomic) with floats in <paramref name="dtype"/>.</summary>
    public void SaveSingleFile(string path, ScalarType dtype, IReadOnlyDictionary<string, string>? metadata = null)
    {
        if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new DreamBoothException($"{path}: single-file saves are .safetensors (pickle .ckpt files are not written)");
        using var scope = NewDisposeScope();
        var tensors = SingleFileCheckpoint.ToLdmStateDict(TextEncoder, UNet, Vae, dtype);
        var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>()) { ["format"] = "pt" };
        SafeTensors.Save(path, tensors, meta);
    }

    /// <summary>Writes a diffusers folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/.</summary>
    public void SaveDiffusers(string dir)
    {
        Directory.CreateDirectory(dir);
        var meta = new Dictionary<string, string> { ["format"] = "pt" };
        void Component(string name, string configJson, string weightsFile, nn.Module module)
        {
            var sub = Path.Combine(dir, name);
            Directory.CreateDirectory(sub);
            AtomicFile.WriteAllText(Path.Combine(sub, "config.json"), configJson);
            using var scope = NewDisposeScope();
            var sd = module.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.device_type == DeviceType.CPU ? kv.Value.detach() : kv.Value.detach().cpu());
            SafeTensors.Save(Path.Combine(sub, weightsFile), sd, meta);
        }
        Component("unet", UNet.Config.ToJson(), "diffusion_pytorch_model.safetensors", UNet);
        Component("vae", Vae.Config.ToJson(), "diffusion_pytorch_model.safetensors", Vae);
        Component("text_encoder", TextEncoder.Config.ToJson(), "model.safetensors", TextEncoder);
        Tokenizer.Save(Path.Combine(dir, "tokenizer"));
        Directory.CreateDirectory(Path.Combine(dir, "scheduler"));
        AtomicFile.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), SchedulerConfigJson ?? StableDiffusion15SchedulerJson);
        AtomicFile.WriteAllText(Path.Combine(dir, DiffusersFolder.ModelIndex), DiffusersFolder.ModelIndexJson(SchedulerClass()));
    }

    string SchedulerClass()
    {
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(SchedulerConfigJson ?? StableDiffusion15SchedulerJson);
            return doc.RootElement.TryGetProperty("_class_name", out var c) && c.GetString() is { Length: > 0 } s ? s : "PNDMScheduler";
        }
        catch (System.Text.Json.JsonException) { return "PNDMScheduler"; }
    }

    /// <summary>Moves all three modules to a device (and optionally a dtype).</summary>
    public StableDiffusionModel To(Device device, ScalarType? dtype = null)
    {
        if (dtype is { } d) { TextEncoder.to(device, d); UNet.to(device, d); Vae.to(device, d); }
        else { TextEncoder.to(device); UNet.to(device); Vae.to(device); }
        return this;
    }

    public void Dispose()
    {
        TextEncoder.Dispose();
        UNet.Dispose();
        Vae.Dispose();
    }
}
