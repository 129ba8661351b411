using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// `dreambooth bench memory`: the activation memory of a training forward + backward, measured as resident memory on
/// the CPU, each case in a fresh child process (`--child`). Parts:
/// <list type="bullet">
/// <item><c>unet</c>: the UNet (SD1.5 or tiny, random weights) in the compute dtype at each latent size, batch 1, with
/// and without gradient checkpointing. A first forward + backward creates the gradients (and warms the kernels); then
/// the peak of a second one above the memory held before it (weights + gradients) is the activation memory
/// (<c>activations_mib</c>: what autograd saves plus the backward's temporaries); then with the gradients released
/// first, the peak above weights alone (<c>with_fresh_grads_mib</c>: what a step that starts without gradients,
/// as the trainer's does, holds at its worst: activations and the gradients growing while they are freed).</item>
/// <item><c>text_encoder</c>: the same for the CLIP text encoder (77 tokens).</item>
/// <item><c>attention</c>: one self-attention of <c>--attention-tokens</c> tokens (SD1.5's first block: 8 heads of 40
/// channels), forward + backward, as <c>scaled_dot_product_attention</c> and as the naive softmax(QKᵀ/√d)·V that
/// materialises the N×N scores.</item>
/// </list>
/// What this gives is CPU resident memory, with malloc set to return every block of 64 KiB or more at once (<see cref="ExactMalloc"/>);
/// docs/memory.md turns it into the GPU prediction, marked as such.
/// </summary>
public sealed class BenchMemoryCommand : IBenchSubcommand
{
    public Command Build()
    {
        var tiny = new Option<bool>("--tiny") { Description = "Tiny configs of the same architectures instead of full-size SD1.5" };
        var parts = new Option<string>("--parts") { Description = "unet, text_encoder, attention, vae (comma-separated; vae: the fp32 encode of latent caching, per --latents size)", DefaultValueFactory = _ => "unet,text_encoder,attention,vae" };
        var latents = new Option<string?>("--latents") { Description = "UNet latent sizes WIDTHxHEIGHT (default 8x8,32x32,64x64; tiny: 8x8,16x16); 64x64 is a 512x512 image" };
        var dtypes = new Option<string>("--dtypes") { Description = "Compute dtypes: bf16, fp32, fp16", DefaultValueFactory = _ => "bf16" };
        var gc = new Option<string>("--gradient-checkpointing") { Description = "on, off or both", DefaultValueFactory = _ => "both" };
        var single = new Option<bool>("--single-pass") { Description = "UNet: one forward + backward per case, from no gradients (the step peak only; a third of the time, for large latents)" };
        var tokens = new Option<string>("--attention-tokens") { Description = "Token counts of the attention part (4096 = a 64x64 latent)", DefaultValueFactory = _ => "1024,4096" };
        var child = new Option<string?>("--child") { Description = "(internal) run one case, given as JSON, in this process", Hidden = true };
        var cmd = new Command("memory", "Activation memory of a training forward + backward (UNet per latent size, with/without gradient checkpointing; " +
            "text encoder; one attention layer, SDPA vs naive) as CPU resident memory, each case in a fresh process (JSON lines)");
        foreach (var o in new Option[] { tiny, parts, latents, dtypes, gc, single, tokens, child }) cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            if (parse.GetValue(child) is { } json)
            {
                CliApp.Torch();
                w.WriteLine(RunHere(JsonSerializer.Deserialize<Case>(json)!));
                return CliApp.Ok;
            }
            bool isTiny = parse.GetValue(tiny);
            var partList = parse.GetValue(parts)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(p => p is "unet" or "text_encoder" or "attention" or "vae" ? p : throw new DreamBoothException($"--parts: expected unet, text_encoder, attention and/or vae, got '{p}'")).ToList();
            var types = parse.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(d => BenchSupport.DtypeName(BenchSupport.ParseDtype(d, "--dtypes"))).ToList();
            var sizes = BenchSupport.ParseSizes(parse.GetValue(latents) ?? (isTiny ? "8x8,16x16" : "8x8,32x32,64x64"), isTiny ? 4 : 8);
            var switches = BenchSupport.ParseSwitch(parse.GetValue(gc)!, "--gradient-checkpointing");
            var tokenList = BenchSupport.ParseInts(parse.GetValue(tokens)!, "--attention-tokens");
            bool singlePass = parse.GetValue(single);
            var cases = new List<Case>();
            foreach (var type in types)
            {
                if (partList.Contains("unet"))
                    foreach (var (lw, lh) in sizes)
                        foreach (var on in switches)
                            cases.Add(new Case("unet", isTiny, type, lw, lh, on, 0, "", singlePass));
                if (partList.Contains("text_encoder")) cases.Add(new Case("text_encoder", isTiny, type, 0, 0, false, 77, ""));
                if (partList.Contains("attention"))
                    foreach (var n in tokenList)
                        foreach (var kind in new[] { "sdpa", "naive" })
                            cases.Add(new Case("attention", isTiny, type, 0, 0, false, n, kind));
            }
            if (partList.Contains("vae"))
                foreach (var (lw, lh) in sizes)
                    cases.Add(new Case("vae", isTiny, "fp32", lw, lh, false, 0, ""));
            foreach (var c in cases)
            {
                ct.ThrowIfCancellationRequested();
                var line = await BenchSupport.RunSelfForJson(["bench", "memory", "--child", JsonSerializer.Serialize(c)], ct, ExactMalloc);
                using var doc = JsonDocument.Parse(line);
                var merged = new Dictionary<string, object?> { ["bench"] = "memory" };
                foreach (var p in doc.RootElement.EnumerateObject()) merged[p.Name] = p.Value.Clone();
                merged["load_average"] = BenchSupport.LoadAverage();
                w.WriteLine(BenchSupport.Json(merged));
            }
            return CliApp.Ok;
        });
        return cmd;
    }

    /// <summary>
    /// glibc's malloc keeps freed blocks below its mmap threshold (which grows up to 32 MiB as large blocks are freed)
    /// in its arenas, where they stay resident and are reused without showing in the peak: a second forward + backward
    /// would then look free. A fixed 64 KiB threshold maps every tensor of 64 KiB or more on its own and unmaps it when
    /// freed, so the resident set follows the live tensors; the children run with it.
    /// </summary>
    static readonly Dictionary<string, string> ExactMalloc = new() { ["MALLOC_MMAP_THRESHOLD_"] = "65536", ["MALLOC_TRIM_THRESHOLD_"] = "0" };

    /// <summary>One measurement: a part at a latent size (UNet), a token count (attention: "sdpa" or "naive" in <see cref="Attention"/>).</summary>
    public sealed record Case(string Part, bool Tiny, string Dtype, int LatentWidth, int LatentHeight, bool GradientCheckpointing, int Tokens, string Attention, bool SinglePass = false);

    /// <summary>Pixels per latent of the model's VAE (8 for SD1.5, 2 for the tiny one).</summary>
    static int Factor(Case c) => c.Tiny ? 2 : 8;

    static long Rss() => ProcessMemory.ResidentBytes() ?? 0;
    static long Peak() => ProcessMemory.PeakResidentBytes() ?? 0;
    static long Mib(long bytes) => bytes >> 20;

    /// <summary>Runs one case in this process; its JSON line.</summary>
    static string RunHere(Case c)
    {
        var type = BenchSupport.ParseDtype(c.Dtype, "dtype");
        if (!ProcessMemory.ResetPeak()) throw new DreamBoothException("bench memory needs /proc/self/clear_refs (Linux) to reset the peak between phases");
        return c.Part switch
        {
            "unet" => UNetCase(c, type),
            "text_encoder" => TextEncoderCase(c, type),
            "vae" => VaeCase(c, type),
            _ => AttentionCase(c, type),
        };
    }

    /// <summary>
    /// Runs <paramref name="pass"/> (a forward + backward) and returns, above the memory before it: the peak, the peak of
    /// the forward alone, what the forward left held (the activations autograd saved, and the output), and the seconds.
    /// <paramref name="pass"/> calls the callback it gets between its forward and its backward.
    /// </summary>
    static (long Peak, long Forward, long Saved, double Seconds) Measure(Action<Action> pass)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        long before = Rss();
        ProcessMemory.ResetPeak();
        long forward = 0, saved = 0;
        var clock = Stopwatch.StartNew();
        pass(() => { forward = Peak() - before; saved = Rss() - before; });
        return (Peak() - before, forward, saved, clock.Elapsed.TotalSeconds);
    }

    static string UNetCase(Case c, ScalarType type)
    {
        var config = c.Tiny ? UNet2DConditionConfig.Tiny : UNet2DConditionConfig.StableDiffusion15;
        long startRss = Rss();
        manual_seed(1);
        using var unet = new UNet2DConditionModel(config);
        BenchTrainCommand.ResetGroupNorms(unet);
        unet.to(type);
        unet.train();
        unet.GradientCheckpointing = c.GradientCheckpointing;
        var ps = unet.parameters().ToList();
        long weights = ps.Sum(p => p.NumberOfElements * p.ElementSize);
        using var latents = (randn(1, config.InChannels, c.LatentHeight, c.LatentWidth) * 0.5).to(type).DetachFromDisposeScope();
        using var context = randn(1, 77, config.CrossAttentionDim).to(type).DetachFromDisposeScope();
        using var t = tensor(new long[] { 500 });
        void Pass(Action afterForward)
        {
            using var scope = NewDisposeScope();
            var y = unet.forward(latents, t, context);
            afterForward();
            y.to(ScalarType.Float32).pow(2).mean().backward();
        }
        (long Peak, long Forward, long Saved, double Seconds)? warm = null, withGrads = null;
        if (!c.SinglePass)
        {
            warm = Measure(Pass);                 // creates the gradients (and warms the kernels)
            withGrads = Measure(Pass);            // gradients accumulate in place: the peak above is activations + the backward's temporaries
            foreach (var p in ps) { using var g = p.grad; if (g is not null) p.grad = null; }
        }
        var fresh = Measure(Pass);                // as a step that starts without gradients
        long grads = ps.Sum(p => { using var g = p.grad; return g is null ? 0 : g.NumberOfElements * g.ElementSize; });
        return JsonSerializer.Serialize(new
        {
            part = "unet",
            model = c.Tiny ? "tiny-random" : "sd15-random",
            dtype = c.Dtype,
            latent = $"{c.LatentWidth}x{c.LatentHeight}",
            image = $"{c.LatentWidth * Factor(c)}x{c.LatentHeight * Factor(c)}",
            batch = 1,
            gradient_checkpointing = c.GradientCheckpointing,
            attention = "sdpa",
            weights_mib = Mib(weights),
            grads_mib = Mib(grads),
            // what autograd holds after the forward: the activation memory proper
            saved_activations_mib = Mib(fresh.Saved),
            forward_peak_mib = Mib(fresh.Forward),
            // a step that starts without gradients (the trainer's): activations + gradients growing while they are freed + temporaries
            step_peak_mib = Mib(fresh.Peak),
            step_peak_over_grads_mib = Mib(fresh.Peak - grads),
            // the same pass with every gradient already allocated (accumulated into in place)
            peak_with_grads_allocated_mib = withGrads is { } a ? Mib(a.Peak) : (long?)null,
            first_pass_mib = warm is { } f ? Mib(f.Peak) : (long?)null,
            single_pass = c.SinglePass,
            seconds = BenchSupport.Round(fresh.Seconds, 2),
            rss_start_mib = Mib(startRss),
            memory_kind = "process_rss_peak above the RSS before the pass (CPU)",
            torch_threads = get_num_threads(),
        });
    }

    static string TextEncoderCase(Case c, ScalarType type)
    {
        var config = c.Tiny ? CLIPTextConfig.Tiny : CLIPTextConfig.StableDiffusion15;
        manual_seed(1);
        using var te = new CLIPTextModel(config);
        te.to(type);
        te.train();
        var ps = te.parameters().ToList();
        using var ids = randint(0, config.VocabSize, [1, c.Tokens], dtype: ScalarType.Int64).DetachFromDisposeScope();
        void Pass(Action afterForward)
        {
            using var scope = NewDisposeScope();
            var y = te.forward(ids);
            afterForward();
            y.to(ScalarType.Float32).pow(2).mean().backward();
        }
        Measure(Pass);
        long grads = ps.Sum(p => { using var g = p.grad; return g is null ? 0 : g.NumberOfElements * g.ElementSize; });
        var withGrads = Measure(Pass);
        return JsonSerializer.Serialize(new
        {
            part = "text_encoder",
            model = c.Tiny ? "tiny-random" : "sd15-random",
            dtype = c.Dtype,
            tokens = c.Tokens,
            batch = 1,
            weights_mib = Mib(ps.Sum(p => p.NumberOfElements * p.ElementSize)),
            grads_mib = Mib(grads),
            saved_activations_mib = Mib(withGrads.Saved),
            forward_peak_mib = Mib(withGrads.Forward),
            peak_with_grads_allocated_mib = Mib(withGrads.Peak),
            seconds = BenchSupport.Round(withGrads.Seconds, 2),
            memory_kind = "process_rss_peak above the RSS before the pass (CPU)",
        });
    }

    /// <summary>
    /// The VAE encode of latent caching (the trainer's <see cref="DreamBooth.Training.LatentCache.Encode"/>: no gradients,
    /// the VAE in its loaded dtype, fp32 for the recipe's model): the peak above the weights for one image.
    /// </summary>
    static string VaeCase(Case c, ScalarType type)
    {
        var config = c.Tiny ? AutoencoderKLConfig.Tiny : AutoencoderKLConfig.StableDiffusion15;
        manual_seed(1);
        using var vae = new AutoencoderKL(config);
        vae.to(type);
        vae.eval();
        int f = vae.DownsampleFactor;
        using var pixels = (rand(1, 3, c.LatentHeight * f, c.LatentWidth * f) * 2 - 1).to(type).DetachFromDisposeScope();
        void Pass(Action afterForward)
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            using var dist = vae.Encode(pixels);
            afterForward();
        }
        Measure(Pass);
        var second = Measure(Pass);
        return JsonSerializer.Serialize(new
        {
            part = "vae",
            model = c.Tiny ? "tiny-random" : "sd15-random",
            dtype = c.Dtype,
            latent = $"{c.LatentWidth}x{c.LatentHeight}",
            image = $"{c.LatentWidth * f}x{c.LatentHeight * f}",
            batch = 1,
            weights_mib = Mib(vae.parameters().Sum(p => p.NumberOfElements * p.ElementSize)),
            encode_peak_mib = Mib(second.Peak),
            seconds = BenchSupport.Round(second.Seconds, 2),
            memory_kind = "process_rss_peak above the RSS before the pass (CPU)",
        });
    }

    static string AttentionCase(Case c, ScalarType type)
    {
        const int heads = 8, dim = 40; // SD1.5's first down block: 320 channels = 8 heads x 40
        manual_seed(1);
        Tensor Input() => (randn(1, heads, c.Tokens, dim) * 0.5).to(type).requires_grad_(true).DetachFromDisposeScope();
        using var q = Input();
        using var k = Input();
        using var v = Input();
        void Pass(Action afterForward)
        {
            using var scope = NewDisposeScope();
            Tensor y;
            if (c.Attention == "naive")
            {
                // diffusers' AttnProcessor: scores = scale·QKᵀ, probs = softmax(scores), probs·V; the scores are freed once
                // the softmax has them (autograd keeps only the probabilities), as in PyTorch
                var scores = matmul(q * (1.0 / Math.Sqrt(dim)), k.transpose(-1, -2));
                var probs = softmax(scores, -1);
                scores.Dispose();
                y = probs.matmul(v);
            }
            else y = nn.functional.scaled_dot_product_attention(q, k, v);
            afterForward();
            y.to(ScalarType.Float32).pow(2).mean().backward();
        }
        Measure(Pass);
        var withGrads = Measure(Pass);
        long elementSize = q.ElementSize;
        return JsonSerializer.Serialize(new
        {
            part = "attention",
            attention = c.Attention,
            dtype = c.Dtype,
            tokens = c.Tokens,
            heads,
            head_dim = dim,
            batch = 1,
            scores_mib = Mib((long)heads * c.Tokens * c.Tokens * elementSize),
            saved_activations_mib = Mib(withGrads.Saved),
            forward_peak_mib = Mib(withGrads.Forward),
            peak_mib = Mib(withGrads.Peak),
            seconds = BenchSupport.Round(withGrads.Seconds, 3),
            memory_kind = "process_rss_peak above the RSS before the pass (CPU)",
        });
    }
}
