using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Pipelines;
using DreamBooth.Schedulers;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Evaluation;

/// <summary>
/// Renders x/y plot cells with <see cref="Txt2ImgPipeline"/>: each checkpoint is loaded when the engine moves
/// to it (the previous one is released first, so one model is in memory at a time), and each cell is one
/// image generated with the cell's prompt, seed, CFG, steps and sampler.
/// </summary>
public sealed class Txt2ImgCellRenderer : ICellRenderer, IDisposable
{
    readonly Func<XYCheckpoint, StableDiffusionModel> _load;
    readonly StableDiffusionModel? _fixedModel;
    readonly PipelineOptions _options;
    StableDiffusionModel? _owned;
    StableDiffusionModel? _model;
    Txt2ImgPipeline? _pipeline;

    /// <summary>Per-step progress of the image being rendered.</summary>
    public IProgress<SamplingProgress>? StepProgress { get; init; }

    /// <summary>Each distinct prompt warning (a prompt past 225 tokens loses its tail), once, as the cell that has it is rendered.</summary>
    public IProgress<string>? Warnings { get; init; }

    readonly HashSet<string> _warned = new(StringComparer.Ordinal);

    /// <summary>Loads checkpoints with <see cref="StableDiffusionModel.Load"/> and <paramref name="loadOptions"/>.</summary>
    public Txt2ImgCellRenderer(ModelLoadOptions? loadOptions = null, PipelineOptions? options = null)
        : this(c => StableDiffusionModel.Load(c.Path, loadOptions), options) { }

    /// <summary>Loads checkpoints with <paramref name="load"/> (the renderer disposes what it returns).</summary>
    public Txt2ImgCellRenderer(Func<XYCheckpoint, StableDiffusionModel> load, PipelineOptions? options = null)
    {
        _load = load ?? throw new ArgumentNullException(nameof(load));
        _options = options ?? PipelineOptions.Default;
    }

    /// <summary>
    /// Renders with an already loaded model when the spec names no checkpoint (the caller keeps ownership;
    /// a checkpoint axis still loads its checkpoints from their paths).
    /// </summary>
    public Txt2ImgCellRenderer(StableDiffusionModel model, ModelLoadOptions? loadOptions = null, PipelineOptions? options = null)
        : this(loadOptions, options) => _fixedModel = model ?? throw new ArgumentNullException(nameof(model));

    /// <summary>The model cells are rendered with now.</summary>
    public StableDiffusionModel? Model => _model;

    public void LoadCheckpoint(XYCheckpoint? checkpoint, CancellationToken cancellationToken)
    {
        Release();
        cancellationToken.ThrowIfCancellationRequested();
        if (checkpoint is null)
            _model = _fixedModel ?? throw new DreamBoothException("x/y plot: no model to render with: make the checkpoint an axis or give a checkpoint");
        else
            _model = _owned = _load(checkpoint);
        _pipeline = new Txt2ImgPipeline(_model.Tokenizer, _model.TextEncoder, _model.UNet, _model.Vae,
            NoiseSchedule.FromConfigJson(_model.SchedulerConfigJson), _model.Name, _model.ShortHash, _options);
    }

    /// <summary>The model's native image size: UNet sample_size × the VAE's downsampling (512 for SD 1.x).</summary>
    public static (int Width, int Height) NativeSize(StableDiffusionModel model)
    {
        int side = model.UNet.Config.SampleSize * model.Vae.DownsampleFactor;
        return (side, side);
    }

    public Image<Rgb24> Render(CellRequest cell, CancellationToken cancellationToken)
    {
        if (_pipeline is null || _model is null) throw new InvalidOperationException("LoadCheckpoint must be called before Render");
        var (w, h) = NativeSize(_model);
        var request = new GenerationRequest
        {
            Prompt = cell.Prompt, NegativePrompt = cell.NegativePrompt, Steps = cell.Steps, CfgScale = cell.Cfg,
            Sampler = cell.Sampler, Seed = cell.Seed, Width = cell.Width ?? w, Height = cell.Height ?? h,
            Count = 1, BatchSize = 1, ClipSkip = cell.ClipSkip,
        };
        if (Warnings is not null)
            foreach (var warning in _pipeline.PromptWarnings(request))
                if (_warned.Add(warning)) Warnings.Report(warning);
        using var result = _pipeline.Generate(request, StepProgress, cancellationToken);
        return result.Images[0].Image.Clone();
    }

    /// <summary>
    /// How single-file checkpoints are read: the tokenizer and component configs from the options, else from
    /// tokenizer/ and text_encoder|unet|vae/config.json beside the checkpoint (how tiny and toy runs are saved).
    /// </summary>
    public static ModelLoadOptions LoadOptionsFor(XYCheckpoint first, string? tokenizer = null, string? modelConfig = null)
    {
        string beside = Path.GetDirectoryName(first.Path) ?? ".";
        if (tokenizer is null && Directory.Exists(Path.Combine(beside, "tokenizer"))) tokenizer = Path.Combine(beside, "tokenizer");
        if (tokenizer is not null && !File.Exists(tokenizer) && !Directory.Exists(tokenizer))
            throw new DreamBoothException($"tokenizer '{tokenizer}' not found");
        string? configDir = modelConfig;
        if (configDir is null && File.Exists(Path.Combine(beside, "unet", "config.json"))) configDir = beside;
        if (configDir is not null && !Directory.Exists(configDir)) throw new DreamBoothException($"model config folder '{configDir}' does not exist");
        string? Config(string component)
        {
            if (configDir is null) return null;
            var p = Path.Combine(configDir, component, "config.json");
            return File.Exists(p) ? p : throw new DreamBoothException($"model config folder '{configDir}': missing {component}/config.json");
        }
        return new ModelLoadOptions
        {
            TokenizerPath = tokenizer,
            TextEncoderConfig = Config("text_encoder") is { } te ? CLIPTextConfig.Load(te) : null,
            UNetConfig = Config("unet") is { } u ? UNet2DConditionConfig.Load(u) : null,
            VaeConfig = Config("vae") is { } v ? AutoencoderKLConfig.Load(v) : null,
        };
    }

    void Release()
    {
        _pipeline?.Dispose();
        _pipeline = null;
        _owned?.Dispose();
        _owned = null;
        _model = null;
    }

    public void Dispose() => Release();
}
