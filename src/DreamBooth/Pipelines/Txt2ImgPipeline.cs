using System.Diagnostics;
using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Schedulers;
using DreamBooth.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Pipelines;

/// <summary>
/// Text to image with classifier-free guidance, the one sampling path used for class images, previews
/// during training and the x/y plot:
/// <code>
/// cond, uncond = encode(prompt), encode(negative)          (cached per prompt)
/// latents      = randn(seed per image) · σ_init
/// for each step: ε = unet(scale(latents), t, [uncond; cond]); ε = ε_u + cfg·(ε_c − ε_u); latents = step(ε)
/// images       = vae.decode(latents / scaling_factor)
/// </code>
/// Image k of a request uses its own CPU generator seeded with seed + k for the initial latents and any
/// ancestral noise, so an image depends only on its seed (not on batch size or device noise).
/// The models are moved to the device/dtype of <see cref="PipelineOptions"/> when given (else used where
/// they are); each generation runs them in eval mode and restores their train/eval state afterwards, so a
/// trainer can sample previews from the models it is training.
/// </summary>
public sealed class Txt2ImgPipeline : IDisposable
{
    readonly ClipTokenizer _tokenizer;
    readonly CLIPTextModel _textEncoder;
    readonly UNet2DConditionModel _unet;
    readonly AutoencoderKL _vae;
    readonly Device _device;
    readonly ScalarType _dtype;
    readonly ScalarType _vaeDtype;
    readonly Dictionary<(string prompt, int chunks, int clipSkip), Tensor> _embeddings = new();
    readonly LinkedList<(string, int, int)> _embeddingOrder = new();

    public NoiseSchedule Schedule { get; }
    public PipelineOptions Options { get; }
    public Device Device => _device;
    /// <summary>dtype the text encoder and UNet run in.</summary>
    public ScalarType Dtype => _dtype;
    public string ModelName { get; }
    public string? ModelHash { get; }
    /// <summary>Width and height must be multiples of this (8 for SD: the VAE factor, at least 8).</summary>
    public int PixelMultiple => Math.Max(8, _vae.DownsampleFactor);
    /// <summary>The model's native image size: UNet sample_size × the VAE's downsampling (512×512 for SD 1.x, 32×32 for the toy model).</summary>
    public (int Width, int Height) NativeSize => (_unet.Config.SampleSize * _vae.DownsampleFactor, _unet.Config.SampleSize * _vae.DownsampleFactor);

    /// <summary>Most tokens a prompt is encoded with: three chunks of 75, as A1111 without its unlimited mode.</summary>
    public const int MaxPromptTokens = 3 * PromptOptions.ChunkTokens;

    /// <summary>One line per prompt of <paramref name="request"/> longer than <see cref="MaxPromptTokens"/> (the rest is dropped); empty when none is.</summary>
    public IReadOnlyList<string> PromptWarnings(GenerationRequest request)
    {
        var options = PromptOptions.Inference with { MaxTokenLength = MaxPromptTokens };
        return new[] { _tokenizer.TruncationWarning("prompt", request.Prompt, options, "3 chunks of 75"),
                       _tokenizer.TruncationWarning("negative prompt", request.NegativePrompt, options, "3 chunks of 75") }
            .OfType<string>().ToList();
    }

    /// <summary>Encoded prompts served from the cache (for tests and diagnostics).</summary>
    public int EmbeddingCacheHits { get; private set; }

    public Txt2ImgPipeline(ClipTokenizer tokenizer, CLIPTextModel textEncoder, UNet2DConditionModel unet, AutoencoderKL vae,
        NoiseSchedule schedule, string modelName, string? modelHash = null, PipelineOptions? options = null)
    {
        _tokenizer = tokenizer ?? throw new ArgumentNullException(nameof(tokenizer));
        _textEncoder = textEncoder ?? throw new ArgumentNullException(nameof(textEncoder));
        _unet = unet ?? throw new ArgumentNullException(nameof(unet));
        _vae = vae ?? throw new ArgumentNullException(nameof(vae));
        Schedule = schedule ?? throw new ArgumentNullException(nameof(schedule));
        ModelName = modelName;
        ModelHash = modelHash;
        Options = options ?? PipelineOptions.Default;
        var unetParameter = unet.parameters().First();
        _device = Options.Device ?? unetParameter.device;
        _dtype = Options.Dtype ?? unetParameter.dtype;
        _vaeDtype = Options.VaeDtype ?? vae.parameters().First().dtype;
        if (textEncoder.Config.HiddenSize != unet.Config.CrossAttentionDim)
            throw new DreamBoothException($"model '{modelName}': text encoder hidden_size {textEncoder.Config.HiddenSize} does not match UNet cross_attention_dim {unet.Config.CrossAttentionDim}");
        if (vae.Config.LatentChannels != unet.Config.InChannels)
            throw new DreamBoothException($"model '{modelName}': VAE latent_channels {vae.Config.LatentChannels} does not match UNet in_channels {unet.Config.InChannels}");
        if (Options.Device is not null || Options.Dtype is not null)
        {
            _textEncoder.to(_device, _dtype);
            _unet.to(_device, _dtype);
        }
        if (Options.Device is not null || Options.VaeDtype is not null) _vae.to(_device, _vaeDtype);
    }

    /// <summary>A pipeline over a loaded checkpoint: its scheduler config, name and A1111 short hash go into every infotext.</summary>
    public Txt2ImgPipeline(StableDiffusionModel model, PipelineOptions? options = null)
        : this(model.Tokenizer, model.TextEncoder, model.UNet, model.Vae, NoiseSchedule.FromConfigJson(model.SchedulerConfigJson),
               model.Name, model.ShortHash, options)
    {
    }

    /// <summary>Generates <see cref="GenerationRequest.Count"/> images in batches of <see cref="GenerationRequest.BatchSize"/>.</summary>
    public GenerationResult Generate(GenerationRequest request, IProgress<SamplingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        request.Validate(PixelMultiple);
        long baseSeed = request.Seed == -1 ? Random.Shared.NextInt64(0, GenerationRequest.MaxRandomSeed + 1) : request.Seed;
        var clock = Stopwatch.StartNew();
        var images = new List<GeneratedImage>();
        int batchCount = (request.Count + request.BatchSize - 1) / request.BatchSize;
        int stepsDone = 0;
        try
        {
            for (int b = 0; b < batchCount; b++)
            {
                int first = b * request.BatchSize;
                var seeds = Enumerable.Range(first, Math.Min(request.BatchSize, request.Count - first)).Select(k => baseSeed + k).ToList();
                var offset = clock.Elapsed;
                int imagesBefore = images.Count;
                var batchProgress = progress is null ? null : new SyncProgress<SamplingProgress>(p => progress.Report(p with
                {
                    Batch = b + 1,
                    BatchCount = batchCount,
                    ImagesDone = imagesBefore,
                    ImagesTotal = request.Count,
                    Elapsed = offset + p.Elapsed,
                }));
                images.AddRange(GenerateBatch(request, seeds, batchProgress, cancellationToken));
                stepsDone += request.Steps;
            }
        }
        catch
        {
            foreach (var image in images) image.Dispose();
            throw;
        }
        return new GenerationResult(images, clock.Elapsed, clock.Elapsed.TotalSeconds / Math.Max(1, stepsDone));
    }

    /// <summary>
    /// Denoises one batch, one image per seed in <paramref name="seeds"/> (ignoring the request's Seed, Count
    /// and BatchSize). Progress reports carry Batch = 1 of 1; <see cref="Generate"/> renumbers them.
    /// </summary>
    public IReadOnlyList<GeneratedImage> GenerateBatch(GenerationRequest request, IReadOnlyList<long> seeds,
        IProgress<SamplingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        request.Validate(PixelMultiple);
        if (seeds.Count == 0) return [];
        foreach (var s in seeds)
            if (s < 0) throw new DreamBoothException($"seed: expected a seed >= 0, got {s}");
        cancellationToken.ThrowIfCancellationRequested();
        string samplerName = SamplerFactory.Canonical(request.Sampler);
        var sampler = SamplerFactory.Create(samplerName, Schedule, request.Steps);
        int batch = seeds.Count;
        bool guided = request.CfgScale != 1.0;
        var clock = Stopwatch.StartNew();

        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var generators = seeds.Select(s => new Generator(unchecked((ulong)s))).ToList();
        bool teTraining = _textEncoder.training, unetTraining = _unet.training, vaeTraining = _vae.training;
        _textEncoder.eval();
        _unet.eval();
        _vae.eval();
        try
        {
            var (cond, uncond) = EncodePair(request.Prompt, request.NegativePrompt, request.ClipSkip);
            var context = guided
                ? cat([uncond.expand(batch, -1, -1), cond.expand(batch, -1, -1)], 0)
                : cond.expand(batch, -1, -1);

            int f = _vae.DownsampleFactor;
            long[] shape = [batch, _unet.Config.InChannels, request.Height / f, request.Width / f];
            var latents = SamplerNoise.Randn(shape, generators, _device) * sampler.InitNoiseSigma;
            for (int i = 0; i < sampler.Steps; i++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                Tensor next;
                using (var stepScope = NewDisposeScope())
                {
                    var input = sampler.ScaleModelInput(latents, i);
                    var modelInput = (guided ? cat([input, input], 0) : input).to(_dtype);
                    var t = full([modelInput.shape[0]], sampler.Timesteps[i], ScalarType.Float32, _device);
                    var prediction = _unet.forward(modelInput, t, context).to(ScalarType.Float32);
                    if (guided)
                    {
                        var halves = prediction.chunk(2, 0);
                        prediction = halves[0] + request.CfgScale * (halves[1] - halves[0]);
                    }
                    next = sampler.Step(prediction, i, latents, generators).MoveToOuterDisposeScope();
                }
                latents.Dispose();
                latents = next;
                progress?.Report(new SamplingProgress(i + 1, sampler.Steps, 1, 1, 0, batch, clock.Elapsed, clock.Elapsed.TotalSeconds / (i + 1)));
            }
            cancellationToken.ThrowIfCancellationRequested();
            var pixels = DecodeToBytes(latents, request.Width, request.Height);
            var result = new List<GeneratedImage>(batch);
            for (int k = 0; k < batch; k++)
            {
                var image = SixLabors.ImageSharp.Image.LoadPixelData<Rgb24>(pixels[k], request.Width, request.Height);
                result.Add(new GeneratedImage(image, Info(request, samplerName, seeds[k])));
            }
            return result;
        }
        finally
        {
            foreach (var g in generators) g.Dispose();
            _textEncoder.train(teTraining);
            _unet.train(unetTraining);
            _vae.train(vaeTraining);
        }
    }

    /// <summary>The infotext an image generated with <paramref name="request"/> and <paramref name="seed"/> carries.</summary>
    public GenerationInfo Info(GenerationRequest request, string sampler, long seed) => new()
    {
        Prompt = request.Prompt,
        NegativePrompt = request.NegativePrompt,
        Steps = request.Steps,
        Sampler = SamplerFactory.Canonical(sampler),
        CfgScale = request.CfgScale,
        Seed = seed,
        Width = request.Width,
        Height = request.Height,
        ModelHash = ModelHash,
        ModelName = ModelName,
        ClipSkip = request.ClipSkip,
    };

    /// <summary>Latents → RGB bytes per image (H·W·3), VAE sliced and, when asked or above 1 MP, tiled.</summary>
    byte[][] DecodeToBytes(Tensor latents, int width, int height)
    {
        using var scope = NewDisposeScope();
        _vae.EnableSlicing = Options.VaeSlicing;
        _vae.EnableTiling = Options.VaeTiling ?? (long)width * height > 1024 * 1024;
        var decoded = _vae.Decode((latents / _vae.Config.ScalingFactor).to(_vaeDtype)).to(ScalarType.Float32);
        var bytes = (decoded / 2 + 0.5).clamp(0, 1).mul(255).round().to(ScalarType.Byte).permute(0, 2, 3, 1).contiguous().cpu();
        var result = new byte[bytes.shape[0]][];
        for (int k = 0; k < result.Length; k++) result[k] = bytes[k].data<byte>().ToArray();
        return result;
    }

    /// <summary>Prompt and negative prompt encoded with the same number of 75-token chunks (the longer one's, at most 3).</summary>
    internal (Tensor cond, Tensor uncond) EncodePair(string prompt, string negative, int clipSkip)
    {
        int chunks = Math.Max(ChunksFor(prompt), ChunksFor(negative));
        return (Embedding(prompt, chunks, clipSkip), Embedding(negative, chunks, clipSkip));
    }

    int ChunksFor(string text)
    {
        int tokens = _tokenizer.Encode(text ?? "").Count;
        return Math.Clamp((tokens + PromptOptions.ChunkTokens - 1) / PromptOptions.ChunkTokens, 1, 3);
    }

    /// <summary>[1, 77·chunks, hidden] text states in the model dtype on the device, cached (least recently used evicted).</summary>
    Tensor Embedding(string text, int chunks, int clipSkip)
    {
        var key = (text ?? "", chunks, clipSkip);
        if (_embeddings.TryGetValue(key, out var cached))
        {
            _embeddingOrder.Remove(key);
            _embeddingOrder.AddLast(key);
            EmbeddingCacheHits++;
            return cached;
        }
        Tensor states;
        using (var scope = NewDisposeScope())
        {
            var options = PromptOptions.Inference with { MaxTokenLength = chunks * PromptOptions.ChunkTokens, PadTokens = true };
            var ids = _tokenizer.Tokenize([key.Item1], options).to(_device);
            states = PromptEncoder.EncodePrompts(_textEncoder, ids, clipSkip).to(_dtype).MoveToOuterDisposeScope();
        }
        if (Options.EmbeddingCacheCapacity <= 0) return states; // owned by the caller's dispose scope
        states.DetachFromDisposeScope();
        _embeddings[key] = states;
        _embeddingOrder.AddLast(key);
        while (_embeddings.Count > Options.EmbeddingCacheCapacity && _embeddingOrder.First is { } oldest)
        {
            _embeddingOrder.RemoveFirst();
            if (_embeddings.Remove(oldest.Value, out var evicted)) evicted.Dispose();
        }
        return states;
    }

    /// <summary>Drops the cached prompt encodings (call after the text encoder's weights change).</summary>
    public void ClearEmbeddingCache()
    {
        foreach (var t in _embeddings.Values) t.Dispose();
        _embeddings.Clear();
        _embeddingOrder.Clear();
    }

    public void Dispose() => ClearEmbeddingCache();

    /// <summary>An IProgress that reports on the calling thread (Progress&lt;T&gt; would post to a sync context).</summary>
}
