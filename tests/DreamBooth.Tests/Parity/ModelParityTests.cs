using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Text;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Parity;

/// <summary>The tiny diffusers folder of the fixtures, loaded by our loader (strict: every key, every shape).</summary>
public sealed class TinySdModel : IDisposable
{
    public StableDiffusionModel Model { get; } = Load();

    readonly Lazy<StableDiffusionModel> _model64 = new(() => Load(dtype: ScalarType.Float64));

    /// <summary>The same weights in float64: with both sides in double, any difference left is a difference in the math.</summary>
    public StableDiffusionModel Model64 => _model64.Value;

    /// <summary>Loads tests/fixtures/parity/tiny-sd, optionally moved to a device and dtype (the GPU checks reuse this).</summary>
    public static StableDiffusionModel Load(Device? device = null, ScalarType? dtype = null)
    {
        var model = StableDiffusionModel.Load(ParityFile.TinySd);
        if (device is not null || dtype is not null) model.To(device ?? CPU, dtype);
        return model;
    }

    public void Dispose()
    {
        Model.Dispose();
        if (_model64.IsValueCreated) _model64.Value.Dispose();
    }
}

/// <summary>
/// Our CLIP text encoder, UNet and VAE against transformers' CLIPTextModel and diffusers' UNet2DConditionModel and
/// AutoencoderKL on the same random weights, on the CPU. Each output is compared twice: in float64 on both sides (the
/// math must agree to ~1e-12: a changed eps, scale or ordering shows at once), and in fp32 against diffusers' fp32
/// result, within 4x of that result's own fp32 error (its distance to the float64 one). Figures: docs/models-unet-vae.md.
/// </summary>
public class ModelParityTests(TinySdModel fx, ITestOutputHelper log) : IClassFixture<TinySdModel>
{
    /// <summary>Both sides in float64: what is left is summation order (~1e-15) and fp32 timestep features (identical).</summary>
    public const double Fp64Bound = 1e-10;

    [Fact]
    public void Tokenizer_ids_equal_transformers_CLIPTokenizer_on_the_tiny_vocabulary()
    {
        var tokenizer = ClipTokenizer.FromDirectory(Path.Combine(ParityFile.TinySd, "tokenizer"));
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ParityFile.Directory, "tokenizer.json")));
        int cases = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateArray())
        {
            string prompt = c.GetProperty("prompt").GetString()!;
            var ids = c.GetProperty("ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
            var padded = c.GetProperty("padded").EnumerateArray().Select(e => (long)e.GetInt32()).ToArray();
            Assert.Equal(ids, tokenizer.Encode(prompt));
            var options = PromptOptions.Inference with { PadTokens = true, MaxTokenLength = PromptOptions.ChunkTokens };
            Assert.Equal(padded, tokenizer.TokenizeToIds([prompt], options)[0].Select(i => (long)i).ToArray());
            cases++;
        }
        Assert.Equal(6, cases);
    }

    [Theory]
    [InlineData("padded")]
    [InlineData("unpadded")]
    [InlineData("unpadded_longer")]
    [InlineData("truncated")]
    public void Clip_last_hidden_state_and_clip_skip_2_and_3_match_transformers(string name)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var f = ParityFile.Open("clip.safetensors");
        var te = fx.Model.TextEncoder;
        var ids = f.Get($"{name}.input_ids");
        string label = $"CLIP {name} [{string.Join("x", ids.shape)}]";
        foreach (var (key, skip) in new[] { ("last_hidden_state", 1), ("clip_skip_2", 2), ("clip_skip_3", 3) })
        {
            var ours = te.Encode(ids, skip);
            if (f.Contains($"{name}.{key}.f64"))
            {
                Parity.AssertClose(log, $"{label} {key} fp64", fx.Model64.TextEncoder.Encode(ids, skip), f.Get($"{name}.{key}.f64"), Fp64Bound);
                Parity.AssertCloseFp32(log, $"{label} {key}", ours, f.Get($"{name}.{key}"), f.Get($"{name}.{key}.f64"));
            }
            else
            {
                Parity.AssertClose(log, $"{label} {key}", ours, f.Get($"{name}.{key}"), 1e-5);
            }
        }
        if (name == "padded")
            for (int i = 0; i <= te.Config.NumHiddenLayers; i++)
                Parity.AssertClose(log, $"CLIP padded hidden_states[{i}]", te.HiddenState(ids, i), f.Get($"{name}.hidden_states.{i}"), 1e-5);
    }

    [Theory]
    [InlineData("batch2")]       // t = 0 and 999, int64
    [InlineData("fractional")]   // t = 500.5, 1.25, 999.0, batch 3
    [InlineData("odd")]          // 9x7 latents
    [InlineData("context154")]   // two 77-token chunks of context
    [InlineData("context5")]     // 5 context tokens, 6x10 latents
    public void UNet_noise_prediction_matches_diffusers(string name)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var f = ParityFile.Open("unet.safetensors");
        var sample = f.Get($"{name}.sample");
        var t = f.Get($"{name}.timestep");
        var context = f.Get($"{name}.encoder_hidden_states");
        string label = $"UNet {name} [{string.Join("x", sample.shape)}] t=[{string.Join(", ", t.to_type(ScalarType.Float64).data<double>().ToArray())}] ctx {context.shape[1]}";
        // the sinusoidal timestep features are fp32 in any dtype (diffusers and ours): fp32 sin/cos of torch 1.13 and of
        // libtorch 2.10 may differ in the last bit for some t, and then only then the float64 outputs differ (~1e-8..1e-6)
        var config = fx.Model.UNet.Config;
        using var timeProj = new DreamBooth.Models.Embeddings.Timesteps(config.BlockOutChannels[0], config.FlipSinToCos, config.FreqShift);
        var features = timeProj.forward(t.dim() == 0 ? t.reshape(1) : t);
        var featureDiff = Parity.Diff(features, f.Get($"{name}.time_proj"));
        Assert.True(featureDiff.MaxAbs <= 2.5e-7, $"{label}: timestep features differ beyond fp32 rounding: {featureDiff}");
        double fp64Bound = featureDiff.MaxAbs == 0 ? Fp64Bound : 2e-6;
        log.WriteLine($"TIMEPROJ | {label} | max|Δ| {featureDiff.MaxAbs:0.00e+00}");
        var ours64 = fx.Model64.UNet.forward(sample.to_type(ScalarType.Float64), t, context.to_type(ScalarType.Float64));
        Parity.AssertClose(log, label + " fp64", ours64, f.Get($"{name}.out.f64"), fp64Bound);
        Parity.AssertCloseFp32(log, label, fx.Model.UNet.forward(sample, t, context), f.Get($"{name}.out"), f.Get($"{name}.out.f64"));
    }

    [Fact]
    public void Timestep_features_of_sd15_width_match_diffusers_to_fp32_exp_and_sin_rounding()
    {
        using var scope = NewDisposeScope();
        using var f = ParityFile.Open("unet.safetensors");
        using var timeProj = new DreamBooth.Models.Embeddings.Timesteps(320, flipSinToCos: true, downscaleFreqShift: 0);
        var t = f.Get("sd15_time_proj.timestep");
        var ours = timeProj.forward(t);
        var reference = f.Get("sd15_time_proj.out");
        Parity.Report(log, "Timesteps(320), t = 0, 1, 261, 500.5, 999", Parity.Diff(ours, reference), 1.2e-4);
        // fp32 exp of torch 1.13 and of libtorch 2.10 differ in the last bit for 15 of the 160 frequencies: the sine
        // argument t·f then moves by up to t·2^-23·f, plus one rounding of sin/cos itself
        var ts = t.data<float>().ToArray();
        for (int i = 0; i < ts.Length; i++)
        {
            var diff = Parity.Diff(ours[i], reference[i]);
            Assert.True(diff.MaxAbs <= 2.5e-7 + 1.2e-7 * ts[i], $"timestep features at t = {ts[i]}: {diff}");
        }
    }

    [Fact]
    public void Vae_encode_mean_logvar_and_decode_match_diffusers()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var f = ParityFile.Open("vae.safetensors");
        var vae = fx.Model.Vae;
        var vae64 = fx.Model64.Vae;
        var images = f.Get("encode.images");
        using (var posterior = vae.Encode(images))
        using (var posterior64 = vae64.Encode(images.to_type(ScalarType.Float64)))
        {
            Parity.AssertClose(log, "VAE encode mean [2x3x32x48] fp64", posterior64.Mean, f.Get("encode.mean.f64"), Fp64Bound);
            Parity.AssertClose(log, "VAE encode logvar fp64", posterior64.LogVar, f.Get("encode.logvar.f64"), Fp64Bound);
            Parity.AssertCloseFp32(log, "VAE encode mean [2x3x32x48]", posterior.Mean, f.Get("encode.mean"), f.Get("encode.mean.f64"));
            Parity.AssertCloseFp32(log, "VAE encode logvar", posterior.LogVar, f.Get("encode.logvar"), f.Get("encode.logvar.f64"));
        }
        var latents = f.Get("decode.latents");
        Parity.AssertClose(log, "VAE decode [3x4x4x6] fp64", vae64.Decode(latents.to_type(ScalarType.Float64)), f.Get("decode.out.f64"), Fp64Bound);
        Parity.AssertCloseFp32(log, "VAE decode [3x4x4x6]", vae.Decode(latents), f.Get("decode.out"), f.Get("decode.out.f64"));
    }

    [Fact]
    public void Vae_sliced_and_tiled_decode_match_diffusers_sliced_and_tiled_decode()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var f = ParityFile.Open("vae.safetensors");
        var vae = fx.Model.Vae;
        var vae64 = fx.Model64.Vae;
        try
        {
            Assert.Equal(f.Meta("tile_sample_min_size").GetInt32(), vae.TileSampleMinSize);
            Assert.Equal(f.Meta("tile_overlap_factor").GetDouble(), vae.TileOverlapFactor);
            vae.EnableSlicing = true;
            Parity.AssertCloseFp32(log, "VAE sliced decode", vae.Decode(f.Get("decode.latents")), f.Get("decode.sliced"), f.Get("decode.out.f64"));
            vae.EnableSlicing = false;
            vae.EnableTiling = vae64.EnableTiling = true;
            var big = f.Get("tiled.latents");
            var tiled = vae.Decode(big);
            Parity.AssertClose(log, "VAE tiled decode [1x4x6x10], 4-latent tiles fp64", vae64.Decode(big.to_type(ScalarType.Float64)), f.Get("tiled.out.f64"), Fp64Bound);
            Parity.AssertCloseFp32(log, "VAE tiled decode [1x4x6x10], 4-latent tiles", tiled, f.Get("tiled.out"), f.Get("tiled.out.f64"));
            vae.EnableTiling = vae64.EnableTiling = false;
            Parity.AssertClose(log, "VAE untiled decode [1x4x6x10]", vae.Decode(big), f.Get("tiled.untiled"), 1e-5);
            // tiling is approximate by design: the tiled result is not the untiled one (so the tiled check is not vacuous)
            Assert.True(Parity.Diff(tiled, f.Get("tiled.untiled")).Relative > 1e-3);
        }
        finally
        {
            vae.EnableSlicing = false;
            vae.EnableTiling = vae64.EnableTiling = false;
        }
    }

    [Fact]
    public void Seeded_cpu_generators_draw_the_same_numbers_as_torch()
    {
        using var scope = NewDisposeScope();
        using var f = ParityFile.Open("rng.safetensors");
        foreach (ulong seed in new ulong[] { 0, 1234, (1UL << 32) + 7 })
        {
            using var g = new Generator(seed);
            Parity.AssertEqual($"randn seed {seed}", randn([1, 4, 8, 8], generator: g), f.Get($"seed{seed}.randn_1x4x8x8"));
            Parity.AssertEqual($"randn seed {seed} (continued)", randn([3, 5], generator: g), f.Get($"seed{seed}.randn_3x5"));
            Parity.AssertEqual($"randint seed {seed}", randint(0, 1000, [4], generator: g, dtype: ScalarType.Int64), f.Get($"seed{seed}.randint_1000_x4"));
        }
    }
}
