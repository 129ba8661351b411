using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Text;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using TorchSharp.PyBridge;
using static TorchSharp.torch;

namespace DreamBooth.Toy;

/// <summary>Settings of a toy pretraining run. Defaults are the run that made the embedded model.</summary>
public sealed record ToyPretrainOptions
{
    public int Seed { get; init; }
    /// <summary>Captioned renders drawn once and reused (the world is infinite; a fixed set keeps runs comparable).</summary>
    public int DatasetSize { get; init; } = 10000;
    public int VaeSteps { get; init; } = 1500;
    public int UNetSteps { get; init; } = 6000;
    public int BatchSize { get; init; } = 16;
    public double VaeLearningRate { get; init; } = 1.5e-3;
    public double UNetLearningRate { get; init; } = 2e-3;
    /// <summary>KL weight of the VAE objective (L1 reconstruction + this × KL), as small as SD's VAE.</summary>
    public double KlWeight { get; init; } = 1e-6;
    /// <summary>Fraction of captions replaced by the empty prompt so classifier-free guidance works.</summary>
    public double CaptionDropout { get; init; } = 0.1;
    public int WarmupSteps { get; init; } = 100;
    public ToyModelConfig Model { get; init; } = ToyModelConfig.Default;
    public IReadOnlyList<string> PreviewPrompts { get; init; } =
    [
        "a man with a red shirt on a beach", "a woman with blonde hair in a forest", "a man with a blue shirt in the snow",
        "a woman with a purple shirt in a city", "a man with a striped green shirt in a studio", "man", "woman", "ohwx man",
    ];
    /// <summary>torch CPU threads during the run (restored afterwards); null leaves the setting alone. On a busy
    /// 2-core machine 1 thread is several times faster than 2 (OpenMP workers spin against each other).</summary>
    public int? Threads { get; init; } = 1;
    public int PreviewSteps { get; init; } = 25;
    public double PreviewGuidance { get; init; } = 5.0;

    public void Validate()
    {
        if (DatasetSize < 1) throw new DreamBoothException($"toy pretrain: dataset size {DatasetSize}: expected at least 1");
        if (VaeSteps < 1 || UNetSteps < 1) throw new DreamBoothException($"toy pretrain: steps {VaeSteps}/{UNetSteps}: expected at least 1 VAE and 1 UNet step");
        if (BatchSize < 1) throw new DreamBoothException($"toy pretrain: batch size {BatchSize}: expected at least 1");
        if (!(UNetLearningRate > 0) || !(VaeLearningRate > 0) || double.IsInfinity(UNetLearningRate) || double.IsInfinity(VaeLearningRate))
            throw new DreamBoothException($"toy pretrain: learning rates {UNetLearningRate}/{VaeLearningRate}: expected finite values > 0");
        if (Threads is < 1) throw new DreamBoothException($"toy pretrain: threads {Threads}: expected at least 1");
        if (CaptionDropout is < 0 or >= 1) throw new DreamBoothException($"toy pretrain: caption dropout {CaptionDropout}: expected 0 ≤ p < 1");
        if (Model.ImageSize % Model.Vae.DownsampleFactor != 0)
            throw new DreamBoothException($"toy pretrain: image size {Model.ImageSize} is not a multiple of the VAE downsampling {Model.Vae.DownsampleFactor}");
    }
}

/// <summary>One logged step of <see cref="ToyPretrainer.Run"/>: phase "render", "vae", "latents", "unet" or "save".</summary>
public sealed record ToyPretrainProgress(string Phase, int Step, int TotalSteps, double Loss, double LearningRate, TimeSpan Elapsed);

public sealed record ToyPretrainResult(
    string OutputDirectory, string DiffusersDirectory, string ModelDirectory, IReadOnlyList<string> PreviewFiles,
    double VaeLoss, double UNetLoss, double ScalingFactor,
    long TextEncoderParameters, long UNetParameters, long VaeParameters,
    TimeSpan RenderTime, TimeSpan VaeTime, TimeSpan UNetTime, TimeSpan TotalTime);

/// <summary>
/// Pretrains the toy text-to-image model from nothing on captioned renders of <see cref="ToyWorld"/>:
/// first the <see cref="AutoencoderKL"/> (L1 reconstruction + tiny KL), then the <see cref="CLIPTextModel"/> and
/// <see cref="UNet2DConditionModel"/> jointly with the DDPM epsilon objective on the frozen VAE's latents. Seeded
/// end to end (initial weights, data, batches, noise) and CPU friendly.
/// </summary>
public sealed class ToyPretrainer
{
    /// <summary>SD1.x's training schedule: 1000 steps, scaled-linear betas from 0.00085 to 0.012.</summary>
    public const int TrainTimesteps = 1000;
    public const double BetaStart = 0.00085, BetaEnd = 0.012;

    /// <summary>diffusers scheduler_config.json of the toy model (same schedule as SD1.x).</summary>
    public const string SchedulerConfigJson = """
        {
          "_class_name": "DDIMScheduler",
          "beta_start": 0.00085,
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "num_train_timesteps": 1000,
          "prediction_type": "epsilon",
          "clip_sample": false,
          "set_alpha_to_one": false,
          "steps_offset": 1
        }
        """;

    readonly ToyPretrainOptions _o;
    readonly ClipTokenizer _tokenizer;

    public ToyPretrainer(ToyPretrainOptions options, ClipTokenizer tokenizer)
    {
        options.Validate();
        _o = options;
        _tokenizer = tokenizer;
    }

    /// <summary>ᾱ_t for t = 0..999 (float64 on CPU).</summary>
    public static Tensor AlphasCumprod()
    {
        using var scope = NewDisposeScope();
        var betas = linspace(Math.Sqrt(BetaStart), Math.Sqrt(BetaEnd), TrainTimesteps, dtype: float64).pow(2);
        return (1 - betas).cumprod(0).MoveToOuterDisposeScope();
    }

    public ToyPretrainResult Run(string outputDir, IProgress<ToyPretrainProgress>? progress = null, CancellationToken ct = default)
    {
        using var threads = Runtime.TorchThreads.Use(_o.Threads);
        return RunCore(outputDir, progress, ct);
    }

    ToyPretrainResult RunCore(string outputDir, IProgress<ToyPretrainProgress>? progress, CancellationToken ct)
    {
        var total = Stopwatch.StartNew();
        Directory.CreateDirectory(outputDir);
        var m = _o.Model;
        manual_seed(_o.Seed);
        var gen = new Generator((ulong)_o.Seed + 1);

        // ---------------------------------------------------------------- data: captioned renders
        var sw = Stopwatch.StartNew();
        var (images, captions) = RenderDataset(_o.DatasetSize, _o.Seed, m.ImageSize);
        using var imagesU8 = images;
        using var ids = _tokenizer.Tokenize(captions, PromptOptions.Inference);
        using var emptyIds = _tokenizer.Tokenize([""], PromptOptions.Inference);
        var renderTime = sw.Elapsed;
        progress?.Report(new("render", _o.DatasetSize, _o.DatasetSize, 0, 0, total.Elapsed));

        // ---------------------------------------------------------------- stage 1: the autoencoder
        sw.Restart();
        using var vae = new AutoencoderKL(m.Vae);
        double vaeLoss = TrainVae(vae, imagesU8, gen, progress, total, ct);
        var vaeTime = sw.Elapsed;

        // latents of the whole set with the frozen VAE (its mean), and the scaling factor that gives them unit variance
        vae.eval();
        foreach (var p in vae.parameters()) p.requires_grad = false;
        using var rawLatents = EncodeAll(vae, imagesU8);
        double scaling = 1.0 / rawLatents.std().item<float>();
        using var latents = rawLatents * scaling;
        progress?.Report(new("latents", _o.DatasetSize, _o.DatasetSize, scaling, 0, total.Elapsed));

        // ---------------------------------------------------------------- stage 2: text encoder + UNet
        sw.Restart();
        using var te = new CLIPTextModel(m.TextEncoder);
        using var unet = new UNet2DConditionModel(m.UNet);
        double unetLoss = TrainUNet(te, unet, latents, ids, emptyIds, gen, progress, total, ct);
        var unetTime = sw.Elapsed;

        // ---------------------------------------------------------------- previews and save
        te.eval(); unet.eval();
        var vaeConfig = m.Vae with { ScalingFactor = Math.Round(scaling, 5) };
        var previews = WritePreviews(te, unet, vae, vaeConfig.ScalingFactor, Path.Combine(outputDir, "samples"));
        var diffusers = Path.Combine(outputDir, "diffusers");
        SaveDiffusers(diffusers, te, unet, vae, vaeConfig, _tokenizer);
        var modelDir = Path.Combine(outputDir, "model");
        using (var sd = Checkpoints.StableDiffusionModel.Load(diffusers))
            ToyAssets.Export(sd, modelDir, new Dictionary<string, string>
            {
                ["dreambooth.toy"] = string.Create(CultureInfo.InvariantCulture,
                    $"dreambooth toy pretrain --seed {_o.Seed} --dataset {_o.DatasetSize} --vae-steps {_o.VaeSteps} --steps {_o.UNetSteps} --batch {_o.BatchSize} --lr {_o.UNetLearningRate} --vae-lr {_o.VaeLearningRate}"),
            });
        progress?.Report(new("save", 1, 1, 0, 0, total.Elapsed));

        var result = new ToyPretrainResult(outputDir, diffusers, modelDir, previews, vaeLoss, unetLoss, vaeConfig.ScalingFactor,
            Count(te), Count(unet), Count(vae), renderTime, vaeTime, unetTime, total.Elapsed);
        IO.AtomicFile.WriteAllText(Path.Combine(outputDir, "pretrain.json"), JsonSerializer.Serialize(new
        {
            seed = _o.Seed, dataset_size = _o.DatasetSize, vae_steps = _o.VaeSteps, unet_steps = _o.UNetSteps, batch_size = _o.BatchSize,
            vae_learning_rate = _o.VaeLearningRate, unet_learning_rate = _o.UNetLearningRate, kl_weight = _o.KlWeight,
            caption_dropout = _o.CaptionDropout, warmup_steps = _o.WarmupSteps, image_size = m.ImageSize,
            vae_loss = vaeLoss, unet_loss = unetLoss, scaling_factor = vaeConfig.ScalingFactor,
            text_encoder_parameters = result.TextEncoderParameters, unet_parameters = result.UNetParameters, vae_parameters = result.VaeParameters,
            render_seconds = renderTime.TotalSeconds, vae_seconds = vaeTime.TotalSeconds, unet_seconds = unetTime.TotalSeconds,
            total_seconds = total.Elapsed.TotalSeconds, torch_threads = get_num_threads(), command = "dreambooth toy pretrain",
        }, new JsonSerializerOptions { WriteIndented = true }));
        return result;
    }

    static long Count(nn.Module module) => module.parameters().Sum(p => p.numel());

    /// <summary>Renders <paramref name="n"/> random scenes: uint8 [N,3,S,S] and their captions.</summary>
    internal static (Tensor Images, List<string> Captions) RenderDataset(int n, int seed, int size)
    {
        var rng = new Random(seed);
        var scenes = Enumerable.Range(0, n).Select(_ => ToyWorld.Sample(rng)).ToList();
        var bytes = new byte[(long)n * size * size * 3];
        Parallel.For(0, n, i =>
        {
            using var img = ToyWorld.Render(scenes[i], size, size);
            img.CopyPixelDataTo(bytes.AsSpan(i * size * size * 3, size * size * 3));
        });
        var t = tensor(bytes, [n, size, size, 3]).permute(0, 3, 1, 2).contiguous();
        return (t, scenes.Select(ToyWorld.Caption).ToList());
    }

    /// <summary>uint8 [B,3,H,W] → float32 in [-1, 1].</summary>
    internal static Tensor ToModelRange(Tensor u8) => u8.to_type(float32) / 127.5f - 1f;

    /// <summary>Linear warm-up, then cosine decay to a tenth of the peak.</summary>
    double LearningRate(double peak, int step, int steps)
    {
        if (step < _o.WarmupSteps) return peak * (step + 1) / _o.WarmupSteps;
        double p = (double)(step - _o.WarmupSteps) / Math.Max(1, steps - _o.WarmupSteps);
        return peak * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * p)));
    }

    static void SetLearningRate(optim.Optimizer opt, double lr)
    {
        foreach (var g in opt.ParamGroups) g.LearningRate = lr;
    }

    double TrainVae(AutoencoderKL vae, Tensor images, Generator gen, IProgress<ToyPretrainProgress>? progress, Stopwatch clock, CancellationToken ct)
    {
        vae.train();
        using var opt = optim.AdamW(vae.parameters(), _o.VaeLearningRate, weight_decay: 0.0);
        double ema = double.NaN;
        for (int step = 0; step < _o.VaeSteps; step++)
        {
            ct.ThrowIfCancellationRequested();
            double lr = LearningRate(_o.VaeLearningRate, step, _o.VaeSteps);
            SetLearningRate(opt, lr);
            double loss = VaeStep(vae, opt, images, gen);
            ema = double.IsNaN(ema) ? loss : 0.95 * ema + 0.05 * loss;
            if (step % 50 == 0 || step == _o.VaeSteps - 1) progress?.Report(new("vae", step + 1, _o.VaeSteps, ema, lr, clock.Elapsed));
        }
        return ema;
    }

    double VaeStep(AutoencoderKL vae, optim.Optimizer opt, Tensor images, Generator gen)
    {
        using var scope = NewDisposeScope();
        var idx = randint(0, images.shape[0], [_o.BatchSize], dtype: int64, generator: gen);
        var x = ToModelRange(images.index_select(0, idx));
        using var posterior = vae.Encode(x);
        var recon = vae.Decode(posterior.Sample(gen));
        var kl = (0.5 * (posterior.Mean.pow(2) + posterior.Var - 1 - posterior.LogVar)).sum([1, 2, 3]).mean();
        var loss = nn.functional.l1_loss(recon, x) + _o.KlWeight * kl;
        opt.zero_grad();
        loss.backward();
        nn.utils.clip_grad_norm_(vae.parameters(), 1.0);
        opt.step();
        return loss.item<float>();
    }

    Tensor EncodeAll(AutoencoderKL vae, Tensor images)
    {
        using var noGrad = no_grad();
        var parts = new List<Tensor>();
        for (long i = 0; i < images.shape[0]; i += 256)
        {
            using var scope = NewDisposeScope();
            var x = ToModelRange(images.narrow(0, i, Math.Min(256, images.shape[0] - i)));
            using var posterior = vae.Encode(x);
            parts.Add(posterior.Mean.detach().clone().MoveToOuterDisposeScope());
        }
        var all = cat(parts, 0);
        foreach (var p in parts) p.Dispose();
        return all;
    }

    double TrainUNet(CLIPTextModel te, UNet2DConditionModel unet, Tensor latents, Tensor ids, Tensor emptyIds, Generator gen,
        IProgress<ToyPretrainProgress>? progress, Stopwatch clock, CancellationToken ct)
    {
        te.train(); unet.train();
        using var alphasCumprod = AlphasCumprod().to_type(float32);
        using var opt = optim.AdamW(te.parameters().Concat(unet.parameters()), _o.UNetLearningRate, weight_decay: 0.01);
        double ema = double.NaN;
        for (int step = 0; step < _o.UNetSteps; step++)
        {
            ct.ThrowIfCancellationRequested();
            double lr = LearningRate(_o.UNetLearningRate, step, _o.UNetSteps);
            SetLearningRate(opt, lr);
            double loss = UNetStep(te, unet, opt, latents, ids, emptyIds, alphasCumprod, gen);
            ema = double.IsNaN(ema) ? loss : 0.98 * ema + 0.02 * loss;
            if (step % 50 == 0 || step == _o.UNetSteps - 1) progress?.Report(new("unet", step + 1, _o.UNetSteps, ema, lr, clock.Elapsed));
        }
        return ema;
    }

    /// <summary>One step of the epsilon objective: noise → timesteps → add_noise → predict → MSE.</summary>
    double UNetStep(CLIPTextModel te, UNet2DConditionModel unet, optim.Optimizer opt, Tensor allLatents, Tensor allIds, Tensor emptyIds,
        Tensor alphasCumprod, Generator gen)
    {
        using var scope = NewDisposeScope();
        int bsz = _o.BatchSize;
        var idx = randint(0, allLatents.shape[0], [bsz], dtype: int64, generator: gen);
        var latents = allLatents.index_select(0, idx);
        var drop = rand([bsz], generator: gen).lt(_o.CaptionDropout).unsqueeze(1);
        var inputIds = where(drop, emptyIds.expand(bsz, -1), allIds.index_select(0, idx));

        var noise = randn(latents.shape, generator: gen);
        var timesteps = randint(0, TrainTimesteps, [bsz], dtype: int64, generator: gen);
        var acp = alphasCumprod.index_select(0, timesteps).view(bsz, 1, 1, 1);
        var noisyLatents = acp.sqrt() * latents + (1 - acp).sqrt() * noise;

        var encoderHiddenStates = te.forward(inputIds);
        var modelPred = unet.forward(noisyLatents, timesteps, encoderHiddenStates);
        var loss = nn.functional.mse_loss(modelPred, noise);

        opt.zero_grad();
        loss.backward();
        nn.utils.clip_grad_norm_(te.parameters().Concat(unet.parameters()), 1.0);
        opt.step();
        return loss.item<float>();
    }

    /// <summary>
    /// Deterministic DDIM (η = 0) with classifier-free guidance, used for the run's preview pictures.
    /// Returns images in [-1, 1], [P,3,S,S].
    /// </summary>
    public static Tensor SampleDdim(CLIPTextModel te, UNet2DConditionModel unet, AutoencoderKL vae, ClipTokenizer tokenizer,
        IReadOnlyList<string> prompts, int latentSize, double scalingFactor, int steps, double guidance, long seed)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        using var acpAll = AlphasCumprod();
        var acp = acpAll.data<double>().ToArray();
        int p = prompts.Count;
        var cond = te.forward(tokenizer.Tokenize(prompts, PromptOptions.Inference));
        var uncond = te.forward(tokenizer.Tokenize(Enumerable.Repeat("", p).ToList(), PromptOptions.Inference));
        var context = cat([uncond, cond], 0);
        var gen = new Generator((ulong)seed);
        var x = randn([p, unet.Config.InChannels, latentSize, latentSize], generator: gen);
        int ratio = TrainTimesteps / steps;
        for (int i = 0; i < steps; i++)
        {
            int t = (steps - 1 - i) * ratio + 1, prev = t - ratio;
            double aT = acp[t], aPrev = prev >= 0 ? acp[prev] : acp[0];
            var eps2 = unet.forward(cat([x, x], 0), full([2 * p], t, dtype: int64), context);
            var parts = eps2.chunk(2, 0);
            var eps = parts[0] + guidance * (parts[1] - parts[0]);
            var x0 = (x - Math.Sqrt(1 - aT) * eps) / Math.Sqrt(aT);
            x = Math.Sqrt(aPrev) * x0 + Math.Sqrt(1 - aPrev) * eps;
        }
        return vae.Decode(x / scalingFactor).clamp(-1, 1).MoveToOuterDisposeScope();
    }

    /// <summary>[B,3,H,W] in [-1,1] → images.</summary>
    public static List<Image<Rgb24>> ToImages(Tensor images)
    {
        using var scope = NewDisposeScope();
        var u8 = ((images.detach().to_type(float32).cpu() + 1) * 127.5f).round().clamp(0, 255).to_type(ScalarType.Byte).permute(0, 2, 3, 1).contiguous();
        int b = (int)u8.shape[0], h = (int)u8.shape[1], w = (int)u8.shape[2];
        var bytes = u8.data<byte>().ToArray();
        var list = new List<Image<Rgb24>>();
        for (int i = 0; i < b; i++) list.Add(Image.LoadPixelData<Rgb24>(bytes.AsSpan(i * h * w * 3, h * w * 3), w, h));
        return list;
    }

    List<string> WritePreviews(CLIPTextModel te, UNet2DConditionModel unet, AutoencoderKL vae, double scaling, string dir)
    {
        Directory.CreateDirectory(dir);
        var files = new List<string>();
        var all = new List<Image<Rgb24>>();
        const int perPrompt = 4;
        for (int k = 0; k < _o.PreviewPrompts.Count; k++)
        {
            var prompt = _o.PreviewPrompts[k];
            using var imgs = SampleDdim(te, unet, vae, _tokenizer, Enumerable.Repeat(prompt, perPrompt).ToList(), _o.Model.LatentSize,
                scaling, _o.PreviewSteps, _o.PreviewGuidance, _o.Seed * 1000L + k);
            var list = ToImages(imgs);
            for (int i = 0; i < list.Count; i++)
            {
                var f = Path.Combine(dir, $"{k:00}-{Slug(prompt)}-{i}.png");
                IO.AtomicFile.Write(f, s => list[i].SaveAsPng(s));
                files.Add(f);
            }
            all.AddRange(list);
        }
        using (var sheet = ToyWorld.ContactSheet(all, perPrompt * 2, 2))
            IO.AtomicFile.Write(Path.Combine(dir, "previews.png"), s => sheet.SaveAsPng(s));
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "previews.txt"),
            string.Join("\n", _o.PreviewPrompts.Select((p, k) => $"row {k / 2} {(k % 2 == 0 ? "left" : "right")}: {p}")) + "\n");
        foreach (var img in all) img.Dispose();
        return files;
    }

    static string Slug(string prompt) => new string(prompt.Select(c => char.IsLetterOrDigit(c) ? c : '-').ToArray()).Trim('-');

    /// <summary>
    /// Writes a diffusers folder (model_index.json, text_encoder/, unet/, vae/, tokenizer/, scheduler/) with fp16 weights.
    /// The modules are converted to fp16 in place.
    /// </summary>
    public static void SaveDiffusers(string dir, CLIPTextModel te, UNet2DConditionModel unet, AutoencoderKL vae, AutoencoderKLConfig vaeConfig,
        ClipTokenizer tokenizer)
    {
        Directory.CreateDirectory(dir);
        te.half(); unet.half(); vae.half();
        SaveComponent(Path.Combine(dir, "text_encoder"), "model.safetensors", te, te.Config.ToJson());
        SaveComponent(Path.Combine(dir, "unet"), "diffusion_pytorch_model.safetensors", unet, unet.Config.ToJson());
        SaveComponent(Path.Combine(dir, "vae"), "diffusion_pytorch_model.safetensors", vae, vaeConfig.ToJson());
        tokenizer.Save(Path.Combine(dir, "tokenizer"));
        Directory.CreateDirectory(Path.Combine(dir, "scheduler"));
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "scheduler", "scheduler_config.json"), SchedulerConfigJson + "\n");
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "model_index.json"), """
            {
              "_class_name": "StableDiffusionPipeline",
              "scheduler": ["diffusers", "DDIMScheduler"],
              "text_encoder": ["transformers", "CLIPTextModel"],
              "tokenizer": ["transformers", "CLIPTokenizer"],
              "unet": ["diffusers", "UNet2DConditionModel"],
              "vae": ["diffusers", "AutoencoderKL"]
            }
            """ + "\n");
    }

    static void SaveComponent(string dir, string weightsName, nn.Module module, string configJson)
    {
        Directory.CreateDirectory(dir);
        // save_safetensors closes the stream it is given, so it writes a temp file that is renamed into place
        var path = Path.Combine(dir, weightsName);
        var tmp = path + ".tmp";
        module.save_safetensors(tmp);
        File.Move(tmp, path, overwrite: true);
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "config.json"), configJson + "\n");
    }

    /// <summary>Formats a progress line for logs: "unet  1200/3000  loss 0.1234  lr 5.0e-04  03:21".</summary>
    public static string Format(ToyPretrainProgress p) => string.Create(CultureInfo.InvariantCulture,
        $"{p.Phase,-7} {p.Step,6}/{p.TotalSteps,-6} loss {p.Loss:0.00000}  lr {p.LearningRate:0.0e+00}  {p.Elapsed:hh\\:mm\\:ss}");
}
