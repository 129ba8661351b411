using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Tests.Cli;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Checkpoints;

public class StableDiffusionModelTests
{
    static string BpeGz => TestPaths.ClipBpeGz;

    static ModelLoadOptions TinyOptions => TinyModel.LoadOptions;

    static StableDiffusionModel Tiny(long seed = 1) => TinyModel.Create(seed);

    static Dictionary<string, Tensor> All(StableDiffusionModel m) =>
        m.UNet.state_dict().Select(kv => ("unet." + kv.Key, kv.Value))
            .Concat(m.Vae.state_dict().Select(kv => ("vae." + kv.Key, kv.Value)))
            .Concat(m.TextEncoder.state_dict().Select(kv => ("te." + kv.Key, kv.Value)))
            .ToDictionary(p => p.Item1, p => p.Item2);

    static bool Same(Tensor a, Tensor b) =>
        a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.eq(b).all().item<bool>();

    static void AssertSameWeights(StableDiffusionModel expected, StableDiffusionModel actual, ScalarType? through = null)
    {
        var a = All(expected); var b = All(actual);
        Assert.Equal(a.Keys.Order(), b.Keys.Order());
        foreach (var (k, t) in a)
        {
            using var scope = NewDisposeScope();
            var e = through is { } d && t.is_floating_point() ? t.to(d).to(t.dtype) : t;
            Assert.True(Same(e, b[k]), $"{k} differs");
        }
    }

    [Fact]
    public void A_single_file_with_config_and_tokenizer_beside_it_loads_by_path_alone_file_or_folder()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(3);
        Assert.False(model.IsStableDiffusion15Architecture);
        var file = Path.Combine(dir.Path, "tiny.safetensors");
        model.SaveSingleFile(file, ScalarType.Float32);

        // without the sidecar the file is taken for SD 1.5 and refused with a line naming the mismatch
        var e = Assert.Throws<DreamBoothException>(() => StableDiffusionModel.Load(file));
        Assert.Contains("tiny.safetensors", e.Message);

        model.WriteSidecar(dir.Path);
        foreach (var name in new[] { "text_encoder.json", "unet.json", "vae.json", "scheduler_config.json" })
            Assert.True(File.Exists(Path.Combine(dir.Path, StableDiffusionModel.ConfigFolder, name)), name);
        using (var byFile = StableDiffusionModel.Load(file))
            AssertSameWeights(model, byFile);
        using (var byFolder = StableDiffusionModel.Load(dir.Path))
        {
            AssertSameWeights(model, byFolder);
            Assert.Equal(model.Tokenizer.Encode("ohwx man"), byFolder.Tokenizer.Encode("ohwx man"));
        }
        // explicit options win over the sidecar
        using (var explicitOptions = StableDiffusionModel.Load(file, TinyOptions)) AssertSameWeights(model, explicitOptions);

        // a folder with two checkpoint files beside config/ is ambiguous: the error names both
        File.Copy(file, Path.Combine(dir.Path, "tiny-2.safetensors"));
        var e2 = Assert.Throws<DreamBoothException>(() => StableDiffusionModel.Load(dir.Path));
        Assert.Contains("tiny-2.safetensors", e2.Message);
        Assert.Contains("tiny.safetensors", e2.Message);
    }

    /// <summary>
    /// Every tensor of a full-size SD 1.5 (built from our modules: 686 UNet + 248 VAE + 196 text-encoder tensors)
    /// maps to the single-file layout and back with no key missing, extra or duplicated, shapes preserved. The saved
    /// layout has 1131 keys: those 1130 plus cond_stage_model…position_ids, which v1-5-pruned files carry and
    /// transformers keeps out of the state dict (non-persistent buffer).
    /// </summary>
    [Fact]
    public void Full_size_sd15_every_tensor_maps_both_ways()
    {
        using var te = new CLIPTextModel(CLIPTextConfig.StableDiffusion15);
        using var unet = new UNet2DConditionModel(UNet2DConditionConfig.StableDiffusion15);
        using var vae = new AutoencoderKL(AutoencoderKLConfig.StableDiffusion15);
        var source = new Dictionary<(SdComponent, string), long[]>();
        foreach (var (k, t) in unet.state_dict()) source[(SdComponent.UNet, k)] = t.shape;
        foreach (var (k, t) in vae.state_dict()) source[(SdComponent.Vae, k)] = t.shape;
        foreach (var (k, t) in te.state_dict()) source[(SdComponent.TextEncoder, k)] = t.shape;
        Assert.Equal(686, source.Keys.Count(k => k.Item1 == SdComponent.UNet));
        Assert.Equal(248, source.Keys.Count(k => k.Item1 == SdComponent.Vae));
        Assert.Equal(196, source.Keys.Count(k => k.Item1 == SdComponent.TextEncoder));

        using var scope = NewDisposeScope();
        var ldm = SingleFileCheckpoint.ToLdmStateDict(te, unet, vae, ScalarType.Float32);
        Assert.Equal(1131, ldm.Count);
        Assert.Equal(686, ldm.Keys.Count(k => k.StartsWith("model.diffusion_model.")));
        Assert.Equal(248, ldm.Keys.Count(k => k.StartsWith("first_stage_model.")));
        Assert.Equal(197, ldm.Keys.Count(k => k.StartsWith("cond_stage_model.transformer.text_model.")));
        // spot checks against v1-5-pruned.safetensors
        Assert.Equal([320L, 320, 1, 1], ldm["model.diffusion_model.input_blocks.1.1.proj_in.weight"].shape);
        Assert.Equal([512L, 512, 1, 1], ldm["first_stage_model.encoder.mid.attn_1.q.weight"].shape);
        Assert.Equal([1280L, 2560, 1, 1], ldm["model.diffusion_model.output_blocks.0.0.skip_connection.weight"].shape);
        Assert.Equal([640L, 640, 3, 3], ldm["model.diffusion_model.output_blocks.8.2.conv.weight"].shape);
        Assert.Equal([49408L, 768], ldm["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"].shape);

        var map = new LdmKeyMap(SingleFileCheckpoint.LayoutOf(unet.Config, vae.Config));
        var back = new Dictionary<(SdComponent, string), long[]>();
        foreach (var (k, t) in ldm)
        {
            if (k == LdmKeyMap.TextPositionIds) continue;
            var pair = map.ToDiffusers(k);
            Assert.True(pair is not null, $"no diffusers key for {k}");
            var shape = pair.Value.Reshape ? t.shape[..2] : t.shape;
            Assert.True(back.TryAdd((pair.Value.Component, pair.Value.DiffusersKey), shape), $"duplicate {pair.Value.DiffusersKey}");
        }
        Assert.Equal(source.Count, back.Count);
        foreach (var (k, shape) in source)
        {
            Assert.True(back.TryGetValue(k, out var s), $"missing {k}");
            Assert.Equal(shape, s);
        }
    }

    [Fact]
    public void Tiny_single_file_round_trips_in_fp32_fp16_and_bf16()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny();
        foreach (var dtype in new[] { ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16 })
        {
            var path = dir.File($"tiny-{dtype}.safetensors");
            model.SaveSingleFile(path, dtype, new Dictionary<string, string> { ["note"] = "x" });
            using (var f = SafeTensors.Open(path))
            {
                Assert.Equal("x", f.Metadata["note"]);
                Assert.Equal(SafeTensors.DTypeName(dtype), f.Info("model.diffusion_model.input_blocks.0.0.weight").DType);
                Assert.Equal("I64", f.Info(LdmKeyMap.TextPositionIds).DType);
            }
            using var loaded = StableDiffusionModel.Load(path, dtype == ScalarType.Float16 ? TinyOptions with { Tokenizer = null, TokenizerPath = BpeGz } : TinyOptions);
            Assert.Equal(Path.GetFileNameWithoutExtension(path), loaded.Name);
            Assert.Equal(CheckpointInspector.Sha256Of(path)[..10], loaded.ShortHash);
            AssertSameWeights(model, loaded, dtype == ScalarType.Float32 ? null : dtype);
        }
    }

    [Fact]
    public void Loaded_single_file_gives_identical_outputs()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(5);
        var path = dir.File("tiny.safetensors");
        model.SaveSingleFile(path, ScalarType.Float32);
        using var loaded = StableDiffusionModel.Load(path, TinyOptions);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var g = new Generator(9);
        var sample = randn([1, 4, 8, 8], generator: g);
        var ids = model.Tokenizer.Tokenize(["a photo of sks dog"], PromptOptions.Inference, null);
        var ctx = model.TextEncoder.forward(ids);
        Assert.True(Same(ctx, loaded.TextEncoder.forward(ids)));
        var t = tensor(new long[] { 500 });
        Assert.True(Same(model.UNet.forward(sample, t, ctx), loaded.UNet.forward(sample, t, ctx)));
        var image = randn([1, 3, 16, 16], generator: g);
        Assert.True(Same(model.Vae.Encode(image).Mean, loaded.Vae.Encode(image).Mean));
        var latents = randn([1, 4, 8, 8], generator: g);
        Assert.True(Same(model.Vae.Decode(latents), loaded.Vae.Decode(latents)));
    }

    [Fact]
    public async Task Diffusers_folder_round_trips_and_inspects()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(2);
        var folder = dir.File("tiny-diffusers");
        model.SaveDiffusers(folder);
        foreach (var f in new[] { "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                     "text_encoder/model.safetensors", "text_encoder/config.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json" })
            Assert.True(File.Exists(Path.Combine(folder, f)), f);
        using var loaded = StableDiffusionModel.Load(folder);
        AssertSameWeights(model, loaded);
        Assert.Equal(UNet2DConditionConfig.Tiny.BlockOutChannels, loaded.UNet.Config.BlockOutChannels);
        Assert.Contains("scaled_linear", loaded.SchedulerConfigJson);
        Assert.Null(loaded.ShortHash);

        var (code, stdout, _) = await CliTests.Run("inspect", folder);
        Assert.Equal(0, code);
        Assert.Contains("diffusers folder", stdout);
        Assert.Matches($@"unet\s+{model.UNet.state_dict().Count} tensors\s+{model.UNet.parameters().Sum(p => p.numel()):N0} parameters\s+F32", stdout);
        Assert.Matches($@"text_encoder\s+{model.TextEncoder.state_dict().Count} tensors", stdout);
    }

    [Fact]
    public void Diffusers_folder_with_sharded_unet_and_bin_text_encoder_loads()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(8);
        var folder = dir.File("tiny");
        model.SaveDiffusers(folder);
        // unet: split into two shards with an index, as large diffusers repos ship it
        var unetFile = Path.Combine(folder, "unet", "diffusion_pytorch_model.safetensors");
        var sd = model.UNet.state_dict();
        var keys = sd.Keys.Order(StringComparer.Ordinal).ToList();
        var first = keys.Take(keys.Count / 2).ToHashSet();
        SafeTensors.Save(Path.Combine(folder, "unet", "diffusion_pytorch_model-00001-of-00002.safetensors"), sd.Where(kv => first.Contains(kv.Key)).ToDictionary());
        SafeTensors.Save(Path.Combine(folder, "unet", "diffusion_pytorch_model-00002-of-00002.safetensors"), sd.Where(kv => !first.Contains(kv.Key)).ToDictionary());
        var map = string.Join(",", keys.Select(k => $"\"{k}\":\"diffusion_pytorch_model-0000{(first.Contains(k) ? 1 : 2)}-of-00002.safetensors\""));
        File.WriteAllText(Path.Combine(folder, "unet", "diffusion_pytorch_model.safetensors.index.json"), "{\"metadata\":{},\"weight_map\":{" + map + "}}");
        File.Delete(unetFile);
        // text_encoder: a legacy pytorch_model.bin-style pickle (named model.bin here), with the old persistent position_ids
        var te = model.TextEncoder.state_dict().Select(kv => (kv.Key, kv.Value)).ToList();
        te.Add(("text_model.embeddings.position_ids", arange(77, dtype: ScalarType.Int64).unsqueeze(0)));
        File.Delete(Path.Combine(folder, "text_encoder", "model.safetensors"));
        TorchCheckpointWriter.WriteStateDict(Path.Combine(folder, "text_encoder", "model.bin"), te, wrapInStateDict: false);

        using var loaded = StableDiffusionModel.Load(folder);
        AssertSameWeights(model, loaded);

        // a shard that lost a tensor the index promises: a clear error naming it
        var shard2 = Path.Combine(folder, "unet", "diffusion_pytorch_model-00002-of-00002.safetensors");
        var last = keys.Last();
        SafeTensors.Save(shard2, sd.Where(kv => !first.Contains(kv.Key) && kv.Key != last).ToDictionary());
        var e = Assert.Throws<DreamBoothException>(() => StableDiffusionModel.Load(folder));
        Assert.Contains(last, e.Message);
    }

    [Fact]
    public async Task Inspect_single_file_made_from_tiny_model()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(3);
        var path = dir.File("tiny.safetensors");
        model.SaveSingleFile(path, ScalarType.Float16);
        var (code, stdout, _) = await CliTests.Run("inspect", path);
        Assert.Equal(0, code);
        Assert.Contains($"short hash  {CheckpointInspector.Sha256Of(path)[..10]}", stdout);
        Assert.Matches($@"unet\s+{model.UNet.state_dict().Count} tensors\s+{model.UNet.parameters().Sum(p => p.numel()):N0} parameters\s+F16×{model.UNet.state_dict().Count}", stdout);
        Assert.Matches(@"text_encoder\s+\d+ tensors.*F16×\d+, I64×1", stdout);
    }

    [Fact]
    public void Ckpt_with_ema_loads_ema_weights_on_request()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(4);
        using var scope = NewDisposeScope();
        var ldm = SingleFileCheckpoint.ToLdmStateDict(model.TextEncoder, model.UNet, model.Vae, ScalarType.Float32);
        var entries = ldm.Select(kv => (kv.Key, kv.Value)).ToList();
        foreach (var (k, t) in ldm.Where(kv => kv.Key.StartsWith(LdmKeyMap.UNetPrefix)))
            entries.Add((LdmKeyMap.EmaKey(k), t + 1));
        entries.Add(("alphas_cumprod", linspace(1, 0, 1000)));
        var path = dir.File("tiny.ckpt");
        TorchCheckpointWriter.WriteStateDict(path, entries);

        using var plain = StableDiffusionModel.Load(path, TinyOptions);
        AssertSameWeights(model, plain);
        using var ema = StableDiffusionModel.Load(path, TinyOptions with { UseEma = true });
        var w = model.UNet.state_dict()["conv_in.weight"];
        Assert.True(Same(w + 1, ema.UNet.state_dict()["conv_in.weight"]));
        Assert.True(Same(model.Vae.state_dict()["decoder.conv_out.weight"], ema.Vae.state_dict()["decoder.conv_out.weight"]));
    }

    static string LoadFails(Dictionary<string, Tensor> tensors)
    {
        using var dir = TestPaths.NewTempDir("sd-bad");
        var path = dir.File("bad.safetensors");
        SafeTensors.Save(path, tensors);
        return Assert.Throws<DreamBoothException>(() => StableDiffusionModel.Load(path, TinyOptions)).Message;
    }

    [Fact]
    public void Strict_loading_names_missing_unexpected_and_misshaped_keys()
    {
        using var model = Tiny(6);
        using var scope = NewDisposeScope();
        Dictionary<string, Tensor> Fresh() => SingleFileCheckpoint.ToLdmStateDict(model.TextEncoder, model.UNet, model.Vae, ScalarType.Float32);

        var missing = Fresh();
        missing.Remove("model.diffusion_model.out.2.bias");
        Assert.Contains("missing key 'model.diffusion_model.out.2.bias'", LoadFails(missing));

        var extra = Fresh();
        extra["model.diffusion_model.lora_up.weight"] = zeros(2);
        Assert.Contains("unexpected key 'model.diffusion_model.lora_up.weight'", LoadFails(extra));

        var shaped = Fresh();
        shaped["first_stage_model.quant_conv.bias"] = zeros(3);
        Assert.Contains("'first_stage_model.quant_conv.bias' has shape [3]", LoadFails(shaped));

        var sd2 = Fresh();
        sd2["cond_stage_model.model.ln_final.weight"] = zeros(2);
        Assert.Contains("SD 2.x", LoadFails(sd2));

        var vaeOnly = Fresh().Where(kv => kv.Key.StartsWith("first_stage_model.")).ToDictionary();
        Assert.Contains("not a full Stable Diffusion checkpoint", LoadFails(vaeOnly));

        Assert.Contains("no EMA weights", Assert.Throws<DreamBoothException>(() =>
        {
            using var dir = TestPaths.NewTempDir();
            model.SaveSingleFile(dir.File("m.safetensors"), ScalarType.Float32);
            using var _ = StableDiffusionModel.Load(dir.File("m.safetensors"), TinyOptions with { UseEma = true });
        }).Message);
    }

    [Fact]
    public void Hub_diffusers_repo_and_single_file_load_through_the_cache()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(7);
        var folder = dir.File("src");
        model.SaveDiffusers(folder);
        model.SaveSingleFile(dir.File("tiny.safetensors"), ScalarType.Float16);
        using var hub = new FakeHub();
        foreach (var f in Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories))
            hub.Files[Path.GetRelativePath(folder, f).Replace('\\', '/')] = File.ReadAllBytes(f);
        hub.Files["tiny.safetensors"] = File.ReadAllBytes(dir.File("tiny.safetensors"));
        using var client = new HubClient(hub.Endpoint, null, dir.File("cache"), offline: false);

        using var fromRepo = StableDiffusionModel.Load("owner/tiny", new ModelLoadOptions { Hub = client });
        AssertSameWeights(model, fromRepo);
        Assert.Equal("owner/tiny", fromRepo.Name);

        using var single = StableDiffusionModel.Load("owner/tiny", TinyOptions with { Hub = client, FileName = "tiny.safetensors" });
        AssertSameWeights(model, single, ScalarType.Float16);

        // the snapshot holds tokenizer/ beside the single file: it is used when no tokenizer is given
        using (var sidecar = StableDiffusionModel.Load("owner/tiny", TinyOptions with { Hub = client, FileName = "tiny.safetensors", Tokenizer = null }))
            Assert.Equal(model.Tokenizer.Encode("a photo of a cat"), sidecar.Tokenizer.Encode("a photo of a cat"));

        // a repo with only the single file, no tokenizer path and the Hub tokenizer repo unavailable: a clear error
        using var bare = new FakeHub();
        bare.Files["tiny.safetensors"] = File.ReadAllBytes(dir.File("tiny.safetensors"));
        using var bareClient = new HubClient(bare.Endpoint, null, dir.File("cache-bare"), offline: false);
        var e = Assert.Throws<DreamBoothException>(() => StableDiffusionModel.Load("owner/bare", TinyOptions with { Hub = bareClient, FileName = "tiny.safetensors", Tokenizer = null, TokenizerPath = null }));
        Assert.Contains("--tokenizer", e.Message);
        Assert.Contains("openai/clip-vit-large-patch14", e.Message);
    }
}

/// <summary>
/// Opt-in (DREAMBOOTH_BENCH_DIR=folder, DREAMBOOTH_BENCH_DTYPE=fp16|fp32): writes a full-size random-weight SD 1.5
/// single file for load benchmarks (`dreambooth inspect FILE --load --no-hash` reports load time and peak RAM).
/// </summary>
public class FullSizeCheckpointBench
{
    [Fact]
    public void Write_full_size_random_sd15_single_file()
    {
        var dir = Environment.GetEnvironmentVariable("DREAMBOOTH_BENCH_DIR");
        if (string.IsNullOrEmpty(dir)) return; // opt-in only
        var dtype = Environment.GetEnvironmentVariable("DREAMBOOTH_BENCH_DTYPE") == "fp32" ? ScalarType.Float32 : ScalarType.Float16;
        using var model = StableDiffusionModel.CreateRandom(CLIPTextConfig.StableDiffusion15, UNet2DConditionConfig.StableDiffusion15,
            AutoencoderKLConfig.StableDiffusion15, ClipTokenizer.FromBpeGz(TestPaths.ClipBpeGz), 1);
        var path = Path.Combine(dir, $"sd15-random-{(dtype == ScalarType.Float32 ? "fp32" : "fp16")}.safetensors");
        model.SaveSingleFile(path, dtype);
        using var f = SafeTensors.Open(path);
        Assert.Equal(1131, f.Tensors.Count);
    }
}
